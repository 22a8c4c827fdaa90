// Execs on a pseudo-terminal (EXEC "tty", an extension of protocol 1) and RESIZE.

mod common;
use common::*;

fn collect_text(a: &mut Agent, id: u32) -> (String, Outcome) {
    let o = a.collect(id);
    assert!(o.stderr.is_empty(), "a terminal has no separate stderr");
    (o.stdout_text(), o)
}

#[test]
fn a_tty_exec_sees_a_controlling_terminal_of_the_requested_size() {
    let mut a = Agent::start();
    a.exec(1, r#"{"argv":["sh","-c","test -t 0 && test -t 1 && test -t 2 && echo all-tty; stty size; echo err >&2; tty; ps -o tty= -p $$ 2>/dev/null || cut -d' ' -f7 /proc/$$/stat"],"tty":{"rows":30,"cols":100}}"#);
    let (out, o) = collect_text(&mut a, 1);
    assert_eq!(o.code(), Some(0), "{out}");
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines[0], "all-tty");
    assert_eq!(lines[1], "30 100");
    assert_eq!(lines[2], "err", "stderr goes to the terminal too");
    assert!(lines[3].starts_with("/dev/pts/"), "tty(1) names the pty: {out:?}");
    // Field 7 of /proc/PID/stat is the controlling terminal's device number (0 = none).
    assert_ne!(lines[4].trim(), "0", "the terminal must be the controlling terminal: {out:?}");
}

#[test]
fn resize_changes_the_window_size() {
    let mut a = Agent::start();
    a.exec(2, r#"{"argv":["sh","-c","stty size; read x; stty size"],"tty":true,"stdin":true}"#);
    let first = a.recv_on(2);
    assert_eq!(first.text(), "24 80\r\n", "default size");
    a.send(2, WINDOW, &(first.payload.len() as u32).to_be_bytes());
    a.send(2, RESIZE, br#"{"rows":50,"cols":132}"#);
    a.send(2, STDIN, b"go\n");
    let (out, o) = collect_text(&mut a, 2);
    assert_eq!(o.code(), Some(0));
    // The terminal echoes the input line before the second stty prints.
    assert!(out.ends_with("50 132\r\n"), "{out:?}");
}

#[test]
fn end_of_input_on_a_tty_is_the_eof_character() {
    let mut a = Agent::start();
    a.exec(3, r#"{"argv":["cat"],"tty":true,"stdin":true}"#);
    a.send(3, STDIN, b"hello\n");
    a.send(3, STDIN, b"");
    let (out, o) = collect_text(&mut a, 3);
    assert_eq!(o.code(), Some(0), "cat ended on ^D: {out:?} {}", o.exit);
    // Echo of the input, then cat's copy.
    assert_eq!(out, "hello\r\nhello\r\n");
}

#[test]
fn ctrl_c_on_the_terminal_interrupts_the_foreground_job() {
    let mut a = Agent::start();
    a.exec(4, r#"{"argv":["sh","-c","echo ready; exec sleep 60"],"tty":true,"stdin":true}"#);
    assert_eq!(a.recv_on(4).text(), "ready\r\n");
    a.send(4, STDIN, &[0x03]);
    let (_, o) = collect_text(&mut a, 4);
    assert_eq!(o.signal(), Some(2), "^C should deliver SIGINT: {}", o.exit);
}

#[test]
fn a_tty_exec_without_stdin_still_runs() {
    let mut a = Agent::start();
    a.exec(5, r#"{"argv":["echo","plain"],"tty":true}"#);
    let (out, o) = collect_text(&mut a, 5);
    assert_eq!((out.as_str(), o.code()), ("plain\r\n", Some(0)));
    a.send(5, RESIZE, br#"{"rows":10,"cols":10}"#);
    a.ping(b"resize after exit is quiet");
}
