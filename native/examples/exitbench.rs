// Times exits of a guest ELF given on the command line (dev tool for profiling the run loop).
use msbvmm::vmm::{VmConfig, Vmm};
fn main() {
    let k = std::env::args().nth(1).expect("usage: exitbench <guest.elf>");
    let cfg = VmConfig::from_json(&format!(r#"{{"kernel":"{k}","cpus":1,"memoryMiB":32,"rng":false}}"#)).unwrap();
    let t = std::time::Instant::now();
    let v = Vmm::create(&cfg).unwrap();
    let c = t.elapsed();
    v.start().unwrap();
    let e = v.wait();
    println!("create {:?} total {:?} exit {:?}\n{}", c, t.elapsed(), e, v.stats_json());
}
