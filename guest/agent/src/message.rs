// The protocol's JSON and binary payloads as validated Rust values: parse what the host sends
// (INIT, EXEC, SIGNAL, WINDOW, RESIZE), emit what the agent sends (HELLO, READY, EXIT, ERROR).

use crate::frame::PROTOCOL_VERSION;
use crate::netconf::NetConfig;
use crate::overlay::OVERLAY_ROOT;
use crate::json::{self, Value};
use std::fmt;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Used when INIT has no hostname.
pub const DEFAULT_HOSTNAME: &str = "msb";

/// A payload the agent could not accept, said in words the host can act on.
#[derive(Debug, PartialEq)]
pub struct MessageError(pub String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, MessageError> {
    Err(MessageError(msg.into()))
}

fn parse_object(what: &str, payload: &[u8]) -> Result<Value, MessageError> {
    let v = json::parse(payload).map_err(|e| MessageError(format!("{what} payload: {e}")))?;
    if v.as_object().is_none() {
        return err(format!("{what} payload must be a JSON object, got {}", v.kind()));
    }
    Ok(v)
}

/// A JSON object of strings, as `env` is. Order is kept; a later duplicate wins when overlaid.
fn parse_env(what: &str, v: &Value) -> Result<Vec<(String, String)>, MessageError> {
    let members = v.as_object().ok_or_else(|| MessageError(format!("{what}.env must be an object of strings")))?;
    let mut env = Vec::with_capacity(members.len());
    for (k, val) in members {
        let val = val
            .as_str()
            .ok_or_else(|| MessageError(format!("{what}.env.{k} must be a string, got {}", val.kind())))?;
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return err(format!("{what}.env has an invalid variable name {k:?} (empty, or contains '=' or NUL)"));
        }
        if val.contains('\0') {
            return err(format!("{what}.env.{k} contains a NUL byte"));
        }
        env.push((k.clone(), val.to_string()));
    }
    Ok(env)
}

/// Sets `key` in `env`, replacing an earlier value in place.
pub fn env_set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

pub fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[derive(Debug, PartialEq, Clone)]
pub enum RootKind {
    /// A directory inside the initramfs.
    Initramfs,
    /// EROFS layer disks (virtio-blk serials, lowest first) merged under a private writable upper:
    /// tmpfs when `upper_disk` is None, else the ext4 disk with that serial (kept across restarts).
    Overlay { layers: Vec<String>, upper_disk: Option<String> },
}

/// How many layer disks an overlay root may name; far above what any VM can attach.
const MAX_LAYERS: usize = 64;

#[derive(Debug, PartialEq)]
pub struct Init {
    pub protocol: i64,
    pub hostname: String,
    pub root_kind: RootKind,
    pub root_path: String,
    /// Base environment of every exec; always has PATH.
    pub env: Vec<(String, String)>,
    pub clock_ms: Option<u64>,
    /// The guest NIC's configuration; None: no network beyond lo.
    pub net: Option<NetConfig>,
    /// Volumes and tmpfs mounts inside the sandbox root (INIT.mounts), in mount order.
    pub mounts: Vec<crate::volumes::Mount>,
    /// The sandbox's msb CA (INIT.ca), normalised PEM, to install in the root's trust stores.
    pub ca: Option<String>,
}

/// Why INIT was refused: the protocol version differs (ERROR `version`), or anything else
/// (ERROR `init`).
#[derive(Debug, PartialEq)]
pub enum InitError {
    Version(String),
    Invalid(String),
}

