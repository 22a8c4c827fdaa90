// The agent's protocol server: one single-threaded poll loop over the host connection, every
// exec's pipes and the SIGCHLD self-pipe. Non-blocking descriptors everywhere, so one slow
// stream (a full stdin pipe, an exhausted window) never stalls the others, and buffers are
// bounded by the protocol's credit plus two global limits below.
//
// Processes run chrooted: after INIT the agent itself chroots into the sandbox root rather than
// each child doing it. PATH lookup, the cwd check and later file operations then see exactly
// what the process sees (absolute symlinks inside the root resolve correctly), there is no
// per-exec chroot cost, and host test mode runs the very same code with the root "/".

use crate::files::{self, FileOp, FsError};
use crate::flow::{RecvWindow, SendCredit};
use crate::frame::{self, kind, Decoder, Frame, MAX_CHUNK, MAX_PING, MAX_STREAMS};
use crate::json;
use crate::message::{self, code, ExecRequest, ExitStatus, Init, InitError, RootKind};
use crate::netconf;
use crate::overlay;
use crate::trust;
use crate::volumes;
use crate::pid1::{self, log};
use crate::spawn::{self, CANNOT_START};
use crate::sys::{self, PollFd, WaitStatus};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Stop reading process output while this much is waiting to go to the host.
const OUT_HIGH: usize = 1024 * 1024;
/// Stop reading from the host while this much is waiting to go back to it (it is not reading).
const OUT_HARD: usize = 4 * 1024 * 1024;
/// Bytes read from the connection per loop turn, so streams get their turn too.
const READ_BUDGET: usize = 256 * 1024;
/// How long after a process exits its EXIT waits for descendants holding its pipes.
const EXIT_GRACE: Duration = Duration::from_millis(250);
/// After the grace, how much more output is still collected from pipes that stay open.
const DRAIN_BUDGET: usize = 1024 * 1024;
/// Shutdown: time between SIGTERM and SIGKILL, then until we power off regardless.
const TERM_GRACE: Duration = Duration::from_millis(1000);
const KILL_GRACE: Duration = Duration::from_millis(1000);
/// Time to get the last frames (EXITs, an ERROR) to the host before powering off.
const FLUSH_GRACE: Duration = Duration::from_millis(1000);
/// Ids of ended streams remembered, so late frames for them are dropped quietly.
const CLOSED_MEMORY: usize = 4096;
/// Longest message the agent puts in an ERROR or EXIT (argv[0] may be a megabyte).
const MAX_MESSAGE: usize = 1024;

/// How the agent was started.
pub struct Config {
    /// PID 1 in the VM: mounts, clock, hostname, chroot into INIT's root, power off at the end.
    /// False in host test mode: none of that, and the process exits instead.
    pub pid1: bool,
    /// Host test mode's sandbox root ("/" = no chroot), used instead of INIT's root.path.
    pub root_override: Option<String>,
    /// Power off if no INIT has come by then: a host that died before the handshake (its VM
    /// left running) must not leave the VM waiting forever.
    pub init_deadline: Option<Instant>,
}

/// The byte stream to the host.
pub struct Conn {
    rfd: RawFd,
    wfd: RawFd,
    _owned: Option<OwnedFd>,
    /// A virtio-console port reads end-of-file while the host side is not connected; before
    /// INIT that means "wait for the host", not "the host left".
    reconnectable: bool,
    connected: bool,
    decoder: Decoder,
    out: Vec<u8>,
    out_start: usize,
}

impl Conn {
    pub fn port(fd: OwnedFd) -> Conn {
        let raw = fd.as_raw_fd();
        Conn::new(raw, raw, Some(fd), true)
    }

