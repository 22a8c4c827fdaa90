// A FUSE server that shares one host directory with a guest (the file side of virtio-fs), used
// both by the native VMM's in-process virtio-fs device and by the vhost-user-fs backend for QEMU.
// Requests are hostile bytes: every header and argument is length-checked and a bad request gets
// an errno reply, never a panic. Containment is structural: the guest names inodes by ids this
// server handed out, every name is a single validated component, and every lookup is an
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) relative to an O_PATH fd held for that id.

pub mod host;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};

use host::*;

// Opcodes (include/uapi/linux/fuse.h).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const SETATTR: u32 = 4;
const READLINK: u32 = 5;
const SYMLINK: u32 = 6;
const MKNOD: u32 = 8;
const MKDIR: u32 = 9;
const UNLINK: u32 = 10;
const RMDIR: u32 = 11;
const RENAME: u32 = 12;
const LINK: u32 = 13;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FSYNC: u32 = 20;
const SETXATTR: u32 = 21;
const GETXATTR: u32 = 22;
const LISTXATTR: u32 = 23;
const REMOVEXATTR: u32 = 24;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const FSYNCDIR: u32 = 30;
const ACCESS: u32 = 34;
const CREATE: u32 = 35;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;
const FALLOCATE: u32 = 43;
const RENAME2: u32 = 45;
const SYNCFS: u32 = 50;

pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
const ATTR_LEN: usize = 88;
const ENTRY_OUT_LEN: usize = 40 + ATTR_LEN;

const ROOT_ID: u64 = 1;
const FUSE_KERNEL_VERSION: u32 = 7;
const FUSE_KERNEL_MINOR: u32 = 31;
/// Largest READ/WRITE payload: 256 pages, what FUSE_MAX_PAGES lets the guest send.
pub const MAX_IO: u32 = 1 << 20;
/// A request is at most a header, a write header and MAX_IO of data.
pub const MAX_REQUEST: usize = MAX_IO as usize + 4096;
/// How long the guest may cache entries and attributes (seconds): short, so host-side and other
/// sandboxes' changes show up quickly.
const CACHE_SECS: u64 = 1;
/// Bounds on what a guest can make the server hold. Inodes beyond the fd budget keep only their
/// parent and name and are re-resolved (beneath the parent, checked against their dev/ino) when
/// used again, so a guest caching 100,000 inodes does not need 100,000 host fds.
const MAX_INODES: usize = 1 << 20;
const MAX_FD_BUDGET: usize = 65_536;
const MAX_HANDLES: usize = 16_384;
/// A path deeper than this is not re-resolved (ESTALE): bounds the walk a hostile tree can cause.
const MAX_DEPTH: usize = 4096;

// INIT flags.
const FUSE_ASYNC_READ: u32 = 1 << 0;
const FUSE_ATOMIC_O_TRUNC: u32 = 1 << 3;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FUSE_AUTO_INVAL_DATA: u32 = 1 << 12;
const FUSE_PARALLEL_DIROPS: u32 = 1 << 18;
const FUSE_MAX_PAGES: u32 = 1 << 22;
const OFFERED_FLAGS: u32 = FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_AUTO_INVAL_DATA | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES;

// SETATTR valid bits.
const FATTR_MODE: u32 = 1;
const FATTR_UID: u32 = 2;
const FATTR_GID: u32 = 4;
const FATTR_SIZE: u32 = 8;
const FATTR_ATIME: u32 = 16;
const FATTR_MTIME: u32 = 32;
const FATTR_FH: u32 = 64;
const FATTR_ATIME_NOW: u32 = 128;
const FATTR_MTIME_NOW: u32 = 256;

/// Little-endian reader over a request body; running short is EINVAL.
struct Args<'a> {
    b: &'a [u8],
}

impl<'a> Args<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], i32> {
        if self.b.len() < n {
            return Err(EINVAL);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, i32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, i32> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A NUL-terminated name that must be one path component.
    fn name(&mut self) -> Result<&'a [u8], i32> {
        let nul = self.b.iter().position(|&c| c == 0).ok_or(EINVAL)?;
        let n = self.take(nul + 1)?;
        let n = &n[..nul];
        check_name(n)?;
        Ok(n)
    }
    /// A NUL-terminated string with no further rules (symlink targets).
    fn cstring(&mut self) -> Result<&'a [u8], i32> {
        let nul = self.b.iter().position(|&c| c == 0).ok_or(EINVAL)?;
        let s = self.take(nul + 1)?;
        Ok(&s[..nul])
    }
}

