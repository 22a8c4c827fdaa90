// The connection to one `msb api` child process: requests written as JSON lines to its stdin, a
// reader thread matching replies to waiting calls by id and routing process events to their
// `Process`, and a waiter thread noticing when the child dies so that no call ever hangs on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::base64;
use crate::error::{Error, Result, Subject};
use crate::json::{self, Value};
use crate::process::{ExitStatus, ProcShared};
use crate::sandbox::{Sandbox, SandboxInfo, SandboxOptions};

/// The API protocol version this SDK speaks (docs/api.md, "Handshake").
pub const PROTOCOL: u32 = 1;
/// Longest request line `msb api` accepts (docs/api.md, "Transport").
const MAX_REQUEST: usize = 64 * 1024 * 1024;
/// Longest reply line accepted: a 512 MiB file read (msb's own limit) in base64, plus framing.
const MAX_LINE: u64 = 700 * 1024 * 1024;
/// Bytes of the child's stderr kept for `RuntimeExited`.
const STDERR_TAIL: usize = 8 * 1024;
/// Events kept for process ids not yet announced by their `spawn` reply.
const MAX_EARLY_EVENTS: usize = 4096;
/// How long `Drop` waits for `msb api` to finish (it stops attached sandboxes) before killing it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(120);

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// How to start `msb api`.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// The msb binary; default: `$MSB_BIN`, else `msb` on `PATH`.
    pub binary: Option<PathBuf>,
    /// Extra environment for `msb api` (e.g. `MSB_HOME`, `MSB_BACKEND`), on top of this process's.
    pub env: Vec<(String, String)>,
}

/// A process event from `msb api`, routed to its `Process`.
pub(crate) enum Event {
    Output { stderr: bool, data: Vec<u8> },
    Exit(ExitStatus),
    Failed(Error),
}

struct Waiter {
    tx: Sender<Result<Value>>,
    subject: Subject,
    /// For `spawn`: the process to register before the reply is handed over, so that no event
    /// of it can arrive unrouted.
    process: Option<Arc<ProcShared>>,
}

#[derive(Default)]
struct State {
    /// Set once the child is gone; every later call fails with it.
    dead: Option<Error>,
    pending: HashMap<u64, Waiter>,
    processes: HashMap<u64, Arc<ProcShared>>,
    /// Events for process ids above `max_process` (their spawn reply has not been read yet).
    early: HashMap<u64, Vec<Event>>,
    early_count: usize,
    /// Highest process id announced; events for lower unknown ids belong to dropped handles.
    max_process: u64,
}

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    done: bool,
}

pub(crate) struct Inner {
    stdin: Mutex<Option<ChildStdin>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    tail: Arc<(Mutex<Tail>, Condvar)>,
    pid: u32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later call into one; the state stays consistent
    // because each critical section is a few map operations.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    /// Sends one request and waits for its reply.
    pub(crate) fn call(&self, method: &str, params: Value, subject: Subject) -> Result<Value> {
        self.call_with(method, params, subject, None)
    }

