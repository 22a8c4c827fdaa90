// A vhost-user-fs backend: QEMU's `vhost-user-fs-device` connects to a unix socket we listen on,
// hands us its guest RAM (memfd fds) and the virtqueues' kick/call eventfds, and we serve the
// FUSE requests on those queues with the same code as the native VMM's virtio-fs device. Runs on
// one thread per share inside the supervisor process. QEMU's messages are trusted no more than
// the guest: sizes, indices and addresses are all checked.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_int, c_void};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::devices::virtio::fs::{serve_queue, NUM_QUEUES, QUEUE_SIZE};
use crate::devices::virtio::queue::Queue;
use crate::fuse::FuseServer;
use crate::sys::{self, EventFd, PollFd};
use crate::vstate::memory::{GuestMemory, Region};

// Front-end requests (docs/interop/vhost-user.rst).
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const RESET_OWNER: u32 = 4;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const SET_VRING_ERR: u32 = 14;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_QUEUE_NUM: u32 = 17;
const SET_VRING_ENABLE: u32 = 18;

const FLAG_VERSION: u32 = 1;
const FLAG_REPLY: u32 = 1 << 2;
const FLAG_NEED_REPLY: u32 = 1 << 3;
const HEADER_LEN: usize = 12;
/// Largest payload we accept: a memory table of MAX_REGIONS regions is 8 + 32 * 8 bytes.
const MAX_PAYLOAD: usize = 4096;
const MAX_REGIONS: usize = 8;
const MAX_FDS: usize = 8;
const VRING_NOFD: u64 = 0x100;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
const PROTOCOL_F_MQ: u64 = 1 << 0;
const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
const OFFERED_FEATURES: u64 = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
const OFFERED_PROTOCOL: u64 = PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK;

#[derive(Debug)]
pub enum VhostError {
    /// The socket could not be created, accepted or used.
    Socket(String, io::Error),
    /// The front end sent something this backend cannot accept.
    Protocol(String),
    /// The shared directory could not be opened.
    Share(String),
}

impl fmt::Display for VhostError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VhostError::Socket(what, e) => write!(f, "vhost-user-fs socket {what}: {e}"),
            VhostError::Protocol(m) => write!(f, "vhost-user-fs front end protocol error: {m}"),
            VhostError::Share(m) => write!(f, "{m}"),
        }
    }
}

fn proto<T>(m: impl Into<String>) -> Result<T, VhostError> {
    Err(VhostError::Protocol(m.into()))
}

extern "C" {
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
}

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

const SOL_SOCKET: i32 = 1;
const SCM_RIGHTS: i32 = 1;
const MSG_CMSG_CLOEXEC: c_int = 0x40000000;
const MSG_CTRUNC: c_int = 0x8;

