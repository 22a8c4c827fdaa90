// The few libc calls the agent needs, declared by hand (std only, no libc crate), with thin safe
// wrappers that turn -1/errno into io::Error and keep raw descriptors inside OwnedFd.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_char, c_int, c_long, c_short, c_uint, c_ulong, c_void};

pub const O_RDWR: c_int = 2;
pub const O_NOCTTY: c_int = 0o400;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_DIRECTORY: c_int = 0o200000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_PATH: c_int = 0o10000000;

const F_GETFL: c_int = 3;
const F_DUPFD_CLOEXEC: c_int = 1030;

// Terminal ioctls (asm-generic/ioctls.h on x86-64).
const TIOCSCTTY: c_ulong = 0x540E;
const TIOCSWINSZ: c_ulong = 0x5414;
const TIOCSPTLCK: c_ulong = 0x4004_5431;
const TIOCGPTPEER: c_ulong = 0x5441;
const F_SETFL: c_int = 4;

pub const POLLIN: c_short = 0x1;
pub const POLLOUT: c_short = 0x4;
pub const POLLERR: c_short = 0x8;
pub const POLLHUP: c_short = 0x10;
pub const POLLNVAL: c_short = 0x20;

pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_BIND: c_ulong = 4096;
pub const MS_REC: c_ulong = 16384;

pub const MNT_DETACH: c_int = 2;
pub const RB_AUTOBOOT: c_int = 0x0123_4567;
const CLOCK_REALTIME: c_int = 0;
pub const WNOHANG: c_int = 1;
const X_OK: c_int = 1;

pub const SIGKILL: c_int = 9;
pub const SIGPIPE: c_int = 13;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
/// Highest signal number Linux accepts (SIGRTMAX).
pub const SIG_MAX: c_int = 64;
const SIG_DFL: usize = 0;
const SIG_SETMASK: c_int = 2;
const SA_NOCLDSTOP: c_int = 1;
const SA_RESTART: c_int = 0x1000_0000;
const PR_SET_CHILD_SUBREAPER: c_int = 36;

pub const ENOENT: c_int = 2;
pub const EINTR: c_int = 4;
pub const EPERM: c_int = 1;
#[cfg(test)]
pub const E2BIG: c_int = 7;
pub const ENOEXEC: c_int = 8;
pub const EISDIR: c_int = 21;
pub const ETXTBSY: c_int = 26;
pub const ELIBBAD: c_int = 80;
pub const EAGAIN: c_int = 11;
pub const EACCES: c_int = 13;

#[repr(C)]
pub struct PollFd {
    pub fd: c_int,
    pub events: c_short,
    pub revents: c_short,
}

#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

/// glibc's `sigset_t`: 1024 bits.
#[repr(C)]
#[derive(Clone, Copy)]
struct SigSet([u64; 16]);

/// glibc's x86-64 `struct sigaction` (not the kernel's: glibc translates).
#[repr(C)]
struct SigAction {
    sa_handler: usize,
    sa_mask: SigSet,
    sa_flags: c_int,
    sa_restorer: usize,
}

extern "C" {
    fn __errno_location() -> *mut c_int;
    fn strerror(errnum: c_int) -> *const c_char;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn chroot(path: *const c_char) -> c_int;
    fn chdir(path: *const c_char) -> c_int;
    fn fchdir(fd: c_int) -> c_int;
    fn access(path: *const c_char, mode: c_int) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn sync();
    fn tcdrain(fd: c_int) -> c_int;
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    fn clock_settime(clock: c_int, ts: *const Timespec) -> c_int;
    fn setsid() -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn fork() -> c_int;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn _exit(code: c_int) -> !;
    fn getpid() -> c_int;
    fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn setgroups(size: usize, list: *const c_uint) -> c_int;
    fn setgid(gid: c_uint) -> c_int;
    fn setuid(uid: c_uint) -> c_int;
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut i64, count: usize) -> isize;
}

