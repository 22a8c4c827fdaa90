// Sandboxes: their options (sent as-is to msb, which validates them), commands collected or
// streamed, and files. Each method is one API request (docs/api.md, "Methods").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::base64;
use crate::client::{check_payload, string_map, Inner};
use crate::error::{Error, Result, Subject};
use crate::json::Value;
use crate::process::{ExitStatus, Process};

/// Options for `Client::create`; every field left at its default is left to msb's default
/// (src/config.ts). msb validates them all and reports a bad one as `Error::InvalidOptions`.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// OCI image reference; default: msb's built-in image.
    pub image: Option<String>,
    /// Name (a named sandbox keeps its writes across stops); default: a generated one.
    pub name: Option<String>,
    /// When to contact the registry: "always", "if-missing" (default) or "never".
    pub pull: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub env: BTreeMap<String, String>,
    /// Working directory for commands (absolute).
    pub workdir: Option<String>,
    /// User commands run as: a name from the image, or UID[:GID].
    pub user: Option<String>,
    /// "none", "public" (default) or "all".
    pub network: Option<String>,
    /// Egress rules on top of `network`, e.g. "tcp:api.example.com:443".
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Published ports, "[IP:]HOST:GUEST[/udp]".
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Keep running after this client closes.
    pub detached: bool,
    /// "qemu" or "native"; default: msb's choice (`MSB_BACKEND`).
    pub backend: Option<String>,
    /// Secrets the guest sees only as placeholders (see `Secret`).
    pub secrets: Vec<Secret>,
    /// Any other option of src/config.ts by its JSON name (e.g. "volumes", "hostname"); these
    /// are sent as given and override the fields above.
    pub extra: Vec<(String, Value)>,
}

/// A value the guest never holds: its environment has `NAME=$MSB_NAME`, and msb puts `value` into
/// HTTPS requests (headers and Basic auth; the URL with `query`, the body with `body`) only toward
/// the `allow` hosts ("api.example.com", or "*.example.com" for subdomains). The value is kept in
/// the sandbox's supervisor's memory only, never on disk.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub name: String,
    pub value: String,
    pub allow: Vec<String>,
    pub query: bool,
    pub body: bool,
}

impl SandboxOptions {
    pub(crate) fn to_value(&self) -> Value {
        let mut pairs: Vec<(String, Value)> = Vec::new();
        let mut put = |key: &str, value: Value| pairs.push((key.to_string(), value));
        let strings = |items: &[String]| Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect());
        if let Some(v) = &self.image {
            put("image", v.as_str().into());
        }
        if let Some(v) = &self.name {
            put("name", v.as_str().into());
        }
        if let Some(v) = &self.pull {
            put("pull", v.as_str().into());
        }
        if let Some(v) = self.cpus {
            put("cpus", v.into());
        }
        if let Some(v) = self.memory_mib {
            put("memoryMiB", v.into());
        }
        if !self.env.is_empty() {
            put("env", string_map(&self.env));
        }
        if let Some(v) = &self.workdir {
            put("workdir", v.as_str().into());
        }
        if let Some(v) = &self.user {
            put("user", v.as_str().into());
        }
        if let Some(v) = &self.network {
            put("network", v.as_str().into());
        }
        if !self.allow.is_empty() {
            put("allow", strings(&self.allow));
        }
        if !self.deny.is_empty() {
            put("deny", strings(&self.deny));
        }
        if !self.ports.is_empty() {
            put("ports", strings(&self.ports));
        }
        if !self.labels.is_empty() {
            put("labels", string_map(&self.labels));
        }
        if self.detached {
            put("detached", true.into());
        }
        if let Some(v) = &self.backend {
            put("backend", v.as_str().into());
        }
        if !self.secrets.is_empty() {
            let secret = |s: &Secret| {
                Value::object([
                    ("name", s.name.as_str().into()),
                    ("value", s.value.as_str().into()),
                    ("allow", strings(&s.allow)),
                    ("query", s.query.into()),
                    ("body", s.body.into()),
                ])
            };
            put("secrets", Value::Array(self.secrets.iter().map(secret).collect()));
        }
        for (key, value) in &self.extra {
            pairs.retain(|(k, _)| k != key);
            pairs.push((key.clone(), value.clone()));
        }
        Value::Object(pairs)
    }
}

/// Options for `Sandbox::exec` and `Sandbox::spawn`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// Kill the command after this long (its result then has `timed_out`).
    pub timeout: Option<Duration>,
    /// Bytes the command reads on stdin, then end of file.
    pub stdin: Option<Vec<u8>>,
    /// `spawn` only: keep stdin open for `Process::write_stdin`/`close_stdin` (otherwise the
    /// command reads end of file at once, after `stdin` if given).
    pub pipe_stdin: bool,
}