/// Reads exactly `buf.len()` bytes, collecting any fds sent along (SCM_RIGHTS). Ok(false): EOF
/// before the first byte.
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<bool, VhostError> {
    let mut done = 0;
    while done < buf.len() {
        let mut iov = IoVec { base: buf[done..].as_mut_ptr() as *mut c_void, len: buf.len() - done };
        let mut control = [0u64; 32];
        let mut msg = MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: &mut iov,
            iovlen: 1,
            control: control.as_mut_ptr() as *mut c_void,
            controllen: std::mem::size_of_val(&control),
            flags: 0,
        };
        let n = unsafe { recvmsg(sock.as_raw_fd(), &mut msg, MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(VhostError::Socket("read".into(), e));
        }
        // Take ownership of every fd received before judging the message, so none leaks.
        let bytes = unsafe { std::slice::from_raw_parts(control.as_ptr() as *const u8, msg.controllen.min(256)) };
        let mut p = 0;
        while p + 16 <= bytes.len() {
            let clen = usize::from_ne_bytes(bytes[p..p + 8].try_into().unwrap());
            let level = i32::from_ne_bytes(bytes[p + 8..p + 12].try_into().unwrap());
            let kind = i32::from_ne_bytes(bytes[p + 12..p + 16].try_into().unwrap());
            if clen < 16 || p + clen > bytes.len() {
                break;
            }
            if level == SOL_SOCKET && kind == SCM_RIGHTS {
                for c in bytes[p + 16..p + clen].chunks_exact(4) {
                    let fd = i32::from_ne_bytes(c.try_into().unwrap());
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            p += (clen + 7) & !7;
        }
        if msg.flags & MSG_CTRUNC != 0 || fds.len() > MAX_FDS {
            return proto("too many file descriptors in one message");
        }
        if n == 0 {
            if done == 0 {
                return Ok(false);
            }
            return proto("connection closed in the middle of a message");
        }
        done += n as usize;
    }
    Ok(true)
}

struct Vring {
    queue: Queue,
    kick: Option<OwnedFd>,
    call: Option<OwnedFd>,
    enabled: bool,
    /// desc/avail/used as front-end virtual addresses, translated when memory is known.
    addrs: Option<(u64, u64, u64)>,
    broken: Option<String>,
}

impl Vring {
    fn new() -> Vring {
        Vring { queue: Queue::new(QUEUE_SIZE), kick: None, call: None, enabled: false, addrs: None, broken: None }
    }
}

struct MemRegion {
    gpa: u64,
    size: u64,
    user: u64,
}

/// One front-end connection's state.
pub struct Backend {
    server: FuseServer,
    mem: Option<Arc<GuestMemory>>,
    table: Vec<MemRegion>,
    vrings: Vec<Vring>,
    features: u64,
    protocol: u64,
    reply_ack: bool,
}

impl Backend {
    pub fn new(server: FuseServer) -> Backend {
        Backend { server, mem: None, table: Vec::new(), vrings: (0..NUM_QUEUES).map(|_| Vring::new()).collect(), features: 0, protocol: 0, reply_ack: false }
    }

    /// Front-end virtual address -> guest physical address, for a range of `len` bytes.
    fn translate(&self, user: u64, len: u64) -> Option<u64> {
        self.table.iter().find_map(|r| {
            let off = user.checked_sub(r.user)?;
            (off.checked_add(len)? <= r.size).then_some(r.gpa + off)
        })
    }

    fn vring(&mut self, index: u64) -> Result<&mut Vring, VhostError> {
        let n = self.vrings.len();
        self.vrings.get_mut(index as usize).ok_or_else(|| VhostError::Protocol(format!("vring index {index} (this device has {n})")))
    }

    /// Makes a ring usable once it has an address and memory; checks the layout.
    fn arm(&mut self, index: usize) {
        let Some(mem) = self.mem.clone() else { return };
        let size = self.vrings[index].queue.size as u64;
        let Some((d, a, u)) = self.vrings[index].addrs else { return };
        let t = (self.translate(d, 16 * size), self.translate(a, 6 + 2 * size), self.translate(u, 6 + 8 * size));
        let vr = &mut self.vrings[index];
        match t {
            (Some(d), Some(a), Some(u)) => {
                vr.queue.desc_table = d;
                vr.queue.avail_ring = a;
                vr.queue.used_ring = u;
                vr.queue.ready = vr.queue.is_valid(&mem);
                if !vr.queue.ready {
                    vr.broken = Some(format!("vring {index} layout is invalid"));
                }
            }
            _ => {
                vr.queue.ready = false;
                vr.broken = Some(format!("vring {index} addresses are outside the memory table"));
            }
        }
    }

    fn active(&self, index: usize) -> bool {
        let v = &self.vrings[index];
        // Without protocol features a ring starts as soon as it is kicked-capable.
        let enabled = v.enabled || self.features & VHOST_USER_F_PROTOCOL_FEATURES == 0;
        v.queue.ready && v.kick.is_some() && enabled && v.broken.is_none()
    }

    fn set_mem_table(&mut self, p: &[u8], fds: Vec<OwnedFd>) -> Result<(), VhostError> {
        let n = u32::from_le_bytes(p.get(0..4).ok_or(VhostError::Protocol("short memory table".into()))?.try_into().unwrap()) as usize;
        if n == 0 || n > MAX_REGIONS || p.len() < 8 + 32 * n || fds.len() != n {
            return proto(format!("memory table with {n} regions, {} fds, {} bytes", fds.len(), p.len()));
        }
        let mut regions = Vec::new();
        let mut mappings = Vec::new();
        let mut table = Vec::new();
        for (i, fd) in fds.iter().enumerate() {
            let r = &p[8 + 32 * i..8 + 32 * (i + 1)];
            let f = |k: usize| u64::from_le_bytes(r[8 * k..8 * k + 8].try_into().unwrap());
            let (gpa, size, user, offset) = (f(0), f(1), f(2), f(3));
            let total = size.checked_add(offset).filter(|&t| size > 0 && t <= (1 << 40));
            let Some(total) = total else {
                for (p, l) in mappings {
                    unsafe { sys::munmap(p as *mut c_void, l) };
                }
                return proto(format!("memory region {i} size {size:#x} offset {offset:#x}"));
            };
            let ptr = unsafe { sys::mmap(std::ptr::null_mut(), total as usize, sys::PROT_READ | sys::PROT_WRITE, sys::MAP_SHARED, fd.as_raw_fd(), 0) };
            if ptr == sys::MAP_FAILED {
                let e = io::Error::last_os_error();
                for (p, l) in mappings {
                    unsafe { sys::munmap(p as *mut c_void, l) };
                }
                return Err(VhostError::Socket(format!("mapping guest memory region {i}"), e));
            }
            unsafe { sys::madvise(ptr, total as usize, sys::MADV_DONTFORK) };
            mappings.push((ptr as *mut u8, total as usize));
            regions.push(Region { gpa, size, host: unsafe { (ptr as *mut u8).add(offset as usize) } });
            table.push(MemRegion { gpa, size, user });
        }
        let mem = unsafe { GuestMemory::from_mappings(regions, mappings) }.map_err(|e| VhostError::Protocol(format!("memory table: {e}")))?;
        self.mem = Some(Arc::new(mem));
        self.table = table;
        for i in 0..self.vrings.len() {
            self.arm(i);
        }
        Ok(())
    }

    /// Handles one message; returns the reply payload, if the request has one.
    pub fn message(&mut self, req: u32, p: &[u8], mut fds: Vec<OwnedFd>) -> Result<Option<Vec<u8>>, VhostError> {
        let u64_at = |o: usize| -> Result<u64, VhostError> {
            p.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).ok_or(VhostError::Protocol(format!("request {req}: payload too short")))
        };
        let u32_at = |o: usize| -> Result<u32, VhostError> {
            p.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).ok_or(VhostError::Protocol(format!("request {req}: payload too short")))
        };
        match req {
            GET_FEATURES => return Ok(Some(OFFERED_FEATURES.to_le_bytes().to_vec())),
            SET_FEATURES => {
                let f = u64_at(0)?;
                if f & !OFFERED_FEATURES != 0 {
                    return proto(format!("features {f:#x} were not offered"));
                }
                self.features = f;
            }
            GET_PROTOCOL_FEATURES => return Ok(Some(OFFERED_PROTOCOL.to_le_bytes().to_vec())),
            SET_PROTOCOL_FEATURES => {
                self.protocol = u64_at(0)? & OFFERED_PROTOCOL;
                self.reply_ack = self.protocol & PROTOCOL_F_REPLY_ACK != 0;
            }
            GET_QUEUE_NUM => return Ok(Some((NUM_QUEUES as u64).to_le_bytes().to_vec())),
            SET_OWNER => {}
            RESET_OWNER => {
                self.vrings = (0..NUM_QUEUES).map(|_| Vring::new()).collect();
            }
            SET_MEM_TABLE => self.set_mem_table(p, std::mem::take(&mut fds))?,
            SET_VRING_NUM => {
                let (i, num) = (u32_at(0)?, u32_at(4)?);
                if num == 0 || num > QUEUE_SIZE as u32 || !num.is_power_of_two() {
                    return proto(format!("vring {i} size {num} (must be a power of two up to {QUEUE_SIZE})"));
                }
                self.vring(i as u64)?.queue.size = num as u16;
            }
            SET_VRING_ADDR => {
                let i = u32_at(0)? as usize;
                let (desc, used, avail) = (u64_at(8)?, u64_at(16)?, u64_at(24)?);
                self.vring(i as u64)?.addrs = Some((desc, avail, used));
                self.vrings[i].broken = None;
                self.arm(i);
            }
            SET_VRING_BASE => {
                let (i, base) = (u32_at(0)?, u32_at(4)?);
                let v = self.vring(i as u64)?;
                v.queue.next_avail = base as u16;
                v.queue.next_used = base as u16;
            }
            GET_VRING_BASE => {
                let i = u32_at(0)?;
                let v = self.vring(i as u64)?;
                // Stops the ring: the front end takes it back.
                v.kick = None;
                v.enabled = false;
                let base = v.queue.next_avail as u32;
                let mut r = i.to_le_bytes().to_vec();
                r.extend_from_slice(&base.to_le_bytes());
                return Ok(Some(r));
            }
            SET_VRING_KICK | SET_VRING_CALL | SET_VRING_ERR => {
                let v = u64_at(0)?;
                let fd = if v & VRING_NOFD != 0 {
                    None
                } else {
                    if fds.len() != 1 {
                        return proto(format!("request {req} for vring {} carries {} fds, expected 1", v & 0xff, fds.len()));
                    }
                    fds.pop()
                };
                let vr = self.vring(v & 0xff)?;
                match req {
                    SET_VRING_KICK => vr.kick = fd,
                    SET_VRING_CALL => vr.call = fd,
                    _ => {}
                }
            }
            SET_VRING_ENABLE => {
                let (i, on) = (u32_at(0)?, u32_at(4)?);
                self.vring(i as u64)?.enabled = on != 0;
            }
            other => return proto(format!("request {other} is not supported")),
        }
        Ok(None)
    }

    /// Serves every available request on vring `i`; signals the guest if any completed.
    pub fn process(&mut self, i: usize) {
        if !self.active(i) {
            return;
        }
        let Some(mem) = self.mem.clone() else { return };
        let vr = &mut self.vrings[i];
        match serve_queue(&mut self.server, &mem, &mut vr.queue) {
            Ok(false) => {}
            Ok(true) => {
                if let Some(call) = &vr.call {
                    let one = 1u64;
                    unsafe { sys::write(call.as_raw_fd(), &one as *const u64 as *const c_void, 8) };
                }
            }
            Err(e) => vr.broken = Some(format!("vring {i}: {e}")),
        }
    }

    /// fds to poll for guest kicks, with their ring index.
    fn kick_fds(&self) -> Vec<(RawFd, usize)> {
        (0..self.vrings.len()).filter(|&i| self.active(i)).filter_map(|i| self.vrings[i].kick.as_ref().map(|k| (k.as_raw_fd(), i))).collect()
    }

    pub fn broken(&self) -> Vec<String> {
        self.vrings.iter().filter_map(|v| v.broken.clone()).collect()
    }
}

