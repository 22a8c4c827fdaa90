// A command started with `Sandbox::spawn`: its output as `std::io::Read` streams filled by the
// client's reader thread as events arrive, its stdin, signals, and its exit status.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};

use crate::base64;
use crate::client::{Event, Inner};
use crate::error::{Error, Result, Subject};
use crate::json::Value;

/// Largest piece of stdin sent in one request (well under the API's 64 MiB line limit).
const STDIN_CHUNK: usize = 4 * 1024 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// What a shell reports: the exit code, or 128 + the signal number.
    pub exit_code: i32,
    /// The exit code, if it exited rather than being killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// It was killed because its `timeout` passed.
    pub timed_out: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    pub(crate) fn from_value(v: &Value) -> ExitStatus {
        let int = |key: &str| v.get(key).and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok());
        let (code, signal) = (int("code"), int("signal"));
        ExitStatus {
            exit_code: int("exitCode").unwrap_or_else(|| code.unwrap_or(128 + signal.unwrap_or(0))),
            code,
            signal,
            timed_out: v.get("timedOut").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

#[derive(Default)]
struct ProcState {
    stdout: VecDeque<u8>,
    stderr: VecDeque<u8>,
    end: Option<Result<ExitStatus>>,
}

/// One process's buffered output and end, shared by the reader thread and the handles.
#[derive(Default)]
pub(crate) struct ProcShared {
    state: Mutex<ProcState>,
    cond: Condvar,
}

impl ProcShared {
    pub(crate) fn push(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Output { stderr: false, data } => state.stdout.extend(data),
            Event::Output { stderr: true, data } => state.stderr.extend(data),
            Event::Exit(status) => {
                state.end.get_or_insert(Ok(status));
            }
            Event::Failed(error) => {
                state.end.get_or_insert(Err(error));
            }
        }
        self.cond.notify_all();
    }

    fn read(&self, stderr: bool, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let queue = if stderr { &mut state.stderr } else { &mut state.stdout };
            if !queue.is_empty() {
                let n = queue.len().min(buf.len());
                for (slot, byte) in buf.iter_mut().zip(queue.drain(..n)) {
                    *slot = byte;
                }
                return Ok(n);
            }
            match &state.end {
                Some(Ok(_)) => return Ok(0),
                Some(Err(error)) => return Err(io::Error::other(error.clone())),
                None => state = self.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn ended(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).end.is_some()
    }

    fn wait(&self) -> Result<ExitStatus> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(end) = &state.end {
                return end.clone();
            }
            state = self.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A running command. Its output is buffered as it arrives; read it with `stdout()`/`stderr()`
/// (each a `std::io::Read` that blocks until output or the end). Dropping the handle does not
/// stop the command; `signal(9)` does.
pub struct Process {
    inner: Arc<Inner>,
    shared: Arc<ProcShared>,
    id: u64,
}

/// One output stream of a `Process`; end of file once the command has exited. A read fails if
/// the sandbox or `msb api` went away while the command ran.
pub struct ProcessOutput {
    shared: Arc<ProcShared>,
    stderr: bool,
}

impl Read for ProcessOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.read(self.stderr, buf)
    }
}

impl Process {
    pub(crate) fn spawn(inner: Arc<Inner>, params: Value) -> Result<Process> {
        let shared = Arc::new(ProcShared::default());
        let reply = inner.call_with("spawn", params, Subject::Sandbox, Some(shared.clone()))?;
        let id = reply.get("process").and_then(Value::as_u64).ok_or_else(|| Error::protocol("spawn reply without a process number"))?;
        Ok(Process { inner, shared, id })
    }

    /// The process number `msb api` gave this command.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The command's standard output.
    pub fn stdout(&self) -> ProcessOutput {
        ProcessOutput { shared: self.shared.clone(), stderr: false }
    }

    /// The command's standard error.
    pub fn stderr(&self) -> ProcessOutput {
        ProcessOutput { shared: self.shared.clone(), stderr: true }
    }

    /// Feeds bytes to the command's stdin (spawned with `pipe_stdin`); returns once the guest has
    /// room for them.
    pub fn write_stdin(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(STDIN_CHUNK) {
            let params = Value::object([("process", Value::from(self.id)), ("data", Value::from(base64::encode(chunk)))]);
            self.inner.call("write", params, Subject::PathOrProcess)?;
        }
        Ok(())
    }

    /// Ends the command's input (it reads end of file). Nothing to do once it has exited.
    pub fn close_stdin(&self) -> Result<()> {
        self.after_exit_ok(self.inner.call("end", Value::object([("process", Value::from(self.id))]), Subject::PathOrProcess))
    }

    /// Sends a signal (1-64) to the command, e.g. 15 (SIGTERM) or 9 (SIGKILL). Nothing to do once
    /// it has exited (like `std::process::Child::kill`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let params = Value::object([("process", Value::from(self.id)), ("signal", Value::from(signal))]);
        self.after_exit_ok(self.inner.call("signal", params, Subject::PathOrProcess))
    }

    /// msb forgets a process once it has sent its exit, so a call racing the exit gets
    /// `not_found`; the exit event precedes that reply on the wire, so `ended` is already true.
    fn after_exit_ok(&self, reply: Result<Value>) -> Result<()> {
        match reply {
            Err(Error::NotFound { .. }) if self.shared.ended() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Waits for the command to end. Output not yet read stays readable.
    pub fn wait(&self) -> Result<ExitStatus> {
        self.shared.wait()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.inner.forget_process(self.id, &self.shared);
    }
}
