// The host file-system calls the FUSE server makes, declared by hand (std only). Every path the
// guest names goes through `openat2` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS relative to an O_PATH directory fd the server already holds; the only
// absolute paths used are /proc/self/fd/N re-opens of fds the server itself verified.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};

extern "C" {
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
    fn fstatat(dirfd: c_int, path: *const c_char, st: *mut Stat, flags: c_int) -> c_int;
    fn fstatfs(fd: c_int, st: *mut StatFs) -> c_int;
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: c_uint) -> c_int;
    fn mknodat(dirfd: c_int, path: *const c_char, mode: c_uint, dev: u64) -> c_int;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn renameat2(olddir: c_int, old: *const c_char, newdir: c_int, new: *const c_char, flags: c_uint) -> c_int;
    fn linkat(olddir: c_int, old: *const c_char, newdir: c_int, new: *const c_char, flags: c_int) -> c_int;
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, len: usize) -> isize;
    fn fchmod(fd: c_int, mode: c_uint) -> c_int;
    fn fchmodat(dirfd: c_int, path: *const c_char, mode: c_uint, flags: c_int) -> c_int;
    fn ftruncate(fd: c_int, len: i64) -> c_int;
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const [Timespec; 2], flags: c_int) -> c_int;
    fn pread(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize;
    fn pwrite(fd: c_int, buf: *const c_void, n: usize, off: i64) -> isize;
    fn lseek(fd: c_int, off: i64, whence: c_int) -> i64;
    fn fsync(fd: c_int) -> c_int;
    fn fdatasync(fd: c_int) -> c_int;
    fn fallocate(fd: c_int, mode: c_int, off: i64, len: i64) -> c_int;
    fn syscall(num: c_long, ...) -> c_long;
}

const SYS_OPENAT2: c_long = 437;
const SYS_GETDENTS64: c_long = 217;

pub const AT_FDCWD: c_int = -100;
pub const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
pub const AT_REMOVEDIR: c_int = 0x200;
pub const AT_SYMLINK_FOLLOW: c_int = 0x400;
pub const AT_EMPTY_PATH: c_int = 0x1000;

