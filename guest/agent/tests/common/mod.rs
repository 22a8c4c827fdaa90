// A host-side client for the integration tests: runs the built msb-agent in --serve-stdio mode
// and speaks docs/protocol.md to it. It has its own framing code on purpose, so the agent's
// encoder and decoder are checked against a second implementation.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HELLO: u8 = 0x01;
pub const INIT: u8 = 0x02;
pub const READY: u8 = 0x03;
pub const PING: u8 = 0x04;
pub const PONG: u8 = 0x05;
pub const SHUTDOWN: u8 = 0x06;
pub const EXEC: u8 = 0x10;
pub const STDIN: u8 = 0x11;
pub const STDOUT: u8 = 0x12;
pub const STDERR: u8 = 0x13;
pub const EXIT: u8 = 0x14;
pub const SIGNAL: u8 = 0x15;
pub const WINDOW: u8 = 0x16;
pub const RESIZE: u8 = 0x17;
pub const FILE: u8 = 0x20;
pub const FILE_RESULT: u8 = 0x21;
pub const DATA: u8 = 0x22;
pub const ERROR: u8 = 0x7f;

pub const INITIAL_WINDOW: usize = 262_144;
pub const MAX_CHUNK: usize = 65_536;
pub const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Frame {
    pub stream: u32,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

pub fn encode(stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(5 + payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// The raw text of a top-level field of a flat JSON object (strings unescaped), enough to read
/// the agent's EXIT, ERROR, HELLO and READY payloads.
pub fn field(json: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let start = json.find(&needle)? + needle.len();
    let rest = &json[start..];
    if let Some(body) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        None
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    }
}

/// How an exec ended, as seen by the host.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        field(&self.exit, "code").and_then(|c| c.parse().ok())
    }
    pub fn signal(&self) -> Option<i32> {
        field(&self.exit, "signal").and_then(|c| c.parse().ok())
    }
    pub fn error(&self) -> Option<String> {
        field(&self.exit, "error")
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub struct Agent {
    child: Child,
    input: Arc<Mutex<Option<ChildStdin>>>,
    frames: Receiver<Frame>,
    /// Frames received for other streams while waiting for a particular one.
    stash: Vec<Frame>,
    pub log: Arc<Mutex<Vec<u8>>>,
    /// While set, nothing is read from the agent's output: it sees a host that does not read.
    paused: Arc<AtomicBool>,
}

pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn exec_json(argv: &[&str], stdin: bool) -> String {
    let args: Vec<String> = argv.iter().map(|a| json_str(a)).collect();
    format!("{{\"argv\":[{}],\"stdin\":{stdin}}}", args.join(","))
}

pub const INIT_JSON: &str = r#"{"protocol":1,"hostname":"test-box","root":{"kind":"initramfs","path":"/rootfs"},"env":{"PATH":"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","MSB_TEST":"base"},"clockMs":1764460800000}"#;

impl Agent {
    /// Starts the agent without any handshake.
    pub fn spawn_raw(extra: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_msb-agent"))
            .arg("--serve-stdio")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start msb-agent");
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let paused = Arc::new(AtomicBool::new(false));
        let paused2 = paused.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                while paused2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                match out.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while buf.len() >= 9 {
                    let len = u32::from_be_bytes(buf[0..4].try_into().unwrap()) as usize;
                    assert!((5..=5 + (1 << 20)).contains(&len), "agent sent a frame with length {len}");
                    if buf.len() < 4 + len {
                        break;
                    }
                    let frame = Frame {
                        stream: u32::from_be_bytes(buf[4..8].try_into().unwrap()),
                        kind: buf[8],
                        payload: buf[9..4 + len].to_vec(),
                    };
                    buf.drain(..4 + len);
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                log2.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let input = Arc::new(Mutex::new(child.stdin.take()));
        Agent { child, input, frames: rx, stash: Vec::new(), log, paused }
    }

    /// Starts the agent and completes the handshake (HELLO, INIT, READY).
    pub fn start() -> Agent {
        let mut a = Agent::spawn_raw(&["--root", "/"]);
        let hello = a.recv_any();
        assert_eq!((hello.stream, hello.kind), (0, HELLO), "first frame must be HELLO: {hello:?}");
        assert_eq!(field(&hello.text(), "protocol").as_deref(), Some("1"));
        a.send(0, INIT, INIT_JSON.as_bytes());
        let ready = a.recv_any();
        assert_eq!((ready.stream, ready.kind), (0, READY), "expected READY: {} {:?}", ready.text(), a.log_text());
        let boot: u64 = field(&ready.text(), "bootMs").unwrap().parse().unwrap();
        assert!(boot > 0, "bootMs is ms since kernel start");
        a
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub fn send(&self, stream: u32, kind: u8, payload: &[u8]) {
        self.send_bytes(&encode(stream, kind, payload));
    }

    pub fn send_bytes(&self, bytes: &[u8]) {
        let mut guard = self.input.lock().unwrap();
        let w = guard.as_mut().expect("agent input already closed");
        // The agent may legitimately have exited (after SHUTDOWN, while we return credit for
        // its last output): a failed write is not itself an error; what we receive is checked.
        if let Err(e) = w.write_all(bytes).and_then(|_| w.flush()) {
            eprintln!("write to agent failed: {e}");
        }
    }

    /// A handle that can write to the agent from another thread.
    pub fn writer(&self) -> Arc<Mutex<Option<ChildStdin>>> {
        self.input.clone()
    }

    /// Stops (or resumes) reading the agent's output, as a host that does not keep up.
    pub fn pause_reading(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Closes the agent's input: it sees end of file, as when the host goes away.
    pub fn close_input(&mut self) {
        self.input.lock().unwrap().take();
    }

    pub fn try_recv(&mut self, timeout: Duration) -> Option<Frame> {
        if !self.stash.is_empty() {
            return Some(self.stash.remove(0));
        }
        match self.frames.recv_timeout(timeout) {
            Ok(f) => Some(f),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn recv_any(&mut self) -> Frame {
        self.try_recv(WAIT).unwrap_or_else(|| panic!("no frame from the agent within {WAIT:?}; log:\n{}", self.log_text()))
    }

    /// The next frame of `stream`, keeping others for later.
    pub fn recv_on(&mut self, stream: u32) -> Frame {
        if let Some(i) = self.stash.iter().position(|f| f.stream == stream) {
            return self.stash.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(f) if f.stream == stream => return f,
                Ok(f) => self.stash.push(f),
                Err(_) => panic!("no frame on stream {stream} within {WAIT:?}; log:\n{}", self.log_text()),
            }
        }
    }

    /// True once the agent closed its output (it exited).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.frames.recv_timeout(left) {
                Ok(f) => self.stash.push(f),
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    pub fn wait_exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn exec(&self, stream: u32, json: &str) {
        self.send(stream, EXEC, json.as_bytes());
    }

    /// Collects one stream's output until EXIT, returning credit as it goes (like the SDK).
    pub fn collect(&mut self, stream: u32) -> Outcome {
        let mut out = Outcome::default();
        loop {
            let f = self.recv_on(stream);
            match f.kind {
                STDOUT | STDERR => {
                    assert!(f.payload.len() <= MAX_CHUNK, "chunk of {} bytes", f.payload.len());
                    if f.kind == STDOUT {
                        out.stdout.extend_from_slice(&f.payload);
                    } else {
                        out.stderr.extend_from_slice(&f.payload);
                    }
                    self.send(stream, WINDOW, &(f.payload.len() as u32).to_be_bytes());
                }
                EXIT => {
                    out.exit = f.text();
                    return out;
                }
                WINDOW => {}
                ERROR => panic!("ERROR on stream {stream}: {}", f.text()),
                other => panic!("unexpected frame type 0x{other:02x} on stream {stream}"),
            }
        }
    }

    /// Runs a command to completion on `stream`.
    pub fn run(&mut self, stream: u32, argv: &[&str]) -> Outcome {
        self.exec(stream, &exec_json(argv, false));
        self.collect(stream)
    }

    /// Collects several streams at once until each has sent EXIT.
    pub fn collect_all(&mut self, streams: &[u32]) -> HashMap<u32, Outcome> {
        let mut outs: HashMap<u32, Outcome> = streams.iter().map(|s| (*s, Outcome::default())).collect();
        let mut open = streams.len();
        while open > 0 {
            let f = self.recv_any();
            let o = outs.get_mut(&f.stream).unwrap_or_else(|| panic!("frame for unexpected stream {f:?}"));
            match f.kind {
                STDOUT => o.stdout.extend_from_slice(&f.payload),
                STDERR => o.stderr.extend_from_slice(&f.payload),
                EXIT => {
                    assert!(o.exit.is_empty(), "two EXITs on stream {}", f.stream);
                    o.exit = f.text();
                    open -= 1;
                }
                WINDOW => {}
                other => panic!("unexpected frame 0x{other:02x} on {}: {}", f.stream, f.text()),
            }
            if matches!(f.kind, STDOUT | STDERR) {
                self.send(f.stream, WINDOW, &(f.payload.len() as u32).to_be_bytes());
            }
        }
        outs
    }

    /// Round trip on the control stream: proves the agent is still serving.
    pub fn ping(&mut self, payload: &[u8]) {
        self.send(0, PING, payload);
        let f = self.recv_on(0);
        assert_eq!((f.kind, f.payload.as_slice()), (PONG, payload), "expected PONG, got {}", f.text());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted byte shows up anywhere.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