/// A front-end message: request, flags, payload, fds that came with it.
type Message = (u32, u32, Vec<u8>, Vec<OwnedFd>);

/// Reads one front-end message; None on a clean disconnect.
fn read_message(sock: &mut UnixStream) -> Result<Option<Message>, VhostError> {
    let mut hdr = [0u8; HEADER_LEN];
    let mut fds = Vec::new();
    if !recv_with_fds(sock, &mut hdr, &mut fds)? {
        return Ok(None);
    }
    let req = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    if flags & 3 != FLAG_VERSION || size > MAX_PAYLOAD {
        return proto(format!("request {req}: flags {flags:#x}, size {size}"));
    }
    let mut payload = vec![0u8; size];
    if size > 0 && !recv_with_fds(sock, &mut payload, &mut fds)? {
        return proto("connection closed in the middle of a message");
    }
    Ok(Some((req, flags, payload, fds)))
}

fn send_reply(sock: &mut UnixStream, req: u32, payload: &[u8]) -> Result<(), VhostError> {
    let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    sock.write_all(&m).map_err(|e| VhostError::Socket("write".into(), e))
}

/// A running vhost-user-fs backend: listening, then serving one front end until it goes away
/// or stop() is called.
pub struct VhostUserFs {
    stop: Arc<EventFd>,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
    socket_path: String,
}

