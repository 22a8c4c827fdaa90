// Shared helpers for the real-KVM suites: assembling the freestanding guests with binutils and
// running them through the VMM.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Skips (returns true) when there is no usable /dev/kvm, saying why.
pub fn skip_without_kvm(test: &str) -> bool {
    if !kvm_available() {
        eprintln!("SKIP {test}: /dev/kvm is not available to this user on this host");
        return true;
    }
    false
}

pub fn scratch_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("msbvmm-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Assembles native/guests/<name>.S into an ELF with a PVH note; returns its path.
pub fn guest(name: &str) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests");
    let out = scratch_dir();
    let obj = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    if elf.exists() {
        return elf; // built earlier in this test process
    }
    let st = Command::new("as")
        .args(["--64", "-I"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .arg(src.join(format!("{name}.S")))
        .status()
        .expect("running `as` (binutils) to build the test guest");
    assert!(st.success(), "assembling guest {name} failed");
    let st = Command::new("ld")
        .args(["-m", "elf_x86_64", "--no-warn-rwx-segments", "-T"])
        .arg(src.join("guest.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&obj)
        .status()
        .expect("running `ld` (binutils) to link the test guest");
    assert!(st.success(), "linking guest {name} failed");
    elf
}

pub fn spec(kernel: &Path, extra: &str, log: &Path) -> String {
    format!(
        r#"{{"kernel":"{}","cmdline":"console=ttyS0 reboot=k","cpus":1,"memoryMiB":32,"rng":false,"consoleLog":"{}"{}}}"#,
        kernel.display(),
        log.display(),
        extra
    )
}
