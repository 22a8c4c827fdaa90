// The C ABI bun:ffi loads: create from a JSON spec, start, request stop, wait or poll for the
// exit, destroy, last error. Handles are opaque integers looked up in a registry, so a stale or
// made-up handle is an error, never a wild pointer. No panic crosses the boundary.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::vhost_user::VhostUserFs;
use crate::vmm::{VmConfig, VmExit, Vmm};
use crate::vstate::kvm;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn registry() -> &'static Mutex<HashMap<u64, Arc<Vmm>>> {
    static R: OnceLock<Mutex<HashMap<u64, Arc<Vmm>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn set_error(e: impl Into<String>) {
    LAST_ERROR.with(|l| *l.borrow_mut() = e.into());
}

fn lookup(h: u64) -> Option<Arc<Vmm>> {
    let v = registry().lock().unwrap_or_else(|p| p.into_inner()).get(&h).cloned();
    if v.is_none() {
        set_error(format!("unknown VM handle {h}"));
    }
    v
}

fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            set_error("internal panic in the native VMM (a bug; please report it)");
            fallback
        }
    }
}

/// Copies `s` (NUL-terminated, truncated to fit) into `buf`; returns the full length of `s`.
/// `buf` must be NULL or point at `len` writable bytes (the C caller's promise).
unsafe fn copy_out(s: &str, buf: *mut u8, len: usize) -> i32 {
    if !buf.is_null() && len > 0 {
        let n = s.len().min(len - 1);
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf, n);
            *buf.add(n) = 0;
        }
    }
    s.len() as i32
}

unsafe fn write_exit(e: &VmExit, buf: *mut u8, len: usize) -> i32 {
    copy_out(&e.detail, buf, len);
    e.reason as i32
}

/// Creates a VM from a JSON VmSpec. Returns a handle > 0, or 0 on error (see msb_last_error).
/// # Safety
/// `spec_json` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn msb_vm_create(spec_json: *const c_char) -> u64 {
    guarded(0, || {
        if spec_json.is_null() {
            set_error("msb_vm_create: spec is NULL");
            return 0;
        }
        let spec = match unsafe { CStr::from_ptr(spec_json) }.to_str() {
            Ok(s) => s,
            Err(_) => {
                set_error("msb_vm_create: spec is not UTF-8");
                return 0;
            }
        };
        let cfg = match VmConfig::from_json(spec) {
            Ok(c) => c,
            Err(e) => {
                set_error(e.to_string());
                return 0;
            }
        };
        match Vmm::create(&cfg) {
            Ok(vmm) => {
                let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
                registry().lock().unwrap_or_else(|p| p.into_inner()).insert(h, Arc::new(vmm));
                h
            }
            Err(e) => {
                set_error(e.to_string());
                0
            }
        }
    })
}

/// Starts the vCPU and device threads. 0 on success, -1 on error.
#[no_mangle]
pub extern "C" fn msb_vm_start(h: u64) -> i32 {
    guarded(-1, || match lookup(h) {
        Some(v) => match v.start() {
            Ok(()) => 0,
            Err(e) => {
                set_error(e.to_string());
                -1
            }
        },
        None => -1,
    })
}

/// Asks the VM to stop now (the guest gets no warning). Idempotent. 0, or -1 for a bad handle.
#[no_mangle]
pub extern "C" fn msb_vm_request_stop(h: u64) -> i32 {
    guarded(-1, || match lookup(h) {
        Some(v) => {
            v.request_stop();
            0
        }
        None => -1,
    })
}

/// Blocks until the VM ends. Returns the reason (1 reset, 2 poweroff, 3 crash, 4 killed,
/// 5 error) and writes the detail into `buf`; -1 for a bad handle.
/// # Safety
/// `buf` must be NULL or point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn msb_vm_wait(h: u64, buf: *mut u8, len: usize) -> i32 {
    guarded(-1, || match lookup(h) {
        Some(v) => write_exit(&v.wait(), buf, len),
        None => -1,
    })
}

/// Non-blocking: 0 while running, else as msb_vm_wait (threads are joined first).
/// # Safety
/// `buf` must be NULL or point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn msb_vm_poll_exit(h: u64, buf: *mut u8, len: usize) -> i32 {
    guarded(-1, || match lookup(h) {
        Some(v) => match v.poll_exit() {
            Some(_) => write_exit(&v.wait(), buf, len),
            None => 0,
        },
        None => -1,
    })
}

/// Stops the VM if needed and frees everything. 0, or -1 for a bad handle.
#[no_mangle]
pub extern "C" fn msb_vm_destroy(h: u64) -> i32 {
    guarded(-1, || {
        let v = registry().lock().unwrap_or_else(|p| p.into_inner()).remove(&h);
        match v {
            Some(v) => {
                v.request_stop();
                drop(v); // joins threads and unmaps memory once the last reference goes
                0
            }
            None => {
                set_error(format!("unknown VM handle {h}"));
                -1
            }
        }
    })
}

