// Host RSS of an idle VM beyond its guest RAM, measured in a plain Rust process (no JS heap
// noise). usage: rss <idle.elf> [memoryMiB]
use msbvmm::vmm::{VmConfig, Vmm};
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}
/// Rss of the anonymous mapping exactly `bytes` long (guest RAM).
fn mapping_rss_kib(bytes: u64) -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut total = 0;
    for l in s.lines() {
        if let Some((range, _)) = l.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    inside = b - a == bytes;
                    continue;
                }
            }
        }
        if inside && l.starts_with("Rss:") {
            total += l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        }
    }
    total
}
fn main() {
    let k = std::env::args().nth(1).expect("usage: rss <idle.elf> [memoryMiB]");
    let mib: u64 = std::env::args().nth(2).map(|m| m.parse().unwrap()).unwrap_or(256);
    let cfg = VmConfig::from_json(&format!(r#"{{"kernel":"{k}","cpus":1,"memoryMiB":{mib},"rng":true}}"#)).unwrap();
    // First VM in the process: includes allocator arenas and thread stacks first touched.
    let cold = rss_kib();
    let w = Vmm::create(&cfg).unwrap();
    w.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let cold_after = rss_kib();
    let cold_guest = mapping_rss_kib(mib << 20);
    println!("process RSS with the first VM running: {cold_after} KiB (whole process, guest RAM included)");
    println!("first VM in the process: RSS +{} KiB, guest RAM touched {cold_guest} KiB, VMM overhead {} KiB", cold_after - cold, cold_after - cold - cold_guest);
    w.request_stop();
    w.wait();
    drop(w);
    let before = rss_kib();
    let v = Vmm::create(&cfg).unwrap();
    v.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = rss_kib();
    let guest = mapping_rss_kib(mib << 20);
    println!("next VM, same process ({mib} MiB, 1 vCPU, rng): RSS +{} KiB, guest RAM touched {guest} KiB, VMM overhead {} KiB", after - before, after - before - guest);
    v.request_stop();
    v.wait();
}