pub fn errno() -> c_int {
    // SAFETY: glibc returns a valid pointer to this thread's errno.
    unsafe { *__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as above.
    unsafe { *__errno_location() = value }
}

/// The C library's text for an errno value ("No such file or directory").
pub fn errno_text(errnum: c_int) -> String {
    // SAFETY: strerror returns a NUL-terminated static or thread-local string.
    let text = unsafe { CStr::from_ptr(strerror(errnum)) };
    text.to_string_lossy().into_owned()
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub fn open_path(path: &str, flags: c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: p is a valid C string; the mode argument is only read with O_CREAT (never used).
    let fd = check(unsafe { open(p.as_ptr(), flags | O_CLOEXEC, 0 as c_uint) })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

/// Copies up to `count` bytes from `in_fd` (a regular file, at its offset) to `out_fd` inside the
/// kernel: one copy instead of the two of read(2) then write(2).
pub fn send_file(out_fd: RawFd, in_fd: RawFd, count: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain descriptors; a null offset means "use and advance the file offset".
        let n = unsafe { sendfile(out_fd, in_fd, std::ptr::null_mut(), count) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

/// Reads up to `max` bytes onto the end of `out`, into its spare capacity: no zero-filling of
/// room the read may not use (a pipe or console read often returns far less than asked).
pub fn read_append(fd: RawFd, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    out.reserve(max);
    let len = out.len();
    loop {
        // SAFETY: reserve() made room for `max` more bytes past len; read writes at most max.
        let n = unsafe { read(fd, out.as_mut_ptr().add(len).cast(), max) };
        if n >= 0 {
            // SAFETY: read initialised exactly n (<= max) bytes past len.
            unsafe { out.set_len(len + n as usize) };
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

/// Writes all of `buf` to a blocking descriptor (the console), giving up on the first error.
pub fn write_all_fd(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match write_fd(fd, buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf = &buf[n..],
        }
    }
}

/// A second descriptor for the same open file (close-on-exec).
pub fn dup_fd(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let new = check(unsafe { fcntl(fd.as_raw_fd(), F_DUPFD_CLOEXEC, 3 as c_int) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[repr(C)]
struct WinSize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

/// Opens a new pseudo-terminal pair of the devpts instance at /dev/pts: (master, slave).
/// TIOCGPTPEER opens the slave without a path lookup (Linux 4.13+).
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = open_path("/dev/ptmx", O_RDWR | O_NOCTTY)?;
    let unlock: c_int = 0;
    // SAFETY: ioctls on the master we hold, with pointers to live values.
    check(unsafe { ioctl(master.as_raw_fd(), TIOCSPTLCK, &unlock as *const c_int) })?;
    let slave = check(unsafe { ioctl(master.as_raw_fd(), TIOCGPTPEER, (O_RDWR | O_NOCTTY | O_CLOEXEC) as c_ulong) })?;
    // SAFETY: slave is a fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_window_size(&master, rows, cols)?;
    Ok((master, slave))
}

/// Sets a terminal's size; the kernel sends SIGWINCH to its foreground process group.
pub fn set_window_size(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = WinSize { rows, cols, xpixel: 0, ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a struct winsize from a valid pointer.
    check(unsafe { ioctl(master.as_raw_fd(), TIOCSWINSZ, &ws as *const WinSize) })?;
    Ok(())
}

/// An ioctl whose argument is a struct the caller owns (interface and route requests).
pub fn ioctl_struct<T>(fd: RawFd, request: c_ulong, arg: &mut T) -> io::Result<()> {
    if unsafe { ioctl(fd, request, arg as *mut T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor we hold.
    let flags = check(unsafe { fcntl(fd, F_GETFL) })?;
    check(unsafe { fcntl(fd, F_SETFL, flags | O_NONBLOCK) })?;
    Ok(())
}

/// A pipe whose both ends are close-on-exec and blocking; callers make their own end
/// non-blocking (the child's end must stay blocking: programs do not expect EAGAIN on stdout).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check(unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) })?;
    // SAFETY: both descriptors are fresh and owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn poll_fds(fds: &mut [PollFd], timeout_ms: c_int) -> io::Result<usize> {
    // SAFETY: fds is a valid array of pollfd structs.
    let n = unsafe { poll(fds.as_mut_ptr(), fds.len() as c_ulong, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(EINTR) {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

pub fn mount_fs(source: &str, target: &str, fstype: &str, flags: c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let data_ptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() };
    // SAFETY: all pointers are valid C strings or null.
    check(unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, data_ptr) })?;
    Ok(())
}

pub fn unmount(target: &str, flags: c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: t is a valid C string.
    check(unsafe { umount2(t.as_ptr(), flags) })?;
    Ok(())
}

pub fn change_root(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is a valid C string.
    check(unsafe { chroot(p.as_ptr()) })?;
    check(unsafe { chdir(c"/".as_ptr()) })?;
    Ok(())
}

/// Leaves a chroot by returning to a directory opened before entering it (PID 1 only does this
/// at power-off, to unmount what it mounted outside the sandbox root).
pub fn return_to_root(outer_root: &OwnedFd) -> io::Result<()> {
    // SAFETY: fchdir/chroot on a descriptor we hold and a static C string.
    check(unsafe { fchdir(outer_root.as_raw_fd()) })?;
    check(unsafe { chroot(c".".as_ptr()) })?;
    check(unsafe { chdir(c"/".as_ptr()) })?;
    Ok(())
}

pub fn is_executable(path: &str) -> bool {
    match cstr(path) {
        // SAFETY: p is a valid C string.
        Ok(p) => unsafe { access(p.as_ptr(), X_OK) == 0 },
        Err(_) => false,
    }
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe name's bytes.
    check(unsafe { sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

pub fn set_clock_ms(ms: u64) -> io::Result<()> {
    let ts = Timespec { tv_sec: (ms / 1000) as c_long, tv_nsec: ((ms % 1000) * 1_000_000) as c_long };
    // SAFETY: ts is a valid timespec.
    check(unsafe { clock_settime(CLOCK_REALTIME, &ts) })?;
    Ok(())
}

/// Waits until the console (fd 2) has transmitted what was written to it, so the last log
/// lines reach the host before a reset. Not a tty (host test mode): returns at once.
pub fn drain_console() {
    // SAFETY: tcdrain on a descriptor number; an error (not a tty) is ignored.
    unsafe { tcdrain(2) };
}

pub fn sync_all() {
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { sync() }
}

/// Resets the machine. The guest kernel runs with `reboot=k` and the VMM treats the reset as
/// "guest stopped" (QEMU with -no-reboot exits), so this is the power-off path.
pub fn reset_machine() -> io::Error {
    // SAFETY: reboot only returns on failure.
    unsafe { reboot(RB_AUTOBOOT) };
    io::Error::last_os_error()
}

pub fn send_signal(pid: c_int, sig: c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { kill(pid, sig) })?;
    Ok(())
}

pub fn my_pid() -> c_int {
    // SAFETY: getpid cannot fail.
    unsafe { getpid() }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

impl WaitStatus {
    pub fn from_raw(status: c_int) -> WaitStatus {
        let sig = status & 0x7f;
        if sig == 0 {
            WaitStatus::Exited((status >> 8) & 0xff)
        } else {
            WaitStatus::Signaled(sig)
        }
    }
}

/// Reaps one exited child, if any: Ok(None) when children remain but none has exited,
/// Err(ECHILD) when there are no children at all.
pub fn reap_any() -> io::Result<Option<(c_int, WaitStatus)>> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid > 0 {
            return Ok(Some((pid, WaitStatus::from_raw(status))));
        }
        if pid == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

/// Waits for one specific child (tests only: the server reaps with reap_any).
#[cfg(test)]
pub fn wait_for(pid: c_int) -> io::Result<WaitStatus> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        if unsafe { waitpid(pid, &mut status, 0) } == pid {
            return Ok(WaitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(EINTR) {
            return Err(err);
        }
    }
}

/// The write end of the SIGCHLD self-pipe, read by the async-signal handler.
static SIGCHLD_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_sigchld(_sig: c_int) {
    let saved = errno();
    let fd = SIGCHLD_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write is async-signal-safe; a full pipe (EAGAIN) already means "wake up".
        unsafe { write(fd, (&byte as *const u8).cast(), 1) };
    }
    set_errno(saved);
}

/// Installs the SIGCHLD handler and returns the non-blocking read end of its self-pipe, which
/// becomes readable whenever a child has changed state: poll() then never misses an exit.
pub fn sigchld_pipe() -> io::Result<OwnedFd> {
    let (r, w) = pipe()?;
    set_nonblocking(r.as_raw_fd())?;
    set_nonblocking(w.as_raw_fd())?;
    // The write end lives as long as the process: the handler may fire at any time.
    let w = std::mem::ManuallyDrop::new(w);
    SIGCHLD_PIPE.store(w.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    let act = SigAction {
        sa_handler: on_sigchld as *const () as usize,
        sa_mask: SigSet([0; 16]),
        sa_flags: SA_NOCLDSTOP | SA_RESTART,
        sa_restorer: 0,
    };
    // SAFETY: act is a valid sigaction; the handler is async-signal-safe.
    check(unsafe { sigaction(SIGCHLD, &act, std::ptr::null_mut()) })?;
    Ok(r)
}

/// Outside the VM, makes orphaned grandchildren re-parent to the agent as they would to PID 1,
/// so the reaping code runs the same way in host-side tests.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

/// What the forked child must do before it becomes the program. Everything is prepared by the
/// parent, because between fork and exec the child may only make async-signal-safe calls.
pub struct ChildSetup<'a> {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub cwd: &'a CStr,
    pub program: &'a CStr,
    pub argv: &'a [*const c_char],
    pub envp: &'a [*const c_char],
    /// stdin is a terminal that becomes the child's controlling terminal.
    pub controlling_tty: bool,
    /// Where the child reports a failure before exec: one stage byte and the errno (4 bytes BE).
    pub report: RawFd,
    /// Switch to (uid, gid, supplementary groups) before entering `cwd`; None: stay root.
    pub identity: Option<(u32, u32, &'a [u32])>,
}

/// Stage byte the child reports when it fails before the program runs.
pub const STAGE_SETUP: u8 = 1;
pub const STAGE_CWD: u8 = 2;
pub const STAGE_EXEC: u8 = 3;
pub const STAGE_USER: u8 = 4;

/// Forks a child that runs `setup` and returns its pid. The child is a session and process-group
/// leader, so a signal to `-pid` reaches everything it starts.
pub fn fork_exec(setup: &ChildSetup) -> io::Result<c_int> {
    // SAFETY: the child branch only calls async-signal-safe functions and never returns.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY (whole block): we are the child of a fork; nothing here allocates or takes locks.
    unsafe {
        let fail = |stage: u8| -> ! {
            let e = errno();
            let msg = [stage, (e >> 24) as u8, (e >> 16) as u8, (e >> 8) as u8, e as u8];
            write(setup.report, msg.as_ptr().cast(), msg.len());
            _exit(127)
        };
        let empty = SigSet([0; 16]);
        sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE in the agent; an ignored disposition survives exec.
        let dfl = SigAction { sa_handler: SIG_DFL, sa_mask: empty, sa_flags: 0, sa_restorer: 0 };
        sigaction(SIGPIPE, &dfl, std::ptr::null_mut());
        if setsid() < 0 {
            fail(STAGE_SETUP);
        }
        if dup2(setup.stdin, 0) < 0 || dup2(setup.stdout, 1) < 0 || dup2(setup.stderr, 2) < 0 {
            fail(STAGE_SETUP);
        }
        // As a new session leader without a terminal, claim this one (job control, ^C).
        if setup.controlling_tty && ioctl(0, TIOCSCTTY, 0 as c_int) < 0 {
            fail(STAGE_SETUP);
        }
        // Everything the agent holds is close-on-exec already; this also drops descriptors the
        // agent may have inherited (in host-side test mode). Failure (old kernel) is harmless.
        // The report pipe must survive until exec, so only close above it when it is low.
        if setup.report > 3 {
            close_range(3, (setup.report - 1) as c_uint, 0);
        }
        close_range((setup.report + 1).max(3) as c_uint, c_uint::MAX, 0);
        // Groups first: once the uid is not 0, the process may no longer change them.
        if let Some((uid, gid, groups)) = setup.identity {
            if setgroups(groups.len(), groups.as_ptr()) < 0 || setgid(gid) < 0 || setuid(uid) < 0 {
                fail(STAGE_USER);
            }
        }
        if chdir(setup.cwd.as_ptr()) < 0 {
            fail(STAGE_CWD);
        }
        execve(setup.program.as_ptr(), setup.argv.as_ptr(), setup.envp.as_ptr());
        fail(STAGE_EXEC)
    }
}

pub fn dup_onto(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptors the caller owns.
    check(unsafe { dup2(old, new) })?;
    Ok(())
}

pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit ends the process immediately.
    unsafe { _exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decodes_exit_and_signal() {
        assert_eq!(WaitStatus::from_raw(7 << 8), WaitStatus::Exited(7));
        assert_eq!(WaitStatus::from_raw(0), WaitStatus::Exited(0));
        assert_eq!(WaitStatus::from_raw(9), WaitStatus::Signaled(9));
        // Core-dump flag (0x80) does not change the signal number.
        assert_eq!(WaitStatus::from_raw(0x80 | 11), WaitStatus::Signaled(11));
    }

    #[test]
    fn errno_text_is_the_c_library_text() {
        assert_eq!(errno_text(ENOENT), "No such file or directory");
    }

    #[test]
    fn pipe_round_trip_and_nonblocking_read() {
        let (r, w) = pipe().unwrap();
        set_nonblocking(r.as_raw_fd()).unwrap();
        let mut buf = [0u8; 8];
        let err = read_fd(r.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EAGAIN));
        assert_eq!(write_fd(w.as_raw_fd(), b"abc").unwrap(), 3);
        assert_eq!(read_fd(r.as_raw_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        drop(w);
        assert_eq!(read_fd(r.as_raw_fd(), &mut buf).unwrap(), 0);
    }
}
