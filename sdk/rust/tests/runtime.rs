// The SDK against the real runtime: dist/msb (or $MSB_BIN) on the qemu backend with a temporary
// MSB_HOME. One sandbox boot serves the checks that need a VM; the others need none. Run with
// `cargo test -- --test-threads=1` (each test starts its own `msb api`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use msb::{Client, ClientOptions, Error, ExecOptions, SandboxOptions, Secret, Value};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The msb binary under test, or why the tests cannot run.
fn msb_binary() -> Result<PathBuf, String> {
    let path = match std::env::var_os("MSB_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dist/msb"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing (build it with scripts/setup.sh, or set MSB_BIN)", path.display()))
    }
}

/// A temporary MSB_HOME, removed when dropped.
struct TempHome(PathBuf);

impl TempHome {
    fn new(tag: &str) -> TempHome {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path = std::env::temp_dir().join(format!("msb-rust-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempHome(path)
    }

    fn options(&self, binary: &Path) -> ClientOptions {
        ClientOptions {
            binary: Some(binary.to_path_buf()),
            env: vec![("MSB_HOME".into(), self.0.display().to_string()), ("MSB_BACKEND".into(), "qemu".into())],
        }
    }

    /// Processes (other than this one) whose environment names this MSB_HOME.
    fn live_processes(&self) -> Vec<String> {
        let needle = format!("MSB_HOME={}", self.0.display());
        let me = std::process::id().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|&b| b == 0).any(|var| var == needle.as_bytes()) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(format!("{pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }

    /// Waits (up to 30 s) until nothing runs under this MSB_HOME; fails naming what still does.
    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live = self.live_processes();
            if live.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes still running under {}: {live:#?}", self.0.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

macro_rules! require_msb {
    () => {
        match msb_binary() {
            Ok(path) => path,
            // libtest has no run-time skip: the test passes, saying so. CI sets MSB_E2E_REQUIRED
            // so that a missing binary fails instead.
            Err(reason) if std::env::var_os("MSB_E2E_REQUIRED").is_some() => panic!("MSB_E2E_REQUIRED is set but {reason}"),
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    };
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hang is a failure).
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

#[test]
fn errors_without_a_vm() {
    let binary = require_msb!();
    let home = TempHome::new("errors");
    {
        let client = Client::start(home.options(&binary)).expect("msb api starts");
        assert!(!client.msb_version().is_empty());

        let missing_image = SandboxOptions { image: Some("localhost:5999/nope:1".into()), pull: Some("never".into()), ..Default::default() };
        match client.create(&missing_image) {
            Err(Error::ImageNotFound { code, message }) => {
                assert_eq!(code, "NOT_IN_STORE");
                assert!(message.contains("localhost:5999/nope:1"), "{message}");
            }
            other => panic!("expected ImageNotFound, got {other:?}"),
        }

        match client.get("no-such-sandbox") {
            Err(Error::SandboxNotFound { message }) => assert!(message.contains("no-such-sandbox"), "{message}"),
            other => panic!("expected SandboxNotFound, got {other:?}"),
        }
        assert!(matches!(client.remove("no-such-sandbox", false), Err(Error::SandboxNotFound { .. })));

        let unknown = SandboxOptions { extra: vec![("bogus".into(), Value::Bool(true))], ..Default::default() };
        match client.create(&unknown) {
            Err(Error::InvalidOptions { message }) => assert!(message.contains("bogus"), "{message}"),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
        let wrong_type = SandboxOptions { extra: vec![("memoryMiB".into(), Value::from("lots"))], ..Default::default() };
        match client.create(&wrong_type) {
            Err(Error::InvalidOptions { message }) => assert!(message.contains("memoryMiB"), "{message}"),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
        let bad_value = SandboxOptions { network: Some("everything".into()), ..Default::default() };
        assert!(matches!(client.create(&bad_value), Err(Error::InvalidOptions { .. })));

        assert!(client.list().expect("list").is_empty(), "nothing was created");
        let err = client.create(&missing_image).unwrap_err();
        assert!(err.to_string().contains("msb pull"), "the message says what to do: {err}");
    }
    home.assert_nothing_left();
}

#[test]
fn a_binary_that_is_not_there_is_a_start_error() {
    let err = Client::start(ClientOptions { binary: Some("/nonexistent/msb".into()), env: vec![] }).err().expect("start fails");
    assert!(matches!(err, Error::Start { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/msb") && err.to_string().contains("MSB_BIN"), "{err}");
}

#[test]
fn a_runtime_that_is_not_msb_is_runtime_exited() {
    // `false api` exits at once: the handshake must fail promptly, not hang.
    let err = within(Duration::from_secs(10), "start", || Client::start(ClientOptions { binary: Some("false".into()), env: vec![] }).err());
    assert!(matches!(err, Some(Error::RuntimeExited { .. })), "{err:?}");
}

#[test]
fn sandbox_end_to_end() {
    let binary = require_msb!();
    let home = TempHome::new("e2e");
    {
        let client = Client::start(home.options(&binary)).expect("msb api starts");
        let sandbox = client
            .create(&SandboxOptions {
                // Named, so it survives a stop (unnamed ones are removed when they stop).
                name: Some("rust-e2e".into()),
                memory_mib: Some(256),
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                ..Default::default()
            })
            .expect("create");
        let name = sandbox.name().to_string();
        assert!(!home.live_processes().is_empty(), "the leftover check sees msb api and the VM while they run");
        let listed = client.list().expect("list");
        let info = listed.iter().find(|s| s.name == name).expect("the new sandbox is listed");
        assert_eq!(info.status, "running");

        // exec: exit code and separate stdout/stderr, env from the sandbox and from the call.
        let result = sandbox
            .exec(
                &["sh", "-c", "echo out $GREETING $EXTRA; echo err >&2; exit 3"],
                &ExecOptions { env: [("EXTRA".to_string(), "x".to_string())].into(), ..Default::default() },
            )
            .expect("exec");
        assert_eq!(result.exit_code, 3);
        assert_eq!(result.code, Some(3));
        assert_eq!(result.stdout, b"out hello x\n");
        assert_eq!(result.stderr, b"err\n");
        assert!(!result.timed_out);

        // stdin (binary, with every byte value) through exec.
        let input: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let result = sandbox.exec(&["sh", "-c", "cat | md5sum"], &ExecOptions { stdin: Some(input.clone()), ..Default::default() }).expect("exec with stdin");
        let result_hash = result.stdout_text();
        sandbox.write_file("/tmp/input.bin", &input).expect("write_file");
        let file_hash = sandbox.exec(&["md5sum", "/tmp/input.bin"], &ExecOptions::default()).expect("md5sum").stdout_text();
        assert_eq!(result_hash.split_whitespace().next(), file_hash.split_whitespace().next(), "stdin arrived intact");

        // A timeout kills the command and says so.
        let result = sandbox.exec(&["sleep", "30"], &ExecOptions { timeout: Some(Duration::from_millis(500)), ..Default::default() }).expect("exec");
        assert!(result.timed_out, "{result:?}");
        assert_ne!(result.exit_code, 0);

        // Streaming: the first line is readable while the command still runs.
        let process = sandbox
            .spawn(&["sh", "-c", "echo first; read line; echo got $line; echo oops >&2; exit 7"], &ExecOptions { pipe_stdin: true, ..Default::default() })
            .expect("spawn");
        let mut stdout = BufReader::new(process.stdout());
        let mut first = String::new();
        let started = Instant::now();
        stdout.read_line(&mut first).expect("read the first line");
        assert_eq!(first, "first\n");
        assert!(started.elapsed() < Duration::from_secs(20));
        process.write_stdin(b"ping\n").expect("write_stdin");
        process.close_stdin().expect("close_stdin");
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).expect("read the rest");
        assert_eq!(rest, "got ping\n");
        let mut err = String::new();
        process.stderr().read_to_string(&mut err).unwrap();
        assert_eq!(err, "oops\n");
        let status = process.wait().expect("wait");
        assert_eq!((status.exit_code, status.code, status.signal), (7, Some(7), None));

        // Output that arrives over time comes in pieces, before the command ends.
        let process = sandbox.spawn(&["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"], &ExecOptions::default()).expect("spawn");
        let mut lines = BufReader::new(process.stdout()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "tick 1");
        assert!(process.signal(0).is_err(), "signal 0 is refused (1-64)");
        assert_eq!(lines.map(|l| l.unwrap()).collect::<Vec<_>>(), ["tick 2", "tick 3"]);
        assert!(process.wait().unwrap().success());

        // Input given up front to spawn is written, then the command sees end of file.
        let process = sandbox.spawn(&["cat"], &ExecOptions { stdin: Some(b"fed in".to_vec()), ..Default::default() }).expect("spawn");
        let mut fed = Vec::new();
        process.stdout().read_to_end(&mut fed).unwrap();
        assert_eq!(fed, b"fed in");
        assert!(process.wait().unwrap().success());

        // Calls from several threads at once each get their own reply.
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let s = sandbox.clone();
                std::thread::spawn(move || (i, s.exec(&["sh", "-c", &format!("sleep 0.$((4 - {i})); echo {i}")], &ExecOptions::default())))
            })
            .collect();
        for thread in threads {
            let (i, result) = thread.join().unwrap();
            assert_eq!(result.expect("concurrent exec").stdout_text(), format!("{i}\n"));
        }

        // A signal ends a spawned command.
        let process = sandbox.spawn(&["sleep", "60"], &ExecOptions::default()).expect("spawn");
        process.signal(9).expect("signal");
        let status = within(Duration::from_secs(20), "wait after SIGKILL", {
            let process = Arc::new(process);
            let p = process.clone();
            move || (p.wait(), process)
        });
        assert_eq!(status.0.expect("wait").signal, Some(9));
        // Once it has exited, ending its input or signalling it again is not an error.
        status.1.signal(9).expect("signal after exit");
        status.1.close_stdin().expect("close_stdin after exit");

        // Files: a round trip with every byte value, metadata, listing, rename, chmod, remove.
        let data: Vec<u8> = (0..=255u8).rev().cycle().take(300_000).collect();
        assert_eq!(sandbox.write_file_mode("/tmp/data.bin", &data, 0o640).expect("write_file"), data.len() as u64);
        assert_eq!(sandbox.read_file("/tmp/data.bin").expect("read_file"), data);
        let stat = sandbox.stat("/tmp/data.bin").expect("stat");
        assert!(stat.is_file());
        assert_eq!((stat.size, stat.mode), (data.len() as u64, 0o640));
        sandbox.mkdir("/tmp/a/b", true).expect("mkdir");
        sandbox.rename("/tmp/data.bin", "/tmp/a/b/moved.bin").expect("rename");
        assert!(!sandbox.exists("/tmp/data.bin").unwrap());
        assert!(sandbox.exists("/tmp/a/b/moved.bin").unwrap());
        sandbox.chmod("/tmp/a/b/moved.bin", 0o600).unwrap();
        let entries = sandbox.list_dir("/tmp/a/b").expect("list_dir");
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].name.as_str(), entries[0].stat.mode), ("moved.bin", 0o600));
        match sandbox.read_file("/tmp/nope") {
            Err(Error::NotFound { message }) => assert!(message.contains("/tmp/nope"), "{message}"),
            other => panic!("expected NotFound for a missing path, got {other:?}"),
        }
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        sandbox.write_file("/tmp/big.bin", &big).expect("write 8 MiB");
        assert!(sandbox.read_file("/tmp/big.bin").expect("read 8 MiB") == big, "8 MiB round trip differs");
        sandbox.remove_path("/tmp/big.bin", false).unwrap();
        // More than one request line can carry: a clear error at once, not a call left waiting.
        let too_big = vec![0u8; 50 << 20];
        match within(Duration::from_secs(30), "oversized write_file", {
            let s = sandbox.clone();
            move || s.write_file("/tmp/too-big", &too_big)
        }) {
            Err(Error::InvalidOptions { message }) => assert!(message.contains("64 MiB"), "{message}"),
            other => panic!("expected InvalidOptions for a 50 MiB write, got {other:?}"),
        }
        assert!(!sandbox.exists("/tmp/too-big").unwrap());
        sandbox.remove_path("/tmp/a", true).expect("remove_path");
        assert!(!sandbox.exists("/tmp/a").unwrap());
        assert!(matches!(sandbox.exec(&[] as &[&str], &ExecOptions::default()), Err(Error::InvalidOptions { .. })));

        // The runtime process killed: waiting calls and processes fail promptly, never hang.
        {
            let second = Client::start(home.options(&binary)).expect("second msb api");
            let same = second.get(&name).expect("get by name");
            let sleeper = same.spawn(&["sleep", "60"], &ExecOptions::default()).expect("spawn");
            let pid = second.pid();
            let blocked = std::thread::spawn({
                let same = same.clone();
                move || same.exec(&["sleep", "60"], &ExecOptions::default())
            });
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kill(2) on the msb api child this test started; no memory is involved.
            assert_eq!(unsafe { kill(pid as i32, 9) }, 0, "kill msb api");
            let started = Instant::now();
            let waited = within(Duration::from_secs(10), "Process::wait after msb api died", move || sleeper.wait());
            assert!(matches!(waited, Err(Error::RuntimeExited { .. })), "{waited:?}");
            let exec = within(Duration::from_secs(10), "exec after msb api died", move || blocked.join().unwrap());
            assert!(matches!(exec, Err(Error::RuntimeExited { .. })), "{exec:?}");
            assert!(started.elapsed() < Duration::from_secs(5), "noticed after {:?}", started.elapsed());
            assert!(matches!(second.list(), Err(Error::RuntimeExited { .. })));
            assert!(second.list().unwrap_err().to_string().contains("msb api process exited"));
        }

        // The first client's sandbox survived the second one's death.
        assert_eq!(sandbox.exec(&["echo", "still here"], &ExecOptions::default()).unwrap().stdout, b"still here\n");

        // Stop, then remove; afterwards it is a missing sandbox.
        sandbox.stop().expect("stop");
        let info = client.list().unwrap().into_iter().find(|s| s.name == name).expect("a stopped named sandbox stays listed");
        assert_eq!(info.status, "stopped");
        assert!(matches!(sandbox.exec(&["true"], &ExecOptions::default()), Err(Error::NotRunning { .. } | Error::SandboxNotFound { .. })));
        sandbox.remove(false).expect("remove");
        assert!(client.list().unwrap().iter().all(|s| s.name != name), "removed sandbox is not listed");
        assert!(matches!(client.get(&name), Err(Error::SandboxNotFound { .. })));
        assert!(matches!(sandbox.exec(&["true"], &ExecOptions::default()), Err(Error::SandboxNotFound { .. })));
    }
    home.assert_nothing_left();
}

#[test]
fn secrets_reach_the_guest_only_as_placeholders() {
    let binary = require_msb!();
    let home = TempHome::new("secrets");
    let client = Client::start(home.options(&binary)).expect("msb api starts");
    let value = format!("rust-{}-secret", std::process::id());
    let secret = |value: &str| Secret { name: "RUST_KEY".into(), value: value.into(), allow: vec!["api.example.com".into()], ..Default::default() };
    let sandbox = client.create(&SandboxOptions { memory_mib: Some(256), secrets: vec![secret(&value)], ..Default::default() }).expect("create");
    let result = sandbox.exec(&["sh", "-c", "echo \"$RUST_KEY\"; echo \"$REQUESTS_CA_BUNDLE\""], &ExecOptions::default()).expect("exec");
    assert_eq!(String::from_utf8_lossy(&result.stdout), "$MSB_RUST_KEY\n/etc/ssl/certs/ca-certificates.crt\n");
    let bad = client.create(&SandboxOptions { memory_mib: Some(256), secrets: vec![secret("bad\nvalue")], ..Default::default() });
    let message = format!("{}", bad.expect_err("a value with a newline is refused"));
    assert!(message.contains("RUST_KEY") && !message.contains("bad\nvalue"), "{message}");
    drop(client);
    home.assert_nothing_left();
}

#[test]
fn dropping_the_client_stops_its_attached_sandboxes() {
    let binary = require_msb!();
    let home = TempHome::new("drop");
    let client = Client::start(home.options(&binary)).expect("msb api starts");
    let sandbox = client.create(&SandboxOptions { memory_mib: Some(256), ..Default::default() }).expect("create");
    assert!(sandbox.exec(&["true"], &ExecOptions::default()).unwrap().success());
    let process = sandbox.spawn(&["sleep", "600"], &ExecOptions::default()).expect("spawn");
    drop(client);
    // The handles outlive the client; they fail instead of hanging.
    assert!(matches!(sandbox.exec(&["true"], &ExecOptions::default()), Err(Error::RuntimeExited { .. })));
    let waited = within(Duration::from_secs(10), "wait after close", move || process.wait());
    assert!(waited.is_err(), "{waited:?}");
    home.assert_nothing_left();
}