/// A finished command's status and collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// What a shell reports: the exit code, or 128 + the signal number.
    pub exit_code: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecResult {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A file's metadata inside a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStat {
    /// "file", "directory", "symlink", "fifo", "socket", "char", "block" or "unknown".
    pub kind: String,
    pub size: u64,
    /// Permission bits with setuid/setgid/sticky (mode & 0o7777).
    pub mode: u32,
    pub mtime_ms: f64,
    pub uid: u32,
    pub gid: u32,
    /// A symlink's target.
    pub target: Option<String>,
}

impl FileStat {
    fn from_value(v: &Value) -> Result<FileStat> {
        let num = |key: &str| v.get(key).and_then(Value::as_u64).ok_or_else(|| Error::protocol(format!("file metadata without {key}: {v}")));
        let u32_of = |key: &str| num(key).and_then(|n| u32::try_from(n).map_err(|_| Error::protocol(format!("{key} out of range: {v}"))));
        Ok(FileStat {
            kind: v.get("type").and_then(Value::as_str).ok_or_else(|| Error::protocol(format!("file metadata without type: {v}")))?.to_string(),
            size: num("size")?,
            mode: u32_of("mode")?,
            mtime_ms: v.get("mtimeMs").and_then(Value::as_f64).unwrap_or(0.0),
            uid: u32_of("uid").unwrap_or(0),
            gid: u32_of("gid").unwrap_or(0),
            target: v.get("target").and_then(Value::as_str).map(str::to_string),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.kind == "directory"
    }

    pub fn is_file(&self) -> bool {
        self.kind == "file"
    }
}

/// One entry of `Sandbox::list_dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirEntry {
    pub name: String,
    pub stat: FileStat,
}

/// What `Client::list` reports about a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub name: String,
    /// "created", "starting", "running", "stopping", "stopped", "crashed", ...
    pub status: String,
    pub ephemeral: bool,
    pub image: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
    pub exit_reason: Option<String>,
    /// Everything msb reported, for fields this struct does not name.
    pub raw: Value,
}

impl SandboxInfo {
    pub(crate) fn from_value(v: &Value) -> Result<SandboxInfo> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let labels = match v.get("labels") {
            Some(Value::Object(pairs)) => pairs.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect(),
            _ => BTreeMap::new(),
        };
        Ok(SandboxInfo {
            name: text("name").ok_or_else(|| Error::protocol(format!("sandbox entry without a name: {v}")))?,
            status: text("status").unwrap_or_default(),
            ephemeral: v.get("ephemeral").and_then(Value::as_bool).unwrap_or(false),
            image: text("image"),
            labels,
            created_at: text("createdAt"),
            started_at: text("startedAt"),
            stopped_at: text("stoppedAt"),
            exit_reason: text("exitReason"),
            raw: v.clone(),
        })
    }
}

/// A handle on a running sandbox, from `Client::create` or `Client::get`. Cheap to clone; all
/// clones use their client's `msb api` process.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
    name: String,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("name", &self.name).finish()
    }
}

impl Sandbox {
    pub(crate) fn new(inner: Arc<Inner>, name: String) -> Sandbox {
        Sandbox { inner, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, method: &str, mut params: Vec<(&str, Value)>, subject: Subject) -> Result<Value> {
        params.insert(0, ("name", Value::from(self.name.as_str())));
        self.inner.call(method, Value::object(params), subject)
    }

    fn command_params<S: AsRef<str>>(&self, argv: &[S], options: &ExecOptions) -> Result<Vec<(&'static str, Value)>> {
        if argv.is_empty() {
            return Err(Error::InvalidOptions { message: format!("{}: argv must name a program", self.name) });
        }
        let mut params: Vec<(&str, Value)> =
            vec![("name", Value::from(self.name.as_str())), ("argv", Value::Array(argv.iter().map(|a| Value::from(a.as_ref())).collect()))];
        if !options.env.is_empty() {
            params.push(("env", string_map(&options.env)));
        }
        if let Some(cwd) = &options.cwd {
            params.push(("cwd", cwd.as_str().into()));
        }
        if let Some(user) = &options.user {
            params.push(("user", user.as_str().into()));
        }
        if let Some(timeout) = options.timeout {
            params.push(("timeoutMs", Value::from(timeout.as_secs_f64() * 1000.0)));
        }
        Ok(params)
    }

    /// Runs a command to completion and collects its output.
    pub fn exec<S: AsRef<str>>(&self, argv: &[S], options: &ExecOptions) -> Result<ExecResult> {
        let mut params = self.command_params(argv, options)?;
        if let Some(stdin) = &options.stdin {
            check_payload("exec", stdin.len())?;
            params.push(("stdin", Value::from(base64::encode(stdin))));
        }
        let reply = self.inner.call("exec", Value::object(params), Subject::Sandbox)?;
        let bytes = |key: &str| {
            let text = reply.get(key).and_then(Value::as_str).ok_or_else(|| Error::protocol(format!("exec reply without {key}")))?;
            base64::decode(text).map_err(|e| Error::protocol(format!("exec reply {key}: {e}")))
        };
        let status = ExitStatus::from_value(&reply);
        Ok(ExecResult {
            exit_code: status.exit_code,
            code: status.code,
            signal: status.signal,
            timed_out: status.timed_out,
            stdout: bytes("stdout")?,
            stderr: bytes("stderr")?,
        })
    }

    /// Starts a command and returns at once; its output streams into the `Process`.
    pub fn spawn<S: AsRef<str>>(&self, argv: &[S], options: &ExecOptions) -> Result<Process> {
        let mut params = self.command_params(argv, options)?;
        let open = options.pipe_stdin || options.stdin.is_some();
        params.push(("stdin", Value::from(open)));
        let process = Process::spawn(self.inner.clone(), Value::object(params))?;
        if let Some(stdin) = &options.stdin {
            process.write_stdin(stdin)?;
            if !options.pipe_stdin {
                process.close_stdin()?;
            }
        }
        Ok(process)
    }

    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let reply = self.call("read_file", vec![("path", path.into())], Subject::PathOrProcess)?;
        let data = reply.get("data").and_then(Value::as_str).ok_or_else(|| Error::protocol("read_file reply without data"))?;
        base64::decode(data).map_err(|e| Error::protocol(format!("read_file reply: {e}")))
    }

