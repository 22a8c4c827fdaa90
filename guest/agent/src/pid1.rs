// The duties of PID 1 in the sandbox VM: the early mounts and console, finding the virtio port
// named `agent`, building the sandbox root's mounts at INIT, and the way out (sync, unmount,
// reset). Nothing here runs in host-side test mode.

use crate::sys;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::time::{Duration, Instant};

/// Writes one line to the kernel console (in the VM) or stderr (host test mode). The host keeps
/// the console in the sandbox's kernel log, so this is where the agent explains itself.
pub fn log(msg: &str) {
    let line = if LOG_UPTIME.load(Ordering::Relaxed) {
        // Kernel-log style seconds since boot, so the agent's steps line up with the kernel's.
        let ms = uptime_ms().unwrap_or(0);
        format!("msb-agent: [{:5}.{:03}] {msg}\n", ms / 1000, ms % 1000)
    } else {
        format!("msb-agent: {msg}\n")
    };
    sys::write_all_fd(2, line.as_bytes());
}

/// Set once /proc is mounted in the VM; host test mode logs without times.
pub static LOG_UPTIME: AtomicBool = AtomicBool::new(false);

fn mkdir_p(path: &str, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mounts a filesystem, creating the mount point; says what failed in words.
fn mount_at(source: &str, target: &str, fstype: &str, flags: std::os::raw::c_ulong, data: &str) -> Result<(), String> {
    mkdir_p(target, 0o755).map_err(|e| format!("cannot create mount point {target}: {e}"))?;
    sys::mount_fs(source, target, fstype, flags, data).map_err(|e| format!("cannot mount {fstype} on {target}: {e}"))
}

/// Makes sure descriptors 0, 1 and 2 are open, so no pipe the agent creates lands on them
/// (the child's dup2 onto 0..2 relies on it).
pub fn ensure_std_fds() {
    for fd in 0..3 {
        if !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists() {
            if let Ok(null) = sys::open_path("/dev/null", sys::O_RDWR) {
                let _ = sys::dup_onto(null.as_raw_fd(), fd);
            }
        }
    }
}

/// The first things PID 1 does: /proc, /sys and /dev for itself, and stdio on /dev/console.
pub fn early_boot() -> Result<(), String> {
    const NOSUID_NODEV_NOEXEC: std::os::raw::c_ulong = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    let mut errors = Vec::new();
    for (src, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", sys::MS_NOSUID, "mode=0755"),
    ] {
        match mount_at(src, target, fstype, flags, data) {
            Ok(()) => {}
            // Already mounted (a kernel with DEVTMPFS_MOUNT, or a restarted agent): fine.
            Err(_) if is_mounted(target) => {}
            Err(e) => errors.push(e),
        }
    }
    setup_console();
    LOG_UPTIME.store(true, Ordering::Relaxed);
    for e in &errors {
        log(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn is_mounted(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(target)))
        .unwrap_or(false)
}

/// Puts stdio on /dev/console. The kernel opens it for init only when the initramfs has a
/// /dev/console node; devtmpfs always has one.
fn setup_console() {
    match sys::open_path("/dev/console", sys::O_RDWR | sys::O_NOCTTY) {
        Ok(console) => {
            for fd in 0..3 {
                let _ = sys::dup_onto(console.as_raw_fd(), fd);
            }
        }
        Err(_) => ensure_std_fds(),
    }
}

/// Finds the virtio-console port named `agent` and opens it. Ports and their names can appear
/// after init starts (the name arrives in a control message), so keep looking for `wait`.
pub fn open_agent_port(wait: Duration) -> Result<(OwnedFd, String), String> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        let mut seen = Vec::new();
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let dev = entry.file_name().to_string_lossy().into_owned();
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                let name = name.trim_end_matches(['\n', '\0']);
                if name == "agent" {
                    let path = format!("/dev/{dev}");
                    match sys::open_path(&path, sys::O_RDWR | sys::O_NONBLOCK) {
                        Ok(fd) => return Ok((fd, path)),
                        // The node may lag behind sysfs for a moment.
                        Err(e) if Instant::now() < deadline => seen.push(format!("{dev}=agent ({e})")),
                        Err(e) => return Err(format!("cannot open the agent port {path}: {e}")),
                    }
                } else {
                    seen.push(format!("{dev}={name:?}"));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no virtio-console port named \"agent\" after {} s (ports: {}); the VMM must add a \
                 virtserialport with name=agent",
                wait.as_secs(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            ));
        }
        if !logged {
            log("waiting for the virtio-console port named \"agent\"");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mounts the kernel filesystems inside the sandbox root, so the processes chrooted there see a
/// normal Linux system. Returns the mount points (outer paths) in mount order.
pub fn setup_root(root: &str) -> Result<Vec<String>, String> {
    const NOSUID_NODEV_NOEXEC: std::os::raw::c_ulong = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    let base = if root == "/" { String::new() } else { root.trim_end_matches('/').to_string() };
    let at = |p: &str| format!("{base}{p}");
    let mut mounted = Vec::new();
    let mut mount = |src: &str, p: &str, fstype: &str, flags, data: &str| -> Result<(), String> {
        let target = if p.is_empty() { base.clone() } else { at(p) };
        mount_at(src, &target, fstype, flags, data)?;
        mounted.push(target);
        Ok(())
    };
    // With "/" as the root, PID 1 already mounted these at boot.
    if !base.is_empty() {
        // A bind mount of the root onto itself makes it a mount point: inside the chroot,
        // /proc/mounts then has a "/" entry, so df, findmnt and `mount -o remount /` work.
        mount(root, "", "bind", sys::MS_BIND | sys::MS_REC, "")?;
        mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, "")?;
        mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, "")?;
        mount("devtmpfs", "/dev", "devtmpfs", sys::MS_NOSUID, "mode=0755")?;
    }
    // newinstance: the sandbox's ptys are its own; ptmxmode so /dev/ptmx works for everyone.
    mount("devpts", "/dev/pts", "devpts", sys::MS_NOSUID | sys::MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")?;
    mount("tmpfs", "/dev/shm", "tmpfs", sys::MS_NOSUID | sys::MS_NODEV, "mode=1777")?;
    mount("tmpfs", "/run", "tmpfs", sys::MS_NOSUID | sys::MS_NODEV, "mode=0755")?;
    // Links that udev would make; shells use /dev/fd for process substitution.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, at(link)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", at(link))),
        }
    }
    // /tmp stays the root's own directory (private RAM in an initramfs root); it must exist
    // and be world-writable with the sticky bit.
    let tmp = at("/tmp");
    mkdir_p(&tmp, 0o1777).map_err(|e| format!("cannot create {tmp}: {e}"))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(|e| format!("cannot chmod {tmp}: {e}"))?;
    Ok(mounted)
}

