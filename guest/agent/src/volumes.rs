// Volumes in the guest: INIT.mounts, mounted inside the sandbox root once the agent has entered
// it (so every path, and any symlink in the image, resolves in the sandbox's own namespace):
// virtio-fs shares from the host (a directory, or a single file bound from its one-entry share)
// and private tmpfs mounts. Host-side the share is contained and read-only is enforced; the
// nosuid/nodev/ro flags here are the guest's second line.

use std::fs;
use std::os::raw::c_ulong;

use crate::json::Value;
use crate::sys;

const MS_RDONLY: c_ulong = 1;
const MS_REMOUNT: c_ulong = 32;
const MNT_DETACH: i32 = 2;
/// Where a single-file share's directory is mounted before its file is bound into place.
const STAGING: &str = "/run/.msb-shares";
const MAX_MOUNTS: usize = 64;
const MAX_TAG: usize = 36;

#[derive(Debug, PartialEq, Clone)]
pub enum Mount {
    /// A virtio-fs share; with `file`, the share holds that one file, bound onto `path`.
    VirtioFs { tag: String, path: String, readonly: bool, file: Option<String> },
    /// A tmpfs of at most `size_mib` (None: the kernel default, half of RAM).
    Tmpfs { path: String, size_mib: Option<u64> },
}

/// Parses INIT.mounts.
pub fn parse(v: &Value) -> Result<Vec<Mount>, String> {
    let items = v.as_array().ok_or_else(|| format!("INIT.mounts must be an array, got {}", v.kind()))?;
    if items.len() > MAX_MOUNTS {
        return Err(format!("INIT.mounts has {} entries; at most {MAX_MOUNTS}", items.len()));
    }
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        let what = format!("INIT.mounts[{i}]");
        let path = m.get("path").and_then(Value::as_str).ok_or_else(|| format!("{what}.path must be a string"))?;
        check_path(path).map_err(|e| format!("{what}.path {path:?}: {e}"))?;
        let mount = match m.get("kind").and_then(Value::as_str) {
            Some("virtiofs") => {
                let tag = m.get("tag").and_then(Value::as_str).ok_or_else(|| format!("{what}.tag must be a string"))?;
                if tag.is_empty() || tag.len() > MAX_TAG || !tag.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!("{what}.tag {tag:?} must be 1..{MAX_TAG} printable ASCII characters"));
                }
                let readonly = match m.get("readonly") {
                    None | Some(Value::Null) => false,
                    Some(b) => b.as_bool().ok_or_else(|| format!("{what}.readonly must be a boolean"))?,
                };
                let file = match m.get("file") {
                    None | Some(Value::Null) => None,
                    Some(f) => {
                        let f = f.as_str().ok_or_else(|| format!("{what}.file must be a string"))?;
                        if f.is_empty() || f == "." || f == ".." || f.contains('/') || f.contains('\0') {
                            return Err(format!("{what}.file {f:?} must be a single file name"));
                        }
                        Some(f.to_string())
                    }
                };
                Mount::VirtioFs { tag: tag.to_string(), path: path.to_string(), readonly, file }
            }
            Some("tmpfs") => {
                let size_mib = match m.get("sizeMiB") {
                    None | Some(Value::Null) => None,
                    Some(s) => match s.as_i64() {
                        Some(n) if n > 0 => Some(n as u64),
                        _ => return Err(format!("{what}.sizeMiB must be a positive integer")),
                    },
                };
                Mount::Tmpfs { path: path.to_string(), size_mib }
            }
            other => return Err(format!("{what}.kind {other:?} is not supported (\"virtiofs\" or \"tmpfs\")")),
        };
        out.push(mount);
    }
    Ok(out)
}

/// A mount target: absolute, no `.`/`..` components, not the root itself.
fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if p.contains('\0') || p.len() > 4096 {
        return Err("contains NUL or is too long".into());
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err("must not contain . or .. components".into());
    }
    if p.trim_end_matches('/').is_empty() {
        return Err("cannot mount over the sandbox root".into());
    }
    Ok(())
}