    pub fn socket(fd: OwnedFd) -> io::Result<Conn> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        let raw = fd.as_raw_fd();
        Ok(Conn::new(raw, raw, Some(fd), false))
    }

    /// stdin/stdout of the agent process (host test mode).
    pub fn stdio() -> io::Result<Conn> {
        sys::set_nonblocking(0)?;
        sys::set_nonblocking(1)?;
        Ok(Conn::new(0, 1, None, false))
    }

    fn new(rfd: RawFd, wfd: RawFd, owned: Option<OwnedFd>, reconnectable: bool) -> Conn {
        Conn {
            rfd,
            wfd,
            _owned: owned,
            reconnectable,
            connected: true,
            decoder: Decoder::new(),
            out: Vec::new(),
            out_start: 0,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_start
    }

    fn send(&mut self, stream: u32, kind: u8, payload: &[u8]) {
        frame::encode_into(&mut self.out, stream, kind, payload);
    }

    /// Reads up to `max` bytes from `fd` straight into a data frame in the output buffer.
    fn send_from_fd(&mut self, stream: u32, kind: u8, fd: RawFd, max: usize) -> io::Result<usize> {
        let at = self.out.len();
        frame::push_header(&mut self.out, stream, kind, 0);
        let result = sys::read_append(fd, &mut self.out, max);
        match result {
            Ok(n) if n > 0 => frame::patch_length(&mut self.out, at, n),
            _ => self.out.truncate(at),
        }
        result
    }

    /// Sends one frame carrying exactly `n` bytes of a regular file (n no more than what is left
    /// in it), straight from the page cache with sendfile(2) when nothing else is queued: under
    /// emulation the kernel's copies are most of a transfer's cost. Whatever the connection does
    /// not take at once is completed through the output buffer, so the frame is always whole.
    /// Err(InvalidData) if the file shrank meanwhile (the frame was padded with zeros).
    fn send_file_frame(&mut self, stream: u32, kind: u8, fd: RawFd, n: usize) -> io::Result<()> {
        let mut header = Vec::with_capacity(frame::HEADER_SIZE);
        frame::push_header(&mut header, stream, kind, n);
        let mut done = 0;
        if self.pending() == 0 {
            let wrote = match sys::write_fd(self.wfd, &header) {
                Ok(w) => w,
                Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => 0,
                Err(e) => return Err(e),
            };
            self.out.extend_from_slice(&header[wrote..]);
            if wrote == header.len() {
                while done < n {
                    match sys::send_file(self.wfd, fd, n - done) {
                        Ok(m) if m > 0 => done += m,
                        // Full (EAGAIN), unsupported (EINVAL) or anything else: the header is
                        // out, so the body must follow; the plain read below completes it.
                        _ => break,
                    }
                }
            }
        } else {
            self.out.extend_from_slice(&header);
        }
        while done < n {
            match sys::read_append(fd, &mut self.out, n - done) {
                Ok(0) => {
                    self.out.resize(self.out.len() + (n - done), 0);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the file shrank while it was read"));
                }
                Ok(m) => done += m,
                Err(e) => {
                    self.out.resize(self.out.len() + (n - done), 0);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Writes as much buffered output as the host takes now. Err: the connection is broken.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_start < self.out.len() {
            match sys::write_fd(self.wfd, &self.out[self.out_start..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "host connection closed")),
                Ok(n) => self.out_start += n,
                Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        } else if self.out_start >= OUT_HIGH {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        Ok(())
    }

    /// Forgets a half-received frame and unsent output (the other side went away).
    fn reset(&mut self) {
        self.decoder = Decoder::new();
        self.out.clear();
        self.out_start = 0;
    }
}

/// Which of an exec's descriptors a poll entry is.
#[derive(Clone, Copy)]
enum Slot {
    Sigchld,
    Conn,
    Stdout(u32),
    Stderr(u32),
    Stdin(u32),
}

struct Stream {
    pid: i32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    /// EXEC said stdin:true.
    stdin_wanted: bool,
    /// On a pseudo-terminal: `stdout` is its master, `stdin` a second descriptor of it.
    tty: bool,
    /// The master after its output ended (every slave descriptor closed) while the process
    /// still runs: closing it would hang the terminal up and SIGHUP a process that merely
    /// closed its descriptors before exiting. Dropped with the stream.
    tty_held: Option<OwnedFd>,
    stdin_eof: bool,
    stdin_buf: Vec<u8>,
    stdin_start: usize,
    stdin_window: RecvWindow,
    credit: SendCredit,
    status: Option<ExitStatus>,
    exited_at: Option<Instant>,
    /// Past EXIT_GRACE: read what is there now and close pipes that have nothing.
    draining: bool,
    drain_left: usize,
    /// EXEC's timeoutMs: when the process group is killed.
    deadline: Option<Instant>,
    timed_out: bool,
}

/// A FILE stream that moves data: its state between loop turns.
enum Transfer {
    /// Sending a file's bytes as DATA within the host's credit.
    Read { file: std::fs::File, credit: SendCredit, sent: u64 },
    /// Writing the host's DATA into a file; credit goes back as it is written.
    Write { file: std::fs::File, window: RecvWindow, written: u64, path: String },
    /// Sending a directory's entries as DATA (JSON lines) within the host's credit.
    List { dir: std::fs::ReadDir, credit: SendCredit, count: u64, next: Option<Vec<u8>>, path: String },
}

impl Transfer {
    /// Has something to send now (credit left) without waiting on any descriptor.
    fn sendable(&self) -> bool {
        match self {
            Transfer::Read { credit, .. } | Transfer::List { credit, .. } => credit.available() > 0,
            Transfer::Write { .. } => false,
        }
    }
}

impl Stream {
    fn outputs_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StopReason {
    /// The host asked (SHUTDOWN).
    Shutdown,
    /// The connection ended or broke.
    HostGone,
    /// INIT was refused or failed; the agent said so with ERROR.
    InitFailed,
    /// The host broke the protocol; the agent said so with ERROR and drops the connection.
    ProtocolError,
}

enum Phase {
    AwaitInit,
    Ready,
    Stopping { reason: StopReason, since: Instant, killed: bool },
}

pub struct Server {
    cfg: Config,
    conn: Option<Conn>,
    phase: Phase,
    base_env: Vec<(String, String)>,
    streams: HashMap<u32, Stream>,
    files: HashMap<u32, Transfer>,
    by_pid: HashMap<i32, u32>,
    closed: HashSet<u32>,
    closed_order: VecDeque<u32>,
    sigchld: OwnedFd,
    /// No children left at the last reap (ECHILD).
    childless: bool,
    outer_root: Option<OwnedFd>,
    mounts: Vec<String>,
}

fn bounded(msg: &str) -> &str {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut end = MAX_MESSAGE;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

impl Server {
    pub fn new(cfg: Config, conn: Conn, sigchld: OwnedFd) -> Server {
        let mut s = Server {
            cfg,
            conn: Some(conn),
            phase: Phase::AwaitInit,
            base_env: Vec::new(),
            streams: HashMap::new(),
            files: HashMap::new(),
            by_pid: HashMap::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            sigchld,
            childless: false,
            outer_root: None,
            mounts: Vec::new(),
        };
        s.send(0, kind::HELLO, &message::hello());
        s
    }

    fn send(&mut self, stream: u32, kind: u8, payload: &[u8]) {
        if let Some(c) = self.conn.as_mut() {
            c.send(stream, kind, payload);
        }
    }

    fn send_error(&mut self, stream: u32, code: &str, msg: &str) {
        self.send(stream, kind::ERROR, &message::error(code, bounded(msg)));
    }

    fn remember_closed(&mut self, id: u32) {
        if self.closed.insert(id) {
            self.closed_order.push_back(id);
            if self.closed_order.len() > CLOSED_MEMORY {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }

    /// Runs until the sandbox stops; never returns (PID 1 powers off, test mode exits).
    pub fn run(mut self) -> ! {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        loop {
            let now = Instant::now();
            if self.stopping_done(now) {
                self.finish();
            }
            fds.clear();
            slots.clear();
            fds.push(PollFd { fd: self.sigchld.as_raw_fd(), events: sys::POLLIN, revents: 0 });
            slots.push(Slot::Sigchld);
            let pending = self.conn.as_ref().map_or(0, |c| c.pending());
            let reading = self.may_read_conn();
            if let Some(c) = self.conn.as_ref().filter(|c| c.connected) {
                // An entry with no events still reports POLLHUP: only register what we want.
                let read_ev = if reading { sys::POLLIN } else { 0 };
                let write_ev = if pending > 0 { sys::POLLOUT } else { 0 };
                if c.wfd == c.rfd {
                    if read_ev | write_ev != 0 {
                        fds.push(PollFd { fd: c.rfd, events: read_ev | write_ev, revents: 0 });
                        slots.push(Slot::Conn);
                    }
                } else {
                    if read_ev != 0 {
                        fds.push(PollFd { fd: c.rfd, events: read_ev, revents: 0 });
                        slots.push(Slot::Conn);
                    }
                    if write_ev != 0 {
                        fds.push(PollFd { fd: c.wfd, events: write_ev, revents: 0 });
                        slots.push(Slot::Conn);
                    }
                }
            }
            let mut timeout: Option<Duration> = None;
            let room = pending < OUT_HIGH || self.conn.is_none();
            for (&id, s) in &self.streams {
                let can_read = room && s.credit.available() > 0;
                if can_read {
                    if let Some(fd) = &s.stdout {
                        fds.push(PollFd { fd: fd.as_raw_fd(), events: sys::POLLIN, revents: 0 });
                        slots.push(Slot::Stdout(id));
                    }
                    if let Some(fd) = &s.stderr {
                        fds.push(PollFd { fd: fd.as_raw_fd(), events: sys::POLLIN, revents: 0 });
                        slots.push(Slot::Stderr(id));
                    }
                    if s.draining && s.outputs_open() {
                        timeout = Some(Duration::ZERO);
                    }
                }
                if let (Some(fd), true) = (&s.stdin, s.stdin_start < s.stdin_buf.len()) {
                    fds.push(PollFd { fd: fd.as_raw_fd(), events: sys::POLLOUT, revents: 0 });
                    slots.push(Slot::Stdin(id));
                }
                if let (Some(at), false) = (s.exited_at, s.draining) {
                    let left = (at + EXIT_GRACE).saturating_duration_since(now);
                    timeout = Some(timeout.map_or(left, |t| t.min(left)));
                }
                if let (Some(at), None, false) = (s.deadline, &s.status, s.timed_out) {
                    let left = at.saturating_duration_since(now);
                    timeout = Some(timeout.map_or(left, |t| t.min(left)));
                }
            }
            // Regular files and directories are always ready: pump them without waiting.
            if room && self.files.values().any(Transfer::sendable) {
                timeout = Some(Duration::ZERO);
            }
            if let Phase::Stopping { since, killed, .. } = self.phase {
                let deadline = since + if killed { TERM_GRACE + KILL_GRACE } else { TERM_GRACE };
                let left = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
                // While stopping, re-check for stragglers often (new orphans to kill).
                timeout = Some(timeout.map_or(left, |t| t.min(left)).min(Duration::from_millis(50)));
            }
            if let (Phase::AwaitInit, Some(deadline)) = (&self.phase, self.cfg.init_deadline) {
                let left = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if matches!(self.conn.as_ref(), Some(c) if !c.connected) {
                timeout = Some(timeout.map_or(Duration::from_millis(50), |t| t.min(Duration::from_millis(50))));
            }
            let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(60_000) as i32 + (t.subsec_nanos() % 1_000_000 != 0) as i32);
            if let Err(e) = sys::poll_fds(&mut fds, timeout_ms) {
                self.fatal(&format!("poll failed: {e}"));
            }
            for i in 0..fds.len() {
                let rev = fds[i].revents;
                if rev == 0 {
                    continue;
                }
                match slots[i] {
                    Slot::Sigchld => {
                        let mut buf = [0u8; 64];
                        while matches!(sys::read_fd(self.sigchld.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
                        self.reap();
                    }
                    Slot::Conn => {
                        if rev & sys::POLLOUT != 0 {
                            self.flush_conn();
                        }
                        let hangup = rev & (sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) != 0;
                        if self.may_read_conn() && (hangup || rev & sys::POLLIN != 0) {
                            self.read_conn();
                        } else if hangup && self.conn.is_some() {
                            // Not reading (host not draining our output, or we are dropping
                            // it), and it hung up: it is gone.
                            self.host_gone("the host hung up the agent connection");
                        }
                    }
                    Slot::Stdout(id) => self.pump_output(id, false),
                    Slot::Stderr(id) => self.pump_output(id, true),
                    Slot::Stdin(id) => self.pump_stdin(id),
                }
            }
            // Exits can be missed if SIGCHLD arrived between a reap and poll; reaping is cheap.
            self.reap();
            self.check_reconnect();
            self.tick(Instant::now());
            self.pump_files();
            self.flush_conn();
            self.process_frames();
        }
    }

    // ---- connection ----

    fn flush_conn(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if !c.connected || c.pending() == 0 {
            return;
        }
        if let Err(e) = c.flush() {
            self.host_gone(&format!("writing to the host failed: {e}"));
        }
    }

    /// Whether to take frames from the host now: not while it leaves our output unread
    /// (backpressure), and not after a protocol error or failed INIT (we are dropping it).
    fn may_read_conn(&self) -> bool {
        let dropping = matches!(
            self.phase,
            Phase::Stopping { reason: StopReason::ProtocolError | StopReason::InitFailed, .. }
        );
        !dropping && self.conn.as_ref().is_some_and(|c| c.connected && c.pending() < OUT_HARD)
    }

    fn read_conn(&mut self) {
        let mut total = 0;
        loop {
            // Frames first: a host that stopped sending may still have frames buffered here.
            if !self.process_frames() || total >= READ_BUDGET {
                return;
            }
            let Some(c) = self.conn.as_mut() else { return };
            let rfd = c.rfd;
            match c.decoder.fill_with(64 * 1024, |buf| sys::read_fd(rfd, buf)) {
                Ok(0) => {
                    if c.reconnectable && matches!(self.phase, Phase::AwaitInit) {
                        log("host side of the agent port is not connected; waiting for it");
                        c.connected = false;
                        c.reset();
                    } else {
                        self.host_gone("the host closed the agent connection");
                    }
                    return;
                }
                Ok(n) => total += n,
                Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => {
                    self.process_frames();
                    return;
                }
                Err(e) => {
                    self.host_gone(&format!("reading from the host failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Dispatches the complete frames already received. False when taking frames must pause
    /// (the host leaves our output unread) or stop; the rest wait in the decoder until the
    /// output drains, which poll reports, so they are never stranded.
    fn process_frames(&mut self) -> bool {
        loop {
            if !self.may_read_conn() {
                return false;
            }
            let Some(c) = self.conn.as_mut() else { return false };
            match c.decoder.next_frame() {
                Ok(Some(f)) => self.dispatch(f),
                Ok(None) => return true,
                Err(e) => {
                    self.protocol_error(&e.to_string());
                    return false;
                }
            }
        }
    }

    /// A virtio port whose host side was not connected: poll it until it is, then greet anew.
    fn check_reconnect(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.connected {
            return;
        }
        let mut p = [PollFd { fd: c.rfd, events: sys::POLLIN | sys::POLLOUT, revents: 0 }];
        if sys::poll_fds(&mut p, 0).is_ok() && p[0].revents & sys::POLLHUP == 0 {
            c.connected = true;
            log("host connected to the agent port");
            self.send(0, kind::HELLO, &message::hello());
        }
    }

    fn host_gone(&mut self, why: &str) {
        log(why);
        self.files.clear();
        if let Some(c) = self.conn.as_mut() {
            c.reset();
        }
        self.conn = None;
        self.stop(StopReason::HostGone);
    }

    fn protocol_error(&mut self, why: &str) {
        log(&format!("protocol error: {why}"));
        self.send_error(0, code::PROTOCOL, why);
        self.stop(StopReason::ProtocolError);
    }

    // ---- messages ----

    fn dispatch(&mut self, f: Frame) {
        let name = kind::name(f.kind);
        let control = matches!(f.kind, kind::INIT | kind::PING | kind::PONG | kind::SHUTDOWN);
        let per_stream = matches!(
            f.kind,
            kind::EXEC | kind::STDIN | kind::SIGNAL | kind::WINDOW | kind::RESIZE | kind::FILE | kind::DATA
        );
        if control && f.stream != 0 {
            return self.send_error(f.stream, code::STREAM, &format!("{} must be sent on stream 0", name.unwrap()));
        }
        if per_stream && f.stream == 0 {
            return self.send_error(0, code::STREAM, &format!("{} needs an exec stream id, not 0", name.unwrap()));
        }
        match f.kind {
            kind::INIT => self.on_init(&f.payload),
            kind::PING => {
                if f.payload.len() > MAX_PING {
                    self.send_error(0, code::REQUEST, &format!("PING payload is {} bytes; at most {MAX_PING}", f.payload.len()));
                } else {
                    self.send(0, kind::PONG, &f.payload);
                }
            }
            kind::PONG => {}
            kind::SHUTDOWN => {
                log("SHUTDOWN from the host");
                self.stop(StopReason::Shutdown);
            }
            kind::EXEC => self.on_exec(f.stream, &f.payload),
            kind::FILE => self.on_file(f.stream, &f.payload),
            kind::DATA => self.on_data(f.stream, f.payload),
            kind::STDIN => self.on_stdin(f.stream, f.payload),
            kind::SIGNAL if self.files.contains_key(&f.stream) => self.cancel_file(f.stream),
            kind::SIGNAL => self.on_signal(f.stream, &f.payload),
            kind::WINDOW if self.files.contains_key(&f.stream) => self.on_file_window(f.stream, &f.payload),
            kind::WINDOW => self.on_window(f.stream, &f.payload),
            kind::RESIZE => self.on_resize(f.stream, &f.payload),
            kind::ERROR => self.on_host_error(f.stream, &f.payload),
            kind::HELLO | kind::READY | kind::STDOUT | kind::STDERR | kind::EXIT | kind::FILE_RESULT => {
                let msg = format!("{} is sent by the agent, not the host", name.unwrap());
                self.send_error(f.stream, code::REQUEST, &msg)
            }
            other => self.send_error(f.stream, code::REQUEST, &format!("unknown message type 0x{other:02x}")),
        }
    }

    fn on_host_error(&mut self, stream: u32, payload: &[u8]) {
        let v = json::parse(payload).ok();
        let get = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|x| x.as_str()).unwrap_or("?").to_string();
        let (c, m) = (get("code"), get("message"));
        log(&format!("host sent ERROR on stream {stream}: {c}: {}", bounded(&m)));
        if stream == 0 && c == code::VERSION && matches!(self.phase, Phase::AwaitInit) {
            // The host will never send an INIT we understand.
            self.stop(StopReason::InitFailed);
        }
    }

    fn on_init(&mut self, payload: &[u8]) {
        if !matches!(self.phase, Phase::AwaitInit) {
            return self.send_error(0, code::REQUEST, "INIT was already received; the sandbox is set up");
        }
        let init = match Init::parse(payload) {
            Ok(init) => init,
            Err(InitError::Version(m)) => {
                log(&format!("INIT refused: {m}"));
                self.send_error(0, code::VERSION, &m);
                return self.stop(StopReason::InitFailed);
            }
            Err(InitError::Invalid(m)) => {
                log(&format!("INIT refused: {m}"));
                self.send_error(0, code::INIT, &m);
                return self.stop(StopReason::InitFailed);
            }
        };
        match self.set_up(init) {
            Ok(boot_ms) => {
                self.phase = Phase::Ready;
                log(&format!("ready ({boot_ms} ms since kernel start)"));
                self.send(0, kind::READY, &message::ready(boot_ms));
            }
            Err(m) => {
                log(&format!("INIT failed: {m}"));
                self.send_error(0, code::INIT, &m);
                self.stop(StopReason::InitFailed);
            }
        }
    }

    /// Applies INIT: clock, hostname, the root's mounts, chroot. Returns ms since kernel start.
    fn set_up(&mut self, init: Init) -> Result<u64, String> {
        let root = if self.cfg.pid1 {
            init.root_path.clone()
        } else {
            self.cfg.root_override.clone().unwrap_or_else(|| "/".to_string())
        };
        if self.cfg.pid1 {
            if let RootKind::Overlay { layers, upper_disk } = &init.root_kind {
                self.mounts = overlay::assemble(layers, upper_disk.as_deref())?;
            }
        }
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("sandbox root {root} is not a directory")),
            Err(e) => return Err(format!("sandbox root {root} is not usable: {e}")),
        }
        if self.cfg.pid1 {
            log(&format!("INIT: root {root} ({:?}), hostname {}", init.root_kind, init.hostname));
            if let Some(ms) = init.clock_ms {
                sys::set_clock_ms(ms).map_err(|e| format!("cannot set the clock to {ms} ms: {e}"))?;
            }
            sys::set_hostname(&init.hostname).map_err(|e| format!("cannot set the hostname to {}: {e}", init.hostname))?;
            netconf::loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
            if let Some(net) = &init.net {
                let nic = netconf::configure(net)?;
                log(&format!("network: {nic} {}/{} via {}, mtu {}", net.ipv4, net.ipv4_prefix, net.ipv4_gateway, net.mtu));
            }
            netconf::write_files(&root, init.net.as_ref(), &init.hostname)?;
            let mut mounts = pid1::setup_root(&root)?;
            self.mounts.append(&mut mounts);
        }
        if root != "/" {
            let outer = sys::open_path("/", sys::O_PATH | sys::O_DIRECTORY)
                .map_err(|e| format!("cannot open / before entering the sandbox root: {e}"))?;
            sys::change_root(&root).map_err(|e| format!("cannot chroot into {root}: {e}"))?;
            self.outer_root = Some(outer);
        }
        let mut env = init.env;
        if let Some(pem) = &init.ca {
            if !self.cfg.pid1 && root == "/" {
                return Err("INIT.ca needs a sandbox root: in host test mode pass --root DIR (the agent will not change this machine's CA bundles)".into());
            }
            // Inside the root, so the image's absolute symlinks between bundles resolve there;
            // before the volumes, so the CA goes into the image's files and never into a
            // host-shared directory mounted over one of them.
            let installed = trust::install(std::path::Path::new("/"), pem)?;
            let added = if installed.written.is_empty() { "already there".to_string() } else { format!("added to {}", installed.written.join(", ")) };
            log(&format!("msb CA trusted via {CA_FILE} and {} ({added})", installed.bundle, CA_FILE = trust::CA_FILE));
            trust::set_env(&mut env, &installed.bundle);
        }
        if self.cfg.pid1 && !init.mounts.is_empty() {
            // Inside the root, so image symlinks on the way resolve in the sandbox's namespace.
            let base = root.trim_end_matches('/').to_string();
            let done = volumes::apply(&init.mounts)?;
            self.mounts.extend(done.iter().map(|p| format!("{base}{p}")));
        }
        self.base_env = env;
        Ok(pid1::uptime_ms().unwrap_or(0))
    }

    /// Checks a stream id a new EXEC or FILE opens; false (after an ERROR) when it cannot open.
    fn may_open(&mut self, id: u32, what: &str) -> bool {
        if self.streams.contains_key(&id) || self.files.contains_key(&id) {
            self.send_error(id, code::STREAM, &format!("stream {id} is already open; use a new id for each {what}"));
            return false;
        }
        if self.streams.len() + self.files.len() >= MAX_STREAMS {
            // Refuse this stream only: the connection carries every other client's streams.
            self.remember_closed(id);
            self.send_error(
                id,
                code::LIMIT,
                &format!("{what} on stream {id} refused: {MAX_STREAMS} streams are already open; wait for one to end"),
            );
            return false;
        }
        true
    }

    fn on_exec(&mut self, id: u32, payload: &[u8]) {
        if !self.may_open(id, "EXEC") {
            return;
        }
        self.closed.remove(&id);
        match self.phase {
            Phase::AwaitInit => {
                self.remember_closed(id);
                return self.send_error(id, code::REQUEST, "EXEC before INIT: the sandbox is not set up yet");
            }
            Phase::Stopping { .. } => {
                return self.fail_exec(id, CANNOT_START, "the sandbox is shutting down".into());
            }
            Phase::Ready => {}
        }
        let req = match ExecRequest::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                self.remember_closed(id);
                return self.send_error(id, code::REQUEST, &e.0);
            }
        };
        match spawn::spawn(&req, &self.base_env) {
            Ok(child) => {
                self.by_pid.insert(child.pid, id);
                self.streams.insert(
                    id,
                    Stream {
                        pid: child.pid,
                        stdout: Some(child.stdout),
                        stderr: child.stderr,
                        stdin: child.stdin,
                        stdin_wanted: req.stdin,
                        tty: req.tty.is_some(),
                        tty_held: None,
                        stdin_eof: !req.stdin,
                        stdin_buf: Vec::new(),
                        stdin_start: 0,
                        stdin_window: RecvWindow::default(),
                        credit: SendCredit::default(),
                        status: None,
                        exited_at: None,
                        draining: false,
                        drain_left: DRAIN_BUDGET,
                        deadline: req.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
                        timed_out: false,
                    },
                );
                self.childless = false;
            }
            Err(e) => self.fail_exec(id, e.code, e.message),
        }
    }

    /// Ends a stream whose process never ran: `msb: <why>` on its stderr, then EXIT.
    fn fail_exec(&mut self, id: u32, code: i32, why: String) {
        let why = bounded(&why).to_string();
        self.send(id, kind::STDERR, format!("msb: {why}\n").as_bytes());
        self.send(id, kind::EXIT, &ExitStatus::failed(code, why).to_payload());
        self.remember_closed(id);
    }

    /// A bad frame on an open stream ends that stream (docs/protocol.md, "ERROR"): an exec's
    /// process group is killed and no EXIT follows; a transfer is dropped. Then the ERROR.
    fn abort_stream(&mut self, id: u32, code: &str, msg: &str) {
        if let Some(s) = self.streams.remove(&id) {
            if s.status.is_none() && sys::send_signal(-s.pid, sys::SIGKILL).is_err() {
                let _ = sys::send_signal(s.pid, sys::SIGKILL);
            }
            if s.status.is_some() {
                self.by_pid.remove(&s.pid);
            }
        }
        self.files.remove(&id);
        self.remember_closed(id);
        self.send_error(id, code, msg);
    }

    /// Frames for a stream that is not open: quiet if it ended recently (the host may not have
    /// seen the EXIT yet), an ERROR otherwise. True if the stream is open.
    fn known(&mut self, id: u32, what: &str) -> bool {
        if self.streams.contains_key(&id) || self.files.contains_key(&id) {
            return true;
        }
        if !self.closed.contains(&id) {
            self.send_error(id, code::STREAM, &format!("{what} for stream {id}, which is not open"));
        }
        false
    }

    fn on_stdin(&mut self, id: u32, data: Vec<u8>) {
        if !self.known(id, "STDIN") {
            return;
        }
        let s = self.streams.get_mut(&id).unwrap();
        if !s.stdin_wanted {
            if data.is_empty() {
                return;
            }
            return self.abort_stream(id, code::REQUEST, &format!("STDIN on stream {id}, whose EXEC had stdin:false"));
        }
        if s.stdin_eof {
            return self.abort_stream(id, code::REQUEST, &format!("STDIN on stream {id} after its end of input"));
        }
        if let Err(o) = s.stdin_window.receive(data.len()) {
            return self.protocol_error(&format!(
                "STDIN of {} bytes on stream {id} exceeds the {} bytes of credit the agent granted",
                o.got, o.allowed
            ));
        }
        if data.is_empty() {
            s.stdin_eof = true;
        } else if s.stdin.is_none() {
            // The process closed its stdin or exited: drop the data but return the credit.
            s.stdin_window.consume(data.len());
        } else {
            if s.stdin_start == s.stdin_buf.len() {
                s.stdin_buf.clear();
                s.stdin_start = 0;
            }
            s.stdin_buf.extend_from_slice(&data);
        }
        self.pump_stdin(id);
    }

    fn on_signal(&mut self, id: u32, payload: &[u8]) {
        if !self.known(id, "SIGNAL") {
            return;
        }
        let sig = match message::parse_signal(payload) {
            Ok(sig) => sig,
            Err(e) => return self.abort_stream(id, code::REQUEST, &e.0),
        };
        let s = &self.streams[&id];
        // The whole process group (the exec is a session leader), so a shell's children get it
        // too. The leader alone only while it is unreaped (it may have left its group): once
        // reaped, its pid could belong to someone else.
        if sys::send_signal(-s.pid, sig).is_err() && s.status.is_none() {
            let _ = sys::send_signal(s.pid, sig);
        }
    }

    fn on_window(&mut self, id: u32, payload: &[u8]) {
        if !self.known(id, "WINDOW") {
            return;
        }
        match message::parse_window(payload) {
            Ok(inc) => self.streams.get_mut(&id).unwrap().credit.grant(inc),
            Err(e) => self.abort_stream(id, code::REQUEST, &e.0),
        }
    }

    fn on_resize(&mut self, id: u32, payload: &[u8]) {
        if !self.known(id, "RESIZE") {
            return;
        }
        let (rows, cols) = match message::parse_resize(payload) {
            Ok(size) => size,
            Err(e) => return self.abort_stream(id, code::REQUEST, &e.0),
        };
        let s = &self.streams[&id];
        if !s.tty {
            return self.abort_stream(id, code::REQUEST, &format!("RESIZE on stream {id}, which has no terminal (EXEC without tty)"));
        }
        // Once the terminal's output is closed the process is gone; nothing to resize.
        if let Some(master) = s.stdout.as_ref().or(s.tty_held.as_ref()) {
            let _ = sys::set_window_size(master, rows, cols);
        }
    }

    // ---- files ----

    fn fs_error(&mut self, id: u32, e: FsError) {
        self.remember_closed(id);
        self.send_error(id, e.code, &e.message);
    }

    fn on_file(&mut self, id: u32, payload: &[u8]) {
        if !self.may_open(id, "FILE") {
            return;
        }
        self.closed.remove(&id);
        match self.phase {
            Phase::Ready => {}
            Phase::AwaitInit => {
                self.remember_closed(id);
                return self.send_error(id, code::REQUEST, "FILE before INIT: the sandbox is not set up yet");
            }
            Phase::Stopping { .. } => {
                self.remember_closed(id);
                return self.send_error(id, code::STOPPING, "the sandbox is shutting down");
            }
        }
        let op = match FileOp::parse(payload) {
            Ok(op) => op,
            Err(e) => return self.fs_error(id, e),
        };
        let transfer = match op {
            FileOp::Read { path } => files::open_read(&path).map(|file| Transfer::Read { file, credit: SendCredit::default(), sent: 0 }),
            FileOp::Write { path, mode } => files::open_write(&path, mode).map(|file| Transfer::Write {
                file,
                window: RecvWindow::default(),
                written: 0,
                path,
            }),
            FileOp::List { path } => files::open_list(&path).map(|dir| Transfer::List {
                dir,
                credit: SendCredit::default(),
                count: 0,
                next: None,
                path,
            }),
            simple => {
                match files::run_simple(&simple) {
                    Ok(result) => {
                        self.remember_closed(id);
                        self.send(id, kind::FILE_RESULT, &result);
                    }
                    Err(e) => self.fs_error(id, e),
                }
                return;
            }
        };
        match transfer {
            Ok(mut t) => {
                if let Transfer::Write { window, .. } = &mut t {
                    // The file takes data as fast as it comes: widen the window (docs/protocol.md).
                    let extra = files::TRANSFER_WINDOW - crate::frame::INITIAL_WINDOW;
                    window.widen(extra);
                    self.send(id, kind::WINDOW, &message::window_payload(extra));
                }
                self.files.insert(id, t);
            }
            Err(e) => self.fs_error(id, e),
        }
    }

    /// DATA from the host: bytes of a `write`, or its end (empty).
    fn on_data(&mut self, id: u32, data: Vec<u8>) {
        if !self.known(id, "DATA") {
            return;
        }
        let Some(Transfer::Write { file, window, written, path }) = self.files.get_mut(&id) else {
            return self.abort_stream(id, code::REQUEST, &format!("DATA on stream {id}, which is not a FILE write"));
        };
        if let Err(o) = window.receive(data.len()) {
            return self.protocol_error(&format!(
                "DATA of {} bytes on stream {id} exceeds the {} bytes of credit the agent granted",
                o.got, o.allowed
            ));
        }
        if data.is_empty() {
            let n = *written;
            self.files.remove(&id);
            self.remember_closed(id);
            return self.send(id, kind::FILE_RESULT, &files::size_result("size", n));
        }
        // A regular file: the write completes now (page cache), so credit goes straight back.
        use std::io::Write;
        if let Err(e) = file.write_all(&data) {
            let err = files::io_error("write", path, &e);
            self.files.remove(&id);
            return self.fs_error(id, err);
        }
        *written += data.len() as u64;
        window.consume(data.len());
        if let Some(inc) = window.take_grant(true) {
            self.send(id, kind::WINDOW, &message::window_payload(inc));
        }
    }

    fn on_file_window(&mut self, id: u32, payload: &[u8]) {
        let inc = match message::parse_window(payload) {
            Ok(inc) => inc,
            Err(e) => return self.abort_stream(id, code::REQUEST, &e.0),
        };
        match self.files.get_mut(&id) {
            Some(Transfer::Read { credit, .. } | Transfer::List { credit, .. }) => credit.grant(inc),
            _ => self.abort_stream(id, code::REQUEST, &format!("WINDOW on stream {id}, a FILE write (the agent grants, not the host)")),
        }
    }

    /// SIGNAL on a FILE stream cancels it (a client that went away, an aborted transfer).
    fn cancel_file(&mut self, id: u32) {
        self.files.remove(&id);
        self.remember_closed(id);
        self.send_error(id, code::CANCELLED, &format!("the transfer on stream {id} was cancelled by the host"));
    }

    /// Sends what reads and listings have credit for, while the host takes our output.
    fn pump_files(&mut self) {
        if self.files.is_empty() {
            return;
        }
        let Some(c) = self.conn.as_mut().filter(|c| c.connected) else {
            self.files.clear();
            return;
        };
        let mut finished: Vec<(u32, Result<Vec<u8>, FsError>)> = Vec::new();
        for (&id, t) in self.files.iter_mut() {
            match t {
                Transfer::Read { file, credit, sent } => {
                    while c.pending() < OUT_HIGH && credit.available() > 0 {
                        // What the file still holds: those bytes go by sendfile; at its end the
                        // plain read below finds end of file (or data appended meanwhile).
                        let left = file.metadata().map_or(0, |m| m.len().saturating_sub(*sent));
                        let n = (credit.next_chunk(MAX_CHUNK) as u64).min(left) as usize;
                        if n > 0 {
                            if let Err(e) = c.send_file_frame(id, kind::DATA, file.as_raw_fd(), n) {
                                finished.push((id, Err(files::io_error("read", "the file", &e))));
                                break;
                            }
                            credit.spend(n);
                            *sent += n as u64;
                            if c.flush().is_err() {
                                break;
                            }
                            continue;
                        }
                        match c.send_from_fd(id, kind::DATA, file.as_raw_fd(), credit.next_chunk(MAX_CHUNK)) {
                            Ok(0) => {
                                finished.push((id, Ok(files::size_result("size", *sent))));
                                break;
                            }
                            Ok(n) => {
                                credit.spend(n);
                                *sent += n as u64;
                            }
                            Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => break,
                            Err(e) => {
                                finished.push((id, Err(files::io_error("read", "the file", &e))));
                                break;
                            }
                        }
                    }
                }
                Transfer::List { dir, credit, count, next, path } => {
                    while c.pending() < OUT_HIGH && credit.available() > 0 {
                        let room = credit.next_chunk(MAX_CHUNK);
                        let mut chunk: Vec<u8> = Vec::new();
                        let mut done = false;
                        loop {
                            let line = match next.take() {
                                Some(l) => l,
                                None => match dir.next() {
                                    Some(Ok(entry)) => files::list_line(&entry),
                                    Some(Err(e)) => {
                                        finished.push((id, Err(files::io_error("list", path, &e))));
                                        done = true;
                                        break;
                                    }
                                    None => {
                                        done = true;
                                        break;
                                    }
                                },
                            };
                            if chunk.len() + line.len() > room {
                                *next = Some(line);
                                break;
                            }
                            chunk.extend_from_slice(&line);
                            *count += 1;
                        }
                        if !chunk.is_empty() {
                            credit.spend(chunk.len());
                            c.send(id, kind::DATA, &chunk);
                        }
                        if done {
                            if !finished.iter().any(|(f, _)| *f == id) {
                                finished.push((id, Ok(files::size_result("count", *count))));
                            }
                            break;
                        }
                        if chunk.is_empty() {
                            // The next line needs more credit than is left: wait for WINDOW.
                            break;
                        }
                    }
                }
                Transfer::Write { .. } => {}
            }
        }
        for (id, result) in finished {
            self.files.remove(&id);
            match result {
                Ok(payload) => {
                    self.remember_closed(id);
                    self.send(id, kind::FILE_RESULT, &payload);
                }
                Err(e) => self.fs_error(id, e),
            }
        }
    }

    // ---- process I/O ----

    fn pump_output(&mut self, id: u32, stderr: bool) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        let slot = if stderr { &mut s.stderr } else { &mut s.stdout };
        let Some(fd) = slot.as_ref().map(|f| f.as_raw_fd()) else { return };
        let max = s.credit.next_chunk(MAX_CHUNK);
        let max = if s.draining { max.min(s.drain_left) } else { max };
        if max == 0 {
            if s.draining && s.drain_left == 0 {
                *slot = None;
            }
            return;
        }
        let kind = if stderr { kind::STDERR } else { kind::STDOUT };
        let result = match self.conn.as_mut() {
            Some(c) if c.connected => c.send_from_fd(id, kind, fd, max),
            // Nobody to send to: discard.
            _ => {
                let mut sink = vec![0u8; max];
                sys::read_fd(fd, &mut sink)
            }
        };
        // A terminal master reads EIO once no slave descriptor is open.
        let ended = matches!(&result, Ok(0)) || matches!(&result, Err(e) if e.raw_os_error() != Some(sys::EAGAIN));
        if ended && s.tty && s.status.is_none() {
            s.tty_held = slot.take();
            return;
        }
        match result {
            Ok(0) => *slot = None,
            Ok(n) => {
                s.credit.spend(n);
                if s.draining {
                    s.drain_left -= n;
                }
            }
            Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => {
                if s.draining {
                    *slot = None;
                }
            }
            Err(_) => *slot = None,
        }
    }

    fn pump_stdin(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if let Some(fd) = s.stdin.as_ref().map(|f| f.as_raw_fd()) {
            while s.stdin_start < s.stdin_buf.len() {
                match sys::write_fd(fd, &s.stdin_buf[s.stdin_start..]) {
                    Ok(n) => {
                        s.stdin_start += n;
                        s.stdin_window.consume(n);
                    }
                    Err(e) if e.raw_os_error() == Some(sys::EAGAIN) => break,
                    Err(_) => {
                        // EPIPE: the reader is gone. Later input is dropped (credit returned).
                        s.stdin = None;
                        break;
                    }
                }
            }
        }
        if s.stdin.is_none() && s.stdin_start < s.stdin_buf.len() {
            s.stdin_window.consume(s.stdin_buf.len() - s.stdin_start);
            s.stdin_start = s.stdin_buf.len();
        }
        let drained = s.stdin_start == s.stdin_buf.len();
        if drained {
            s.stdin_buf.clear();
            s.stdin_start = 0;
            if s.stdin_eof {
                // A terminal cannot be half-closed: end of input is the EOF character (^D),
                // which a reader at the start of a line takes as end of file.
                if let (true, Some(fd)) = (s.tty, s.stdin.as_ref()) {
                    let _ = sys::write_fd(fd.as_raw_fd(), &[0x04]);
                }
                s.stdin = None;
            }
        } else if s.stdin_start >= 64 * 1024 {
            s.stdin_buf.drain(..s.stdin_start);
            s.stdin_start = 0;
        }
        if let Some(inc) = s.stdin_window.take_grant(drained) {
            self.send(id, kind::WINDOW, &message::window_payload(inc));
        }
    }

    fn reap(&mut self) {
        loop {
            match sys::reap_any() {
                Ok(Some((pid, status))) => {
                    // Orphans re-parented to PID 1 (or to the subreaper in test mode) are
                    // reaped and forgotten; only exec leaders have a stream to report to.
                    if let Some(id) = self.by_pid.remove(&pid) {
                        if let Some(s) = self.streams.get_mut(&id) {
                            s.status = Some(match status {
                                WaitStatus::Exited(c) => ExitStatus::exited(c),
                                WaitStatus::Signaled(sig) => ExitStatus::signaled(sig),
                            });
                            s.exited_at = Some(Instant::now());
                        }
                    }
                }
                Ok(None) => {
                    self.childless = false;
                    return;
                }
                Err(_) => {
                    self.childless = true;
                    return;
                }
            }
        }
    }

    /// Time-driven work: the EXIT grace, draining, and sending EXIT for finished streams.
    fn tick(&mut self, now: Instant) {
        if let (Phase::AwaitInit, Some(deadline)) = (&self.phase, self.cfg.init_deadline) {
            if now >= deadline {
                log("no INIT from the host in time; powering off");
                self.stop(StopReason::HostGone);
            }
        }
        let mut done = Vec::new();
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            let s = self.streams.get_mut(&id).unwrap();
            if let (Some(at), None, false) = (s.deadline, &s.status, s.timed_out) {
                if now >= at {
                    // The whole group, as SIGNAL does: a shell's children must not outlive it.
                    s.timed_out = true;
                    if sys::send_signal(-s.pid, sys::SIGKILL).is_err() {
                        let _ = sys::send_signal(s.pid, sys::SIGKILL);
                    }
                }
            }
            if let (Some(at), false) = (s.exited_at, s.draining) {
                if now >= at + EXIT_GRACE && s.outputs_open() {
                    s.draining = true;
                }
            }
            if s.draining && s.outputs_open() {
                let room = self.conn.as_ref().is_none_or(|c| c.pending() < OUT_HIGH);
                if room {
                    self.pump_output(id, false);
                    self.pump_output(id, true);
                }
            }
            let s = &self.streams[&id];
            if s.status.is_some() && !s.outputs_open() {
                done.push(id);
            }
        }
        done.sort_unstable();
        for id in done {
            let s = self.streams.remove(&id).unwrap();
            let mut status = s.status.unwrap();
            status.timed_out = s.timed_out;
            self.send(id, kind::EXIT, &status.to_payload());
            self.remember_closed(id);
        }
        if let Phase::Stopping { since, killed: false, .. } = self.phase {
            if now >= since + TERM_GRACE {
                self.kill_all(sys::SIGKILL);
                if let Phase::Stopping { killed, .. } = &mut self.phase {
                    *killed = true;
                }
            }
        } else if let Phase::Stopping { killed: true, .. } = self.phase {
            if !self.childless {
                self.kill_all(sys::SIGKILL);
            }
        }
    }

    // ---- the end ----

    fn stop(&mut self, reason: StopReason) {
        if let Phase::Stopping { reason: current, .. } = &mut self.phase {
            // A broken connection during a shutdown changes nothing but who gets told.
            if reason == StopReason::HostGone && *current == StopReason::Shutdown {
                *current = StopReason::HostGone;
            }
            return;
        }
        self.phase = Phase::Stopping { reason, since: Instant::now(), killed: false };
        for id in self.files.keys().copied().collect::<Vec<_>>() {
            self.files.remove(&id);
            self.send_error(id, message::code::STOPPING, "the sandbox is shutting down");
        }
        self.kill_all(sys::SIGTERM);
    }

    /// Signals every process the sandbox runs. In the VM that is everyone but PID 1; in host
    /// test mode only the exec process groups and the orphans re-parented to the agent.
    fn kill_all(&mut self, sig: i32) {
        if self.cfg.pid1 {
            let _ = sys::send_signal(-1, sig);
            return;
        }
        for s in self.streams.values().filter(|s| s.status.is_none()) {
            let _ = sys::send_signal(-s.pid, sig);
        }
        for pid in own_children() {
            let _ = sys::send_signal(-pid, sig);
            let _ = sys::send_signal(pid, sig);
        }
    }

    fn stopping_done(&mut self, now: Instant) -> bool {
        let Phase::Stopping { since, reason, .. } = self.phase else { return false };
        if now >= since + TERM_GRACE + KILL_GRACE {
            return true;
        }
        // Done when no process is left and either every stream has sent its EXIT or nobody
        // will read the rest (the host is gone, or the handshake/protocol failed).
        self.childless && (self.streams.is_empty() || self.conn.is_none() || reason != StopReason::Shutdown)
    }

    fn finish(&mut self) -> ! {
        let Phase::Stopping { reason, .. } = self.phase else { unreachable!("finish outside Stopping") };
        if !self.childless {
            self.kill_all(sys::SIGKILL);
        }
        // Last frames (EXITs, the ERROR that explains the end) to the host, briefly.
        let start = Instant::now();
        if let Some(streams) = (reason == StopReason::Shutdown).then(|| std::mem::take(&mut self.streams)) {
            // Streams still open (no credit to finish their output): report how they ended.
            let mut ids: Vec<_> = streams.into_iter().collect();
            ids.sort_by_key(|(id, _)| *id);
            for (id, s) in ids {
                let status = s.status.unwrap_or_else(|| ExitStatus::signaled(sys::SIGKILL));
                self.send(id, kind::EXIT, &status.to_payload());
            }
        }
        while let Some(c) = self.conn.as_mut().filter(|c| c.connected && c.pending() > 0) {
            if start.elapsed() >= FLUSH_GRACE || c.flush().is_err() {
                break;
            }
            if c.pending() > 0 {
                let mut p = [PollFd { fd: c.wfd, events: sys::POLLOUT, revents: 0 }];
                let _ = sys::poll_fds(&mut p, 20);
            }
        }
        let why = match reason {
            StopReason::Shutdown => "the host asked to shut down",
            StopReason::HostGone => "the host went away",
            StopReason::InitFailed => "INIT failed",
            StopReason::ProtocolError => "the host broke the protocol",
        };
        if self.cfg.pid1 {
            pid1::power_off(why, self.outer_root.as_ref(), &self.mounts);
        }
        log(&format!("exiting: {why}"));
        sys::exit_now(match reason {
            StopReason::Shutdown | StopReason::HostGone => 0,
            StopReason::InitFailed | StopReason::ProtocolError => 1,
        })
    }

    fn fatal(&mut self, why: &str) -> ! {
        log(&format!("fatal: {why}"));
        if self.cfg.pid1 {
            if !self.childless {
                let _ = sys::send_signal(-1, sys::SIGKILL);
            }
            pid1::power_off(why, self.outer_root.as_ref(), &self.mounts);
        }
        self.kill_all(sys::SIGKILL);
        sys::exit_now(2)
    }
}

/// Children of the agent process (exec leaders and adopted orphans), from /proc.
fn own_children() -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                pids.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MAX_PAYLOAD;

    #[test]
    fn messages_are_bounded_on_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_MESSAGE);
        let b = bounded(&long);
        assert!(b.len() <= MAX_MESSAGE && b.len() >= MAX_MESSAGE - 1);
        assert!(long.starts_with(b));
        // An EXIT with a bounded error always fits one frame.
        let big = "x".repeat(MAX_PAYLOAD * 2);
        let payload = ExitStatus::failed(127, bounded(&big).to_string()).to_payload();
        assert!(payload.len() < MAX_PAYLOAD);
    }
}