impl VhostUserFs {
    /// Binds `socket_path` (which must not exist) and serves `dir` to the first front end that
    /// connects. Errors (bad dir, socket in use) are reported here, before the thread starts.
    pub fn start(socket_path: &str, dir: &str, read_only: bool) -> Result<VhostUserFs, VhostError> {
        let server = FuseServer::new(dir, read_only).map_err(VhostError::Share)?;
        let listener = UnixListener::bind(socket_path).map_err(|e| VhostError::Socket(format!("bind {socket_path}"), e))?;
        let stop = Arc::new(EventFd::new().map_err(|e| VhostError::Socket("eventfd".into(), e))?);
        let stopped = Arc::new(AtomicBool::new(false));
        let (s, st) = (stop.clone(), stopped.clone());
        let path = socket_path.to_string();
        let thread = std::thread::Builder::new()
            .name("msb-vhost-fs".into())
            .spawn(move || {
                let r = serve(listener, server, &s);
                st.store(true, Ordering::SeqCst);
                let _ = std::fs::remove_file(&path);
                r.map_err(|e| e.to_string())
            })
            .map_err(|e| VhostError::Socket("thread".into(), e))?;
        Ok(VhostUserFs { stop, stopped, thread: Some(thread), socket_path: socket_path.to_string() })
    }

