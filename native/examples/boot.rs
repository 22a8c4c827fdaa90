// Boots a kernel on the VMM with a time limit and reports how it ended (dev tool for the
// "Linux on the native VMM" experiment). usage: boot <vmlinux> <console.log> <seconds> <cmdline> [initrd]
use msbvmm::json::quote;
use msbvmm::vmm::{VmConfig, Vmm};
use std::time::{Duration, Instant};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let initrd = a.get(5).map(|p| format!(r#","initrd":{}"#, quote(p))).unwrap_or_default();
    let spec = format!(
        r#"{{"kernel":{},"cmdline":{},"cpus":1,"memoryMiB":256,"consoleLog":{}{initrd}}}"#,
        quote(&a[1]),
        quote(&a[4]),
        quote(&a[2])
    );
    let cfg = VmConfig::from_json(&spec).unwrap();
    let t = Instant::now();
    let v = Vmm::create(&cfg).unwrap_or_else(|e| panic!("{e}"));
    println!("cmdline: {}", v.cmdline);
    v.start().unwrap();
    let limit = Duration::from_secs(a[3].parse().unwrap());
    while v.poll_exit().is_none() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    v.request_stop();
    println!("exit after {:?}: {:?}", t.elapsed(), v.wait());
    println!("stats: {}", v.stats_json());
}
