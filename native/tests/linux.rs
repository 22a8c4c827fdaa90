// Linux on the native VMM: boots the project's guest kernel (build/guest/vmlinux, or
// MSB_KERNEL). On hardware KVM it must reach userspace quickly; on software KVM (kvm_pvm) guest
// kernel code is emulated ~3000x slower and the emulator rejects some instructions, so the test
// boots with command-line workarounds for a bounded time and checks how far the kernel got on our
// boot data (PVH start info, e820, MP table, UART). Slow here (~1 min): run with
//   cargo test --release --test linux -- --ignored --nocapture

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use msbvmm::json::quote;
use msbvmm::vmm::{VmConfig, Vmm};
use msbvmm::vstate::kvm::{kvm_kind, KvmKind};

fn asset(env: &str, name: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/guest").join(name));
    p.exists().then_some(p)
}

#[test]
#[ignore = "boots a full Linux kernel: about a minute on software KVM; run with --ignored"]
fn linux_guest_kernel_boots_on_the_native_vmm() {
    if common::skip_without_kvm("linux_guest_kernel_boots_on_the_native_vmm") {
        return;
    }
    let Some(kernel) = asset("MSB_KERNEL", "vmlinux") else {
        eprintln!("SKIP linux_guest_kernel_boots_on_the_native_vmm: build/guest/vmlinux not built (scripts/setup.sh)");
        return;
    };
    let hardware = kvm_kind() == KvmKind::Hardware;
    let initrd = asset("MSB_INITRD", "initramfs.cpio.gz");
    let log = common::scratch_dir().join("linux.log");
    let _ = std::fs::remove_file(&log);
    // On kvm_pvm: avoid instructions its emulator rejects (KERNEL.md).
    let cmdline = if hardware {
        "console=ttyS0 reboot=k panic=-1"
    } else {
        "console=ttyS0 reboot=k panic=-1 clearcpuid=cx16,popcnt,smap,smep noxsave lpj=1000000 tsc=reliable"
    };
    let initrd_json = initrd.as_ref().map(|p| format!(r#","initrd":{}"#, quote(&p.to_string_lossy()))).unwrap_or_default();
    let spec = format!(
        r#"{{"kernel":{},"cmdline":{},"cpus":1,"memoryMiB":256,"consoleLog":{}{initrd_json}}}"#,
        quote(&kernel.to_string_lossy()),
        quote(cmdline),
        quote(&log.to_string_lossy())
    );
    let vmm = Vmm::create(&VmConfig::from_json(&spec).unwrap()).unwrap();
    let t = Instant::now();
    vmm.start().unwrap();
    let limit = Duration::from_secs(if hardware { 30 } else { 90 });
    let goal = if hardware { "Run /init" } else { "Booting paravirtualized kernel on KVM" };
    let mut reached = None;
    while vmm.poll_exit().is_none() && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        if reached.is_none() && std::fs::read_to_string(&log).unwrap_or_default().contains(goal) {
            reached = Some(t.elapsed());
            if hardware {
                break;
            }
        }
    }
    vmm.request_stop();
    let exit = vmm.wait();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)");
    eprintln!("linux on native ({}): after {:?}, exit {exit:?}", if hardware { "hardware KVM" } else { "software KVM" }, t.elapsed());
    eprintln!("  reached {goal:?} at {reached:?}; last console line: {last}");
    assert!(out.contains("Intel MultiProcessor Specification"), "the MP table was not found; console:\n{out}");
    assert!(reached.is_some(), "did not reach {goal:?} within {limit:?}; console:\n{out}");
}
