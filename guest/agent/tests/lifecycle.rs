// The connection's life: handshake, SHUTDOWN, the host going away, orphans.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn hello_is_the_first_frame_and_names_protocol_and_version() {
    let mut a = Agent::spawn_raw(&[]);
    let f = a.recv_any();
    assert_eq!((f.stream, f.kind), (0, HELLO));
    assert_eq!(f.text(), format!(r#"{{"protocol":1,"agent":"{}"}}"#, env!("CARGO_PKG_VERSION")));
}

#[test]
fn ready_reports_boot_time_and_ping_echoes() {
    let mut a = Agent::start();
    a.ping(b"");
    a.ping(&[0u8; 64]);
}

#[test]
fn shutdown_ends_running_execs_then_the_agent() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sleep", "60"], false));
    a.exec(2, &exec_json(&["sh", "-c", "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.05; done"], false));
    assert_eq!(a.recv_on(2).text(), "ready\n");
    let started = Instant::now();
    a.send(0, SHUTDOWN, b"");
    let o1 = a.collect(1);
    assert_eq!(o1.signal(), Some(15), "SIGTERM first: {}", o1.exit);
    let o2 = a.collect(2);
    assert_eq!(o2.stdout_text(), "bye\n", "a process that handles SIGTERM gets to clean up");
    assert_eq!(o2.code(), Some(3));
    assert!(a.closed_within(Duration::from_secs(10)));
    assert_eq!(a.wait_exit_status(Duration::from_secs(5)).unwrap().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn shutdown_kills_what_ignores_sigterm() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], false));
    assert_eq!(a.recv_on(1).text(), "ready\n");
    a.send(0, SHUTDOWN, b"");
    let o = a.collect(1);
    assert_eq!(o.signal(), Some(9), "{}", o.exit);
    assert!(a.closed_within(Duration::from_secs(10)));
}

#[test]
fn exec_during_shutdown_is_refused_with_125() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], false));
    assert_eq!(a.recv_on(1).text(), "ready\n");
    a.send(0, SHUTDOWN, b"");
    a.exec(2, &exec_json(&["true"], false));
    let o = a.collect(2);
    assert_eq!(o.code(), Some(125));
    assert!(o.error().unwrap().contains("shutting down"));
}

#[test]
fn when_the_host_goes_away_everything_is_killed() {
    let mut a = Agent::start();
    a.exec(1, &exec_json(&["sh", "-c", "echo $$; exec sleep 60"], false));
    let pid: i32 = a.recv_on(1).text().trim().parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    a.close_input();
    let status = a.wait_exit_status(Duration::from_secs(10)).expect("agent exits when its input ends");
    assert_eq!(status.code(), Some(0));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "exec {pid} outlived the agent");
    assert!(a.log_text().contains("closed the agent connection"), "log: {}", a.log_text());
}

#[test]
fn orphans_are_reaped() {
    let mut a = Agent::start();
    let o = a.run(1, &["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"]);
    let orphan: i32 = o.stdout_text().trim().parse().unwrap();
    // The orphan re-parents to the agent (PID 1 in the VM, subreaper here) and must not
    // linger as a zombie once it exits.
    let reaped = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !Path::new(&format!("/proc/{orphan}")).exists()
    });
    assert!(reaped, "orphan {orphan} was not reaped");
    // Reaping orphans must not steal an exec's own exit status.
    let o = a.run(2, &["sh", "-c", "sleep 0.1 & exit 42"]);
    assert_eq!(o.code(), Some(42));
}