    /// Writes (creates or replaces) a file; returns the bytes written.
    pub fn write_file(&self, path: &str, data: impl AsRef<[u8]>) -> Result<u64> {
        self.write(path, data.as_ref(), None)
    }

    /// Writes a file with the given permission bits (e.g. 0o755).
    pub fn write_file_mode(&self, path: &str, data: impl AsRef<[u8]>, mode: u32) -> Result<u64> {
        self.write(path, data.as_ref(), Some(mode))
    }

    fn write(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<u64> {
        check_payload("write_file", data.len())?;
        let mut params = vec![("path", path.into()), ("data", Value::from(base64::encode(data)))];
        if let Some(mode) = mode {
            params.push(("mode", mode.into()));
        }
        let reply = self.call("write_file", params, Subject::PathOrProcess)?;
        reply.get("bytes").and_then(Value::as_u64).ok_or_else(|| Error::protocol("write_file reply without bytes"))
    }

    pub fn stat(&self, path: &str) -> Result<FileStat> {
        FileStat::from_value(&self.call("stat", vec![("path", path.into())], Subject::PathOrProcess)?)
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        let reply = self.call("exists", vec![("path", path.into())], Subject::PathOrProcess)?;
        reply.get("exists").and_then(Value::as_bool).ok_or_else(|| Error::protocol("exists reply without exists"))
    }

    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let reply = self.call("list_dir", vec![("path", path.into())], Subject::PathOrProcess)?;
        let entries = reply.get("entries").and_then(Value::as_array).ok_or_else(|| Error::protocol("list_dir reply without entries"))?;
        entries
            .iter()
            .map(|e| {
                let name = e.get("name").and_then(Value::as_str).ok_or_else(|| Error::protocol(format!("list_dir entry without a name: {e}")))?;
                Ok(DirEntry { name: name.to_string(), stat: FileStat::from_value(e)? })
            })
            .collect()
    }

    /// Creates a directory; `parents` also creates missing parents and accepts an existing one.
    pub fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        self.call("mkdir", vec![("path", path.into()), ("parents", parents.into())], Subject::PathOrProcess)?;
        Ok(())
    }

    /// Removes a file or directory; `recursive` removes a directory with its contents.
    pub fn remove_path(&self, path: &str, recursive: bool) -> Result<()> {
        self.call("remove_path", vec![("path", path.into()), ("recursive", recursive.into())], Subject::PathOrProcess)?;
        Ok(())
    }

    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.call("rename", vec![("from", from.into()), ("to", to.into())], Subject::PathOrProcess)?;
        Ok(())
    }

    pub fn chmod(&self, path: &str, mode: u32) -> Result<()> {
        self.call("chmod", vec![("path", path.into()), ("mode", mode.into())], Subject::PathOrProcess)?;
        Ok(())
    }

    /// Powers the sandbox off cleanly (killed if that takes longer than msb's default timeout).
    pub fn stop(&self) -> Result<()> {
        self.call("stop", vec![], Subject::Sandbox)?;
        Ok(())
    }

    /// Powers off, killing it if a clean stop takes longer than `timeout`.
    pub fn stop_timeout(&self, timeout: Duration) -> Result<()> {
        self.call("stop", vec![("timeoutMs", Value::from(timeout.as_secs_f64() * 1000.0))], Subject::Sandbox)?;
        Ok(())
    }

    /// Kills the VM at once.
    pub fn kill(&self) -> Result<()> {
        self.call("kill", vec![], Subject::Sandbox)?;
        Ok(())
    }

    /// Removes the sandbox and its storage; `force` stops it first if it is running.
    pub fn remove(&self, force: bool) -> Result<()> {
        self.call("remove", vec![("force", force.into())], Subject::Sandbox)?;
        Ok(())
    }
}