/// A directory entry name from the guest: one component, never "." or "..".
fn check_name(n: &[u8]) -> Result<(), i32> {
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err(EINVAL);
    }
    if n.len() > 255 {
        return Err(ENAMETOOLONG);
    }
    Ok(())
}

struct Out(Vec<u8>);
impl Out {
    fn new() -> Out {
        Out(Vec::with_capacity(128))
    }
    fn u16(&mut self, v: u16) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

struct Inode {
    /// O_PATH fd, or None when evicted (re-resolved from `parent` and `name`).
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    kind: u32,
    lookups: u64,
    parent: u64,
    name: Vec<u8>,
    /// The request that last used the fd: never evicted while that request runs.
    used_in: u64,
}

struct Handle {
    fd: OwnedFd,
    /// The file was opened for writing (a read-only share never has such handles).
    writable: bool,
}

/// The host directory a guest sees, with the server's inode and handle tables.
pub struct FuseServer {
    read_only: bool,
    inodes: HashMap<u64, Inode>,
    by_host: HashMap<(u64, u64), u64>,
    next_id: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    initialized: bool,
    /// Single-file share: the root directory shows only this entry and cannot change.
    only: Option<Vec<u8>>,
    open_fds: VecDeque<u64>,
    open_count: usize,
    fd_budget: usize,
    max_handles: usize,
    seq: u64,
}

type R = Result<Vec<u8>, i32>;

impl FuseServer {
    /// Shares `path`: a directory, or a single regular file (then the guest sees its parent
    /// directory holding that one entry and nothing else). `read_only` refuses every change.
    pub fn new(path: &str, read_only: bool) -> Result<FuseServer, String> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot share {path}: {e}"))?;
        if meta.is_file() {
            let p = std::path::Path::new(path);
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
                return Err(format!("cannot share {path}: no parent directory"));
            };
            let mut s = FuseServer::new(parent.to_str().ok_or("path is not UTF-8")?, read_only)?;
            s.only = Some(std::os::unix::ffi::OsStrExt::as_bytes(name).to_vec());
            return Ok(s);
        }
        if !meta.is_dir() {
            return Err(format!("cannot share {path}: only directories and regular files can be shared"));
        }
        let dir = path;
        let fd = open_root(dir).map_err(|e| format!("cannot open shared directory {dir}: {}", std::io::Error::from_raw_os_error(e)))?;
        let st = stat_fd(fd.as_raw_fd()).map_err(|e| format!("cannot stat shared directory {dir}: {}", std::io::Error::from_raw_os_error(e)))?;
        let mut inodes = HashMap::new();
        inodes.insert(ROOT_ID, Inode { fd: Some(fd), dev: st.dev, ino: st.ino, kind: S_IFDIR, lookups: 1, parent: ROOT_ID, name: Vec::new(), used_in: 0 });
        let limit = raise_fd_limit();
        let fd_budget = (limit / 4).clamp(16, MAX_FD_BUDGET);
        Ok(FuseServer {
            read_only,
            inodes,
            by_host: HashMap::new(),
            next_id: ROOT_ID + 1,
            handles: HashMap::new(),
            next_fh: 1,
            initialized: false,
            only: None,
            open_fds: VecDeque::new(),
            open_count: 0,
            fd_budget,
            max_handles: (limit / 4).clamp(16, MAX_HANDLES),
            seq: 0,
        })
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// How many inode fds are open now (at most the budget, plus those one request pins).
    pub fn open_inode_fds(&self) -> usize {
        self.open_count
    }

    #[cfg(test)]
    pub fn set_fd_budget(&mut self, n: usize) {
        self.fd_budget = n;
    }

    #[cfg(test)]
    pub fn fd_queue_len(&self) -> usize {
        self.open_fds.len()
    }

