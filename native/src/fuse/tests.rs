// The FUSE server against a real temporary directory: normal operations, every escape the issue
// lists, read-only shares, and hostile request bytes.

use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

pub struct Tmp(pub PathBuf);
impl Tmp {
    pub fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("msb-fuse-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(p.join("share")).unwrap();
        Tmp(p)
    }
    pub fn share(&self) -> String {
        self.0.join("share").to_str().unwrap().to_string()
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn req(op: u32, node: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
    v.extend_from_slice(&op.to_le_bytes());
    v.extend_from_slice(&7u64.to_le_bytes());
    v.extend_from_slice(&node.to_le_bytes());
    v.extend_from_slice(&[0u8; 16]);
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

struct T {
    s: FuseServer,
}

impl T {
    fn new(dir: &str, ro: bool) -> T {
        let mut s = FuseServer::new(dir, ro).unwrap();
        let r = s.handle(&req(INIT, 0, &cat(&[&7u32.to_le_bytes(), &36u32.to_le_bytes(), &0u32.to_le_bytes(), &u32::MAX.to_le_bytes()]))).unwrap();
        assert_eq!(r.len(), OUT_HEADER_LEN + 64);
        T { s }
    }
    /// (errno, data)
    fn call(&mut self, op: u32, node: u64, body: &[u8]) -> (i32, Vec<u8>) {
        let r = self.s.handle(&req(op, node, body)).expect("reply");
        let len = u32::from_le_bytes(r[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, r.len());
        let err = i32::from_le_bytes(r[4..8].try_into().unwrap());
        (-err, r[OUT_HEADER_LEN..].to_vec())
    }
    fn lookup(&mut self, parent: u64, name: &str) -> Result<u64, i32> {
        let (e, d) = self.call(LOOKUP, parent, &cat(&[name.as_bytes(), b"\0"]));
        if e != 0 {
            return Err(e);
        }
        Ok(u64::from_le_bytes(d[0..8].try_into().unwrap()))
    }
    fn open(&mut self, node: u64, flags: i32) -> Result<u64, i32> {
        let (e, d) = self.call(OPEN, node, &cat(&[&(flags as u32).to_le_bytes(), &0u32.to_le_bytes()]));
        if e != 0 {
            return Err(e);
        }
        Ok(u64::from_le_bytes(d[0..8].try_into().unwrap()))
    }
    fn create(&mut self, parent: u64, name: &str, mode: u32) -> Result<(u64, u64), i32> {
        let body = cat(&[&(O_RDWR as u32).to_le_bytes(), &mode.to_le_bytes(), &0u32.to_le_bytes(), &0u32.to_le_bytes(), name.as_bytes(), b"\0"]);
        let (e, d) = self.call(CREATE, parent, &body);
        if e != 0 {
            return Err(e);
        }
        Ok((u64::from_le_bytes(d[0..8].try_into().unwrap()), u64::from_le_bytes(d[ENTRY_OUT_LEN..ENTRY_OUT_LEN + 8].try_into().unwrap())))
    }
    fn write(&mut self, fh: u64, off: u64, data: &[u8]) -> Result<u32, i32> {
        let body = cat(&[&fh.to_le_bytes(), &off.to_le_bytes(), &(data.len() as u32).to_le_bytes(), &[0u8; 20], data]);
        let (e, d) = self.call(WRITE, 0, &body);
        if e != 0 {
            return Err(e);
        }
        Ok(u32::from_le_bytes(d[0..4].try_into().unwrap()))
    }
    fn read(&mut self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>, i32> {
        let body = cat(&[&fh.to_le_bytes(), &off.to_le_bytes(), &size.to_le_bytes(), &[0u8; 20]]);
        let (e, d) = self.call(READ, 0, &body);
        if e != 0 {
            return Err(e);
        }
        Ok(d)
    }
    fn mkdir(&mut self, parent: u64, name: &str, mode: u32) -> Result<u64, i32> {
        let (e, d) = self.call(MKDIR, parent, &cat(&[&mode.to_le_bytes(), &0u32.to_le_bytes(), name.as_bytes(), b"\0"]));
        if e != 0 {
            return Err(e);
        }
        Ok(u64::from_le_bytes(d[0..8].try_into().unwrap()))
    }
    fn rename(&mut self, dir: u64, old: &str, newdir: u64, new: &str) -> i32 {
        self.call(RENAME, dir, &cat(&[&newdir.to_le_bytes(), old.as_bytes(), b"\0", new.as_bytes(), b"\0"])).0
    }
    fn link(&mut self, old: u64, dir: u64, name: &str) -> i32 {
        self.call(LINK, dir, &cat(&[&old.to_le_bytes(), name.as_bytes(), b"\0"])).0
    }
    fn readdir(&mut self, node: u64) -> Vec<String> {
        let fh = {
            let (e, d) = self.call(OPENDIR, node, &[0u8; 8]);
            assert_eq!(e, 0);
            u64::from_le_bytes(d[0..8].try_into().unwrap())
        };
        let mut names = Vec::new();
        let mut off = 0u64;
        loop {
            let (e, d) = self.call(READDIR, node, &cat(&[&fh.to_le_bytes(), &off.to_le_bytes(), &100u32.to_le_bytes(), &[0u8; 20]]));
            assert_eq!(e, 0);
            if d.is_empty() {
                break;
            }
            let mut p = 0;
            while p < d.len() {
                let next = u64::from_le_bytes(d[p + 8..p + 16].try_into().unwrap());
                let nl = u32::from_le_bytes(d[p + 16..p + 20].try_into().unwrap()) as usize;
                names.push(String::from_utf8(d[p + 24..p + 24 + nl].to_vec()).unwrap());
                off = next;
                p += (24 + nl + 7) & !7;
            }
        }
        names.sort();
        names
    }
}

#[test]
fn creates_writes_reads_lists_and_renames() {
    let t = Tmp::new("rw");
    fs::write(t.0.join("share/hello.txt"), b"from the host").unwrap();
    let mut f = T::new(&t.share(), false);
    let id = f.lookup(ROOT_ID, "hello.txt").unwrap();
    let fh = f.open(id, O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 100).unwrap(), b"from the host");
    assert_eq!(f.read(fh, 5, 3).unwrap(), b"the");
    let (nid, nfh) = f.create(ROOT_ID, "new.bin", 0o4755).unwrap();
    assert_eq!(f.write(nfh, 0, b"guest data").unwrap(), 10);
    assert_eq!(fs::read(t.0.join("share/new.bin")).unwrap(), b"guest data");
    // setuid is stripped on create; the host umask does not apply.
    assert_eq!(fs::metadata(t.0.join("share/new.bin")).unwrap().permissions().mode() & 0o7777, 0o755);
    let d = f.mkdir(ROOT_ID, "sub", 0o2775).unwrap();
    assert_eq!(fs::metadata(t.0.join("share/sub")).unwrap().permissions().mode() & 0o7777, 0o775);
    assert_eq!(f.rename(ROOT_ID, "new.bin", d, "moved.bin"), 0);
    assert!(t.0.join("share/sub/moved.bin").exists());
    assert_eq!(f.link(nid, ROOT_ID, "hard"), 0);
    assert_eq!(fs::metadata(t.0.join("share/hard")).unwrap().nlink(), 2);
    assert_eq!(f.readdir(ROOT_ID), vec![".", "..", "hard", "hello.txt", "sub"]);
    // Many entries across several small READDIR replies.
    for i in 0..50 {
        fs::write(t.0.join(format!("share/sub/f{i:02}")), b"").unwrap();
    }
    assert_eq!(f.readdir(d).len(), 53);
    assert_eq!(f.call(UNLINK, ROOT_ID, b"hard\0").0, 0);
    assert!(!t.0.join("share/hard").exists());
    let (e, st) = f.call(STATFS, ROOT_ID, &[]);
    assert_eq!((e, st.len()), (0, 80));
}

#[test]
fn dot_dot_slashes_and_unknown_ids_are_refused() {
    let t = Tmp::new("names");
    fs::write(t.0.join("secret"), b"outside").unwrap();
    let mut f = T::new(&t.share(), false);
    assert_eq!(f.lookup(ROOT_ID, ".."), Err(EINVAL));
    assert_eq!(f.lookup(ROOT_ID, "."), Err(EINVAL));
    assert_eq!(f.lookup(ROOT_ID, "../secret"), Err(EINVAL));
    assert_eq!(f.lookup(ROOT_ID, "/etc"), Err(EINVAL));
    assert_eq!(f.lookup(ROOT_ID, ""), Err(EINVAL));
    assert_eq!(f.lookup(999, "x"), Err(ENOENT));
    assert_eq!(f.open(12345, O_RDONLY), Err(ENOENT));
    assert_eq!(f.read(777, 0, 10), Err(EBADF));
    assert_eq!(f.create(ROOT_ID, "..", 0o644).unwrap_err(), EINVAL);
    assert_eq!(f.mkdir(ROOT_ID, "a/b", 0o755).unwrap_err(), EINVAL);
    // Rename and link only between inodes the server handed out.
    fs::write(t.0.join("share/f"), b"x").unwrap();
    assert_eq!(f.rename(ROOT_ID, "f", 4242, "f"), ENOENT);
    assert_eq!(f.rename(ROOT_ID, "f", ROOT_ID, "../f"), EINVAL);
    assert_eq!(f.link(4242, ROOT_ID, "l"), ENOENT);
    assert!(t.0.join("share/f").exists());
}

#[test]
fn symlinks_are_never_followed_on_the_host() {
    let t = Tmp::new("symlink");
    fs::write(t.0.join("secret"), b"outside").unwrap();
    fs::create_dir(t.0.join("outdir")).unwrap();
    fs::write(t.0.join("outdir/file"), b"outside").unwrap();
    std::os::unix::fs::symlink(t.0.join("secret"), t.0.join("share/abs")).unwrap();
    std::os::unix::fs::symlink("../secret", t.0.join("share/rel")).unwrap();
    std::os::unix::fs::symlink("../outdir", t.0.join("share/reldir")).unwrap();
    let mut f = T::new(&t.share(), false);
    for name in ["abs", "rel"] {
        let id = f.lookup(ROOT_ID, name).unwrap();
        // The link itself is visible (the guest resolves it in its own namespace), never opened.
        assert_eq!(f.open(id, O_RDONLY), Err(EACCES));
        assert_eq!(f.open(id, O_RDWR), Err(EACCES));
        let (e, target) = f.call(READLINK, id, &[]);
        assert_eq!(e, 0);
        assert!(!target.is_empty());
    }
    let dir = f.lookup(ROOT_ID, "reldir").unwrap();
    assert_eq!(f.lookup(dir, "file"), Err(ENOTDIR));
    assert_eq!(f.create(dir, "x", 0o644).unwrap_err(), ENOTDIR);
    // Creating over a dangling symlink does not create its target outside.
    std::os::unix::fs::symlink(t.0.join("created-outside"), t.0.join("share/dangling")).unwrap();
    assert!(f.create(ROOT_ID, "dangling", 0o644).is_err());
    assert!(!t.0.join("created-outside").exists());
    // A directory swapped for a symlink after the guest looked it up: the held fd is the
    // directory itself, so lookups keep landing inside the share.
    fs::create_dir(t.0.join("share/d")).unwrap();
    fs::write(t.0.join("share/d/inside"), b"in").unwrap();
    let d = f.lookup(ROOT_ID, "d").unwrap();
    fs::rename(t.0.join("share/d"), t.0.join("share/d-old")).unwrap();
    std::os::unix::fs::symlink("../outdir", t.0.join("share/d")).unwrap();
    assert!(f.lookup(d, "inside").is_ok());
    assert_eq!(f.lookup(d, "file"), Err(ENOENT));
    // A symlink created by the guest is just a link; following it is the guest's business.
    let (e, _) = f.call(SYMLINK, ROOT_ID, b"mine\0/etc/passwd\0");
    assert_eq!(e, 0);
    let id = f.lookup(ROOT_ID, "mine").unwrap();
    assert_eq!(f.open(id, O_RDONLY), Err(EACCES));
    assert_eq!(f.link(id, ROOT_ID, "hard-to-link"), 0);
    let hid = f.lookup(ROOT_ID, "hard-to-link").unwrap();
    assert_eq!(f.open(hid, O_RDONLY), Err(EACCES));
}

#[test]
fn devices_are_neither_created_nor_opened_and_chown_is_refused() {
    let t = Tmp::new("dev");
    let mut f = T::new(&t.share(), false);
    let mknod = |mode: u32, name: &str| cat(&[&mode.to_le_bytes(), &0x0103u32.to_le_bytes(), &0u32.to_le_bytes(), &0u32.to_le_bytes(), name.as_bytes(), b"\0"]);
    assert_eq!(f.call(MKNOD, ROOT_ID, &mknod(0o020666, "null")).0, EPERM);
    assert_eq!(f.call(MKNOD, ROOT_ID, &mknod(0o060666, "sda")).0, EPERM);
    assert_eq!(f.call(MKNOD, ROOT_ID, &mknod(0o140666, "sock")).0, EPERM);
    assert_eq!(f.call(MKNOD, ROOT_ID, &mknod(0o010644, "fifo")).0, 0);
    let fifo = f.lookup(ROOT_ID, "fifo").unwrap();
    assert_eq!(f.open(fifo, O_RDONLY), Err(EACCES));
    assert!(!t.0.join("share/null").exists());
    // A device node placed by the host is reported without its device number and never opened.
    if super::host::tests_mknod_chr(&format!("{}/hostnull", t.share())) {
        let id = f.lookup(ROOT_ID, "hostnull").unwrap();
        assert_eq!(f.open(id, O_RDONLY), Err(EACCES));
        let (_, attr) = f.call(GETATTR, id, &[0u8; 16]);
        assert_eq!(u32::from_le_bytes(attr[16 + 76..16 + 80].try_into().unwrap()), 0, "rdev hidden");
    }
    let (_, fh) = f.create(ROOT_ID, "f", 0o644).unwrap();
    let _ = fh;
    let id = f.lookup(ROOT_ID, "f").unwrap();
    let mut set = vec![0u8; 88];
    set[0..4].copy_from_slice(&FATTR_UID.to_le_bytes());
    set[76..80].copy_from_slice(&4242u32.to_le_bytes());
    assert_eq!(f.call(SETATTR, id, &set).0, EPERM);
    let mut set = vec![0u8; 88];
    set[0..4].copy_from_slice(&FATTR_MODE.to_le_bytes());
    set[68..72].copy_from_slice(&0o104755u32.to_le_bytes());
    assert_eq!(f.call(SETATTR, id, &set).0, 0);
    assert_eq!(fs::metadata(t.0.join("share/f")).unwrap().permissions().mode() & 0o7777, 0o755);
    let mut set = vec![0u8; 88];
    set[0..4].copy_from_slice(&FATTR_SIZE.to_le_bytes());
    set[16..24].copy_from_slice(&12345u64.to_le_bytes());
    assert_eq!(f.call(SETATTR, id, &set).0, 0);
    assert_eq!(fs::metadata(t.0.join("share/f")).unwrap().len(), 12345);
}

#[test]
fn read_only_shares_refuse_every_change() {
    let t = Tmp::new("ro");
    fs::write(t.0.join("share/file"), b"keep").unwrap();
    fs::create_dir(t.0.join("share/dir")).unwrap();
    let mut f = T::new(&t.share(), true);
    let id = f.lookup(ROOT_ID, "file").unwrap();
    let fh = f.open(id, O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 10).unwrap(), b"keep");
    assert_eq!(f.write(fh, 0, b"x"), Err(EROFS));
    assert_eq!(f.open(id, O_RDWR), Err(EROFS));
    assert_eq!(f.open(id, O_WRONLY), Err(EROFS));
    assert_eq!(f.open(id, O_RDONLY | O_TRUNC), Err(EROFS));
    assert_eq!(f.create(ROOT_ID, "new", 0o644).unwrap_err(), EROFS);
    assert_eq!(f.mkdir(ROOT_ID, "d2", 0o755).unwrap_err(), EROFS);
    assert_eq!(f.call(UNLINK, ROOT_ID, b"file\0").0, EROFS);
    assert_eq!(f.call(RMDIR, ROOT_ID, b"dir\0").0, EROFS);
    assert_eq!(f.rename(ROOT_ID, "file", ROOT_ID, "other"), EROFS);
    assert_eq!(f.link(id, ROOT_ID, "l"), EROFS);
    assert_eq!(f.call(SYMLINK, ROOT_ID, b"s\0file\0").0, EROFS);
    let mut set = vec![0u8; 88];
    set[0..4].copy_from_slice(&FATTR_SIZE.to_le_bytes());
    assert_eq!(f.call(SETATTR, id, &set).0, EROFS);
    assert_eq!(f.call(FALLOCATE, ROOT_ID, &[0u8; 32]).0, EROFS);
    assert_eq!(f.call(ACCESS, id, &2u32.to_le_bytes().repeat(2)).0, EROFS);
    assert_eq!(fs::read(t.0.join("share/file")).unwrap(), b"keep");
    assert_eq!(f.readdir(ROOT_ID), vec![".", "..", "dir", "file"]);
}

#[test]
fn hostile_requests_get_errors_not_panics() {
    let t = Tmp::new("hostile");
    fs::write(t.0.join("share/file"), b"data").unwrap();
    let mut s = FuseServer::new(&t.share(), false).unwrap();
    // Before INIT everything but INIT fails.
    let r = s.handle(&req(LOOKUP, ROOT_ID, b"file\0")).unwrap();
    assert_eq!(i32::from_le_bytes(r[4..8].try_into().unwrap()), -EIO);
    assert!(s.handle(&[1, 2, 3]).is_none());
    let mut f = T::new(&t.share(), false);
    // Header claims more bytes than arrived; and less than a header.
    let mut r = req(LOOKUP, ROOT_ID, b"file\0");
    r[0..4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(i32::from_le_bytes(f.s.handle(&r).unwrap()[4..8].try_into().unwrap()), -EINVAL);
    r[0..4].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(i32::from_le_bytes(f.s.handle(&r).unwrap()[4..8].try_into().unwrap()), -EINVAL);
    // Names without NUL, truncated argument structs, write shorter than its size.
    assert_eq!(f.call(LOOKUP, ROOT_ID, b"file").0, EINVAL);
    assert_eq!(f.call(OPEN, ROOT_ID, &[1]).0, EINVAL);
    assert_eq!(f.call(SETATTR, ROOT_ID, &[0; 40]).0, EINVAL);
    let id = f.lookup(ROOT_ID, "file").unwrap();
    let fh = f.open(id, O_RDWR).unwrap();
    let body = cat(&[&fh.to_le_bytes(), &0u64.to_le_bytes(), &1000u32.to_le_bytes(), &[0u8; 20], b"short"]);
    assert_eq!(f.call(WRITE, 0, &body).0, EINVAL);
    assert_eq!(f.call(RENAME2, ROOT_ID, &cat(&[&ROOT_ID.to_le_bytes(), &4u32.to_le_bytes(), &0u32.to_le_bytes(), b"file\0x\0"])).0, EINVAL);
    assert_eq!(f.call(9999, ROOT_ID, &[]).0, ENOSYS);
    // Forgets of unknown ids, huge counts, truncated batches.
    assert!(f.s.handle(&req(FORGET, 424242, &u64::MAX.to_le_bytes())).is_none());
    assert!(f.s.handle(&req(BATCH_FORGET, 0, &cat(&[&u32::MAX.to_le_bytes(), &0u32.to_le_bytes(), &id.to_le_bytes()]))).is_none());
    assert!(f.s.handle(&req(FORGET, ROOT_ID, &u64::MAX.to_le_bytes())).is_none());
    assert!(f.lookup(ROOT_ID, "file").is_ok());
    // Random bytes with valid-looking headers for every opcode.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..20000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let op = (seed % 52) as u32;
        if op == DESTROY || op == INIT {
            continue;
        }
        let n = ((seed >> 8) % 200) as usize;
        let body: Vec<u8> = (0..n).map(|i| (seed >> (i % 56)) as u8).collect();
        let _ = f.s.handle(&req(op, (seed >> 32) % 4, &body));
    }
    assert!(f.lookup(ROOT_ID, "file").is_ok());
    let outside: Vec<_> = fs::read_dir(&t.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("share")], "nothing appeared beside the share");
}

#[test]
fn a_single_file_share_shows_that_file_and_nothing_beside_it() {
    let t = Tmp::new("single");
    fs::write(t.0.join("share/config.toml"), b"a = 1").unwrap();
    fs::write(t.0.join("share/sibling"), b"private").unwrap();
    let file = t.0.join("share/config.toml");
    let mut f = T::new(file.to_str().unwrap(), false);
    assert_eq!(f.lookup(ROOT_ID, "sibling"), Err(ENOENT));
    assert_eq!(f.readdir(ROOT_ID), vec![".", "..", "config.toml"]);
    let id = f.lookup(ROOT_ID, "config.toml").unwrap();
    let fh = f.open(id, O_RDWR).unwrap();
    assert_eq!(f.read(fh, 0, 10).unwrap(), b"a = 1");
    assert_eq!(f.write(fh, 0, b"b").unwrap(), 1);
    assert_eq!(fs::read(&file).unwrap(), b"b = 1");
    assert_eq!(f.create(ROOT_ID, "new", 0o644).unwrap_err(), EACCES);
    assert_eq!(f.call(UNLINK, ROOT_ID, b"config.toml\0").0, EACCES);
    assert_eq!(f.rename(ROOT_ID, "config.toml", ROOT_ID, "sibling"), EACCES);
    assert_eq!(f.link(id, ROOT_ID, "again"), EACCES);
    assert_eq!(fs::read(t.0.join("share/sibling")).unwrap(), b"private");
    let mut ro = T::new(file.to_str().unwrap(), true);
    let id = ro.lookup(ROOT_ID, "config.toml").unwrap();
    assert_eq!(ro.open(id, O_WRONLY), Err(EROFS));
    assert!(FuseServer::new("/dev/null", false).err().unwrap().contains("only directories and regular files"));
}

#[test]
fn inodes_beyond_the_fd_budget_are_evicted_and_re_resolved_beneath_their_parent() {
    let t = Tmp::new("evict");
    fs::create_dir_all(t.0.join("share/a/b")).unwrap();
    for i in 0..200 {
        fs::write(t.0.join(format!("share/a/b/f{i}")), format!("{i}")).unwrap();
    }
    let mut f = T::new(&t.share(), false);
    f.s.set_fd_budget(16);
    let a = f.lookup(ROOT_ID, "a").unwrap();
    let b = f.lookup(a, "b").unwrap();
    let ids: Vec<u64> = (0..200).map(|i| f.lookup(b, &format!("f{i}")).unwrap()).collect();
    assert!(f.s.open_inode_fds() <= 17, "{}", f.s.open_inode_fds());
    // Every inode still works, its evicted ancestors re-resolved on the way.
    for (i, &id) in ids.iter().enumerate() {
        let fh = f.open(id, O_RDONLY).unwrap();
        assert_eq!(f.read(fh, 0, 10).unwrap(), format!("{i}").as_bytes());
        f.call(RELEASE, id, &cat(&[&fh.to_le_bytes(), &[0u8; 16]]));
    }
    assert!(f.s.open_inode_fds() <= 17);
    // Renamed through the server: followed. Renamed on the host behind its back: ESTALE until
    // the guest looks it up again, and never a different file.
    assert_eq!(f.rename(b, "f0", a, "g0"), 0);
    for i in 1..40 {
        f.lookup(b, &format!("f{i}")).unwrap();
    }
    let fh = f.open(ids[0], O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 10).unwrap(), b"0");
    for i in 1..40 {
        f.lookup(b, &format!("f{i}")).unwrap();
    }
    fs::rename(t.0.join("share/a/b/f5"), t.0.join("share/a/b/elsewhere")).unwrap();
    fs::write(t.0.join("share/a/b/f5"), b"impostor").unwrap();
    for i in 10..60 {
        f.lookup(b, &format!("f{i}")).unwrap();
    }
    assert_eq!(f.open(ids[5], O_RDONLY), Err(ESTALE));
    assert_eq!(f.lookup(b, "elsewhere").unwrap(), ids[5]);
    let fh = f.open(ids[5], O_RDONLY).unwrap();
    assert_eq!(f.read(fh, 0, 10).unwrap(), b"5");
    // Lookups and forgets under the budget do not grow the eviction queue without bound.
    f.s.set_fd_budget(16);
    for round in 0..30 {
        for i in 100..200 {
            let id = f.lookup(b, &format!("f{i}")).unwrap();
            assert!(f.s.handle(&req(FORGET, id, &u64::MAX.to_le_bytes())).is_none(), "round {round}");
        }
    }
    assert!(f.s.fd_queue_len() <= 2 * 16 + 1024 + 1, "{}", f.s.fd_queue_len());
    assert_eq!(f.call(DESTROY, 0, &[]).0, 0);
    assert_eq!(f.s.open_inode_fds(), 0);
}