impl Init {
    pub fn parse(payload: &[u8]) -> Result<Init, InitError> {
        let inv = |m: MessageError| InitError::Invalid(m.0);
        let v = parse_object("INIT", payload).map_err(inv)?;
        let protocol = match v.get("protocol") {
            None => return Err(InitError::Invalid("INIT is missing \"protocol\" (this agent speaks 1)".into())),
            Some(p) => p.as_i64().ok_or_else(|| InitError::Invalid("INIT.protocol must be an integer".into()))?,
        };
        if protocol != PROTOCOL_VERSION {
            return Err(InitError::Version(format!(
                "host speaks protocol {protocol}, this agent ({AGENT_VERSION}) speaks protocol {PROTOCOL_VERSION}"
            )));
        }
        let hostname = match v.get("hostname") {
            None | Some(Value::Null) => DEFAULT_HOSTNAME.to_string(),
            Some(h) => {
                let h = h.as_str().ok_or_else(|| InitError::Invalid("INIT.hostname must be a string".into()))?;
                check_hostname(h).map_err(inv)?;
                h.to_string()
            }
        };
        let root = v.get("root").ok_or_else(|| {
            InitError::Invalid("INIT is missing \"root\" (e.g. {\"kind\":\"initramfs\",\"path\":\"/rootfs\"})".into())
        })?;
        if root.as_object().is_none() {
            return Err(InitError::Invalid(format!("INIT.root must be an object, got {}", root.kind())));
        }
        let (root_kind, root_path) = match root.get("kind").and_then(Value::as_str) {
            Some("initramfs") => {
                let path = root
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| InitError::Invalid("INIT.root.path must be a string".into()))?;
                if !path.starts_with('/') || path.contains('\0') {
                    return Err(InitError::Invalid(format!("INIT.root.path must be an absolute path, got {path:?}")));
                }
                (RootKind::Initramfs, path.to_string())
            }
            Some("overlay") => {
                let (layers, upper_disk) = parse_layers(root).map_err(inv)?;
                (RootKind::Overlay { layers, upper_disk }, OVERLAY_ROOT.to_string())
            }
            Some(other) => {
                return Err(InitError::Invalid(format!(
                    "INIT.root.kind {other:?} is not supported by agent {AGENT_VERSION} (supported: \"initramfs\", \"overlay\")"
                )))
            }
            None => return Err(InitError::Invalid("INIT.root.kind must be a string (\"initramfs\" or \"overlay\")".into())),
        };
        let mut env = match v.get("env") {
            None | Some(Value::Null) => Vec::new(),
            Some(e) => parse_env("INIT", e).map_err(inv)?,
        };
        if env_get(&env, "PATH").is_none() {
            env_set(&mut env, "PATH", DEFAULT_PATH);
        }
        let clock_ms = match v.get("clockMs") {
            None | Some(Value::Null) => None,
            Some(c) => match c.as_i64() {
                Some(ms) if ms >= 0 => Some(ms as u64),
                _ => return Err(InitError::Invalid("INIT.clockMs must be a non-negative integer (ms since 1970)".into())),
            },
        };
        let net = match v.get("net") {
            None | Some(Value::Null) => None,
            Some(n) => Some(parse_net(n).map_err(inv)?),
        };
        let mounts = match v.get("mounts") {
            None | Some(Value::Null) => Vec::new(),
            Some(m) => crate::volumes::parse(m).map_err(InitError::Invalid)?,
        };
        let ca = match v.get("ca") {
            None | Some(Value::Null) => None,
            Some(c) => Some(crate::trust::parse(c).map_err(InitError::Invalid)?),
        };
        Ok(Init { protocol, hostname, root_kind, root_path, env, clock_ms, net, mounts, ca })
    }
}

/// INIT.root.layers: disk serials (at most 20 bytes, as VIRTIO_BLK_T_GET_ID carries), lowest first;
/// and INIT.root.upper: the serial of the upper layer's disk, if it is one.
fn parse_layers(root: &Value) -> Result<(Vec<String>, Option<String>), MessageError> {
    let Some(items) = root.get("layers").and_then(Value::as_array) else {
        return err("INIT.root.layers must be an array of disk serials".to_string());
    };
    if items.is_empty() || items.len() > MAX_LAYERS {
        return err(format!("INIT.root.layers must name 1 to {MAX_LAYERS} disks, got {}", items.len()));
    }
    let serial = |item: &Value, what: &str| match item.as_str() {
        Some(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_graphic()) => Ok(s.to_string()),
        _ => err(format!("{what} must be 1-20 printable characters, got {}", item.to_json())),
    };
    let mut layers = Vec::with_capacity(items.len());
    for item in items {
        layers.push(serial(item, "INIT.root.layers entries")?);
    }
    let upper = root.get("upper");
    match upper.map(|u| u.get("kind").and_then(Value::as_str)) {
        None | Some(Some("tmpfs")) => Ok((layers, None)),
        Some(Some("disk")) => {
            let Some(disk) = upper.and_then(|u| u.get("serial")) else {
                return err("INIT.root.upper.serial is required when upper.kind is \"disk\"".to_string());
            };
            Ok((layers, Some(serial(disk, "INIT.root.upper.serial")?)))
        }
        Some(other) => err(format!("INIT.root.upper.kind {other:?} is not supported (supported: \"tmpfs\", \"disk\")")),
    }
}