/// Mounts everything, in order, relative to the current root (the agent has already chrooted
/// into the sandbox). Returns the mount points, for unmounting at power-off.
pub fn apply(mounts: &[Mount]) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for m in mounts {
        match m {
            Mount::Tmpfs { path, size_mib } => {
                mkdir(path)?;
                let data = match size_mib {
                    Some(n) => format!("mode=1777,size={n}m"),
                    None => "mode=1777".to_string(),
                };
                sys::mount_fs("tmpfs", path, "tmpfs", sys::MS_NOSUID | sys::MS_NODEV, &data).map_err(|e| format!("cannot mount tmpfs at {path}: {e}"))?;
                done.push(path.clone());
            }
            Mount::VirtioFs { tag, path, readonly, file: None } => {
                mkdir(path)?;
                let flags = sys::MS_NOSUID | sys::MS_NODEV | if *readonly { MS_RDONLY } else { 0 };
                sys::mount_fs(tag, path, "virtiofs", flags, "").map_err(|e| format!("cannot mount volume {tag} at {path}: {e}"))?;
                done.push(path.clone());
            }
            Mount::VirtioFs { tag, path, readonly, file: Some(file) } => {
                let staging = format!("{STAGING}/{tag}");
                mkdir(&staging)?;
                let flags = sys::MS_NOSUID | sys::MS_NODEV | if *readonly { MS_RDONLY } else { 0 };
                sys::mount_fs(tag, &staging, "virtiofs", flags, "").map_err(|e| format!("cannot mount volume {tag} for file {path}: {e}"))?;
                if let Some(parent) = std::path::Path::new(path).parent() {
                    mkdir(&parent.to_string_lossy())?;
                }
                match fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() => return Err(format!("cannot mount file volume at {path}: it is a directory in the sandbox")),
                    Ok(_) => {}
                    Err(_) => {
                        fs::write(path, b"").map_err(|e| format!("cannot create mount point {path}: {e}"))?;
                    }
                }
                let source = format!("{staging}/{file}");
                sys::mount_fs(&source, path, "", sys::MS_BIND, "").map_err(|e| format!("cannot bind {source} onto {path}: {e}"))?;
                if *readonly {
                    sys::mount_fs("", path, "", sys::MS_BIND | MS_REMOUNT | MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV, "")
                        .map_err(|e| format!("cannot make {path} read-only: {e}"))?;
                }
                // The bind keeps the share alive; the staging mount need not stay visible.
                let _ = sys::unmount(&staging, MNT_DETACH);
                done.push(path.clone());
            }
        }
    }
    Ok(done)
}

fn mkdir(path: &str) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("cannot create mount point {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<Mount>, String> {
        parse(&crate::json::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn parses_shares_files_and_tmpfs() {
        let m = p(r#"[{"kind":"virtiofs","tag":"msbfs0","path":"/work","readonly":true},
                      {"kind":"virtiofs","tag":"msbfs1","path":"/etc/app.conf","file":"app.conf"},
                      {"kind":"tmpfs","path":"/scratch","sizeMiB":64},{"kind":"tmpfs","path":"/t"}]"#)
        .unwrap();
        assert_eq!(m[0], Mount::VirtioFs { tag: "msbfs0".into(), path: "/work".into(), readonly: true, file: None });
        assert_eq!(m[1], Mount::VirtioFs { tag: "msbfs1".into(), path: "/etc/app.conf".into(), readonly: false, file: Some("app.conf".into()) });
        assert_eq!(m[2], Mount::Tmpfs { path: "/scratch".into(), size_mib: Some(64) });
        assert_eq!(m[3], Mount::Tmpfs { path: "/t".into(), size_mib: None });
    }

    #[test]
    fn refuses_bad_mounts_with_the_reason() {
        for (json, why) in [
            (r#"{}"#, "must be an array"),
            (r#"[{"kind":"nfs","path":"/x"}]"#, "not supported"),
            (r#"[{"kind":"tmpfs","path":"relative"}]"#, "absolute"),
            (r#"[{"kind":"tmpfs","path":"/a/../etc"}]"#, ".."),
            (r#"[{"kind":"tmpfs","path":"/"}]"#, "root"),
            (r#"[{"kind":"tmpfs","path":"/x","sizeMiB":0}]"#, "positive"),
            (r#"[{"kind":"virtiofs","path":"/x"}]"#, "tag"),
            (r#"[{"kind":"virtiofs","tag":"a b","path":"/x"}]"#, "printable"),
            (r#"[{"kind":"virtiofs","tag":"a","path":"/x","file":"../y"}]"#, "single file name"),
            (r#"[{"kind":"virtiofs","tag":"a","path":"/x","readonly":"yes"}]"#, "boolean"),
        ] {
            let e = p(json).unwrap_err();
            assert!(e.contains(why), "{json}: {e}");
        }
    }
}