    /// Handles one request (in header + arguments) and returns the reply (out header + data),
    /// or None for requests that take none (FORGET, INTERRUPT) or whose header is unreadable.
    pub fn handle(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        if req.len() < IN_HEADER_LEN {
            return None;
        }
        self.seq += 1;
        let mut h = Args { b: &req[..IN_HEADER_LEN] };
        let len = h.u32().ok()? as usize;
        let opcode = h.u32().ok()?;
        let unique = h.u64().ok()?;
        let nodeid = h.u64().ok()?;
        let result = if len < IN_HEADER_LEN || len > req.len() {
            Err(EINVAL)
        } else {
            let body = &req[IN_HEADER_LEN..len];
            match opcode {
                FORGET => {
                    if let Ok(n) = (Args { b: body }).u64() {
                        self.forget(nodeid, n);
                    }
                    return None;
                }
                BATCH_FORGET => {
                    self.batch_forget(body);
                    return None;
                }
                INTERRUPT => return None,
                INIT => self.init(body),
                _ if !self.initialized => Err(EIO),
                _ => self.dispatch(opcode, nodeid, body),
            }
        };
        let mut out = Vec::with_capacity(OUT_HEADER_LEN + result.as_ref().map(|d| d.len()).unwrap_or(0));
        let (err, data) = match &result {
            Ok(d) => (0i32, d.as_slice()),
            Err(e) => (-e, &[][..]),
        };
        out.extend_from_slice(&((OUT_HEADER_LEN + data.len()) as u32).to_le_bytes());
        out.extend_from_slice(&err.to_le_bytes());
        out.extend_from_slice(&unique.to_le_bytes());
        out.extend_from_slice(data);
        Some(out)
    }