    pub(crate) fn call_with(&self, method: &str, params: Value, subject: Subject, process: Option<Arc<ProcShared>>) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = Value::object([("id", Value::from(id)), ("method", Value::from(method)), ("params", params)]).encode() + "\n";
        if line.len() > MAX_REQUEST {
            // msb would answer `too_large` without an id, leaving this call nothing to wait for.
            return Err(too_large(method, line.len()));
        }
        let (tx, rx) = mpsc::channel();
        {
            let mut state = lock(&self.state);
            if let Some(error) = &state.dead {
                return Err(error.clone());
            }
            state.pending.insert(id, Waiter { tx, subject, process });
        }
        let written = match lock(&self.stdin).as_mut() {
            Some(stdin) => stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_ok(),
            None => false,
        };
        if !written {
            // The pipe is closed: the child is gone or going. Its waiter thread will fail every
            // call; make sure this one does not wait for a reply that cannot come.
            lock(&self.state).pending.remove(&id);
            return Err(self.exited_error());
        }
        rx.recv().unwrap_or_else(|_| Err(self.exited_error()))
    }

    fn exited_error(&self) -> Error {
        if let Some(error) = &lock(&self.state).dead {
            return error.clone();
        }
        Error::RuntimeExited { stderr_tail: self.stderr_tail(Duration::from_millis(300)) }
    }

    /// The child's last stderr, waiting up to `wait` for it to reach end of file (a killed
    /// child's last words may still be in the pipe).
    fn stderr_tail(&self, wait: Duration) -> String {
        let (tail, cond) = &*self.tail;
        let guard = lock(tail);
        let (guard, _) = cond.wait_timeout_while(guard, wait, |t| !t.done).unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = guard.bytes.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Marks the connection dead: every waiting call and running process gets `RuntimeExited`
    /// (or the given error), now and for every later call.
    fn fail(&self, error: Option<Error>) {
        let error = error.unwrap_or_else(|| Error::RuntimeExited { stderr_tail: self.stderr_tail(Duration::from_millis(300)) });
        let mut state = lock(&self.state);
        if state.dead.is_some() {
            return;
        }
        state.dead = Some(error.clone());
        for (_, waiter) in state.pending.drain() {
            let _ = waiter.tx.send(Err(error.clone()));
        }
        for (_, process) in state.processes.drain() {
            process.push(Event::Failed(error.clone()));
        }
        state.early.clear();
    }

    /// Registers a spawned process and hands it the events that raced ahead of its reply.
    fn register(state: &mut State, id: u64, process: Arc<ProcShared>) {
        state.max_process = state.max_process.max(id);
        let mut finished = false;
        if let Some(events) = state.early.remove(&id) {
            state.early_count -= events.len();
            for event in events {
                finished |= !matches!(event, Event::Output { .. });
                process.push(event);
            }
        }
        if !finished {
            state.processes.insert(id, process);
        }
    }

    fn dispatch(&self, mut message: Value) {
        if let Some(id) = message.get("id") {
            let Some(id) = id.as_u64() else {
                return; // an error about a line we could not have sent (id null); nothing waits for it
            };
            let mut state = lock(&self.state);
            let Some(waiter) = state.pending.remove(&id) else { return };
            let reply = match (message.get("error"), message.get("result")) {
                (Some(error), _) => Err(api_error(error, waiter.subject)),
                // Moved, not copied: a file's contents can be hundreds of MiB.
                (None, Some(_)) => Ok(message.take("result").unwrap_or(Value::Null)),
                (None, None) => Err(Error::protocol(format!("reply {id} has neither result nor error"))),
            };
            if let (Ok(result), Some(process)) = (&reply, waiter.process) {
                match result.get("process").and_then(Value::as_u64) {
                    Some(pid) => Inner::register(&mut state, pid, process),
                    None => {
                        drop(state);
                        let _ = waiter.tx.send(Err(Error::protocol("spawn reply without a process number")));
                        return;
                    }
                }
            }
            drop(state);
            let _ = waiter.tx.send(reply);
        } else if message.get("event").is_some() {
            let (Some(pid), Some(event)) = (message.get("process").and_then(Value::as_u64), parse_event(&message)) else {
                return;
            };
            let mut state = lock(&self.state);
            let last = !matches!(event, Event::Output { .. });
            if let Some(process) = state.processes.get(&pid).cloned() {
                if last {
                    state.processes.remove(&pid);
                }
                drop(state);
                process.push(event);
            } else if pid > state.max_process && state.early_count < MAX_EARLY_EVENTS {
                state.early_count += 1;
                state.early.entry(pid).or_default().push(event);
            }
        }
    }

    /// Stops buffering a process's output once no handle can read it any more (only the
    /// registry and the dropping `Process` hold it).
    pub(crate) fn forget_process(&self, id: u64, process: &Arc<ProcShared>) {
        let mut state = lock(&self.state);
        if Arc::strong_count(process) <= 2 {
            state.processes.remove(&id);
        }
    }
}