pub const O_RDONLY: i32 = 0;
pub const O_WRONLY: i32 = 1;
pub const O_RDWR: i32 = 2;
pub const O_ACCMODE: i32 = 3;
pub const O_CREAT: i32 = 0o100;
pub const O_EXCL: i32 = 0o200;
pub const O_TRUNC: i32 = 0o1000;
pub const O_APPEND: i32 = 0o2000;
pub const O_DSYNC: i32 = 0o10000;
pub const O_DIRECTORY: i32 = 0o200000;
pub const O_NOFOLLOW: i32 = 0o400000;
pub const O_CLOEXEC: i32 = 0o2000000;
pub const O_SYNC: i32 = 0o4010000;
pub const O_PATH: i32 = 0o10000000;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const EBADF: i32 = 9;
pub const EACCES: i32 = 13;
pub const EEXIST: i32 = 17;
pub const EXDEV: i32 = 18;
pub const ENOTDIR: i32 = 20;
pub const EISDIR: i32 = 21;
pub const EINVAL: i32 = 22;
pub const EMFILE: i32 = 24;
pub const ENOSPC: i32 = 28;
pub const EROFS: i32 = 30;
pub const ERANGE: i32 = 34;
pub const ENAMETOOLONG: i32 = 36;
pub const ENOSYS: i32 = 38;
pub const ENODATA: i32 = 61;
pub const ELOOP: i32 = 40;
pub const EOPNOTSUPP: i32 = 95;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    _pad0: i32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: i64,
    pub atime_nsec: i64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    _reserved: [i64; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct StatFs {
    pub f_type: i64,
    pub bsize: i64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub fsid: [i32; 2],
    pub namelen: i64,
    pub frsize: i64,
    pub flags: i64,
    pub spare: [i64; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}
pub const UTIME_NOW: i64 = (1 << 30) - 1;
pub const UTIME_OMIT: i64 = (1 << 30) - 2;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(EIO)
}

fn check(r: c_int) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn cstr(s: &[u8]) -> Result<CString, i32> {
    CString::new(s).map_err(|_| EINVAL)
}

/// Opens `name` (one component, already validated) beneath `dir`, never following a symlink
/// and never leaving `dir`, whatever the guest raced into place.
pub fn open_beneath(dir: c_int, name: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let c = cstr(name)?;
    let how = OpenHow {
        flags: (flags | O_NOFOLLOW | O_CLOEXEC) as u32 as u64,
        mode: if flags & O_CREAT != 0 { mode as u64 } else { 0 },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    let r = unsafe { syscall(SYS_OPENAT2, dir as c_long, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
    if r < 0 {
        return Err(errno());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r as c_int) })
}

/// Opens a host directory as the share's root (O_PATH, the start of every lookup).
pub fn open_root(path: &str) -> Result<OwnedFd, i32> {
    let c = cstr(path.as_bytes())?;
    let r = unsafe { openat(AT_FDCWD, c.as_ptr(), O_PATH | O_DIRECTORY | O_CLOEXEC, 0) };
    if r < 0 {
        return Err(errno());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn proc_path(fd: c_int) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

/// Re-opens an O_PATH fd the server holds for I/O. The caller has checked its type (regular
/// file or directory), so the magic link cannot lead anywhere but that inode.
pub fn reopen(fd: c_int, flags: i32) -> Result<OwnedFd, i32> {
    let p = proc_path(fd);
    let r = unsafe { openat(AT_FDCWD, p.as_ptr(), flags | O_CLOEXEC, 0) };
    if r < 0 {
        return Err(errno());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn stat_fd(fd: c_int) -> Result<Stat, i32> {
    let mut st = Stat::default();
    check(unsafe { fstatat(fd, c"".as_ptr(), &mut st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn statfs_fd(fd: c_int) -> Result<StatFs, i32> {
    let mut st = StatFs::default();
    check(unsafe { fstatfs(fd, &mut st) })?;
    Ok(st)
}

pub fn mkdir_at(dir: c_int, name: &[u8], mode: u32) -> Result<(), i32> {
    let c = cstr(name)?;
    check(unsafe { mkdirat(dir, c.as_ptr(), mode) })
}

pub fn mkfifo_at(dir: c_int, name: &[u8], mode: u32) -> Result<(), i32> {
    let c = cstr(name)?;
    check(unsafe { mknodat(dir, c.as_ptr(), S_IFIFO | (mode & 0o777), 0) })
}

pub fn unlink_at(dir: c_int, name: &[u8], flags: c_int) -> Result<(), i32> {
    let c = cstr(name)?;
    check(unsafe { unlinkat(dir, c.as_ptr(), flags) })
}

pub fn rename_at(olddir: c_int, old: &[u8], newdir: c_int, new: &[u8], flags: u32) -> Result<(), i32> {
    let (o, n) = (cstr(old)?, cstr(new)?);
    check(unsafe { renameat2(olddir, o.as_ptr(), newdir, n.as_ptr(), flags) })
}

/// Hard-links the inode behind an O_PATH fd as `name` in `dir`. AT_EMPTY_PATH needs
/// CAP_DAC_READ_SEARCH; without it the /proc/self/fd link of our own fd does the same.
pub fn link_fd(fd: c_int, dir: c_int, name: &[u8]) -> Result<(), i32> {
    let n = cstr(name)?;
    let r = unsafe { linkat(fd, c"".as_ptr(), dir, n.as_ptr(), AT_EMPTY_PATH) };
    if r == 0 {
        return Ok(());
    }
    let e = errno();
    if e != ENOENT && e != EPERM {
        return Err(e);
    }
    let p = proc_path(fd);
    check(unsafe { linkat(AT_FDCWD, p.as_ptr(), dir, n.as_ptr(), AT_SYMLINK_FOLLOW) })
}

pub fn symlink_at(target: &[u8], dir: c_int, name: &[u8]) -> Result<(), i32> {
    let (t, n) = (cstr(target)?, cstr(name)?);
    check(unsafe { symlinkat(t.as_ptr(), dir, n.as_ptr()) })
}

pub fn readlink_fd(fd: c_int) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 4096];
    let r = unsafe { readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn chmod_fd(fd: c_int, mode: u32) -> Result<(), i32> {
    check(unsafe { fchmod(fd, mode) })
}

/// chmod of the inode behind an O_PATH fd (fchmod refuses O_PATH fds).
pub fn chmod_path_fd(fd: c_int, mode: u32) -> Result<(), i32> {
    let p = proc_path(fd);
    check(unsafe { fchmodat(AT_FDCWD, p.as_ptr(), mode, 0) })
}

pub fn truncate_fd(fd: c_int, len: i64) -> Result<(), i32> {
    check(unsafe { ftruncate(fd, len) })
}

pub fn utimes_path_fd(fd: c_int, times: [Timespec; 2]) -> Result<(), i32> {
    let p = proc_path(fd);
    check(unsafe { utimensat(AT_FDCWD, p.as_ptr(), &times, 0) })
}

pub fn pread_fd(fd: c_int, buf: &mut [u8], off: u64) -> Result<usize, i32> {
    let mut done = 0;
    while done < buf.len() {
        let r = unsafe { pread(fd, buf[done..].as_mut_ptr() as *mut c_void, buf.len() - done, (off + done as u64) as i64) };
        if r < 0 {
            return Err(errno());
        }
        if r == 0 {
            break;
        }
        done += r as usize;
    }
    Ok(done)
}

pub fn pwrite_fd(fd: c_int, buf: &[u8], off: u64) -> Result<usize, i32> {
    let r = unsafe { pwrite(fd, buf.as_ptr() as *const c_void, buf.len(), off as i64) };
    if r < 0 {
        return Err(errno());
    }
    Ok(r as usize)
}

pub fn seek_fd(fd: c_int, off: i64) -> Result<(), i32> {
    if unsafe { lseek(fd, off, 0) } < 0 {
        return Err(errno());
    }
    Ok(())
}

pub fn sync_fd(fd: c_int, data_only: bool) -> Result<(), i32> {
    check(unsafe { if data_only { fdatasync(fd) } else { fsync(fd) } })
}

pub fn fallocate_fd(fd: c_int, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    check(unsafe { fallocate(fd, mode, off as i64, len as i64) })
}

/// Raw linux_dirent64 records from a directory fd.
pub fn getdents(fd: c_int, buf: &mut [u8]) -> Result<usize, i32> {
    let r = unsafe { syscall(SYS_GETDENTS64, fd as c_long, buf.as_mut_ptr(), buf.len()) };
    if r < 0 {
        return Err(errno());
    }
    Ok(r as usize)
}

/// Test helper: makes a character device (1,3) at `path`; false when not permitted here.
#[cfg(test)]
pub fn tests_mknod_chr(path: &str) -> bool {
    let c = CString::new(path).unwrap();
    unsafe { mknodat(AT_FDCWD, c.as_ptr(), 0o020666, 0x103) == 0 }
}