    pub fn is_finished(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops serving and waits for the thread; returns why it ended if that was an error.
    pub fn stop(&mut self) -> Result<(), String> {
        self.stop.signal();
        let r = match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err("vhost-user-fs thread panicked (a bug)".into())),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket_path);
        r
    }
}

impl Drop for VhostUserFs {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn poll_fds(fds: &mut [PollFd]) -> Result<(), VhostError> {
    let r = unsafe { sys::poll(fds.as_mut_ptr(), fds.len() as u64, -1) };
    if r < 0 && sys::errno() != sys::EINTR {
        return Err(VhostError::Socket("poll".into(), io::Error::last_os_error()));
    }
    Ok(())
}

fn serve(listener: UnixListener, server: FuseServer, stop: &EventFd) -> Result<(), VhostError> {
    let mut fds = [PollFd { fd: stop.fd(), events: sys::POLLIN, revents: 0 }, PollFd { fd: listener.as_raw_fd(), events: sys::POLLIN, revents: 0 }];
    poll_fds(&mut fds)?;
    if fds[0].revents != 0 {
        return Ok(());
    }
    let (mut sock, _) = listener.accept().map_err(|e| VhostError::Socket("accept".into(), e))?;
    drop(listener);
    let mut be = Backend::new(server);
    loop {
        let kicks = be.kick_fds();
        let mut pfds = vec![PollFd { fd: stop.fd(), events: sys::POLLIN, revents: 0 }, PollFd { fd: sock.as_raw_fd(), events: sys::POLLIN, revents: 0 }];
        pfds.extend(kicks.iter().map(|&(fd, _)| PollFd { fd, events: sys::POLLIN, revents: 0 }));
        poll_fds(&mut pfds)?;
        if pfds[0].revents != 0 {
            return Ok(());
        }
        for (k, &(fd, i)) in kicks.iter().enumerate() {
            if pfds[2 + k].revents != 0 {
                let mut v = 0u64;
                unsafe { sys::read(fd, &mut v as *mut u64 as *mut c_void, 8) };
                be.process(i);
            }
        }
        if pfds[1].revents != 0 {
            let Some((req, flags, payload, msg_fds)) = read_message(&mut sock)? else { return Ok(()) };
            let result = be.message(req, &payload, msg_fds);
            match result {
                Ok(Some(reply)) => send_reply(&mut sock, req, &reply)?,
                Ok(None) if be.reply_ack && flags & FLAG_NEED_REPLY != 0 => send_reply(&mut sock, req, &0u64.to_le_bytes())?,
                Ok(None) => {}
                Err(e) => {
                    if be.reply_ack && flags & FLAG_NEED_REPLY != 0 {
                        let _ = send_reply(&mut sock, req, &1u64.to_le_bytes());
                    }
                    return Err(e);
                }
            }
            // A ring may have become active with requests already waiting.
            for i in 0..be.vrings.len() {
                be.process(i);
            }
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::queue::testing::Driver;
    use crate::devices::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
    use crate::fuse::tests::{req, Tmp};
    use std::io::Read;

    extern "C" {
        fn memfd_create(name: *const std::os::raw::c_char, flags: u32) -> c_int;
        fn ftruncate(fd: c_int, len: i64) -> c_int;
    }

    const USER: u64 = 0x7f00_0000_0000;
    const MEM: u64 = 1 << 20;

    /// Guest RAM as QEMU would have it: a memfd, plus our own (driver-side) view of it.
    fn guest_ram() -> (OwnedFd, GuestMemory) {
        let fd = unsafe { memfd_create(c"msb-test-ram".as_ptr(), 0) };
        assert!(fd >= 0);
        assert_eq!(unsafe { ftruncate(fd, MEM as i64) }, 0);
        let p = unsafe { sys::mmap(std::ptr::null_mut(), MEM as usize, sys::PROT_READ | sys::PROT_WRITE, sys::MAP_SHARED, fd, 0) };
        assert_ne!(p, sys::MAP_FAILED);
        let view = unsafe { GuestMemory::from_mappings(vec![Region { gpa: 0, size: MEM, host: p as *mut u8 }], vec![(p as *mut u8, MEM as usize)]) }.unwrap();
        (unsafe { OwnedFd::from_raw_fd(fd) }, view)
    }

    fn mem_table(n: u32, regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
        let mut p = n.to_le_bytes().to_vec();
        p.extend_from_slice(&0u32.to_le_bytes());
        for &(gpa, size, user, off) in regions {
            for v in [gpa, size, user, off] {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        p
    }

    fn state(i: u32, n: u32) -> Vec<u8> {
        [i.to_le_bytes(), n.to_le_bytes()].concat()
    }

    fn addr(i: u32, desc: u64, used: u64, avail: u64) -> Vec<u8> {
        let mut p = state(i, 0);
        for v in [desc, used, avail, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    fn eventfd() -> OwnedFd {
        let e = unsafe { sys::eventfd(0, sys::EFD_CLOEXEC | sys::EFD_NONBLOCK) };
        unsafe { OwnedFd::from_raw_fd(e) }
    }

    fn dup(fd: &OwnedFd) -> OwnedFd {
        fd.try_clone().unwrap()
    }

    #[test]
    fn serves_fuse_requests_on_a_ring_the_front_end_set_up() {
        let t = Tmp::new("vhost");
        let (ram, view) = guest_ram();
        let mut be = Backend::new(FuseServer::new(&t.share(), false).unwrap());
        assert_eq!(be.message(GET_FEATURES, &[], vec![]).unwrap().unwrap(), OFFERED_FEATURES.to_le_bytes());
        be.message(SET_FEATURES, &VIRTIO_F_VERSION_1.to_le_bytes(), vec![]).unwrap();
        be.message(SET_OWNER, &[], vec![]).unwrap();
        be.message(SET_MEM_TABLE, &mem_table(1, &[(0, MEM, USER, 0)]), vec![dup(&ram)]).unwrap();
        be.message(SET_VRING_NUM, &state(1, 8), vec![]).unwrap();
        be.message(SET_VRING_BASE, &state(1, 0), vec![]).unwrap();
        be.message(SET_VRING_ADDR, &addr(1, USER + 0x1000, USER + 0x3000, USER + 0x2000), vec![]).unwrap();
        let (kick, call) = (eventfd(), eventfd());
        be.message(SET_VRING_KICK, &1u64.to_le_bytes(), vec![dup(&kick)]).unwrap();
        be.message(SET_VRING_CALL, &1u64.to_le_bytes(), vec![dup(&call)]).unwrap();
        let mut d = Driver::new(8);
        let r = req(26, 0, &[7u32.to_le_bytes(), 31u32.to_le_bytes(), 0u32.to_le_bytes(), 0u32.to_le_bytes()].concat());
        view.write(0x10000, &r).unwrap();
        d.set_desc(&view, 0, 0x10000, r.len() as u32, VIRTQ_DESC_F_NEXT, 1);
        d.set_desc(&view, 1, 0x11000, 80, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&view, 0);
        be.process(1);
        assert_eq!(d.used_elem(&view, 0), (0, 80));
        assert_eq!(view.read_u32(0x11010).unwrap(), 7, "FUSE major version in the reply");
        let mut v = [0u8; 8];
        assert_eq!(unsafe { sys::read(call.as_raw_fd(), v.as_mut_ptr() as *mut c_void, 8) }, 8, "guest was signalled");
        // GET_VRING_BASE stops the ring and reports where it was.
        let base = be.message(GET_VRING_BASE, &state(1, 0), vec![]).unwrap().unwrap();
        assert_eq!(base, state(1, 1));
        assert!(be.kick_fds().is_empty());
    }

    #[test]
    fn hostile_front_end_messages_are_refused() {
        let t = Tmp::new("vhost-hostile");
        let (ram, _view) = guest_ram();
        let mut be = Backend::new(FuseServer::new(&t.share(), false).unwrap());
        assert!(be.message(SET_FEATURES, &(1u64 << 28).to_le_bytes(), vec![]).is_err(), "indirect descriptors were not offered");
        assert!(be.message(SET_MEM_TABLE, &mem_table(1, &[(0, MEM, USER, 0)]), vec![]).is_err(), "no fd");
        assert!(be.message(SET_MEM_TABLE, &mem_table(100, &[]), vec![dup(&ram)]).is_err());
        assert!(be.message(SET_MEM_TABLE, &mem_table(1, &[(0, u64::MAX, USER, 4096)]), vec![dup(&ram)]).is_err());
        assert!(be.message(SET_MEM_TABLE, &mem_table(2, &[(0, 4096, USER, 0), (0, 4096, USER, 0)]), vec![dup(&ram), dup(&ram)]).is_err(), "overlapping regions");
        assert!(be.message(SET_MEM_TABLE, &[1, 0], vec![dup(&ram)]).is_err());
        be.message(SET_MEM_TABLE, &mem_table(1, &[(0, MEM, USER, 0)]), vec![dup(&ram)]).unwrap();
        assert!(be.message(SET_VRING_NUM, &state(0, 3), vec![]).is_err());
        assert!(be.message(SET_VRING_NUM, &state(0, 4096), vec![]).is_err());
        assert!(be.message(SET_VRING_NUM, &state(9, 8), vec![]).is_err());
        assert!(be.message(SET_VRING_NUM, &[1], vec![]).is_err());
        assert!(be.message(SET_VRING_KICK, &0u64.to_le_bytes(), vec![]).is_err(), "kick without its fd");
        assert!(be.message(SET_VRING_KICK, &0xffu64.to_le_bytes(), vec![eventfd()]).is_err());
        assert!(be.message(999, &[], vec![]).is_err());
        // Rings outside the memory table never become active.
        be.message(SET_VRING_NUM, &state(0, 8), vec![]).unwrap();
        be.message(SET_VRING_ADDR, &addr(0, USER + MEM - 16, USER + 0x3000, USER + 0x2000), vec![]).unwrap();
        be.message(SET_VRING_KICK, &0u64.to_le_bytes(), vec![eventfd()]).unwrap();
        assert!(be.kick_fds().is_empty());
        assert!(be.broken()[0].contains("outside the memory table"));
        be.process(0);
    }

    #[test]
    fn the_socket_backend_answers_and_stops() {
        let t = Tmp::new("vhost-sock");
        let sock = t.0.join("fs.sock");
        let path = sock.to_str().unwrap();
        assert!(VhostUserFs::start(path, "/nonexistent/msb-share", false).err().unwrap().to_string().contains("/nonexistent/msb-share"));
        let mut fs = VhostUserFs::start(path, &t.share(), true).unwrap();
        assert!(VhostUserFs::start(path, &t.share(), true).is_err(), "socket in use");
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(&[GET_FEATURES.to_le_bytes(), FLAG_VERSION.to_le_bytes(), 0u32.to_le_bytes()].concat()).unwrap();
        let mut reply = [0u8; 20];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(u32::from_le_bytes(reply[4..8].try_into().unwrap()), FLAG_VERSION | FLAG_REPLY);
        assert_eq!(u64::from_le_bytes(reply[12..20].try_into().unwrap()), OFFERED_FEATURES);
        // A message claiming a huge payload ends the session with an error, not a crash.
        c.write_all(&[SET_FEATURES.to_le_bytes(), FLAG_VERSION.to_le_bytes(), 1_000_000u32.to_le_bytes()].concat()).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(fs.is_finished() || { std::thread::sleep(std::time::Duration::from_millis(100)); fs.is_finished() });
        assert!(fs.stop().unwrap_err().contains("size 1000000"));
        assert!(!sock.exists());
    }
}