/// A request bigger than one API line; `size` is its encoded size (or a close estimate).
pub(crate) fn too_large(method: &str, size: usize) -> Error {
    Error::InvalidOptions {
        message: format!(
            "{method}: the request is {size} bytes, more than the {} MiB msb api accepts in one line (bytes travel as base64: about 48 MiB of data per call)",
            MAX_REQUEST >> 20
        ),
    }
}

/// Refuses bytes whose base64 alone would not fit in one request, before encoding them.
pub(crate) fn check_payload(method: &str, bytes: usize) -> Result<()> {
    let encoded = bytes.div_ceil(3) * 4;
    if encoded > MAX_REQUEST {
        return Err(too_large(method, encoded));
    }
    Ok(())
}

fn api_error(error: &Value, subject: Subject) -> Error {
    let code = error.get("code").and_then(Value::as_str).unwrap_or("internal");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
    Error::from_api(code, message, subject)
}

fn parse_event(message: &Value) -> Option<Event> {
    match message.get("event")?.as_str()? {
        "output" => {
            let stderr = match message.get("fd")?.as_str()? {
                "stdout" => false,
                "stderr" => true,
                _ => return None,
            };
            let data = match base64::decode(message.get("data")?.as_str()?) {
                Ok(data) => data,
                Err(e) => return Some(Event::Failed(Error::protocol(format!("output event: {e}")))),
            };
            Some(Event::Output { stderr, data })
        }
        "exit" => Some(Event::Exit(ExitStatus::from_value(message))),
        "error" => Some(Event::Failed(api_error(message.get("error")?, Subject::Sandbox))),
        _ => None,
    }
}

/// A connection to msb: one `msb api` child process. Sandboxes created through it without
/// `detached: true` stop when it is dropped (and if its process dies).
///
/// ```no_run
/// let client = msb::Client::start(msb::ClientOptions::default())?;
/// let sandbox = client.create(&msb::SandboxOptions::default())?;
/// let out = sandbox.exec(&["echo", "hi"], &msb::ExecOptions::default())?;
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok::<(), msb::Error>(())
/// ```
pub struct Client {
    inner: Arc<Inner>,
    exited: Mutex<Option<Receiver<()>>>,
    msb_version: String,
}