/// INIT.net: addresses are parsed, not trusted as text, since they end up in ioctls and files.
fn parse_net(n: &Value) -> Result<NetConfig, MessageError> {
    if n.as_object().is_none() {
        return err(format!("INIT.net must be an object or null, got {}", n.kind()));
    }
    let mtu = match n.get("mtu").and_then(Value::as_i64) {
        Some(m) if (576..=65535).contains(&m) => m as u32,
        _ => return err("INIT.net.mtu must be an integer from 576 to 65535".to_string()),
    };
    let ipv4 = n.get("ipv4").ok_or_else(|| MessageError("INIT.net.ipv4 is missing".into()))?;
    let (ipv4, ipv4_prefix, ipv4_gateway) = parse_addr::<std::net::Ipv4Addr>(ipv4, "ipv4", 32)?;
    let ipv6 = match n.get("ipv6") {
        None | Some(Value::Null) => None,
        Some(v6) => Some(parse_addr::<std::net::Ipv6Addr>(v6, "ipv6", 128)?),
    };
    let mut nameservers = Vec::new();
    for server in n.get("nameservers").and_then(Value::as_array).unwrap_or(&[]) {
        match server.as_str().map(str::parse::<std::net::IpAddr>) {
            Some(Ok(ip)) => nameservers.push(ip.to_string()),
            _ => return err(format!("INIT.net.nameservers entries must be IP addresses, got {}", server.to_json())),
        }
    }
    let mut hosts = Vec::new();
    for entry in n.get("hosts").and_then(Value::as_array).unwrap_or(&[]) {
        let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
        let address = entry.get("address").and_then(Value::as_str).map(str::parse::<std::net::IpAddr>);
        let valid_name = !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        match address {
            Some(Ok(ip)) if valid_name => hosts.push((name.to_string(), ip.to_string())),
            _ => return err(format!("INIT.net.hosts entries need a host name and an IP address, got {}", entry.to_json())),
        }
    }
    Ok(NetConfig { mtu, ipv4, ipv4_prefix, ipv4_gateway, ipv6, nameservers, hosts })
}

fn parse_addr<A: std::str::FromStr>(v: &Value, what: &str, max_prefix: i64) -> Result<(A, u8, A), MessageError> {
    let address = v.get("address").and_then(Value::as_str).and_then(|s| s.parse::<A>().ok());
    let gateway = v.get("gateway").and_then(Value::as_str).and_then(|s| s.parse::<A>().ok());
    let prefix = v.get("prefixLength").and_then(Value::as_i64).filter(|p| (0..=max_prefix).contains(p));
    match (address, prefix, gateway) {
        (Some(a), Some(p), Some(g)) => Ok((a, p as u8, g)),
        _ => err(format!("INIT.net.{what} needs address, prefixLength (0-{max_prefix}) and gateway, got {}", v.to_json())),
    }
}

/// What sethostname(2) takes, narrowed to printable ASCII so the name is safe in prompts and logs.
fn check_hostname(h: &str) -> Result<(), MessageError> {
    if h.is_empty() || h.len() > 64 {
        return err(format!("INIT.hostname must be 1 to 64 bytes, got {}", h.len()));
    }
    if let Some(c) = h.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return err(format!("INIT.hostname {h:?} contains {c:?}; use letters, digits, '-', '.' or '_'"));
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size (rows, cols): output as STDOUT only, RESIZE
    /// applies. An extension of protocol 1 (see README): `"tty": true` or `{"rows":R,"cols":C}`.
    pub tty: Option<(u16, u16)>,
    /// Run as this user: a name from the root's /etc/passwd, `uid`, `uid:gid`, `name:group`.
    pub user: Option<String>,
    /// Kill the process group this long after the start; EXIT then says `timedOut`.
    pub timeout_ms: Option<u64>,
}