/// Milliseconds since the kernel started, from /proc/uptime.
pub fn uptime_ms() -> Option<u64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// The last act of PID 1: flush filesystems, unmount what the sandbox used, reset the VM.
/// `outer_root` brings the agent back out of the sandbox chroot so the mount points resolve.
pub fn power_off(why: &str, outer_root: Option<&OwnedFd>, mounts: &[String]) -> ! {
    log(&format!("powering off: {why}"));
    sys::sync_all();
    if let Some(fd) = outer_root {
        if let Err(e) = sys::return_to_root(fd) {
            log(&format!("cannot leave the sandbox root to unmount it: {e}"));
        }
    }
    for target in mounts.iter().rev() {
        if sys::unmount(target, 0).is_err() {
            let _ = sys::unmount(target, sys::MNT_DETACH);
        }
    }
    sys::sync_all();
    log("reset");
    // The last lines must reach the host's console log before the reset cuts them off.
    sys::drain_console();
    let err = sys::reset_machine();
    // Only reached if the kernel refused; PID 1 must never exit, so wait to be killed.
    log(&format!("reboot(RB_AUTOBOOT) failed: {err}; halting here"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_read_from_proc() {
        let ms = uptime_ms().expect("/proc/uptime is readable on Linux");
        assert!(ms > 0);
    }
}
