// Hostile or mistaken input from the host: every bad frame gets an ERROR with the right code;
// recoverable ones leave the agent serving, a broken framing drops the connection.

mod common;
use common::*;
use std::time::Duration;

fn expect_error(a: &mut Agent, stream: u32, code: &str, needle: &str) {
    let f = a.recv_on(stream);
    assert_eq!(f.kind, ERROR, "expected ERROR on stream {stream}, got {:?}: {}", f.kind, f.text());
    assert_eq!(field(&f.text(), "code").as_deref(), Some(code), "{}", f.text());
    let msg = field(&f.text(), "message").unwrap();
    assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
}

fn expect_dropped(a: &mut Agent) {
    assert!(a.closed_within(Duration::from_secs(10)), "agent kept the connection open");
    let status = a.wait_exit_status(Duration::from_secs(5)).expect("agent exits");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_length_over_max_payload_is_a_protocol_error_and_drops_the_connection() {
    let mut a = Agent::start();
    // The invalid vector "length-too-large": judged from the header alone.
    a.send_bytes(&[0x00, 0x10, 0x00, 0x06, 0, 0, 0, 1, 0x12]);
    expect_error(&mut a, 0, "protocol", "1048582");
    expect_dropped(&mut a);
}

#[test]
fn a_length_below_five_is_a_protocol_error() {
    let mut a = Agent::start();
    a.send_bytes(&[0, 0, 0, 4, 0, 0, 0, 0, 1, 0]);
    expect_error(&mut a, 0, "protocol", "length 4");
    expect_dropped(&mut a);
}

#[test]
fn a_running_exec_is_killed_when_the_connection_is_dropped() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sh", "-c", "echo $$; exec sleep 60"], false));
    let pid: i32 = a.recv_on(1).text().trim().parse().unwrap();
    a.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    expect_error(&mut a, 0, "protocol", "length");
    expect_dropped(&mut a);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "exec {pid} outlived the agent");
}