/// Longest `user` accepted (a passwd name is at most 32 bytes; `uid:gid` fewer).
pub const MAX_USER: usize = 256;
/// Longest timeout accepted: 30 days, far beyond any sane command and safely inside Instant.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

pub const DEFAULT_TTY_SIZE: (u16, u16) = (24, 80);

impl ExecRequest {
    /// Parses the EXEC payload. Shape errors (not JSON, wrong types, no argv) are `request`
    /// errors; values that parse but cannot be run (a NUL byte in an argument, a relative cwd)
    /// are left to the spawner, which reports them as exit code 125.
    pub fn parse(payload: &[u8]) -> Result<ExecRequest, MessageError> {
        let v = parse_object("EXEC", payload)?;
        let argv = match v.get("argv").and_then(Value::as_array) {
            Some(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| MessageError(format!("EXEC.argv[{i}] must be a string, got {}", a.kind())))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return err("EXEC.argv must have at least one element (the program)"),
            None => return err("EXEC.argv must be an array of strings, e.g. [\"sh\",\"-c\",\"echo hi\"]"),
        };
        let env = match v.get("env") {
            None | Some(Value::Null) => Vec::new(),
            Some(e) => parse_env("EXEC", e)?,
        };
        let cwd = match v.get("cwd") {
            None | Some(Value::Null) => "/".to_string(),
            Some(c) => c.as_str().ok_or_else(|| MessageError("EXEC.cwd must be a string".into()))?.to_string(),
        };
        let stdin = match v.get("stdin") {
            None | Some(Value::Null) => false,
            Some(s) => s.as_bool().ok_or_else(|| MessageError("EXEC.stdin must be true or false".into()))?,
        };
        let tty = match v.get("tty") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(DEFAULT_TTY_SIZE),
            Some(t @ Value::Object(_)) => Some(parse_size("EXEC.tty", t)?),
            Some(_) => return err("EXEC.tty must be true, false or {\"rows\":R,\"cols\":C}"),
        };
        let user = match v.get("user") {
            None | Some(Value::Null) => None,
            Some(u) => match u.as_str() {
                Some(u) if !u.is_empty() && u.len() <= MAX_USER && !u.contains('\0') => Some(u.to_string()),
                _ => return err(format!("EXEC.user must be a non-empty string of at most {MAX_USER} bytes (a name, uid or uid:gid)")),
            },
        };
        let timeout_ms = match v.get("timeoutMs") {
            None | Some(Value::Null) => None,
            Some(t) => match t.as_i64() {
                Some(ms) if ms > 0 && ms as u64 <= MAX_TIMEOUT_MS => Some(ms as u64),
                _ => return err(format!("EXEC.timeoutMs must be an integer from 1 to {MAX_TIMEOUT_MS}")),
            },
        };
        Ok(ExecRequest { argv, env, cwd, stdin, tty, user, timeout_ms })
    }
}

/// SIGNAL payload: `{"signal":N}` with N a Linux signal number (1..=64).
pub fn parse_signal(payload: &[u8]) -> Result<i32, MessageError> {
    let v = parse_object("SIGNAL", payload)?;
    match v.get("signal").and_then(Value::as_i64) {
        Some(n) if (1..=crate::sys::SIG_MAX as i64).contains(&n) => Ok(n as i32),
        _ => err("SIGNAL.signal must be a signal number from 1 to 64"),
    }
}

/// WINDOW payload: a u32 credit increment.
pub fn parse_window(payload: &[u8]) -> Result<u32, MessageError> {
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| MessageError(format!("WINDOW payload must be 4 bytes, got {}", payload.len())))?;
    Ok(u32::from_be_bytes(bytes))
}

pub fn window_payload(increment: u32) -> [u8; 4] {
    increment.to_be_bytes()
}

/// RESIZE payload: `{"rows":R,"cols":C}`, each 1..=65535.
pub fn parse_resize(payload: &[u8]) -> Result<(u16, u16), MessageError> {
    let v = parse_object("RESIZE", payload)?;
    parse_size("RESIZE", &v)
}

fn parse_size(what: &str, v: &Value) -> Result<(u16, u16), MessageError> {
    let dim = |k: &str| match v.get(k).and_then(Value::as_i64) {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => err(format!("{what}.{k} must be an integer from 1 to 65535")),
    };
    Ok((dim("rows")?, dim("cols")?))
}