impl Client {
    /// Starts `msb api` and does the version handshake.
    pub fn start(options: ClientOptions) -> Result<Client> {
        let binary =
            options.binary.clone().or_else(|| std::env::var_os("MSB_BIN").filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("msb"));
        let mut child = Command::new(&binary)
            .arg("api")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Start { binary: binary.clone(), reason: e.to_string() })?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(mut stderr)) = (stdin, stdout, stderr) else {
            unreachable!("all three pipes were requested");
        };
        let inner = Arc::new(Inner {
            stdin: Mutex::new(Some(stdin)),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            tail: Arc::new((Mutex::new(Tail::default()), Condvar::new())),
            pid: child.id(),
        });

        let tail = inner.tail.clone();
        thread::Builder::new()
            .name("msb-api-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = stderr.read(&mut buf).unwrap_or(0);
                    let (tail, cond) = &*tail;
                    let mut t = lock(tail);
                    if n == 0 {
                        t.done = true;
                        cond.notify_all();
                        return;
                    }
                    t.bytes.extend(&buf[..n]);
                    let excess = t.bytes.len().saturating_sub(STDERR_TAIL);
                    t.bytes.drain(..excess);
                }
            })
            .map_err(|e| Error::Start { binary: binary.clone(), reason: e.to_string() })?;

        let (reader_done_tx, reader_done_rx) = mpsc::channel::<()>();
        let reader_inner = inner.clone();
        thread::Builder::new()
            .name("msb-api-reader".into())
            .spawn(move || {
                let mut reader = BufReader::with_capacity(256 * 1024, stdout);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line.len() as u64 > MAX_LINE => {
                            let error = Error::protocol(format!("msb api sent a line longer than {MAX_LINE} bytes"));
                            reader_inner.fail(Some(error));
                            // SAFETY: kill(2) on our own child's pid; no memory is involved.
                            unsafe { kill(reader_inner.pid as i32, 9) };
                            break;
                        }
                        Ok(_) => {}
                    }
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    // A line that is not JSON cannot be matched to anything; skip it.
                    if let Ok(message) = json::parse(text) {
                        reader_inner.dispatch(message);
                    }
                }
                reader_inner.fail(None);
                let _ = reader_done_tx.send(());
            })
            .map_err(|e| Error::Start { binary: binary.clone(), reason: e.to_string() })?;

        let (exited_tx, exited_rx) = mpsc::channel::<()>();
        let waiter_inner = inner.clone();
        thread::Builder::new()
            .name("msb-api-wait".into())
            .spawn(move || {
                let _ = child.wait();
                // Give the reader a moment to deliver replies still in the pipe; but a surviving
                // grandchild holding the pipe open must not keep calls waiting.
                if let Err(RecvTimeoutError::Timeout) = reader_done_rx.recv_timeout(Duration::from_secs(1)) {
                    waiter_inner.fail(None);
                }
                let _ = exited_tx.send(());
            })
            .map_err(|e| Error::Start { binary: binary.clone(), reason: e.to_string() })?;

        let mut client = Client { inner, exited: Mutex::new(Some(exited_rx)), msb_version: String::new() };
        let hello = client.inner.call(
            "hello",
            Value::object([("protocol", Value::from(PROTOCOL)), ("client", Value::from(concat!("msb-rust/", env!("CARGO_PKG_VERSION"))))]),
            Subject::Sandbox,
        )?;
        if hello.get("protocol").and_then(Value::as_u64) != Some(u64::from(PROTOCOL)) {
            return Err(Error::protocol(format!("msb answered hello with {hello}; this SDK speaks protocol {PROTOCOL}")));
        }
        client.msb_version = hello.get("msb").and_then(Value::as_str).unwrap_or("").to_string();
        Ok(client)
    }

    /// The version of msb behind this client.
    pub fn msb_version(&self) -> &str {
        &self.msb_version
    }

    /// The process id of `msb api`.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Creates and starts a sandbox (booting its VM), returning once it accepts commands.
    pub fn create(&self, options: &SandboxOptions) -> Result<Sandbox> {
        let reply = self.inner.call("create", Value::object([("options", options.to_value())]), Subject::Sandbox)?;
        let name = reply.get("name").and_then(Value::as_str).ok_or_else(|| Error::protocol("create reply without a name"))?;
        Ok(Sandbox::new(self.inner.clone(), name.to_string()))
    }

    /// Connects to a running sandbox by name.
    pub fn get(&self, name: &str) -> Result<Sandbox> {
        let reply = self.inner.call("get", Value::object([("name", Value::from(name))]), Subject::Sandbox)?;
        let name = reply.get("name").and_then(Value::as_str).ok_or_else(|| Error::protocol("get reply without a name"))?;
        Ok(Sandbox::new(self.inner.clone(), name.to_string()))
    }

    /// Every recorded sandbox, running or not.
    pub fn list(&self) -> Result<Vec<SandboxInfo>> {
        let reply = self.inner.call("list", Value::object(Vec::<(String, Value)>::new()), Subject::Sandbox)?;
        let items = reply.get("sandboxes").and_then(Value::as_array).ok_or_else(|| Error::protocol("list reply without sandboxes"))?;
        items.iter().map(SandboxInfo::from_value).collect()
    }

    /// Removes a sandbox; `force` stops it first if it is running.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.inner.call("remove", Value::object([("name", Value::from(name)), ("force", Value::from(force))]), Subject::Sandbox)?;
        Ok(())
    }

    /// Ends the session: closes `msb api`'s input and waits for it to exit (it finishes calls in
    /// flight and stops the attached sandboxes it created). Dropping the client does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(exited) = lock(&self.exited).take() else { return };
        lock(&self.inner.stdin).take();
        if exited.recv_timeout(CLOSE_TIMEOUT).is_err() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { kill(self.inner.pid as i32, 9) };
            let _ = exited.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Turns `BTreeMap<String, String>` into a JSON object.
pub(crate) fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}
