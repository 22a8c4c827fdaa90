// The client against a misbehaving `msb api`: small shell scripts standing in for the runtime (the
// test's edge; the real runtime is tests/runtime.rs). Noise, unknown ids, events racing ahead of
// their spawn reply, bad base64, malformed replies, a crash with last words on stderr, and a
// grandchild holding the output pipe open must each give an error or be ignored, never a hang.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use msb::{Client, ClientOptions, Error, ExecOptions};

/// Writes `body` as an executable script standing in for msb (called as `<script> api`).
fn fake_msb(tag: &str, body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("msb-rust-fake-{tag}-{}", std::process::id()));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn start(binary: &Path) -> msb::Result<Client> {
    Client::start(ClientOptions { binary: Some(binary.to_path_buf()), env: vec![] })
}

fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

#[test]
fn noise_and_bad_messages_are_survived_or_reported() {
    // Request ids are 1, 2, 3, ... in call order: hello, get, spawn, list, list.
    let script = fake_msb(
        "noise",
        r#"read -r hello
echo 'not json at all'
echo '{"id":99,"result":{}}'
echo '[1,2,3]'
echo ''
echo '{"id":null,"error":{"code":"parse","message":"x"}}'
echo '{"event":"output","process":5,"fd":"stdout","data":"aGkK"}'
echo '{"event":"output","process":5,"fd":"bogus","data":"aGkK"}'
echo '{"id":1,"result":{"protocol":1,"msb":"fake"}}'
read -r get
echo '{"id":2,"result":{"name":"sb"}}'
read -r spawn
echo '{"id":3,"result":{"process":5}}'
echo '{"event":"output","process":5,"fd":"stderr","data":"!!not base64"}'
read -r list
echo '{"id":4,"result":{"sandboxes":[{"name":"a","status":"running"},{"status":"nameless"}]}}'
read -r list
echo '{"id":5}'
cat >/dev/null"#,
    );
    let client = within(Duration::from_secs(10), "start", move || start(&script).map(|c| (c, script)));
    let (client, script) = client.expect("noise before the hello reply is skipped");
    assert_eq!(client.msb_version(), "fake");
    let sandbox = client.get("sb").expect("get");
    let process = sandbox.spawn(&["x"], &ExecOptions::default()).expect("spawn");
    // The output event that came before the spawn reply is delivered, then the bad one ends it.
    let mut out = [0u8; 16];
    let n = process.stdout().read(&mut out).expect("the early output");
    assert_eq!(&out[..n], b"hi\n");
    match process.wait() {
        Err(Error::Protocol { message }) => assert!(message.contains("base64"), "{message}"),
        other => panic!("expected a protocol error for bad base64, got {other:?}"),
    }
    assert!(process.stdout().read(&mut out).is_err(), "reading past a failure reports it");
    assert!(matches!(client.list(), Err(Error::Protocol { .. })), "an entry without a name");
    assert!(matches!(client.list(), Err(Error::Protocol { .. })), "a reply with neither result nor error");
    drop(client);
    let _ = std::fs::remove_file(script);
}

#[test]
fn a_different_protocol_version_is_refused() {
    let script = fake_msb("version", r#"read -r hello; echo '{"id":1,"result":{"protocol":2,"msb":"9"}}'; cat >/dev/null"#);
    let err = start(&script).err().expect("refused");
    assert!(matches!(err, Error::Protocol { .. }) && err.to_string().contains("protocol 1"), "{err}");
    let _ = std::fs::remove_file(script);
}

#[test]
fn a_crash_reports_its_last_stderr() {
    let script = fake_msb("crash", r#"read -r hello; echo 'boom: the store is corrupt' >&2; exit 3"#);
    match start(&script) {
        Err(Error::RuntimeExited { stderr_tail }) => assert!(stderr_tail.contains("boom: the store is corrupt"), "{stderr_tail:?}"),
        other => panic!("expected RuntimeExited, got {:?}", other.err()),
    }
    let _ = std::fs::remove_file(script);
}

#[test]
fn a_grandchild_holding_the_pipe_does_not_keep_calls_waiting() {
    // The runtime dies without answering, but a process it left behind keeps its stdout open.
    let script = fake_msb(
        "orphan",
        r#"read -r hello
echo '{"id":1,"result":{"protocol":1,"msb":"fake"}}'
sleep 5 &
read -r call
exit 1"#,
    );
    let client = start(&script).expect("start");
    let started = Instant::now();
    let result = within(Duration::from_secs(10), "a call to a dead runtime", move || {
        let r = client.list();
        (r, client)
    });
    assert!(matches!(result.0, Err(Error::RuntimeExited { .. })), "{:?}", result.0);
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(matches!(result.1.list(), Err(Error::RuntimeExited { .. })), "later calls fail at once too");
    let _ = std::fs::remove_file(script);
}
