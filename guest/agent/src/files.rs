// File operations of the protocol (docs/protocol.md, "Files"): the FILE request parsed and
// validated, the one-shot operations (stat, list entries, mkdir, remove, rename, chmod, exists,
// symlink), and errors as the codes the host maps to its own (not_found, is_directory, ...).
//
// The agent runs chrooted into the sandbox root, so every path here is a sandbox path; what is
// checked is the request itself (absolute, no NUL, bounded lengths), since it is user input.

use crate::json::{self, Value};
use std::fmt;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

/// Longest path accepted, as the kernel's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// Longest single path component, as NAME_MAX.
pub const MAX_NAME: usize = 255;
/// Mode bits a request may set (permissions plus setuid, setgid, sticky).
pub const MODE_MASK: u32 = 0o7777;
/// Credit of a FILE read or write stream: wider than INITIAL_WINDOW, since a file (unlike a
/// pipe) takes or gives data at once and the window / round trip caps the transfer rate.
pub const TRANSFER_WINDOW: u32 = 1024 * 1024;
/// Mode of a file `write` creates when the request names none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// Why a file operation failed: a code from docs/protocol.md and a message naming the path.
#[derive(Debug, PartialEq, Eq)]
pub struct FsError {
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub mod code {
    pub const INVALID: &str = "invalid";
    pub const NOT_FOUND: &str = "not_found";
    pub const EXISTS: &str = "exists";
    pub const IS_DIRECTORY: &str = "is_directory";
    pub const NOT_DIRECTORY: &str = "not_directory";
    pub const NOT_EMPTY: &str = "not_empty";
    pub const PERMISSION: &str = "permission";
    pub const NO_SPACE: &str = "no_space";
    pub const IO: &str = "io";
}

fn invalid<T>(message: String) -> Result<T, FsError> {
    Err(FsError { code: code::INVALID, message })
}

/// An errno from a file operation on `path`, as a code and a message naming the path.
pub fn io_error(op: &str, path: &str, e: &io::Error) -> FsError {
    let errno = e.raw_os_error().unwrap_or(0);
    let code = match errno {
        2 => code::NOT_FOUND,
        17 => code::EXISTS,
        21 => code::IS_DIRECTORY,
        20 => code::NOT_DIRECTORY,
        39 => code::NOT_EMPTY,
        1 | 13 | 30 => code::PERMISSION,
        28 | 122 => code::NO_SPACE,
        _ => code::IO,
    };
    FsError { code, message: format!("{op} {path}: {e}") }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FileOp {
    Read { path: String },
    Write { path: String, mode: Option<u32> },
    Stat { path: String, follow: bool },
    List { path: String },
    Mkdir { path: String, parents: bool, mode: Option<u32> },
    Remove { path: String, recursive: bool },
    Rename { from: String, to: String },
    Chmod { path: String, mode: u32 },
    Exists { path: String },
    Symlink { path: String, target: String },
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, FsError> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => invalid(format!("FILE.{key} must be a string, got {}", other.kind())),
        None => invalid(format!("FILE.{key} is missing")),
    }
}

fn bool_field(v: &Value, key: &str) -> Result<bool, FsError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(b) => b.as_bool().ok_or_else(|| FsError { code: code::INVALID, message: format!("FILE.{key} must be true or false") }),
    }
}

fn mode_field(v: &Value) -> Result<Option<u32>, FsError> {
    match v.get("mode") {
        None | Some(Value::Null) => Ok(None),
        Some(m) => match m.as_i64() {
            Some(m) if (0..=MODE_MASK as i64).contains(&m) => Ok(Some(m as u32)),
            _ => invalid(format!("FILE.mode must be an integer from 0 to 0o7777 ({MODE_MASK}), got {}", m.to_json())),
        },
    }
}