#[test]
fn bad_exec_payloads_are_request_errors_and_the_agent_keeps_serving() {
    let mut a = Agent::start();
    a.send(1, EXEC, b"not json");
    expect_error(&mut a, 1, "request", "invalid JSON");
    a.send(2, EXEC, br#"{"argv":[]}"#);
    expect_error(&mut a, 2, "request", "at least one");
    a.send(3, EXEC, br#"{"cwd":"/"}"#);
    expect_error(&mut a, 3, "request", "argv");
    a.send(4, EXEC, b"{\"argv\":[\"\xff\"]}");
    expect_error(&mut a, 4, "request", "UTF-8");
    a.send(5, EXEC, br#"{"argv":["echo"],"env":{"A":1}}"#);
    expect_error(&mut a, 5, "request", "env.A");
    let deep = "[".repeat(10_000);
    a.send(6, EXEC, format!("{{\"argv\":{deep}").as_bytes());
    expect_error(&mut a, 6, "request", "nested too deeply");
    a.ping(b"alive");
    // The ids of refused EXECs can be used again.
    assert_eq!(a.run(1, &["echo", "ok"]).stdout_text(), "ok\n");
}

#[test]
fn stream_id_errors() {
    let mut a = Agent::start();
    a.send(0, EXEC, exec_json(&["true"], false).as_bytes());
    expect_error(&mut a, 0, "stream", "not 0");
    a.send(77, WINDOW, &5u32.to_be_bytes());
    expect_error(&mut a, 77, "stream", "not open");
    a.send(78, SIGNAL, br#"{"signal":9}"#);
    expect_error(&mut a, 78, "stream", "not open");
    a.send(79, STDIN, b"x");
    expect_error(&mut a, 79, "stream", "not open");
    a.send(3, PING, b"x");
    expect_error(&mut a, 3, "stream", "stream 0");
    // EXEC on an id that is still open: refused, and the open stream is unaffected.
    a.exec(8, &exec_json(&["sh", "-c", "read x; echo got $x"], true));
    a.exec(8, &exec_json(&["echo", "intruder"], false));
    expect_error(&mut a, 8, "stream", "already open");
    a.send(8, STDIN, b"it\n");
    let o = a.collect(8);
    assert_eq!(o.stdout_text(), "got it\n");
}

#[test]
fn malformed_control_payloads_are_request_errors() {
    let mut a = Agent::start();
    // A bad frame on an open exec stream ends it (docs/protocol.md, "ERROR"): the process group
    // is killed, no EXIT follows, and the id is free again. One fresh exec per bad frame.
    let cases: [(u8, &[u8], &str); 5] = [
        (WINDOW, &[0, 1, 0], "4 bytes"),
        (SIGNAL, br#"{"signal":0}"#, "1 to 64"),
        (SIGNAL, br#"{"signal":"KILL"}"#, "signal"),
        (RESIZE, br#"{"rows":24,"cols":80}"#, "no terminal"),
        (STDIN, b"data", "stdin:false"),
    ];
    for (kind, payload, needle) in cases {
        a.exec(1, &exec_json(&["sh", "-c", "echo $$; exec sleep 30"], false));
        let pid: i32 = a.recv_on(1).text().trim().parse().unwrap();
        a.send(1, kind, payload);
        expect_error(&mut a, 1, "request", needle);
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "exec {pid} survived the ERROR that ended its stream");
    }
    a.send(0, PING, &[7u8; 65]);
    expect_error(&mut a, 0, "request", "at most 64");
    a.send(0, 0x42, b"");
    expect_error(&mut a, 0, "request", "0x42");
    a.send(0, READY, b"{}");
    expect_error(&mut a, 0, "request", "sent by the agent");
    a.send(0, INIT, INIT_JSON.as_bytes());
    expect_error(&mut a, 0, "request", "already");
    a.ping(&[1, 2, 3, 4]);
    assert_eq!(a.run(1, &["echo", "still serving"]).stdout_text(), "still serving\n");
}

#[test]
fn exec_before_init_is_refused() {
    let mut a = Agent::spawn_raw(&[]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.exec(1, &exec_json(&["true"], false));
    expect_error(&mut a, 1, "request", "before INIT");
    a.ping(b"pre-init ping works");
}

#[test]
fn a_bad_init_is_refused_and_the_agent_stops() {
    let mut a = Agent::spawn_raw(&[]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, br#"{"protocol":1,"root":{"kind":"qcow2","path":"/"}}"#);
    expect_error(&mut a, 0, "init", "qcow2");
    expect_dropped(&mut a);
}

#[test]
fn another_protocol_version_is_a_version_error() {
    let mut a = Agent::spawn_raw(&[]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, br#"{"protocol":2,"root":{"kind":"initramfs","path":"/"}}"#);
    expect_error(&mut a, 0, "version", "protocol 2");
    expect_dropped(&mut a);
}

#[test]
fn a_missing_root_directory_fails_init() {
    let mut a = Agent::spawn_raw(&["--root", "/no/such/root-msb"]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, INIT_JSON.as_bytes());
    expect_error(&mut a, 0, "init", "/no/such/root-msb");
    expect_dropped(&mut a);
}

#[test]
fn garbage_bytes_in_small_pieces_are_handled() {
    let mut a = Agent::start();
    // A valid PING split across writes, then a frame split mid-header.
    let ping = common::encode(0, PING, b"split");
    for b in &ping {
        a.send_bytes(std::slice::from_ref(b));
    }
    let f = a.recv_on(0);
    assert_eq!((f.kind, f.payload.as_slice()), (PONG, &b"split"[..]));
    a.send_bytes(&[0x00, 0x20]);
    std::thread::sleep(Duration::from_millis(50));
    a.send_bytes(&[0x00, 0x00]);
    expect_error(&mut a, 0, "protocol", "2097152");
}
