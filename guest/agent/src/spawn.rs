// Starting an exec's process: environment overlay, PATH lookup of argv[0], the working
// directory, pipes, and the shell's exit-code convention (127/126/125) when it cannot start.
//
// The agent runs chrooted into the sandbox root (see server.rs), so every path here is already
// a path inside the sandbox: lookups see exactly what the process will see, absolute symlinks
// included.

use crate::message::{env_get, env_set, ExecRequest, DEFAULT_PATH};
use crate::sys::{self, ChildSetup};
use crate::users::{self, Identity};
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why an exec could not start, with the exit code it is reported as.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub const NOT_FOUND: i32 = 127;
pub const NOT_EXECUTABLE: i32 = 126;
pub const CANNOT_START: i32 = 125;

fn fail<T>(code: i32, message: String) -> Result<T, StartError> {
    Err(StartError { code, message })
}

/// The environment of an exec: the INIT base with the exec's own variables laid over it.
pub fn merge_env(base: &[(String, String)], overlay: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    for (k, v) in overlay {
        env_set(&mut env, k, v);
    }
    env
}

fn resolve_against(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Finds the program to execute, as execvp(3) would but from the parent so failures can be
/// named: a name with a '/' is used as is; otherwise each PATH entry is tried in order (an empty
/// entry means the working directory). Returns the path to pass to execve, which is relative
/// when the name or the PATH entry is (the child has changed into `cwd` by then).
pub fn find_program(name: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, StartError> {
    if name.is_empty() {
        return fail(NOT_FOUND, "command not found: argv[0] is empty".into());
    }
    if name.contains('/') {
        let full = resolve_against(cwd, Path::new(name));
        return match std::fs::metadata(&full) {
            Err(_) => fail(NOT_FOUND, format!("no such file or directory: {name}")),
            Ok(m) if m.is_dir() => fail(NOT_EXECUTABLE, format!("is a directory: {name}")),
            Ok(_) if !sys::is_executable(&full.to_string_lossy()) => {
                fail(NOT_EXECUTABLE, format!("permission denied: {name}"))
            }
            Ok(_) => Ok(PathBuf::from(name)),
        };
    }
    let mut denied: Option<PathBuf> = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        let full = resolve_against(cwd, &candidate);
        match std::fs::metadata(&full) {
            Ok(m) if m.is_file() => {
                if sys::is_executable(&full.to_string_lossy()) {
                    return Ok(candidate);
                }
                // Like execvp: remember it, but a later executable match still wins.
                denied.get_or_insert(candidate);
            }
            _ => continue,
        }
    }
    match denied {
        Some(p) => fail(NOT_EXECUTABLE, format!("permission denied: {}", p.display())),
        None => fail(NOT_FOUND, format!("command not found: {name}")),
    }
}

/// Checks the working directory before forking, so its failure is reported as such (125,
/// naming the directory) rather than as a failure of the program.
pub fn check_cwd(cwd: &str) -> Result<(), StartError> {
    if !cwd.starts_with('/') {
        return fail(CANNOT_START, format!("working directory must be an absolute path: {cwd}"));
    }
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fail(CANNOT_START, format!("working directory is not a directory: {cwd}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fail(CANNOT_START, format!("working directory does not exist: {cwd}"))
        }
        Err(e) => fail(CANNOT_START, format!("cannot use working directory {cwd}: {e}")),
    }
}

/// Maps the child's report (stage + errno) to the exit code and message the host sees.
pub fn classify_child_failure(stage: u8, errno: i32, program: &str, cwd: &str) -> StartError {
    let text = sys::errno_text(errno);
    match stage {
        sys::STAGE_CWD => StartError { code: CANNOT_START, message: format!("cannot enter working directory {cwd}: {text}") },
        sys::STAGE_USER => StartError { code: CANNOT_START, message: format!("cannot switch to the exec's user for {program}: {text}") },
        sys::STAGE_EXEC => match errno {
            // The file was there a moment ago, so ENOENT means its interpreter (#! line) or
            // dynamic loader is missing.
            sys::ENOENT => StartError {
                code: NOT_EXECUTABLE,
                message: format!("cannot execute {program}: its interpreter or dynamic loader was not found"),
            },
            sys::EACCES | sys::EPERM => {
                StartError { code: NOT_EXECUTABLE, message: format!("permission denied: {program}") }
            }
            // The file itself cannot be run: wrong format, a directory, being written, bad
            // shared library.
            sys::ENOEXEC | sys::EISDIR | sys::ETXTBSY | sys::ELIBBAD => {
                StartError { code: NOT_EXECUTABLE, message: format!("cannot execute {program}: {text}") }
            }
            // Not the program's fault (too many arguments, out of memory, ...).
            _ => StartError { code: CANNOT_START, message: format!("cannot start {program}: {text}") },
        },
        _ => StartError { code: CANNOT_START, message: format!("cannot set up the process for {program}: {text}") },
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, StartError> {
    CString::new(s).or_else(|_| fail(CANNOT_START, format!("bad request: {what} contains a NUL byte")))
}

/// A process that started, and the agent's ends of its pipes (non-blocking). With a tty,
/// `stdout` is the terminal's master, `stdin` a second descriptor of it, and `stderr` absent.
pub struct Child {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
}

/// Starts the process for `req`. The child gets its own session (so SIGNAL can reach its whole
/// process group), the merged environment, `cwd`, and pipes; stdin is /dev/null unless the host
/// streams it.
pub fn spawn(req: &ExecRequest, base_env: &[(String, String)]) -> Result<Child, StartError> {
    let mut env = merge_env(base_env, &req.env);
    let identity = match &req.user {
        None => None,
        Some(spec) => Some(users::resolve(spec).map_err(|e| StartError { code: CANNOT_START, message: e.0 })?),
    };
    if let Some(id) = &identity {
        // The user's own HOME (and names) unless the exec sets them: the INIT base says /root.
        let own = |k: &str| req.env.iter().any(|(key, _)| key == k);
        if !own("HOME") {
            env_set(&mut env, "HOME", &id.home);
        }
        if let Some(name) = id.name.as_deref() {
            for key in ["USER", "LOGNAME"] {
                if !own(key) {
                    env_set(&mut env, key, name);
                }
            }
        }
    }
    check_cwd(&req.cwd)?;
    let cwd_c = cstring("cwd", &req.cwd)?;
    let argv_c = req
        .argv
        .iter()
        .enumerate()
        .map(|(i, a)| cstring(&format!("argv[{i}]"), a))
        .collect::<Result<Vec<_>, _>>()?;
    let path_var = env_get(&env, "PATH").unwrap_or(DEFAULT_PATH);
    let program = find_program(&req.argv[0], path_var, Path::new(&req.cwd))?;
    let program_c = cstring("argv[0]", &program.to_string_lossy())?;
    let env_c = env
        .iter()
        .map(|(k, v)| cstring(&format!("env.{k}"), &format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let argv_p: Vec<*const std::os::raw::c_char> =
        argv_c.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const std::os::raw::c_char> =
        env_c.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();

    let io_err = |what: &str, e: std::io::Error| StartError {
        code: CANNOT_START,
        message: format!("cannot set up the process for {}: {what}: {e}", req.argv[0]),
    };
    if let Some((rows, cols)) = req.tty {
        let (master, slave) = sys::open_pty(rows, cols).map_err(|e| io_err("pseudo-terminal", e))?;
        let input = if req.stdin { Some(sys::dup_fd(&master).map_err(|e| io_err("pseudo-terminal", e))?) } else { None };
        let fds = ChildFds { stdin: &slave, stdout: &slave, stderr: &slave, tty: true, identity: identity.as_ref() };
        let pid = start(&fds, &cwd_c, &program_c, &argv_p, &envp, req)?;
        drop(slave);
        sys::set_nonblocking(master.as_raw_fd()).map_err(|e| io_err("non-blocking terminal", e))?;
        return Ok(Child { pid, stdin: input, stdout: master, stderr: None });
    }
    let (out_r, out_w) = sys::pipe().map_err(|e| io_err("stdout pipe", e))?;
    let (err_r, err_w) = sys::pipe().map_err(|e| io_err("stderr pipe", e))?;
    let (in_child, in_agent) = if req.stdin {
        let (r, w) = sys::pipe().map_err(|e| io_err("stdin pipe", e))?;
        (r, Some(w))
    } else {
        match sys::open_path("/dev/null", sys::O_RDWR) {
            Ok(null) => (null, None),
            // No /dev in the root: an empty pipe reads as end of file just the same.
            Err(_) => (sys::pipe().map_err(|e| io_err("stdin pipe", e))?.0, None),
        }
    };
    let fds = ChildFds { stdin: &in_child, stdout: &out_w, stderr: &err_w, tty: false, identity: identity.as_ref() };
    let pid = start(&fds, &cwd_c, &program_c, &argv_p, &envp, req)?;
    drop((in_child, out_w, err_w));
    for fd in [&out_r, &err_r].into_iter().chain(in_agent.as_ref()) {
        sys::set_nonblocking(fd.as_raw_fd()).map_err(|e| io_err("non-blocking pipe", e))?;
    }
    Ok(Child { pid, stdin: in_agent, stdout: out_r, stderr: Some(err_r) })
}

/// The child's ends of its standard descriptors.
struct ChildFds<'a> {
    stdin: &'a OwnedFd,
    stdout: &'a OwnedFd,
    stderr: &'a OwnedFd,
    tty: bool,
    identity: Option<&'a Identity>,
}

/// Forks and execs; returns the pid once the program runs, or why it could not.
fn start(
    fds: &ChildFds,
    cwd: &CString,
    program: &CString,
    argv: &[*const std::os::raw::c_char],
    envp: &[*const std::os::raw::c_char],
    req: &ExecRequest,
) -> Result<i32, StartError> {
    let io_err = |what: &str, e: std::io::Error| StartError {
        code: CANNOT_START,
        message: format!("cannot set up the process for {}: {what}: {e}", req.argv[0]),
    };
    let (report_r, report_w) = sys::pipe().map_err(|e| io_err("report pipe", e))?;
    let setup = ChildSetup {
        stdin: fds.stdin.as_raw_fd(),
        stdout: fds.stdout.as_raw_fd(),
        stderr: fds.stderr.as_raw_fd(),
        controlling_tty: fds.tty,
        cwd,
        program,
        argv,
        envp,
        report: report_w.as_raw_fd(),
        identity: fds.identity.map(|i| (i.uid, i.gid, i.groups.as_slice())),
    };
    let pid = sys::fork_exec(&setup).map_err(|e| io_err("fork", e))?;
    drop(report_w);
    // The report pipe is close-on-exec: end of file means the program is running. The child
    // gets there in microseconds, so waiting here does not hold up other streams.
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        match sys::read_fd(report_r.as_raw_fd(), &mut report[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got == report.len() {
        // The child has _exit()ed or is about to; the reaper collects it as an unknown pid.
        let errno = i32::from_be_bytes(report[1..5].try_into().unwrap());
        return Err(classify_child_failure(report[0], errno, &req.argv[0], &req.cwd));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("msb-agent-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self, rel: &str, mode: u32) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "#!/bin/sh\necho ok\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        }
        fn s(&self, rel: &str) -> String {
            self.0.join(rel).to_string_lossy().into_owned()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn path_lookup_takes_the_first_executable_match() {
        let t = TempDir::new("first");
        t.file("a/tool", 0o755);
        t.file("b/tool", 0o755);
        let path = format!("{}:{}", t.s("a"), t.s("b"));
        assert_eq!(find_program("tool", &path, Path::new("/")).unwrap(), t.0.join("a/tool"));
    }

    #[test]
    fn path_lookup_skips_non_executables_and_directories() {
        let t = TempDir::new("skip");
        t.file("a/tool", 0o644);
        fs::create_dir_all(t.0.join("b/tool")).unwrap();
        t.file("c/tool", 0o755);
        let path = format!("{}:{}:{}", t.s("a"), t.s("b"), t.s("c"));
        assert_eq!(find_program("tool", &path, Path::new("/")).unwrap(), t.0.join("c/tool"));
    }

    #[test]
    fn path_lookup_reports_not_found_and_permission() {
        let t = TempDir::new("fail");
        t.file("a/noexec", 0o644);
        let e = find_program("nosuchcmd", &t.s("a"), Path::new("/")).unwrap_err();
        assert_eq!(e, StartError { code: 127, message: "command not found: nosuchcmd".into() });
        // Root may read anything but still needs an execute bit (access(X_OK) checks it).
        let e = find_program("noexec", &t.s("a"), Path::new("/")).unwrap_err();
        assert_eq!(e.code, 126);
        assert_eq!(e.message, format!("permission denied: {}", t.s("a/noexec")));
        let e = find_program("", "/bin", Path::new("/")).unwrap_err();
        assert_eq!(e.code, 127);
    }

    #[test]
    fn names_with_a_slash_are_not_searched() {
        let t = TempDir::new("slash");
        t.file("bin/tool", 0o755);
        t.file("bin/plain", 0o644);
        assert_eq!(find_program(&t.s("bin/tool"), "", Path::new("/")).unwrap(), t.0.join("bin/tool"));
        // Relative to the exec's working directory, and passed on unchanged.
        assert_eq!(find_program("bin/tool", "/nonexistent", &t.0).unwrap(), PathBuf::from("bin/tool"));
        assert_eq!(find_program("./bin/tool", "", &t.0).unwrap(), PathBuf::from("./bin/tool"));
        let e = find_program("./missing", "", &t.0).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (127, "no such file or directory: ./missing"));
        let e = find_program("./bin", "", &t.0).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (126, "is a directory: ./bin"));
        let e = find_program("./bin/plain", "", &t.0).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (126, "permission denied: ./bin/plain"));
    }

    #[test]
    fn empty_and_relative_path_entries_search_the_working_directory() {
        let t = TempDir::new("rel");
        t.file("tool", 0o755);
        t.file("sub/other", 0o755);
        assert_eq!(find_program("tool", "/nonexistent:", &t.0).unwrap(), PathBuf::from("./tool"));
        assert_eq!(find_program("other", "sub", &t.0).unwrap(), PathBuf::from("sub/other"));
        assert_eq!(find_program("tool", "/nonexistent", &t.0).unwrap_err().code, 127);
    }

    #[test]
    fn working_directory_checks_name_the_directory() {
        let t = TempDir::new("cwd");
        t.file("file", 0o644);
        assert_eq!(check_cwd(&t.s("")), Ok(()));
        let e = check_cwd("/no/such/dir").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (125, "working directory does not exist: /no/such/dir"));
        let e = check_cwd(&t.s("file")).unwrap_err();
        assert_eq!(e.code, 125);
        assert!(e.message.contains("not a directory") && e.message.contains(&t.s("file")));
        assert_eq!(check_cwd("tmp").unwrap_err().code, 125);
    }

    #[test]
    fn child_failures_map_to_shell_codes() {
        assert_eq!(classify_child_failure(sys::STAGE_EXEC, sys::EACCES, "x", "/").code, 126);
        let e = classify_child_failure(sys::STAGE_EXEC, sys::ENOENT, "./script", "/");
        assert_eq!(e.code, 126);
        assert!(e.message.contains("./script") && e.message.contains("interpreter"));
        let e = classify_child_failure(sys::STAGE_EXEC, sys::ENOEXEC, "blob", "/");
        assert_eq!(e.message, "cannot execute blob: Exec format error");
        let e = classify_child_failure(sys::STAGE_CWD, sys::EACCES, "x", "/root");
        assert_eq!((e.code, e.message.as_str()), (125, "cannot enter working directory /root: Permission denied"));
        assert_eq!(classify_child_failure(sys::STAGE_SETUP, sys::EPERM, "x", "/").code, 125);
        let e = classify_child_failure(sys::STAGE_EXEC, sys::E2BIG, "x", "/");
        assert_eq!((e.code, e.message.as_str()), (125, "cannot start x: Argument list too long"));
        assert_eq!(classify_child_failure(sys::STAGE_EXEC, sys::ETXTBSY, "x", "/").code, 126);
    }

    #[test]
    fn merged_environment_overlays_the_base() {
        let base = vec![("PATH".to_string(), "/bin".to_string()), ("A".to_string(), "1".to_string())];
        let overlay = vec![("A".to_string(), "2".to_string()), ("B".to_string(), "3".to_string())];
        let env = merge_env(&base, &overlay);
        assert_eq!(env_get(&env, "PATH"), Some("/bin"));
        assert_eq!(env_get(&env, "A"), Some("2"));
        assert_eq!(env_get(&env, "B"), Some("3"));
    }

    #[test]
    fn spawn_runs_a_real_program_and_reports_failures() {
        let base = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
        let req = |argv: &[&str], cwd: &str| ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hi there".into())],
            cwd: cwd.into(),
            stdin: false,
            tty: None,
            user: None,
            timeout_ms: None,
        };
        let child = spawn(&req(&["sh", "-c", "printf '%s|%s' \"$GREETING\" \"$(pwd)\""], "/tmp"), &base).unwrap();
        let status = sys::wait_for(child.pid).unwrap();
        assert_eq!(status, sys::WaitStatus::Exited(0));
        let mut out = [0u8; 64];
        let n = sys::read_fd(child.stdout.as_raw_fd(), &mut out).unwrap();
        assert_eq!(&out[..n], b"hi there|/tmp");
        let e = spawn(&req(&["nosuchcmd-msb"], "/"), &base).err().unwrap();
        assert_eq!((e.code, e.message.as_str()), (127, "command not found: nosuchcmd-msb"));
        let e = spawn(&req(&["sh"], "/nonexistent-msb"), &base).err().unwrap();
        assert_eq!(e.code, 125);
        assert!(e.message.contains("/nonexistent-msb"));
        let e = spawn(&req(&["sh", "a\0b"], "/"), &base).err().unwrap();
        assert_eq!((e.code, e.message.as_str()), (125, "bad request: argv[1] contains a NUL byte"));
    }
}