/// Checks a path from the host: absolute, no NUL, within PATH_MAX, components within NAME_MAX.
pub fn check_path(what: &str, path: &str) -> Result<(), FsError> {
    if path.is_empty() {
        return invalid(format!("FILE.{what} is empty; give an absolute path such as /tmp/file"));
    }
    if path.contains('\0') {
        return invalid(format!("FILE.{what} contains a NUL byte"));
    }
    if path.len() > MAX_PATH {
        return invalid(format!("FILE.{what} is {} bytes long; at most {MAX_PATH}", path.len()));
    }
    if !path.starts_with('/') {
        return invalid(format!("FILE.{what} must be an absolute path inside the sandbox, got {path:?}"));
    }
    if let Some(long) = path.split('/').find(|c| c.len() > MAX_NAME) {
        return invalid(format!("FILE.{what} has a component of {} bytes ({}...); at most {MAX_NAME}", long.len(), long.chars().take(16).collect::<String>()));
    }
    Ok(())
}

fn path_field(v: &Value, key: &str) -> Result<String, FsError> {
    let p = str_field(v, key)?;
    check_path(key, p)?;
    Ok(p.to_string())
}

impl FileOp {
    pub fn parse(payload: &[u8]) -> Result<FileOp, FsError> {
        let v = json::parse(payload).map_err(|e| FsError { code: code::INVALID, message: format!("FILE payload: {e}") })?;
        if v.as_object().is_none() {
            return invalid(format!("FILE payload must be a JSON object, got {}", v.kind()));
        }
        let op = str_field(&v, "op")?;
        Ok(match op {
            "read" => FileOp::Read { path: path_field(&v, "path")? },
            "write" => FileOp::Write { path: path_field(&v, "path")?, mode: mode_field(&v)? },
            "stat" => FileOp::Stat {
                path: path_field(&v, "path")?,
                follow: match v.get("follow") {
                    None | Some(Value::Null) => true,
                    Some(_) => bool_field(&v, "follow")?,
                },
            },
            "list" => FileOp::List { path: path_field(&v, "path")? },
            "mkdir" => FileOp::Mkdir { path: path_field(&v, "path")?, parents: bool_field(&v, "parents")?, mode: mode_field(&v)? },
            "remove" => FileOp::Remove { path: path_field(&v, "path")?, recursive: bool_field(&v, "recursive")? },
            "rename" => FileOp::Rename { from: path_field(&v, "from")?, to: path_field(&v, "to")? },
            "chmod" => FileOp::Chmod {
                path: path_field(&v, "path")?,
                mode: mode_field(&v)?.ok_or_else(|| FsError { code: code::INVALID, message: "FILE.mode is missing".into() })?,
            },
            "exists" => FileOp::Exists { path: path_field(&v, "path")? },
            "symlink" => {
                let target = str_field(&v, "target")?;
                if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH {
                    return invalid(format!("FILE.target must be 1 to {MAX_PATH} bytes without NUL"));
                }
                FileOp::Symlink { path: path_field(&v, "path")?, target: target.to_string() }
            }
            other => {
                return invalid(format!(
                    "unknown FILE.op {other:?} (known: read, write, stat, list, mkdir, remove, rename, chmod, exists, symlink)"
                ))
            }
        })
    }
}

pub fn type_name(m: &Metadata) -> &'static str {
    let t = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else {
        "unknown"
    }
}

/// The members describing one file, as stat results and list entries carry them.
pub fn describe(m: &Metadata, target: Option<String>) -> Vec<(&'static str, Value)> {
    let mtime_ms = m.mtime() as f64 * 1000.0 + (m.mtime_nsec() / 1_000_000) as f64;
    let mut members = vec![
        ("type", Value::String(type_name(m).into())),
        ("size", Value::Number(m.size() as f64)),
        ("mode", Value::Number((m.mode() & MODE_MASK) as f64)),
        ("mtimeMs", Value::Number(mtime_ms)),
        ("uid", Value::Number(m.uid() as f64)),
        ("gid", Value::Number(m.gid() as f64)),
    ];
    if let Some(t) = target {
        members.push(("target", Value::String(t)));
    }
    members
}

fn link_target(path: &std::path::Path, m: &Metadata) -> Option<String> {
    if m.file_type().is_symlink() {
        fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned())
    } else {
        None
    }
}