pub fn hello() -> Vec<u8> {
    json::object(vec![
        ("protocol", Value::Number(PROTOCOL_VERSION as f64)),
        ("agent", Value::String(AGENT_VERSION.into())),
    ])
    .to_json()
    .into_bytes()
}

pub fn ready(boot_ms: u64) -> Vec<u8> {
    json::object(vec![("bootMs", Value::Number(boot_ms as f64))]).to_json().into_bytes()
}

/// Error codes of ERROR frames (docs/protocol.md, "ERROR").
pub mod code {
    pub const PROTOCOL: &str = "protocol";
    pub const VERSION: &str = "version";
    pub const INIT: &str = "init";
    pub const STREAM: &str = "stream";
    pub const REQUEST: &str = "request";
    /// A new stream would exceed MAX_STREAMS; the stream is refused, the connection stays.
    pub const LIMIT: &str = "limit";
    /// The host cancelled a file transfer (SIGNAL on a FILE stream).
    pub const CANCELLED: &str = "cancelled";
    pub const STOPPING: &str = "stopping";
}

pub fn error(code: &str, message: &str) -> Vec<u8> {
    json::object(vec![("code", Value::String(code.into())), ("message", Value::String(message.into()))])
        .to_json()
        .into_bytes()
}

/// How an exec ended, as EXIT carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    /// Killed because its `timeoutMs` passed.
    pub timed_out: bool,
}

impl ExitStatus {
    pub fn exited(code: i32) -> ExitStatus {
        ExitStatus { code: Some(code), signal: None, error: None, timed_out: false }
    }

    pub fn signaled(signal: i32) -> ExitStatus {
        ExitStatus { code: None, signal: Some(signal), error: None, timed_out: false }
    }

