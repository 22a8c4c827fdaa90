// Flow control of STDOUT/STDERR: a stream without credit is paused, others carry on.

mod common;
use common::*;
use std::time::Duration;

/// Reads stream `id`'s data frames without returning credit until `want` bytes arrived.
fn take_without_credit(a: &mut Agent, id: u32, want: usize) -> usize {
    let mut got = 0;
    while got < want {
        let f = a.recv_on(id);
        assert!(matches!(f.kind, STDOUT | STDERR), "unexpected frame {:?}: {}", f.kind, f.text());
        assert!(f.payload.len() <= MAX_CHUNK);
        got += f.payload.len();
    }
    got
}

#[test]
fn a_stream_without_credit_is_paused_while_another_completes() {
    let mut a = Agent::start();
    let total = 3_000_000;
    a.exec(1, &exec_json(&["head", "-c", &total.to_string(), "/dev/zero"], false));
    // Take exactly the initial window and give nothing back.
    let got = take_without_credit(&mut a, 1, INITIAL_WINDOW);
    assert_eq!(got, INITIAL_WINDOW, "the agent sent more than the window");
    // Paused: nothing more arrives for stream 1...
    std::thread::sleep(Duration::from_millis(300));
    // ...while stream 2 runs to completion.
    let o = a.run(2, &["sh", "-c", "echo other; echo err >&2"]);
    assert_eq!((o.stdout_text().as_str(), o.stderr_text().as_str()), ("other\n", "err\n"));
    while let Some(f) = a.try_recv(Duration::from_millis(200)) {
        assert_ne!(f.stream, 1, "stream 1 sent {:?} without credit", f.kind);
    }
    // Credit back: the rest flows and the stream ends normally.
    a.send(1, WINDOW, &(INITIAL_WINDOW as u32).to_be_bytes());
    let rest = a.collect(1);
    assert_eq!(got + rest.stdout.len(), total);
    assert_eq!(rest.code(), Some(0));
}

#[test]
fn stdout_and_stderr_share_one_window() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sh", "-c", "head -c 200000 /dev/zero; head -c 200000 /dev/zero >&2"], false));
    let got = take_without_credit(&mut a, 1, INITIAL_WINDOW);
    assert_eq!(got, INITIAL_WINDOW);
    assert!(a.try_recv(Duration::from_millis(400)).is_none(), "more than one shared window was sent");
    a.send(1, WINDOW, &1_000_000u32.to_be_bytes());
    let rest = a.collect(1);
    assert_eq!(got + rest.stdout.len() + rest.stderr.len(), 400_000);
}

#[test]
fn small_grants_release_exactly_that_much() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["head", "-c", "1000000", "/dev/zero"], false));
    take_without_credit(&mut a, 1, INITIAL_WINDOW);
    a.send(1, WINDOW, &1000u32.to_be_bytes());
    let f = a.recv_on(1);
    assert_eq!((f.kind, f.payload.len()), (STDOUT, 1000));
    assert!(a.try_recv(Duration::from_millis(300)).is_none(), "sent beyond a 1000-byte grant");
    a.send(1, SIGNAL, br#"{"signal":9}"#);
    a.send(1, WINDOW, &u32::MAX.to_be_bytes());
    let o = a.collect(1);
    assert_eq!(o.signal(), Some(9));
}

#[test]
fn a_paused_stream_exits_once_credit_returns_and_keeps_its_output() {
    let mut a = Agent::start();
    // The process finishes while paused: its last bytes sit in the pipe, not lost at EXIT.
    a.exec(1, &exec_json(&["sh", "-c", "head -c 300000 /dev/zero; echo tail"], false));
    let got = take_without_credit(&mut a, 1, INITIAL_WINDOW);
    std::thread::sleep(Duration::from_millis(600)); // longer than the 250 ms EXIT grace
    a.send(1, WINDOW, &(INITIAL_WINDOW as u32).to_be_bytes());
    let rest = a.collect(1);
    assert_eq!(got + rest.stdout.len(), 300_005);
    assert!(rest.stdout.ends_with(b"tail\n"));
}