/// One `list` line: a JSON object with the entry's name and description, newline-terminated.
pub fn list_line(entry: &fs::DirEntry) -> Vec<u8> {
    let name = entry.file_name().to_string_lossy().into_owned();
    let mut members = vec![("name", Value::String(name))];
    match entry.path().symlink_metadata() {
        Ok(m) => {
            let target = link_target(&entry.path(), &m);
            members.extend(describe(&m, target));
        }
        // Removed while we listed: still report the name.
        Err(_) => members.push(("type", Value::String("unknown".into()))),
    }
    let mut line = json::object(members).to_json().into_bytes();
    line.push(b'\n');
    line
}

/// Runs an operation that needs no data stream; returns the FILE_RESULT payload.
pub fn run_simple(op: &FileOp) -> Result<Vec<u8>, FsError> {
    let empty = || json::object(vec![]).to_json().into_bytes();
    match op {
        FileOp::Stat { path, follow } => {
            let m = if *follow { fs::metadata(path) } else { fs::symlink_metadata(path) }.map_err(|e| io_error("stat", path, &e))?;
            let target = link_target(path.as_ref(), &m);
            Ok(json::object(describe(&m, target)).to_json().into_bytes())
        }
        FileOp::Exists { path } => {
            let exists = match fs::symlink_metadata(path) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) if e.raw_os_error() == Some(20) => false,
                Err(e) => return Err(io_error("exists", path, &e)),
            };
            Ok(json::object(vec![("exists", Value::Bool(exists))]).to_json().into_bytes())
        }
        FileOp::Mkdir { path, parents, mode } => {
            let mode = mode.unwrap_or(DEFAULT_DIR_MODE);
            let mut b = fs::DirBuilder::new();
            use std::os::unix::fs::DirBuilderExt;
            b.recursive(*parents).mode(mode);
            b.create(path).map_err(|e| io_error("mkdir", path, &e))?;
            if *parents && !fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
                return Err(FsError { code: code::NOT_DIRECTORY, message: format!("mkdir {path}: exists and is not a directory") });
            }
            Ok(empty())
        }
        FileOp::Remove { path, recursive } => {
            if path.trim_end_matches('/').is_empty() {
                return invalid("remove /: refusing to remove the sandbox's root".into());
            }
            let m = fs::symlink_metadata(path).map_err(|e| io_error("remove", path, &e))?;
            let result = if !m.is_dir() {
                fs::remove_file(path)
            } else if *recursive {
                fs::remove_dir_all(path)
            } else {
                fs::remove_dir(path)
            };
            result.map_err(|e| {
                let mut err = io_error("remove", path, &e);
                if err.code == code::NOT_EMPTY {
                    err.message = format!("remove {path}: the directory is not empty; pass recursive to remove its contents");
                }
                err
            })?;
            Ok(empty())
        }
        FileOp::Rename { from, to } => {
            fs::rename(from, to).map_err(|e| io_error("rename", &format!("{from} -> {to}"), &e))?;
            Ok(empty())
        }
        FileOp::Chmod { path, mode } => {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(|e| io_error("chmod", path, &e))?;
            Ok(empty())
        }
        FileOp::Symlink { path, target } => {
            std::os::unix::fs::symlink(target, path).map_err(|e| io_error("symlink", path, &e))?;
            Ok(empty())
        }
        FileOp::Read { .. } | FileOp::Write { .. } | FileOp::List { .. } => unreachable!("streaming ops are not simple"),
    }
}

/// Opens the file a `read` streams.
pub fn open_read(path: &str) -> Result<fs::File, FsError> {
    let f = fs::File::open(path).map_err(|e| io_error("read", path, &e))?;
    let m = f.metadata().map_err(|e| io_error("read", path, &e))?;
    if m.is_dir() {
        return Err(FsError { code: code::IS_DIRECTORY, message: format!("read {path}: is a directory") });
    }
    Ok(f)
}

/// Creates (or truncates) the file a `write` streams into, with `mode` exactly (not masked).
pub fn open_write(path: &str, mode: Option<u32>) -> Result<fs::File, FsError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode.unwrap_or(DEFAULT_FILE_MODE))
        .open(path)
        .map_err(|e| io_error("write", path, &e))?;
    if let Some(mode) = mode {
        f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io_error("chmod", path, &e))?;
    }
    Ok(f)
}