    fn dispatch(&mut self, op: u32, node: u64, body: &[u8]) -> R {
        let mut a = Args { b: body };
        let mutating = matches!(op, SETATTR | SYMLINK | MKNOD | MKDIR | UNLINK | RMDIR | RENAME | LINK | WRITE | CREATE | SETXATTR | REMOVEXATTR | FALLOCATE | RENAME2);
        if mutating && self.read_only {
            return Err(EROFS);
        }
        if self.only.is_some() {
            self.check_single_file(op, node, body)?;
        }
        match op {
            LOOKUP => {
                let name = a.name()?;
                self.lookup(node, name)
            }
            GETATTR => {
                let st = stat_fd(self.fd_of(node)?)?;
                Ok(attr_out(&st))
            }
            SETATTR => self.setattr(node, &mut a),
            READLINK => {
                if self.inode(node)?.kind != S_IFLNK {
                    return Err(EINVAL);
                }
                readlink_fd(self.fd_of(node)?)
            }
            SYMLINK => {
                let name = a.name()?;
                let target = a.cstring()?;
                if target.is_empty() || target.len() > 4095 {
                    return Err(EINVAL);
                }
                let dir = self.dir_fd(node)?;
                symlink_at(target, dir, name)?;
                self.lookup(node, name)
            }
            MKNOD => {
                let mode = a.u32()?;
                let _rdev = a.u32()?;
                let _umask = a.u32()?;
                let _pad = a.u32()?;
                let name = a.name()?;
                // Device nodes and sockets are never created on the host; a FIFO is harmless
                // (the guest kernel implements it, nothing reaches the host through it).
                if mode & S_IFMT != S_IFIFO {
                    return Err(EPERM);
                }
                let dir = self.dir_fd(node)?;
                mkfifo_at(dir, name, mode & 0o777)?;
                self.lookup(node, name)
            }
            MKDIR => {
                let mode = a.u32()?;
                let _umask = a.u32()?;
                let name = a.name()?;
                let dir = self.dir_fd(node)?;
                mkdir_at(dir, name, 0o700)?;
                let entry = self.lookup(node, name)?;
                // Exact mode regardless of the host process's umask; never setgid/setuid.
                let id = u64::from_le_bytes(entry[..8].try_into().unwrap());
                let fd = self.fd_of(id)?;
                chmod_path_fd(fd, mode & 0o1777)?;
                self.entry_for(id)
            }
            UNLINK | RMDIR => {
                let name = a.name()?;
                let dir = self.dir_fd(node)?;
                unlink_at(dir, name, if op == RMDIR { AT_REMOVEDIR } else { 0 })?;
                Ok(Vec::new())
            }
            RENAME | RENAME2 => {
                let newdir = a.u64()?;
                let flags = if op == RENAME2 {
                    let f = a.u32()?;
                    a.u32()?;
                    f
                } else {
                    0
                };
                // RENAME_NOREPLACE (1) and RENAME_EXCHANGE (2); RENAME_WHITEOUT makes a device.
                if flags & !3 != 0 {
                    return Err(EINVAL);
                }
                let old = a.name()?;
                let new = a.name()?;
                let (od, nd) = (self.dir_fd(node)?, self.dir_fd(newdir)?);
                rename_at(od, old, nd, new, flags)?;
                // Keep evictable inodes' names right: they are re-resolved by name.
                self.renamed(nd, newdir, new);
                if flags & 2 != 0 {
                    self.renamed(od, node, old);
                }
                Ok(Vec::new())
            }
            LINK => {
                let old = a.u64()?;
                let name = a.name()?;
                if self.inode(old)?.kind == S_IFDIR {
                    return Err(EPERM);
                }
                let src_fd = self.fd_of(old)?;
                let dir = self.dir_fd(node)?;
                link_fd(src_fd, dir, name)?;
                self.lookup(node, name)
            }
            OPEN | OPENDIR => {
                let flags = a.u32()? as i32;
                self.open(node, flags, op == OPENDIR)
            }
            CREATE => {
                let flags = a.u32()? as i32;
                let mode = a.u32()?;
                let _umask = a.u32()?;
                let _open_flags = a.u32()?;
                let name = a.name()?;
                self.create(node, name, flags, mode)
            }
            READ => {
                let fh = a.u64()?;
                let off = a.u64()?;
                let size = a.u32()?.min(MAX_IO);
                let fd = self.handle_fd(fh)?;
                let mut buf = vec![0u8; size as usize];
                let n = pread_fd(fd, &mut buf, off)?;
                buf.truncate(n);
                Ok(buf)
            }
            WRITE => {
                let fh = a.u64()?;
                let off = a.u64()?;
                let size = a.u32()?;
                let _wflags = a.u32()?;
                let _lock = a.u64()?;
                let _flags = a.u32()?;
                a.u32()?;
                let data = a.take(size as usize)?;
                let h = self.handles.get(&fh).ok_or(EBADF)?;
                if !h.writable {
                    return Err(EBADF);
                }
                let n = pwrite_fd(h.fd.as_raw_fd(), data, off)?;
                let mut o = Out::new();
                o.u32(n as u32).u32(0);
                Ok(o.0)
            }
            STATFS => {
                let s = statfs_fd(self.fd_of(node)?)?;
                let mut o = Out::new();
                o.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree);
                o.u32(s.bsize as u32).u32(s.namelen as u32).u32(s.frsize as u32).u32(0);
                o.0.extend_from_slice(&[0u8; 24]);
                Ok(o.0)
            }
            RELEASE | RELEASEDIR => {
                let fh = a.u64()?;
                self.handles.remove(&fh);
                Ok(Vec::new())
            }
            FSYNC | FSYNCDIR => {
                let fh = a.u64()?;
                let flags = a.u32()?;
                if self.read_only {
                    return Ok(Vec::new());
                }
                sync_fd(self.handle_fd(fh)?, flags & 1 != 0)?;
                Ok(Vec::new())
            }
            // Nothing is buffered host-side and locks are not forwarded, so close() has nothing
            // to flush: ENOSYS makes the kernel stop sending FLUSH, one round trip less per close.
            FLUSH => Err(ENOSYS),
            GETXATTR => Err(ENODATA),
            LISTXATTR => {
                let size = a.u32()?;
                let mut o = Out::new();
                if size == 0 {
                    o.u32(0).u32(0);
                }
                Ok(o.0)
            }
            SETXATTR | REMOVEXATTR => Err(EOPNOTSUPP),
            ACCESS => {
                let mask = a.u32()?;
                self.inode(node)?;
                if mask & 2 != 0 && self.read_only {
                    return Err(EROFS);
                }
                Ok(Vec::new())
            }
            READDIR => {
                let fh = a.u64()?;
                let off = a.u64()?;
                let size = a.u32()?.min(MAX_IO);
                self.readdir(fh, off, size as usize)
            }
            FALLOCATE => {
                let fh = a.u64()?;
                let off = a.u64()?;
                let len = a.u64()?;
                let mode = a.u32()?;
                let h = self.handles.get(&fh).ok_or(EBADF)?;
                if !h.writable {
                    return Err(EBADF);
                }
                fallocate_fd(h.fd.as_raw_fd(), mode as i32, off, len)?;
                Ok(Vec::new())
            }
            SYNCFS => Ok(Vec::new()),
            DESTROY => {
                self.handles.clear();
                self.inodes.retain(|&id, _| id == ROOT_ID);
                self.by_host.clear();
                self.open_fds.clear();
                self.open_count = 0;
                self.initialized = false;
                Ok(Vec::new())
            }
            _ => Err(ENOSYS),
        }
    }

    /// In a single-file share the root directory is fixed: only the shared name can be looked
    /// up, and nothing in the root is created, removed or renamed.
    fn check_single_file(&self, op: u32, node: u64, body: &[u8]) -> Result<(), i32> {
        let only = self.only.as_deref().unwrap_or_default();
        match op {
            LOOKUP if node == ROOT_ID => {
                let name = (Args { b: body }).name()?;
                if name != only {
                    return Err(ENOENT);
                }
            }
            SYMLINK | MKNOD | MKDIR | UNLINK | RMDIR | RENAME | RENAME2 | LINK | CREATE if node == ROOT_ID => return Err(EACCES),
            SETATTR if node == ROOT_ID => return Err(EACCES),
            _ => {}
        }
        Ok(())
    }

    fn init(&mut self, body: &[u8]) -> R {
        let mut a = Args { b: body };
        let major = a.u32()?;
        let minor = a.u32()?;
        let max_readahead = a.u32()?;
        let flags = a.u32()?;
        let mut o = Out::new();
        if major < FUSE_KERNEL_VERSION {
            return Err(EPROTO);
        }
        if major > FUSE_KERNEL_VERSION {
            // The kernel retries with our major when we answer with just the version.
            o.u32(FUSE_KERNEL_VERSION).u32(FUSE_KERNEL_MINOR);
            o.0.resize(64, 0);
            return Ok(o.0);
        }
        self.initialized = true;
        o.u32(FUSE_KERNEL_VERSION).u32(minor.min(FUSE_KERNEL_MINOR)).u32(max_readahead);
        o.u32(flags & OFFERED_FLAGS);
        o.u16(64).u16(48); // max_background, congestion_threshold
        o.u32(MAX_IO).u32(1); // max_write, time_gran (ns)
        o.u16((MAX_IO / 4096) as u16).u16(0).u32(0); // max_pages, map_alignment, flags2
        o.0.resize(64, 0);
        Ok(o.0)
    }

    fn inode(&self, id: u64) -> Result<&Inode, i32> {
        self.inodes.get(&id).ok_or(ENOENT)
    }

    fn dir_fd(&mut self, id: u64) -> Result<i32, i32> {
        if self.inode(id)?.kind != S_IFDIR {
            return Err(ENOTDIR);
        }
        self.fd_of(id)
    }

    /// The O_PATH fd of inode `id`, re-resolving it (and evicted ancestors) when evicted.
    fn fd_of(&mut self, id: u64) -> Result<i32, i32> {
        let seq = self.seq;
        let mut chain = Vec::new();
        let mut cur = id;
        loop {
            let i = self.inodes.get_mut(&cur).ok_or(if cur == id { ENOENT } else { ESTALE })?;
            if let Some(fd) = &i.fd {
                i.used_in = seq;
                if chain.is_empty() {
                    return Ok(fd.as_raw_fd());
                }
                break;
            }
            if chain.len() >= MAX_DEPTH {
                return Err(ESTALE);
            }
            chain.push(cur);
            cur = i.parent;
        }
        let mut parent_fd = self.inodes[&cur].fd.as_ref().map(|f| f.as_raw_fd()).ok_or(ESTALE)?;
        for &cid in chain.iter().rev() {
            let i = &self.inodes[&cid];
            let fd = open_beneath(parent_fd, &i.name, O_PATH, 0).map_err(|e| if e == ENOENT { ESTALE } else { e })?;
            let st = stat_fd(fd.as_raw_fd())?;
            if (st.dev, st.ino) != (i.dev, i.ino) {
                // Renamed or replaced behind our back: the guest looks it up again.
                return Err(ESTALE);
            }
            parent_fd = fd.as_raw_fd();
            self.store_fd(cid, fd);
        }
        Ok(parent_fd)
    }

    /// Gives inode `id` an fd, evicting the oldest fds not used by this request if over budget.
    fn store_fd(&mut self, id: u64, fd: OwnedFd) {
        let seq = self.seq;
        if let Some(i) = self.inodes.get_mut(&id) {
            i.fd = Some(fd);
            i.used_in = seq;
            self.open_count += 1;
            self.open_fds.push_back(id);
        }
        // Forgotten or evicted inodes leave stale entries behind: drop them before they pile up.
        if self.open_fds.len() > 2 * self.fd_budget + 1024 {
            let inodes = &self.inodes;
            let mut seen = std::collections::HashSet::new();
            self.open_fds.retain(|id| inodes.get(id).is_some_and(|i| i.fd.is_some()) && seen.insert(*id));
        }
        let mut scanned = 0;
        while self.open_count > self.fd_budget && scanned < self.open_fds.len() {
            let Some(victim) = self.open_fds.pop_front() else { break };
            scanned += 1;
            match self.inodes.get_mut(&victim) {
                Some(i) if victim != ROOT_ID && i.fd.is_some() => {
                    if i.used_in == seq {
                        self.open_fds.push_back(victim);
                        continue;
                    }
                    i.fd = None;
                    self.open_count -= 1;
                }
                _ => {}
            }
        }
    }

    /// After a rename: the inode now at `name` in `dir` (if we know it) is re-homed there.
    fn renamed(&mut self, dir_fd: i32, dir: u64, name: &[u8]) {
        let Ok(fd) = open_beneath(dir_fd, name, O_PATH, 0) else { return };
        let Ok(st) = stat_fd(fd.as_raw_fd()) else { return };
        if let Some(i) = self.by_host.get(&(st.dev, st.ino)).and_then(|id| self.inodes.get_mut(id)) {
            i.parent = dir;
            i.name = name.to_vec();
        }
    }

    fn handle_fd(&self, fh: u64) -> Result<i32, i32> {
        self.handles.get(&fh).map(|h| h.fd.as_raw_fd()).ok_or(EBADF)
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> R {
        let dir = self.dir_fd(parent)?;
        let fd = open_beneath(dir, name, O_PATH, 0)?;
        self.adopt(parent, name, fd)
    }

    /// Records an O_PATH fd as an inode (or bumps the one already known for it); entry reply.
    fn adopt(&mut self, parent: u64, name: &[u8], fd: OwnedFd) -> R {
        let st = stat_fd(fd.as_raw_fd())?;
        let id = match self.by_host.get(&(st.dev, st.ino)) {
            Some(&id) => {
                let i = self.inodes.get_mut(&id).ok_or(EIO)?;
                i.lookups += 1;
                if id != ROOT_ID {
                    i.parent = parent;
                    i.name = name.to_vec();
                }
                if i.fd.is_none() {
                    self.store_fd(id, fd);
                }
                id
            }
            None => {
                if self.inodes.len() >= MAX_INODES {
                    return Err(EMFILE);
                }
                let id = self.next_id;
                self.next_id += 1;
                let kind = st.mode & S_IFMT;
                self.inodes.insert(id, Inode { fd: None, dev: st.dev, ino: st.ino, kind, lookups: 1, parent, name: name.to_vec(), used_in: 0 });
                self.by_host.insert((st.dev, st.ino), id);
                self.store_fd(id, fd);
                id
            }
        };
        Ok(entry_out(id, &st))
    }

    fn entry_for(&mut self, id: u64) -> R {
        let st = stat_fd(self.fd_of(id)?)?;
        Ok(entry_out(id, &st))
    }

    fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        if let Some(i) = self.inodes.get_mut(&id) {
            i.lookups = i.lookups.saturating_sub(n);
            if i.lookups == 0 {
                let key = (i.dev, i.ino);
                if i.fd.is_some() {
                    self.open_count -= 1;
                }
                self.inodes.remove(&id);
                if self.by_host.get(&key) == Some(&id) {
                    self.by_host.remove(&key);
                }
            }
        }
    }

    fn batch_forget(&mut self, body: &[u8]) {
        let mut a = Args { b: body };
        let Ok(count) = a.u32() else { return };
        if a.u32().is_err() {
            return;
        }
        for _ in 0..count {
            let (Ok(id), Ok(n)) = (a.u64(), a.u64()) else { return };
            self.forget(id, n);
        }
    }

    fn add_handle(&mut self, fd: OwnedFd, writable: bool) -> Result<u64, i32> {
        if self.handles.len() >= self.max_handles {
            return Err(EMFILE);
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { fd, writable });
        Ok(fh)
    }

    fn open(&mut self, node: u64, flags: i32, dir: bool) -> R {
        let path_fd = self.fd_of(node)?;
        let i = self.inode(node)?;
        let writes = flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0;
        match (dir, i.kind) {
            (true, S_IFDIR) => {}
            (true, _) => return Err(ENOTDIR),
            (false, S_IFREG) => {}
            (false, S_IFDIR) => return Err(EISDIR),
            // Devices, sockets, FIFOs and symlinks are never opened on the host.
            (false, _) => return Err(EACCES),
        }
        if writes && (self.read_only || dir) {
            return Err(if self.read_only { EROFS } else { EISDIR });
        }
        let keep = O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC;
        let host_flags = if dir { O_RDONLY | O_DIRECTORY } else { (flags & keep) | O_NOFOLLOW_UNUSED };
        let fd = reopen(path_fd, host_flags)?;
        let fh = self.add_handle(fd, writes)?;
        let mut o = Out::new();
        o.u64(fh).u32(0).u32(0);
        Ok(o.0)
    }

    fn create(&mut self, parent: u64, name: &[u8], flags: i32, mode: u32) -> R {
        let dir = self.dir_fd(parent)?;
        let keep = O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC | O_EXCL;
        let fd = open_beneath(dir, name, (flags & keep) | O_CREAT, 0o600)?;
        let st = stat_fd(fd.as_raw_fd())?;
        if st.mode & S_IFMT != S_IFREG {
            return Err(EACCES);
        }
        // The guest's mode exactly (the host umask does not apply), never setuid/setgid.
        chmod_fd(fd.as_raw_fd(), mode & 0o777)?;
        let path_fd = reopen(fd.as_raw_fd(), O_PATH)?;
        let entry = self.adopt(parent, name, path_fd)?;
        let writable = flags & O_ACCMODE != O_RDONLY;
        let fh = self.add_handle(fd, writable)?;
        let mut out = entry;
        let mut o = Out::new();
        o.u64(fh).u32(0).u32(0);
        out.extend_from_slice(&o.0);
        Ok(out)
    }

    fn setattr(&mut self, node: u64, a: &mut Args) -> R {
        let valid = a.u32()?;
        a.u32()?;
        let fh = a.u64()?;
        let size = a.u64()?;
        let _lock = a.u64()?;
        let atime = a.u64()?;
        let mtime = a.u64()?;
        let _ctime = a.u64()?;
        let atimensec = a.u32()?;
        let mtimensec = a.u32()?;
        let _ctimensec = a.u32()?;
        let mode = a.u32()?;
        a.u32()?;
        let uid = a.u32()?;
        let gid = a.u32()?;
        let kind = self.inode(node)?.kind;
        let fd = self.fd_of(node)?;
        let st = stat_fd(fd)?;
        // Ownership is the host user's: a guest chown cannot hand files to another host user.
        if (valid & FATTR_UID != 0 && uid != st.uid) || (valid & FATTR_GID != 0 && gid != st.gid) {
            return Err(EPERM);
        }
        if valid & FATTR_MODE != 0 {
            if kind == S_IFLNK {
                return Err(EOPNOTSUPP);
            }
            let keep = if kind == S_IFDIR { 0o1777 } else { 0o777 };
            chmod_path_fd(fd, mode & keep)?;
        }
        if valid & FATTR_SIZE != 0 {
            if kind != S_IFREG {
                return Err(if kind == S_IFDIR { EISDIR } else { EINVAL });
            }
            let handle = if valid & FATTR_FH != 0 { self.handles.get(&fh).filter(|h| h.writable) } else { None };
            match handle {
                Some(h) => truncate_fd(h.fd.as_raw_fd(), size as i64)?,
                None => {
                    let w = reopen(fd, O_WRONLY)?;
                    truncate_fd(w.as_raw_fd(), size as i64)?;
                }
            }
        }
        if valid & (FATTR_ATIME | FATTR_MTIME) != 0 {
            if kind == S_IFLNK {
                return Err(EOPNOTSUPP);
            }
            let t = |set: bool, now: bool, s: u64, ns: u32| match (set, now) {
                (false, _) => Timespec { sec: 0, nsec: UTIME_OMIT },
                (true, true) => Timespec { sec: 0, nsec: UTIME_NOW },
                (true, false) => Timespec { sec: s as i64, nsec: (ns % 1_000_000_000) as i64 },
            };
            let times = [
                t(valid & FATTR_ATIME != 0, valid & FATTR_ATIME_NOW != 0, atime, atimensec),
                t(valid & FATTR_MTIME != 0, valid & FATTR_MTIME_NOW != 0, mtime, mtimensec),
            ];
            utimes_path_fd(fd, times)?;
        }
        Ok(attr_out(&stat_fd(fd)?))
    }

    fn is_root_fd(&self, fd: i32) -> bool {
        let (Ok(a), Some(root)) = (stat_fd(fd), self.inodes.get(&ROOT_ID)) else { return false };
        a.dev == root.dev && a.ino == root.ino
    }

    fn readdir(&mut self, fh: u64, off: u64, size: usize) -> R {
        let fd = self.handle_fd(fh)?;
        if off > i64::MAX as u64 {
            return Err(EINVAL);
        }
        seek_fd(fd, off as i64)?;
        let filter = self.only.clone().filter(|_| self.is_root_fd(fd));
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        'outer: loop {
            let n = getdents(fd, &mut buf)?;
            if n == 0 {
                break;
            }
            let mut p = 0;
            while p + 19 <= n {
                let ino = u64::from_le_bytes(buf[p..p + 8].try_into().unwrap());
                let d_off = u64::from_le_bytes(buf[p + 8..p + 16].try_into().unwrap());
                let reclen = u16::from_le_bytes(buf[p + 16..p + 18].try_into().unwrap()) as usize;
                let dtype = buf[p + 18];
                if reclen < 19 || p + reclen > n {
                    return Err(EIO);
                }
                let raw = &buf[p + 19..p + reclen];
                let name = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
                p += reclen;
                if let Some(only) = &filter {
                    if name != only.as_slice() && name != b"." && name != b".." {
                        continue;
                    }
                }
                let entlen = 24 + name.len();
                let padded = (entlen + 7) & !7;
                if out.len() + padded > size {
                    break 'outer;
                }
                let mut o = Out::new();
                o.u64(ino).u64(d_off).u32(name.len() as u32).u32(dtype as u32);
                out.extend_from_slice(&o.0);
                out.extend_from_slice(name);
                out.resize(out.len() + padded - entlen, 0);
            }
        }
        Ok(out)
    }
}

