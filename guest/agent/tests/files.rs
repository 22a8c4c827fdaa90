// FILE streams: streaming read and write within credit, one-shot operations, errors by code,
// cancellation, and the stream limit shared with execs.

mod common;
use common::*;

/// A fresh directory under the system temp dir, removed at the end.
struct Scratch(String);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("msb-agent-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p.to_string_lossy().into_owned())
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends a one-shot FILE op and returns (FILE_RESULT or ERROR kind, payload text).
fn op(a: &mut Agent, id: u32, json: &str) -> (u8, String) {
    a.send(id, FILE, json.as_bytes());
    let f = a.recv_on(id);
    (f.kind, f.text())
}

#[test]
fn write_then_read_back_a_file_larger_than_the_windows() {
    let d = Scratch::new("rw");
    let mut a = Agent::start();
    let path = format!("{}/big", d.0);
    let data = pattern(5 * 1024 * 1024 + 777, 7);
    a.send(1, FILE, format!(r#"{{"op":"write","path":"{path}","mode":384}}"#).as_bytes());
    // The agent widens a write's window up front; never send beyond the credit it granted.
    let mut credit = INITIAL_WINDOW;
    let mut sent = 0;
    while sent < data.len() {
        while credit == 0 {
            let f = a.recv_on(1);
            assert_eq!(f.kind, WINDOW, "{}", f.text());
            credit += u32::from_be_bytes(f.payload[..].try_into().unwrap()) as usize;
        }
        let n = credit.min(MAX_CHUNK).min(data.len() - sent);
        a.send(1, DATA, &data[sent..sent + n]);
        sent += n;
        credit -= n;
    }
    a.send(1, DATA, b"");
    let result = loop {
        let f = a.recv_on(1);
        if f.kind != WINDOW {
            break f;
        }
    };
    assert_eq!(result.kind, FILE_RESULT, "{}", result.text());
    assert_eq!(field(&result.text(), "size"), Some(data.len().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);

    // Read it back, granting credit only as we "consume": the agent never exceeds it.
    a.send(2, FILE, format!(r#"{{"op":"read","path":"{path}"}}"#).as_bytes());
    let mut got = Vec::new();
    let mut outstanding = INITIAL_WINDOW;
    loop {
        let f = a.recv_on(2);
        match f.kind {
            DATA => {
                assert!(f.payload.len() <= outstanding && f.payload.len() <= MAX_CHUNK);
                outstanding -= f.payload.len();
                got.extend_from_slice(&f.payload);
                a.send(2, WINDOW, &(f.payload.len() as u32).to_be_bytes());
                outstanding += f.payload.len();
            }
            FILE_RESULT => {
                assert_eq!(field(&f.text(), "size"), Some(data.len().to_string()));
                break;
            }
            other => panic!("unexpected 0x{other:02x}: {}", f.text()),
        }
    }
    assert_eq!(got, data);
}

#[test]
fn a_read_pauses_without_credit() {
    let d = Scratch::new("pause");
    let path = format!("{}/f", d.0);
    std::fs::write(&path, pattern(2 * 1024 * 1024, 3)).unwrap();
    let mut a = Agent::start();
    a.send(1, FILE, format!(r#"{{"op":"read","path":"{path}"}}"#).as_bytes());
    let mut received = 0;
    while let Some(f) = a.try_recv(std::time::Duration::from_millis(500)) {
        assert_eq!(f.kind, DATA);
        received += f.payload.len();
    }
    assert_eq!(received, INITIAL_WINDOW, "exactly one window without WINDOW frames");
    // Cancelling ends the stream with ERROR cancelled; the id is then free.
    a.send(1, SIGNAL, br#"{"signal":9}"#);
    let f = a.recv_on(1);
    assert_eq!((f.kind, field(&f.text(), "code")), (ERROR, Some("cancelled".into())));
    assert_eq!(op(&mut a, 1, &format!(r#"{{"op":"exists","path":"{path}"}}"#)), (FILE_RESULT, r#"{"exists":true}"#.into()));
}

#[test]
fn one_shot_operations_and_their_errors() {
    let d = Scratch::new("ops");
    let mut a = Agent::start();
    let p = &d.0;
    assert_eq!(op(&mut a, 1, &format!(r#"{{"op":"mkdir","path":"{p}/x/y","parents":true}}"#)).0, FILE_RESULT);
    let (k, t) = op(&mut a, 2, &format!(r#"{{"op":"mkdir","path":"{p}/x"}}"#));
    assert_eq!((k, field(&t, "code")), (ERROR, Some("exists".into())));
    std::fs::write(format!("{p}/x/y/f"), "hello").unwrap();
    let (k, t) = op(&mut a, 3, &format!(r#"{{"op":"stat","path":"{p}/x/y/f"}}"#));
    assert_eq!(k, FILE_RESULT);
    assert_eq!((field(&t, "type"), field(&t, "size")), (Some("file".into()), Some("5".into())));
    let (k, t) = op(&mut a, 4, &format!(r#"{{"op":"read","path":"{p}/nope"}}"#));
    assert_eq!((k, field(&t, "code")), (ERROR, Some("not_found".into())));
    assert!(field(&t, "message").unwrap().contains(&format!("{p}/nope")));
    let (k, t) = op(&mut a, 5, r#"{"op":"read","path":"relative"}"#);
    assert_eq!((k, field(&t, "code")), (ERROR, Some("invalid".into())));
    let (k, t) = op(&mut a, 6, &format!(r#"{{"op":"remove","path":"{p}/x"}}"#));
    assert_eq!((k, field(&t, "code")), (ERROR, Some("not_empty".into())));

    // list: JSON lines as DATA, then the count.
    for i in 0..300 {
        std::fs::write(format!("{p}/x/f{i}"), "").unwrap();
    }
    a.send(7, FILE, format!(r#"{{"op":"list","path":"{p}/x"}}"#).as_bytes());
    let mut text = String::new();
    let count = loop {
        let f = a.recv_on(7);
        match f.kind {
            DATA => {
                text.push_str(&f.text());
                a.send(7, WINDOW, &(f.payload.len() as u32).to_be_bytes());
            }
            FILE_RESULT => break field(&f.text(), "count").unwrap(),
            other => panic!("0x{other:02x}"),
        }
    };
    assert_eq!(count, "301");
    assert_eq!(text.lines().count(), 301);
    assert!(text.lines().any(|l| l.contains(r#""name":"y""#) && l.contains(r#""type":"directory""#)));

    assert_eq!(op(&mut a, 8, &format!(r#"{{"op":"remove","path":"{p}/x","recursive":true}}"#)).0, FILE_RESULT);
    assert!(!std::path::Path::new(&format!("{p}/x")).exists());
    // DATA on a stream that is not a write ends it with an ERROR; the connection carries on.
    // Bigger than a window, so the read is still open when DATA arrives.
    std::fs::write(format!("{p}/big"), pattern(2 * 1024 * 1024, 1)).unwrap();
    a.send(10, FILE, format!(r#"{{"op":"read","path":"{p}/big"}}"#).as_bytes());
    a.send(10, DATA, b"junk");
    loop {
        let f = a.recv_on(10);
        assert_ne!(f.kind, FILE_RESULT, "the read went on after the ERROR that ended it");
        if f.kind == ERROR {
            assert!(f.text().contains("not a FILE write"), "{}", f.text());
            break;
        }
    }
    assert_eq!(a.run(9, &["true"]).code(), Some(0));
}

#[test]
fn a_timeout_kills_the_group_and_exit_says_so() {
    let mut a = Agent::start();
    let started = std::time::Instant::now();
    a.exec(1, r#"{"argv":["sh","-c","sleep 30 & sleep 30"],"timeoutMs":300}"#);
    let o = a.collect(1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(o.signal(), Some(9), "{}", o.exit);
    assert_eq!(field(&o.exit, "timedOut"), Some("true".into()));
    let quick = a.run(2, &["true"]);
    assert_eq!(field(&quick.exit, "timedOut"), None, "only a timed-out exec says timedOut");
}

#[test]
fn a_user_by_name_runs_with_its_ids() {
    if my_uid() != 0 {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let mut a = Agent::start();
    // `nobody` is in every Debian /etc/passwd (the test runs with root "/").
    a.exec(1, r#"{"argv":["sh","-c","echo $(id -u) $HOME"],"user":"nobody"}"#);
    let o = a.collect(1);
    assert_eq!(o.stdout_text(), "65534 /nonexistent\n", "{}", o.stderr_text());
    a.exec(2, r#"{"argv":["id"],"user":"no-such-user-msb"}"#);
    let o = a.collect(2);
    assert_eq!(o.code(), Some(125));
    assert!(o.stderr_text().contains("unknown user \"no-such-user-msb\""), "{}", o.stderr_text());
}

fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(1)
}

#[test]
fn streams_beyond_the_limit_are_refused_one_by_one() {
    let mut a = Agent::start();
    for id in 1..=1024u32 {
        a.exec(id, r#"{"argv":["sleep","30"]}"#);
    }
    a.exec(2000, r#"{"argv":["true"]}"#);
    let f = a.recv_on(2000);
    assert_eq!((f.kind, field(&f.text(), "code")), (ERROR, Some("limit".into())), "{}", f.text());
    assert!(field(&f.text(), "message").unwrap().contains("1024 streams"));
    // The connection and the other streams are fine: end one, and a new one fits.
    a.send(1, SIGNAL, br#"{"signal":9}"#);
    let o = a.collect(1);
    assert_eq!(o.signal(), Some(9));
    assert_eq!(a.run(2001, &["true"]).code(), Some(0));
}