pub fn open_list(path: &str) -> Result<fs::ReadDir, FsError> {
    fs::read_dir(path).map_err(|e| io_error("list", path, &e))
}

pub fn size_result(key: &str, n: u64) -> Vec<u8> {
    json::object(vec![(key, Value::Number(n as f64))]).to_json().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(json: &str) -> Result<FileOp, FsError> {
        FileOp::parse(json.as_bytes())
    }

    fn vector_payload(name: &str) -> Vec<u8> {
        use crate::frame::tests::{hex, vector};
        let bytes = hex(vector(name).get("hex").unwrap().as_str().unwrap());
        let mut d = crate::frame::Decoder::new();
        d.push(&bytes);
        d.next_frame().unwrap().unwrap().payload
    }

    #[test]
    fn file_vectors_parse_and_emit_byte_for_byte() {
        use crate::frame::tests::{hex, vector, vectors};
        use crate::frame::{encode, kind};
        assert_eq!(FileOp::parse(&vector_payload("file-stat")), Ok(FileOp::Stat { path: "/etc/hosts".into(), follow: true }));
        assert_eq!(FileOp::parse(&vector_payload("file-write")), Ok(FileOp::Write { path: "/tmp/out".into(), mode: Some(0o644) }));
        let hex_of = |name: &str| hex(vector(name).get("hex").unwrap().as_str().unwrap());
        assert_eq!(encode(14, kind::FILE_RESULT, &size_result("size", 6)), hex_of("file-result-size"));
        assert_eq!(encode(14, kind::DATA, b"hello\n"), hex_of("data"));
        assert_eq!(encode(14, kind::DATA, b""), hex_of("data-eof"));
        let e = io_error("stat", "/nope", &io::Error::from_raw_os_error(2));
        assert_eq!(encode(13, kind::ERROR, &crate::message::error(e.code, &e.message)), hex_of("error-not-found"));
        assert_eq!(vectors().get("transferWindow").unwrap().as_i64(), Some(TRANSFER_WINDOW as i64));
    }

    #[test]
    fn requests_parse() {
        assert_eq!(op(r#"{"op":"read","path":"/etc/hosts"}"#), Ok(FileOp::Read { path: "/etc/hosts".into() }));
        assert_eq!(op(r#"{"op":"write","path":"/a","mode":493}"#), Ok(FileOp::Write { path: "/a".into(), mode: Some(0o755) }));
        assert_eq!(op(r#"{"op":"stat","path":"/a"}"#), Ok(FileOp::Stat { path: "/a".into(), follow: true }));
        assert_eq!(op(r#"{"op":"stat","path":"/a","follow":false}"#), Ok(FileOp::Stat { path: "/a".into(), follow: false }));
        assert_eq!(
            op(r#"{"op":"mkdir","path":"/a/b","parents":true}"#),
            Ok(FileOp::Mkdir { path: "/a/b".into(), parents: true, mode: None })
        );
        assert_eq!(op(r#"{"op":"remove","path":"/a"}"#), Ok(FileOp::Remove { path: "/a".into(), recursive: false }));
        assert_eq!(op(r#"{"op":"rename","from":"/a","to":"/b"}"#), Ok(FileOp::Rename { from: "/a".into(), to: "/b".into() }));
        assert_eq!(op(r#"{"op":"chmod","path":"/a","mode":384}"#), Ok(FileOp::Chmod { path: "/a".into(), mode: 0o600 }));
        assert_eq!(op(r#"{"op":"symlink","path":"/l","target":"x"}"#), Ok(FileOp::Symlink { path: "/l".into(), target: "x".into() }));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let long_name = format!("/{}", "n".repeat(300));
        let long_path = "/a".repeat(3000);
        for (json, needle) in [
            (r#"{"op":"read"}"#.to_string(), "FILE.path is missing"),
            (r#"{"op":"read","path":""}"#.into(), "empty"),
            (r#"{"op":"read","path":"rel/x"}"#.into(), "absolute"),
            (r#"{"op":"read","path":"/a\u0000b"}"#.into(), "NUL"),
            (format!(r#"{{"op":"read","path":"{long_name}"}}"#), "component of 300 bytes"),
            (format!(r#"{{"op":"read","path":"{long_path}"}}"#), "at most 4096"),
            (r#"{"op":"chmod","path":"/a"}"#.into(), "mode is missing"),
            (r#"{"op":"chmod","path":"/a","mode":99999}"#.into(), "0o7777"),
            (r#"{"op":"remove","path":"/a","recursive":"yes"}"#.into(), "recursive must be true or false"),
            (r#"{"op":"truncate","path":"/a"}"#.into(), "unknown FILE.op"),
            (r#"{"path":"/a"}"#.into(), "FILE.op is missing"),
            (r#"[1]"#.into(), "JSON object"),
            (r#"{"op":"symlink","path":"/l","target":""}"#.into(), "FILE.target"),
        ] {
            let e = op(&json).unwrap_err();
            assert_eq!(e.code, code::INVALID);
            assert!(e.message.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn operations_on_a_real_directory() {
        let dir = std::env::temp_dir().join(format!("msb-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let d = dir.to_string_lossy().into_owned();
        let run = |json: String| run_simple(&op(&json).unwrap());
        run(format!(r#"{{"op":"mkdir","path":"{d}/a/b","parents":true}}"#)).unwrap();
        let e = run(format!(r#"{{"op":"mkdir","path":"{d}/a"}}"#)).unwrap_err();
        assert_eq!(e.code, code::EXISTS);
        let e = run(format!(r#"{{"op":"mkdir","path":"{d}/x/y"}}"#)).unwrap_err();
        assert_eq!(e.code, code::NOT_FOUND);
        assert!(e.message.contains(&format!("{d}/x/y")), "{e}");

        drop(open_write(&format!("{d}/a/f"), Some(0o640)).unwrap());
        let st = json::parse(&run(format!(r#"{{"op":"stat","path":"{d}/a/f"}}"#)).unwrap()).unwrap();
        assert_eq!(st.get("type").unwrap().as_str(), Some("file"));
        assert_eq!(st.get("mode").unwrap().as_i64(), Some(0o640));
        run(format!(r#"{{"op":"chmod","path":"{d}/a/f","mode":{}}}"#, 0o700)).unwrap();
        assert_eq!(fs::metadata(format!("{d}/a/f")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(open_read(&format!("{d}/a")).unwrap_err().code, code::IS_DIRECTORY);
        assert_eq!(open_write(&format!("{d}/a"), None).unwrap_err().code, code::IS_DIRECTORY);

        run(format!(r#"{{"op":"symlink","path":"{d}/l","target":"a/f"}}"#)).unwrap();
        let st = json::parse(&run(format!(r#"{{"op":"stat","path":"{d}/l","follow":false}}"#)).unwrap()).unwrap();
        assert_eq!((st.get("type").unwrap().as_str(), st.get("target").unwrap().as_str()), (Some("symlink"), Some("a/f")));

        let exists = |p: &str| json::parse(&run(format!(r#"{{"op":"exists","path":"{p}"}}"#)).unwrap()).unwrap().get("exists").unwrap().as_bool();
        assert_eq!(exists(&format!("{d}/a/f")), Some(true));
        assert_eq!(exists(&format!("{d}/nope")), Some(false));
        assert_eq!(exists(&format!("{d}/a/f/under-a-file")), Some(false));

        run(format!(r#"{{"op":"rename","from":"{d}/a/f","to":"{d}/g"}}"#)).unwrap();
        let names: Vec<String> = open_list(&d).unwrap().map(|e| String::from_utf8(list_line(&e.unwrap())).unwrap()).collect();
        assert_eq!(names.len(), 3);
        assert!(names.iter().any(|l| l.contains(r#""name":"g""#) && l.ends_with('\n')));

        let e = run(format!(r#"{{"op":"remove","path":"{d}/a"}}"#)).unwrap_err();
        assert_eq!(e.code, code::NOT_EMPTY);
        assert!(e.message.contains("recursive"));
        run(format!(r#"{{"op":"remove","path":"{d}","recursive":true}}"#)).unwrap();
        assert!(!dir.exists());
        assert_eq!(run(r#"{"op":"remove","path":"/","recursive":true}"#.into()).unwrap_err().code, code::INVALID);
    }
}
