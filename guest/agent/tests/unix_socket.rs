// --connect-unix: the agent dials a unix socket (as the supervisor's relay could) and serves it.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

fn read_frame(s: &mut std::os::unix::net::UnixStream) -> Frame {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).expect("frame header");
    let len = u32::from_be_bytes(head[0..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len - 5];
    s.read_exact(&mut payload).unwrap();
    Frame { stream: u32::from_be_bytes(head[4..8].try_into().unwrap()), kind: head[8], payload }
}

#[test]
fn the_agent_serves_a_unix_socket_it_connects_to() {
    let path = std::env::temp_dir().join(format!("msb-agent-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_msb-agent")).arg("--connect-unix").arg(&path).spawn().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(read_frame(&mut s).kind, HELLO);
    s.write_all(&common::encode(0, INIT, INIT_JSON.as_bytes())).unwrap();
    assert_eq!(read_frame(&mut s).kind, READY);
    s.write_all(&common::encode(1, EXEC, exec_json(&["echo", "over a socket"], false).as_bytes())).unwrap();
    let out = read_frame(&mut s);
    assert_eq!((out.stream, out.kind, out.text().as_str()), (1, STDOUT, "over a socket\n"));
    let exit = read_frame(&mut s);
    assert_eq!((exit.kind, exit.text().as_str()), (EXIT, r#"{"code":0,"signal":null}"#));
    s.write_all(&common::encode(0, SHUTDOWN, b"")).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after SHUTDOWN when no exec runs");
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_socket_path_that_does_not_exist_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_msb-agent")).args(["--connect-unix", "/no/such/msb.sock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to /no/such/msb.sock"), "{err}");
}

#[test]
fn outside_pid_1_without_a_mode_it_explains_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_msb-agent")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running as PID 1"));
    let v = Command::new(env!("CARGO_BIN_EXE_msb-agent")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout), format!("msb-agent {}\n", env!("CARGO_PKG_VERSION")));
}