/// Counters and timestamps as JSON (see native/README.md). Returns the full length.
/// # Safety
/// `buf` must be NULL or point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn msb_vm_stats(h: u64, buf: *mut u8, len: usize) -> i32 {
    guarded(-1, || match lookup(h) {
        Some(v) => copy_out(&v.stats_json(), buf, len),
        None => -1,
    })
}

/// The calling thread's last error message. Returns its full length.
/// # Safety
/// `buf` must be NULL or point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn msb_last_error(buf: *mut u8, len: usize) -> i32 {
    LAST_ERROR.with(|l| copy_out(&l.borrow(), buf, len))
}

/// 1: hardware KVM, 0: software KVM (kvm_pvm; guest kernel code is emulated), -1: no /dev/kvm.
#[no_mangle]
pub extern "C" fn msb_kvm_kind() -> i32 {
    kvm::kvm_kind() as i32
}

/// ABI version; bumped on any change to these functions (2: vhost-user-fs backends).
#[no_mangle]
pub extern "C" fn msb_abi_version() -> u32 {
    2
}

fn fs_registry() -> &'static Mutex<HashMap<u64, VhostUserFs>> {
    static R: OnceLock<Mutex<HashMap<u64, VhostUserFs>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Option<&'a str> {
    if p.is_null() {
        set_error(format!("{what} is NULL"));
        return None;
    }
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(s) => Some(s),
        Err(_) => {
            set_error(format!("{what} is not UTF-8"));
            None
        }
    }
}

/// Starts a vhost-user-fs backend on its own thread: listens on `socket_path` (must not exist),
/// serves `shared_dir` (read-only when `read_only` != 0) to the first front end (QEMU's
/// vhost-user-fs-device) that connects. Returns a handle > 0, or 0 on error.
/// # Safety
/// `socket_path` and `shared_dir` must be NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn msb_vhost_user_fs_start(socket_path: *const c_char, shared_dir: *const c_char, read_only: i32) -> u64 {
    guarded(0, || {
        let (Some(sock), Some(dir)) = (unsafe { arg_str(socket_path, "socket path") }, unsafe { arg_str(shared_dir, "shared directory") }) else {
            return 0;
        };
        match VhostUserFs::start(sock, dir, read_only != 0) {
            Ok(b) => {
                let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
                fs_registry().lock().unwrap_or_else(|p| p.into_inner()).insert(h, b);
                h
            }
            Err(e) => {
                set_error(e.to_string());
                0
            }
        }
    })
}

/// 0 while the backend serves, 1 once it has ended (front end gone or stopped), -1 bad handle.
#[no_mangle]
pub extern "C" fn msb_vhost_user_fs_finished(h: u64) -> i32 {
    guarded(-1, || match fs_registry().lock().unwrap_or_else(|p| p.into_inner()).get(&h) {
        Some(b) => b.is_finished() as i32,
        None => {
            set_error(format!("unknown vhost-user-fs handle {h}"));
            -1
        }
    })
}

/// Stops the backend, joins its thread, removes the socket and frees the handle. 0 if it ended
/// cleanly, 1 if it had ended with an error (msb_last_error says which), -1 for a bad handle.
#[no_mangle]
pub extern "C" fn msb_vhost_user_fs_stop(h: u64) -> i32 {
    guarded(-1, || {
        let b = fs_registry().lock().unwrap_or_else(|p| p.into_inner()).remove(&h);
        match b {
            Some(mut b) => match b.stop() {
                Ok(()) => 0,
                Err(e) => {
                    set_error(e);
                    1
                }
            },
            None => {
                set_error(format!("unknown vhost-user-fs handle {h}"));
                -1
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut b = vec![0u8; 512];
        let n = unsafe { msb_last_error(b.as_mut_ptr(), b.len()) } as usize;
        String::from_utf8_lossy(&b[..n.min(511)]).into_owned()
    }

    #[test]
    fn bad_handles_and_specs_are_errors_not_crashes() {
        assert_eq!(msb_vm_start(987654), -1);
        assert!(last_error().contains("unknown VM handle"));
        assert_eq!(unsafe { msb_vm_wait(987654, std::ptr::null_mut(), 0) }, -1);
        assert_eq!(msb_vm_destroy(987654), -1);
        assert_eq!(unsafe { msb_vm_create(std::ptr::null()) }, 0);
        let spec = std::ffi::CString::new("{not json").unwrap();
        assert_eq!(unsafe { msb_vm_create(spec.as_ptr()) }, 0);
        assert!(last_error().contains("invalid JSON"));
        let spec = std::ffi::CString::new(r#"{"kernel":"/nonexistent/vmlinux","cpus":1,"memoryMiB":64,"rng":false}"#).unwrap();
        assert_eq!(unsafe { msb_vm_create(spec.as_ptr()) }, 0);
        let e = last_error();
        assert!(e.contains("/nonexistent/vmlinux") || e.contains("/dev/kvm"), "{e}");
    }

    #[test]
    fn copy_out_truncates_and_terminates() {
        let mut b = [0xffu8; 4];
        assert_eq!(unsafe { copy_out("hello", b.as_mut_ptr(), 4) }, 5);
        assert_eq!(&b, b"hel\0");
    }
}