    pub fn failed(code: i32, error: String) -> ExitStatus {
        ExitStatus { code: Some(code), signal: None, error: Some(error), timed_out: false }
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let num = |n: Option<i32>| n.map(|n| Value::Number(n as f64)).unwrap_or(Value::Null);
        let mut members = vec![("code", num(self.code)), ("signal", num(self.signal))];
        if let Some(e) = &self.error {
            members.push(("error", Value::String(e.clone())));
        }
        if self.timed_out {
            members.push(("timedOut", Value::Bool(true)));
        }
        json::object(members).to_json().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{hex, vector};
    use crate::frame::{self, kind};

    fn payload_of(name: &str) -> Vec<u8> {
        let bytes = hex(vector(name).get("hex").unwrap().as_str().unwrap());
        let mut d = frame::Decoder::new();
        d.push(&bytes);
        d.next_frame().unwrap().unwrap().payload
    }

    fn frame_hex(name: &str) -> Vec<u8> {
        hex(vector(name).get("hex").unwrap().as_str().unwrap())
    }

    #[test]
    fn emitted_messages_match_the_vectors_byte_for_byte() {
        assert_eq!(AGENT_VERSION, "0.1.0", "the hello vector names agent 0.1.0; update both together");
        assert_eq!(frame::encode(0, kind::HELLO, &hello()), frame_hex("hello"));
        assert_eq!(frame::encode(0, kind::READY, &ready(412)), frame_hex("ready"));
        assert_eq!(frame::encode(7, kind::EXIT, &ExitStatus::exited(7).to_payload()), frame_hex("exit-code"));
        assert_eq!(frame::encode(7, kind::EXIT, &ExitStatus::signaled(9).to_payload()), frame_hex("exit-signal"));
        let notfound = ExitStatus::failed(127, "command not found: nosuchcmd".into());
        assert_eq!(frame::encode(9, kind::EXIT, &notfound.to_payload()), frame_hex("exit-notfound"));
        assert_eq!(frame::encode(7, kind::WINDOW, &window_payload(0x10000)), frame_hex("window"));
    }

    #[test]
    fn exec_vector_parses() {
        let req = ExecRequest::parse(&payload_of("exec")).unwrap();
        assert_eq!(req.argv, ["sh", "-c", "echo hi"]);
        assert_eq!(req.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(req.cwd, "/tmp");
        assert!(req.stdin);
    }

    #[test]
    fn exec_extension_vectors() {
        let req = ExecRequest::parse(&payload_of("exec-user-timeout")).unwrap();
        assert_eq!((req.user.as_deref(), req.timeout_ms), (Some("alice"), Some(5000)));
        assert_eq!(ExecRequest::parse(&payload_of("exec-tty")).unwrap().tty, Some((30, 100)));
        assert_eq!(parse_resize(&payload_of("resize")), Ok((50, 132)));
        let timed_out = ExitStatus { timed_out: true, ..ExitStatus::signaled(9) };
        assert_eq!(frame::encode(11, kind::EXIT, &timed_out.to_payload()), frame_hex("exit-timeout"));
        let limit = "EXEC on stream 15 refused: 1024 streams are already open; wait for one to end";
        assert_eq!(frame::encode(15, kind::ERROR, &error(code::LIMIT, limit)), frame_hex("error-limit"));
    }

    #[test]
    fn signal_and_window_vectors_parse() {
        assert_eq!(parse_signal(&payload_of("signal")), Ok(15));
        assert_eq!(parse_window(&payload_of("window")), Ok(0x10000));
    }

    #[test]
    fn exec_defaults_and_errors() {
        let req = ExecRequest::parse(br#"{"argv":["true"],"unknown":{"x":1}}"#).unwrap();
        assert_eq!(
            req,
            ExecRequest {
                argv: vec!["true".into()],
                env: vec![],
                cwd: "/".into(),
                stdin: false,
                tty: None,
                user: None,
                timeout_ms: None
            }
        );
        let tty = |p: &[u8]| ExecRequest::parse(p).map(|r| r.tty);
        assert_eq!(tty(br#"{"argv":["sh"],"tty":true}"#), Ok(Some((24, 80))));
        assert_eq!(tty(br#"{"argv":["sh"],"tty":false}"#), Ok(None));
        assert_eq!(tty(br#"{"argv":["sh"],"tty":{"rows":50,"cols":132}}"#), Ok(Some((50, 132))));
        assert!(tty(br#"{"argv":["sh"],"tty":{"rows":0,"cols":80}}"#).unwrap_err().0.contains("EXEC.tty.rows"));
        assert!(tty(br#"{"argv":["sh"],"tty":"yes"}"#).is_err());
        for (payload, needle) in [
            (&br#"{"argv":[]}"#[..], "at least one"),
            (br#"{"argv":"ls"}"#, "array of strings"),
            (br#"{}"#, "array of strings"),
            (br#"{"argv":["ls",1]}"#, "argv[1] must be a string"),
            (br#"{"argv":["ls"],"env":{"A":1}}"#, "env.A must be a string"),
            (br#"{"argv":["ls"],"env":{"A=B":"x"}}"#, "invalid variable name"),
            (br#"{"argv":["ls"],"env":["A"]}"#, "object of strings"),
            (br#"{"argv":["ls"],"cwd":5}"#, "cwd must be a string"),
            (br#"{"argv":["ls"],"stdin":"yes"}"#, "stdin must be true or false"),
            (br#"{"argv":["ls"],"user":""}"#, "EXEC.user"),
            (br#"{"argv":["ls"],"user":5}"#, "EXEC.user"),
            (br#"{"argv":["ls"],"timeoutMs":0}"#, "EXEC.timeoutMs"),
            (br#"{"argv":["ls"],"timeoutMs":1.5}"#, "EXEC.timeoutMs"),
            (br#"{"argv":["ls"],"timeoutMs":-3}"#, "EXEC.timeoutMs"),
            (br#"["ls"]"#, "must be a JSON object"),
            (br#"{"argv":["ls"]"#, "invalid JSON"),
        ] {
            let e = ExecRequest::parse(payload).unwrap_err();
            assert!(e.0.contains(needle), "{:?}: {e}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn init_full_and_defaults() {
        let init = Init::parse(
            br#"{"protocol":1,"hostname":"box-1","root":{"kind":"initramfs","path":"/rootfs"},
                "env":{"PATH":"/bin","LANG":"C.UTF-8"},"clockMs":1764460800000}"#,
        )
        .unwrap();
        assert_eq!(init.hostname, "box-1");
        assert_eq!(init.root_kind, RootKind::Initramfs);
        assert_eq!(init.root_path, "/rootfs");
        assert_eq!(env_get(&init.env, "PATH"), Some("/bin"));
        assert_eq!(env_get(&init.env, "LANG"), Some("C.UTF-8"));
        assert_eq!(init.clock_ms, Some(1_764_460_800_000));

        let minimal = Init::parse(br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"}}"#).unwrap();
        assert_eq!(minimal.hostname, DEFAULT_HOSTNAME);
        assert_eq!(minimal.env, [("PATH".to_string(), DEFAULT_PATH.to_string())]);
        assert_eq!(minimal.clock_ms, None);
    }

    #[test]
    fn init_rejections() {
        assert!(matches!(
            Init::parse(br#"{"protocol":2,"root":{"kind":"initramfs","path":"/"}}"#),
            Err(InitError::Version(_))
        ));
        for (payload, needle) in [
            (&br#"{"root":{"kind":"initramfs","path":"/"}}"#[..], "missing \"protocol\""),
            (br#"{"protocol":1}"#, "missing \"root\""),
            (br#"{"protocol":1,"root":{"kind":"disk","path":"/"}}"#, "not supported"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"rootfs"}}"#, "absolute"),
            (br#"{"protocol":1,"root":{"kind":"initramfs"}}"#, "root.path"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"},"hostname":"a b"}"#, "hostname"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"},"hostname":""}"#, "1 to 64"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"},"clockMs":-1}"#, "clockMs"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"},"clockMs":1.5}"#, "clockMs"),
            (br#"{"protocol":1,"root":{"kind":"initramfs","path":"/"},"env":{"A":null}}"#, "env.A"),
        ] {
            match Init::parse(payload) {
                Err(InitError::Invalid(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{:?}: expected Invalid, got {other:?}", String::from_utf8_lossy(payload)),
            }
        }
    }

    #[test]
    fn init_ca_is_parsed_and_checked() {
        let root = r#""root":{"kind":"initramfs","path":"/"}"#;
        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIBszCCAVmg\r\n-----END CERTIFICATE-----\r\n";
        let init = Init::parse(format!(r#"{{"protocol":1,{root},"ca":{}}}"#, Value::String(pem.into()).to_json()).as_bytes()).unwrap();
        assert_eq!(init.ca.as_deref(), Some("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmg\n-----END CERTIFICATE-----\n"));
        assert_eq!(Init::parse(format!(r#"{{"protocol":1,{root},"ca":null}}"#).as_bytes()).unwrap().ca, None);
        assert_eq!(Init::parse(format!(r#"{{"protocol":1,{root}}}"#).as_bytes()).unwrap().ca, None);
        for (ca, needle) in [
            (r#""""#, "holds no certificate"),
            (r#"["pem"]"#, "must be a PEM string"),
            (r#""-----BEGIN RSA PRIVATE KEY-----\nQUFB\n-----END RSA PRIVATE KEY-----""#, "only CERTIFICATE blocks"),
            (r#""-----BEGIN CERTIFICATE-----\nQUFB\u0000\n-----END CERTIFICATE-----""#, "NUL"),
        ] {
            match Init::parse(format!(r#"{{"protocol":1,{root},"ca":{ca}}}"#).as_bytes()) {
                Err(InitError::Invalid(m)) => assert!(m.contains(needle) && m.starts_with("INIT.ca"), "{m}"),
                other => panic!("ca {ca}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn signal_window_resize_bounds() {
        assert_eq!(parse_signal(br#"{"signal":9}"#), Ok(9));
        assert!(parse_signal(br#"{"signal":0}"#).is_err());
        assert!(parse_signal(br#"{"signal":65}"#).is_err());
        assert!(parse_signal(br#"{"signal":"TERM"}"#).is_err());
        assert!(parse_window(&[0, 1, 0]).is_err());
        assert!(parse_window(&[0, 0, 0, 0, 1]).is_err());
        assert_eq!(parse_resize(br#"{"rows":24,"cols":80}"#), Ok((24, 80)));
        assert!(parse_resize(br#"{"rows":0,"cols":80}"#).is_err());
        assert!(parse_resize(br#"{"rows":24}"#).is_err());
    }

    #[test]
    fn env_overlay_replaces_in_place() {
        let mut env = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string())];
        env_set(&mut env, "A", "x");
        env_set(&mut env, "C", "3");
        assert_eq!(env_get(&env, "A"), Some("x"));
        assert_eq!(env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["A", "B", "C"]);
    }

    #[test]
    fn error_payload_shape() {
        let e = json::parse(&error(code::STREAM, "stream 5 is \"busy\"")).unwrap();
        assert_eq!(e.get("code").unwrap().as_str(), Some("stream"));
        assert_eq!(e.get("message").unwrap().as_str(), Some("stream 5 is \"busy\""));
    }

    #[test]
    fn init_overlay_root_and_network() {
        let init = Init::parse(
            br#"{"protocol":1,"root":{"kind":"overlay","layers":["msb-layer-0","msb-layer-1"],"upper":{"kind":"tmpfs"}},
                "net":{"mtu":65520,"ipv4":{"address":"10.0.2.15","prefixLength":24,"gateway":"10.0.2.2"},
                       "ipv6":{"address":"fd6d:7362::15","prefixLength":64,"gateway":"fd6d:7362::2"},
                       "nameservers":["10.0.2.3"],"hosts":[{"name":"host.msb.internal","address":"10.0.2.2"}]}}"#,
        )
        .unwrap();
        assert_eq!(init.root_kind, RootKind::Overlay { layers: vec!["msb-layer-0".into(), "msb-layer-1".into()], upper_disk: None });
        let disk = Init::parse(br#"{"protocol":1,"root":{"kind":"overlay","layers":["msb-layer-0"],"upper":{"kind":"disk","serial":"msb-upper"}}}"#).unwrap();
        assert_eq!(disk.root_kind, RootKind::Overlay { layers: vec!["msb-layer-0".into()], upper_disk: Some("msb-upper".into()) });
        assert_eq!(init.root_path, crate::overlay::OVERLAY_ROOT);
        let net = init.net.unwrap();
        assert_eq!(net.mtu, 65520);
        assert_eq!(net.ipv4.to_string(), "10.0.2.15");
        assert_eq!(net.ipv4_prefix, 24);
        assert_eq!(net.ipv6.unwrap().1, 64);
        assert_eq!(net.hosts, vec![("host.msb.internal".to_string(), "10.0.2.2".to_string())]);
    }

    #[test]
    fn init_rejects_bad_overlay_and_network() {
        let bad = |json: &str, needle: &str| match Init::parse(json.as_bytes()) {
            Err(InitError::Invalid(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected an error about {needle}, got {other:?}"),
        };
        bad(r#"{"protocol":1,"root":{"kind":"overlay","layers":[]}}"#, "1 to 64 disks");
        bad(r#"{"protocol":1,"root":{"kind":"overlay","layers":["a serial that is far too long"]}}"#, "1-20 printable");
        bad(r#"{"protocol":1,"root":{"kind":"overlay","layers":["l0"],"upper":{"kind":"disk"}}}"#, "upper.serial");
        bad(r#"{"protocol":1,"root":{"kind":"overlay","layers":["l0"],"upper":{"kind":"nfs"}}}"#, "upper.kind");
        let root = r#""root":{"kind":"initramfs","path":"/"}"#;
        bad(&format!(r#"{{"protocol":1,{root},"net":{{"mtu":9}}}}"#), "mtu");
        bad(&format!(r#"{{"protocol":1,{root},"net":{{"mtu":1500,"ipv4":{{"address":"10.0.2.300","prefixLength":24,"gateway":"10.0.2.2"}}}}}}"#), "INIT.net.ipv4");
        bad(&format!(r#"{{"protocol":1,{root},"net":{{"mtu":1500,"ipv4":{{"address":"10.0.2.15","prefixLength":24,"gateway":"10.0.2.2"}},"hosts":[{{"name":"a b","address":"1.2.3.4"}}]}}}}"#), "hosts");
        bad(&format!(r#"{{"protocol":1,{root},"net":{{"mtu":1500,"ipv4":{{"address":"10.0.2.15","prefixLength":24,"gateway":"10.0.2.2"}},"nameservers":["nameserver 1.1.1.1"]}}}}"#), "nameservers");
    }
}
