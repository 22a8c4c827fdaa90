// Real KVM, small guests: each freestanding guest in native/guests/ runs on the VMM and must
// produce its UART output and end with the expected exit reason. These run in CI wherever
// /dev/kvm is usable (hardware or software KVM).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use msbvmm::vmm::{ExitReason, VmConfig, Vmm};

fn run(spec: &str, timeout: Duration) -> (msbvmm::vmm::VmExit, Duration) {
    let cfg = VmConfig::from_json(spec).unwrap();
    let t0 = Instant::now();
    let vmm = std::sync::Arc::new(Vmm::create(&cfg).unwrap_or_else(|e| panic!("create failed: {e}")));
    vmm.start().unwrap();
    let v = vmm.clone();
    let watchdog = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if v.poll_exit().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        v.request_stop();
    });
    let exit = vmm.wait();
    watchdog.join().unwrap();
    (exit, t0.elapsed())
}

fn log_of(name: &str) -> std::path::PathBuf {
    let p = scratch_dir().join(format!("{name}.log"));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn hello_prints_on_the_uart_and_exits_by_reset() {
    if skip_without_kvm("hello_prints_on_the_uart_and_exits_by_reset") {
        return;
    }
    let log = log_of("hello");
    let (exit, took) = run(&spec(&guest("hello"), "", &log), Duration::from_secs(20));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    assert!(out.contains("hello from the guest"), "console: {out}");
    assert!(out.contains("cmdline: console=ttyS0 reboot=k"), "console: {out}");
    eprintln!("hello guest: {took:?}");
}

#[test]
fn blk_reads_writes_flushes_and_reports_serial() {
    if skip_without_kvm("blk_reads_writes_flushes_and_reports_serial") {
        return;
    }
    let disk = scratch_dir().join("blk.img");
    let mut data = vec![0u8; 64 * 1024];
    data[..16].copy_from_slice(b"MSB-SECTOR-ZERO!");
    std::fs::write(&disk, &data).unwrap();
    let log = log_of("blk");
    let extra = format!(r#","disks":[{{"path":"{}","readOnly":false,"serial":"disk-serial-7"}}]"#, disk.display());
    let (exit, _) = run(&spec(&guest("blk"), &extra, &log), Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    assert!(out.contains("sector0: MSB-SECTOR-ZERO!"), "console: {out}");
    assert!(out.contains("serial: disk-serial-7"), "console: {out}");
    assert!(out.contains("blk ok"), "console: {out}");
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(&after[512..528], b"written-by-guest");
    assert_eq!(&after[..16], b"MSB-SECTOR-ZERO!");
}

#[test]
fn console_port_is_named_agent_and_echoes() {
    if skip_without_kvm("console_port_is_named_agent_and_echoes") {
        return;
    }
    let sock = scratch_dir().join("agent.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 16];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong from host\n").unwrap();
        buf
    });
    let log = log_of("console");
    let extra = format!(r#","agentSocket":"{}""#, sock.display());
    let (exit, _) = run(&spec(&guest("console"), &extra, &log), Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    assert_eq!(&server.join().unwrap(), b"ping from guest\n");
    assert!(out.contains("port name: agent"), "console: {out}");
    assert!(out.contains("received: pong from host"), "console: {out}");
}

#[test]
fn net_frames_cross_with_length_prefix() {
    if skip_without_kvm("net_frames_cross_with_length_prefix") {
        return;
    }
    let sock = scratch_dir().join("net.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut frame).unwrap();
        let mut reply = vec![0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5];
        reply.extend_from_slice(b"frame from host\n");
        reply.resize(60, 0);
        s.write_all(&(reply.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&reply).unwrap();
        frame
    });
    let log = log_of("net");
    let extra = format!(r#","netSocket":"{}""#, sock.display());
    let (exit, _) = run(&spec(&guest("net"), &extra, &log), Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    let frame = server.join().unwrap();
    assert_eq!(frame.len(), 60);
    assert_eq!(&frame[12..14], &[0x88, 0xb5]);
    assert_eq!(&frame[14..30], b"frame from guest");
    assert!(out.contains("net received: frame from host"), "console: {out}");
}

#[test]
fn second_vcpu_starts_by_init_sipi() {
    if skip_without_kvm("second_vcpu_starts_by_init_sipi") {
        return;
    }
    let log = log_of("smp");
    let s = spec(&guest("smp"), "", &log).replace(r#""cpus":1"#, r#""cpus":2"#);
    let (exit, _) = run(&s, Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    assert!(out.contains("AP\n"), "console: {out}");
    assert!(out.contains("BSP saw the AP"), "console: {out}");
}

#[test]
fn triple_fault_ends_the_vm_not_the_host() {
    if skip_without_kvm("triple_fault_ends_the_vm_not_the_host") {
        return;
    }
    let log = log_of("triple");
    let (exit, _) = run(&spec(&guest("triple"), "", &log), Duration::from_secs(20));
    // Hardware KVM reports a triple fault as a shutdown (reason "reset"); a software KVM that
    // cannot emulate the path reports an internal error ("crash"). Either way the VM ended
    // with a status and this process is still here.
    assert!(matches!(exit.reason, ExitReason::Reset | ExitReason::Crash), "exit {exit:?}");
    eprintln!("triple fault exit: {exit:?}");
}

#[test]
fn host_stop_ends_spinning_halted_and_unstarted_vcpus_as_killed() {
    if skip_without_kvm("host_stop_ends_spinning_halted_and_unstarted_vcpus_as_killed") {
        return;
    }
    // smp with 1 vCPU: the BSP spins forever waiting for an AP that does not exist.
    // idle with 2 vCPUs: the BSP sleeps in HLT inside KVM, the AP waits for a SIPI that never comes.
    for (name, cpus) in [("smp", 1), ("idle", 2)] {
        let log = log_of(&format!("stop-{name}"));
        let s = spec(&guest(name), "", &log).replace(r#""cpus":1"#, &format!(r#""cpus":{cpus}"#));
        let vmm = Vmm::create(&VmConfig::from_json(&s).unwrap()).unwrap();
        vmm.start().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(vmm.poll_exit().is_none(), "{name} ended on its own");
        let t = Instant::now();
        vmm.request_stop();
        let exit = vmm.wait();
        assert_eq!(exit.reason, ExitReason::Killed, "{name}");
        // The boot vCPU was stopped inside the guest image loaded at 1 MiB.
        let stats = vmm.stats_json();
        let rip: u64 = stats.split("\"bspRipAtStop\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!((0x100000..0x101000).contains(&rip), "{name}: rip {rip:#x}, stats {stats}");
        assert!(t.elapsed() < Duration::from_secs(5), "stopping {name} took {:?}", t.elapsed());
    }
}

#[test]
fn hostile_driver_breaks_only_its_own_device() {
    if skip_without_kvm("hostile_driver_breaks_only_its_own_device") {
        return;
    }
    let disk = scratch_dir().join("hostile.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let log = log_of("hostile");
    let extra = format!(r#","disks":[{{"path":"{}","readOnly":true}}]"#, disk.display());
    let cfg = VmConfig::from_json(&spec(&guest("hostile"), &extra, &log)).unwrap();
    let vmm = Vmm::create(&cfg).unwrap();
    vmm.start().unwrap();
    let t = Instant::now();
    while vmm.poll_exit().is_none() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = vmm.stats_json();
    vmm.request_stop();
    let exit = vmm.wait();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.reason, ExitReason::Reset, "exit {exit:?}, console: {out}");
    assert!(out.contains("hostile done: device needs reset"), "console: {out}");
    assert!(stats.contains("is more than a queue ahead"), "stats: {stats}");
    assert_eq!(std::fs::read(&disk).unwrap(), vec![0u8; 4096]);
}

#[test]
fn two_vms_in_one_process_run_independently() {
    if skip_without_kvm("two_vms_in_one_process_run_independently") {
        return;
    }
    // One VM triple-faults while the other prints: the fault ends only its own VM.
    let (log_a, log_b) = (log_of("pair-a"), log_of("pair-b"));
    let a = Vmm::create(&VmConfig::from_json(&spec(&guest("triple"), "", &log_a)).unwrap()).unwrap();
    let b = Vmm::create(&VmConfig::from_json(&spec(&guest("hello"), "", &log_b)).unwrap()).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    let (ea, eb) = (a.wait(), b.wait());
    assert!(matches!(ea.reason, ExitReason::Reset | ExitReason::Crash), "{ea:?}");
    assert_eq!(eb.reason, ExitReason::Reset, "{eb:?}");
    assert!(std::fs::read_to_string(&log_b).unwrap().contains("hello from the guest"));
}