// No O_NOFOLLOW on a /proc/self/fd re-open: the magic link itself is the path.
const O_NOFOLLOW_UNUSED: i32 = 0;
const EPROTO: i32 = 71;
const ESTALE: i32 = 116;

/// Raises this process's open-file soft limit to its hard limit (shares hold many fds); returns
/// the soft limit now in force.
fn raise_fd_limit() -> usize {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(res: i32, r: *mut Rlimit) -> i32;
        fn setrlimit(res: i32, r: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut r = Rlimit { cur: 0, max: 0 };
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.cur < r.max {
        let want = Rlimit { cur: r.max, max: r.max };
        if unsafe { setrlimit(RLIMIT_NOFILE, &want) } == 0 {
            r.cur = r.max;
        }
    }
    r.cur.min(1 << 24) as usize
}

fn fuse_attr(o: &mut Out, st: &Stat) {
    let kind = st.mode & S_IFMT;
    // setuid/setgid from the host are not honoured; device numbers are not passed through.
    let mode = if kind == S_IFDIR { st.mode } else { st.mode & !(S_ISUID | S_ISGID) };
    let rdev = 0u32;
    o.u64(st.ino).u64(st.size as u64).u64(st.blocks as u64);
    o.u64(st.atime as u64).u64(st.mtime as u64).u64(st.ctime as u64);
    o.u32(st.atime_nsec as u32).u32(st.mtime_nsec as u32).u32(st.ctime_nsec as u32);
    o.u32(mode).u32(st.nlink.min(u32::MAX as u64) as u32).u32(st.uid).u32(st.gid).u32(rdev);
    o.u32(st.blksize as u32).u32(0);
}

fn entry_out(id: u64, st: &Stat) -> Vec<u8> {
    let mut o = Out::new();
    o.u64(id).u64(0).u64(CACHE_SECS).u64(CACHE_SECS).u32(0).u32(0);
    fuse_attr(&mut o, st);
    debug_assert_eq!(o.0.len(), ENTRY_OUT_LEN);
    o.0
}

fn attr_out(st: &Stat) -> Vec<u8> {
    let mut o = Out::new();
    o.u64(CACHE_SECS).u32(0).u32(0);
    fuse_attr(&mut o, st);
    o.0
}

#[cfg(test)]
pub mod tests;
