// Streaming stdin with flow control in the host-to-agent direction.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn several_megabytes_round_trip_through_cat_byte_for_byte() {
    let mut a = Agent::start();
    let data = pattern(6 * 1024 * 1024 + 12_345, 42);
    a.exec(5, &exec_json(&["cat"], true));
    let mut credit = INITIAL_WINDOW;
    let mut sent = 0;
    let mut granted_back = 0usize;
    let mut eof_sent = false;
    let mut got = Vec::with_capacity(data.len());
    let exit = loop {
        while sent < data.len() && credit > 0 {
            let n = credit.min(MAX_CHUNK).min(data.len() - sent);
            a.send(5, STDIN, &data[sent..sent + n]);
            sent += n;
            credit -= n;
        }
        if sent == data.len() && !eof_sent {
            a.send(5, STDIN, b"");
            eof_sent = true;
        }
        let f = a.recv_on(5);
        match f.kind {
            WINDOW => {
                let inc = u32::from_be_bytes(f.payload[..].try_into().unwrap()) as usize;
                assert!(inc > 0, "a WINDOW of 0 is pointless");
                credit += inc;
                granted_back += inc;
            }
            STDOUT => {
                got.extend_from_slice(&f.payload);
                a.send(5, WINDOW, &(f.payload.len() as u32).to_be_bytes());
            }
            EXIT => break f.text(),
            other => panic!("unexpected 0x{other:02x}: {}", f.text()),
        }
    };
    assert_eq!(exit, r#"{"code":0,"signal":null}"#);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stdout differs from stdin");
    // Everything the agent consumed was granted back: the window is whole again.
    assert_eq!(granted_back, data.len(), "agent returned {granted_back} of {} bytes of credit", data.len());
    assert_eq!(credit, INITIAL_WINDOW);
}

#[test]
fn end_of_input_closes_the_pipe() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["wc", "-c"], true));
    a.send(1, STDIN, b"hello");
    a.send(1, STDIN, b"");
    let o = a.collect(1);
    assert_eq!(o.stdout_text().trim(), "5");
    assert_eq!(o.code(), Some(0));
}

#[test]
fn a_full_stdin_pipe_does_not_stall_other_streams() {
    let mut a = Agent::start();
    // Stream 1 never reads its stdin: fill its whole window (the pipe fills, the rest waits
    // in the agent) and make sure the agent still serves stream 2.
    a.exec(1, &exec_json(&["sleep", "30"], true));
    let chunk = vec![b'x'; MAX_CHUNK];
    for _ in 0..INITIAL_WINDOW / MAX_CHUNK {
        a.send(1, STDIN, &chunk);
    }
    let o = a.run(2, &["echo", "not stalled"]);
    assert_eq!(o.stdout_text(), "not stalled\n");
    a.ping(b"p");
    a.send(1, SIGNAL, br#"{"signal":9}"#);
    let o1 = a.collect(1);
    assert_eq!(o1.signal(), Some(9));
}

#[test]
fn stdin_after_the_process_exited_is_dropped_quietly() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["true"], true));
    let o = a.collect(1);
    assert_eq!(o.code(), Some(0));
    // The host may not have seen EXIT yet when it sends: no ERROR for a stream that just ended.
    a.send(1, STDIN, b"late data");
    a.send(1, WINDOW, &1000u32.to_be_bytes());
    a.ping(b"after");
    assert!(a.try_recv(Duration::from_millis(300)).is_none(), "no frame expected");
}

#[test]
fn stdin_to_a_process_that_closed_it_returns_the_credit() {
    let mut a = Agent::start();
    // The reader closes stdin at once and keeps running; input must not pile up or hang.
    a.exec(1, &exec_json(&["sh", "-c", "exec 0<&-; sleep 1; echo ok"], true));
    std::thread::sleep(Duration::from_millis(200));
    let chunk = vec![b'y'; MAX_CHUNK];
    for _ in 0..INITIAL_WINDOW / MAX_CHUNK {
        a.send(1, STDIN, &chunk);
    }
    let mut granted = 0;
    let mut out = Vec::new();
    loop {
        let f = a.recv_on(1);
        match f.kind {
            WINDOW => granted += u32::from_be_bytes(f.payload[..].try_into().unwrap()) as usize,
            STDOUT => out.extend_from_slice(&f.payload),
            EXIT => break,
            _ => panic!("{}", f.text()),
        }
    }
    assert_eq!(out, b"ok\n");
    assert_eq!(granted, INITIAL_WINDOW, "all stdin credit comes back even though nobody read it");
}

#[test]
fn more_stdin_than_the_window_is_a_protocol_error() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sleep", "30"], true));
    // Ignore WINDOWs and keep sending: the agent may grant what fits in the pipe, never 2 MiB.
    let w = a.writer();
    std::thread::spawn(move || {
        let chunk = common::encode(1, STDIN, &vec![b'z'; MAX_CHUNK]);
        for _ in 0..32 {
            let mut g = w.lock().unwrap();
            let Some(w) = g.as_mut() else { return };
            if std::io::Write::write_all(w, &chunk).is_err() {
                return;
            }
        }
    });
    loop {
        let f = a.recv_any();
        if f.kind == ERROR {
            assert_eq!(f.stream, 0);
            assert_eq!(field(&f.text(), "code").as_deref(), Some("protocol"), "{}", f.text());
            assert!(field(&f.text(), "message").unwrap().contains("credit"));
            break;
        }
        assert!(matches!(f.kind, WINDOW), "unexpected {:?}", f);
    }
    let status = a.wait_exit_status(Duration::from_secs(10)).expect("agent drops the connection and exits");
    assert_eq!(status.code(), Some(1));
}
