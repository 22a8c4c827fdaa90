// The few libc symbols and KVM ioctl numbers the VMM needs, declared by hand (std only, no libc
// crate). Numbers were taken from <linux/kvm.h> on x86-64.

use std::io;
use std::os::raw::{c_int, c_long, c_void};
use std::os::unix::io::RawFd;

extern "C" {
    pub fn ioctl(fd: c_int, request: u64, ...) -> c_int;
    pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    pub fn eventfd(initval: u32, flags: c_int) -> c_int;
    pub fn poll(fds: *mut PollFd, nfds: u64, timeout: c_int) -> c_int;
    pub fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    pub fn close(fd: c_int) -> c_int;
    pub fn pthread_kill(thread: u64, sig: c_int) -> c_int;
    pub fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    pub fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    pub fn __libc_current_sigrtmin() -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn syscall(num: c_long, ...) -> c_long;
    pub fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
}

pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_SHARED: c_int = 1;
pub const MAP_PRIVATE: c_int = 2;
pub const MAP_ANONYMOUS: c_int = 0x20;
pub const MAP_NORESERVE: c_int = 0x4000;
pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
pub const MADV_DONTFORK: c_int = 10;
pub const EFD_CLOEXEC: c_int = 0o2000000;
pub const EFD_NONBLOCK: c_int = 0o4000;
pub const POLLIN: i16 = 1;
pub const POLLOUT: i16 = 4;
pub const POLLERR: i16 = 8;
pub const POLLHUP: i16 = 0x10;
pub const POLLNVAL: i16 = 0x20;
pub const F_GETFL: c_int = 3;
pub const F_SETFL: c_int = 4;
pub const O_NONBLOCK: c_int = 0o4000;
pub const SIG_UNBLOCK: c_int = 1;
pub const EINTR: i32 = 4;
pub const EAGAIN: i32 = 11;
/// send() flag: a closed peer gives EPIPE instead of a SIGPIPE that would kill the host process.
pub const MSG_NOSIGNAL: c_int = 0x4000;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PollFd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
pub struct SigSet {
    pub bits: [u64; 16],
}

#[repr(C)]
pub struct SigAction {
    pub sa_handler: usize,
    pub sa_mask: SigSet,
    pub sa_flags: c_int,
    pub sa_restorer: usize,
}

// KVM ioctls.
pub const KVM_GET_API_VERSION: u64 = 0xae00;
pub const KVM_CREATE_VM: u64 = 0xae01;
pub const KVM_CHECK_EXTENSION: u64 = 0xae03;
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = 0xae04;
pub const KVM_GET_SUPPORTED_CPUID: u64 = 0xc008ae05;
pub const KVM_CREATE_VCPU: u64 = 0xae41;
pub const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020ae46;
pub const KVM_SET_TSS_ADDR: u64 = 0xae47;
pub const KVM_SET_IDENTITY_MAP_ADDR: u64 = 0x4008ae48;
pub const KVM_CREATE_IRQCHIP: u64 = 0xae60;
pub const KVM_IRQ_LINE: u64 = 0x4008ae61;
pub const KVM_IRQFD: u64 = 0x4020ae76;
pub const KVM_CREATE_PIT2: u64 = 0x4040ae77;
pub const KVM_IOEVENTFD: u64 = 0x4040ae79;
pub const KVM_RUN: u64 = 0xae80;
pub const KVM_GET_REGS: u64 = 0x8090ae81;
pub const KVM_SET_REGS: u64 = 0x4090ae82;
pub const KVM_GET_SREGS: u64 = 0x8138ae83;
pub const KVM_SET_SREGS: u64 = 0x4138ae84;
pub const KVM_SET_MSRS: u64 = 0x4008ae89;
pub const KVM_SET_FPU: u64 = 0x41a0ae8d;
pub const KVM_GET_LAPIC: u64 = 0x8400ae8e;
pub const KVM_SET_LAPIC: u64 = 0x4400ae8f;
pub const KVM_SET_CPUID2: u64 = 0x4008ae90;

pub const KVM_CAP_IRQCHIP: u64 = 0;
pub const KVM_CAP_USER_MEMORY: u64 = 3;
pub const KVM_CAP_IRQFD: u64 = 0x20;
pub const KVM_CAP_PIT2: u64 = 0x21;
pub const KVM_CAP_IOEVENTFD: u64 = 0x24;
pub const KVM_CAP_IMMEDIATE_EXIT: u64 = 0x88;

pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs an ioctl that reads a struct from us; maps -1 to the OS error.
pub fn ioctl_ptr<T>(fd: RawFd, req: u64, arg: &T) -> io::Result<c_int> {
    let r = unsafe { ioctl(fd, req, arg as *const T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs an ioctl that fills in a struct for us.
pub fn ioctl_out<T>(fd: RawFd, req: u64, arg: &mut T) -> io::Result<c_int> {
    let r = unsafe { ioctl(fd, req, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs an ioctl whose argument is a plain integer.
pub fn ioctl_val(fd: RawFd, req: u64, arg: u64) -> io::Result<c_int> {
    let r = unsafe { ioctl(fd, req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An owned eventfd; used for ioeventfd/irqfd and to wake the device thread.
pub struct EventFd {
    fd: RawFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        let fd = unsafe { eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd { fd })
    }
    pub fn fd(&self) -> RawFd {
        self.fd
    }
    pub fn signal(&self) {
        let one: u64 = 1;
        // A full counter (EAGAIN) still means "signalled"; nothing to do on failure.
        unsafe { write(self.fd, &one as *const u64 as *const c_void, 8) };
    }
    /// Drains the counter; returns whether it had been signalled.
    pub fn consume(&self) -> bool {
        let mut v: u64 = 0;
        let r = unsafe { read(self.fd, &mut v as *mut u64 as *mut c_void, 8) };
        r == 8 && v > 0
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        unsafe { close(self.fd) };
    }
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let fl = unsafe { fcntl(fd, F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { fcntl(fd, F_SETFL, fl | O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> c_int {
    unsafe { __libc_current_sigrtmin() + 6 }
}

extern "C" fn noop_handler(_sig: c_int) {}

/// Installs a no-op handler for the kick signal (once per process) so it interrupts KVM_RUN
/// instead of killing the host process.
pub fn install_kick_handler() -> io::Result<()> {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    static mut RESULT: i32 = 0;
    ONCE.call_once(|| {
        let act = SigAction { sa_handler: noop_handler as extern "C" fn(c_int) as usize, sa_mask: SigSet { bits: [0; 16] }, sa_flags: 0, sa_restorer: 0 };
        let r = unsafe { sigaction(kick_signal(), &act, std::ptr::null_mut()) };
        unsafe { RESULT = if r < 0 { errno() } else { 0 } };
    });
    let r = unsafe { RESULT };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Unblocks the kick signal in the calling thread (threads inherit the creator's mask).
pub fn unblock_kick_signal() {
    let mut set = SigSet { bits: [0; 16] };
    let s = (kick_signal() - 1) as usize;
    set.bits[s / 64] |= 1u64 << (s % 64);
    unsafe { pthread_sigmask(SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}
