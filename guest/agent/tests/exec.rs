// Exec behaviour over the protocol: output, exit codes, start failures, signals, environment.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn echo_goes_to_stdout() {
    let mut a = Agent::start();
    let o = a.run(1, &["echo", "hello world"]);
    assert_eq!(o.stdout_text(), "hello world\n");
    assert!(o.stderr.is_empty());
    assert_eq!(o.exit, r#"{"code":0,"signal":null}"#);
}

#[test]
fn stderr_is_separate_and_the_exit_code_comes_through() {
    let mut a = Agent::start();
    let o = a.run(3, &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.stdout_text(), "out\n");
    assert_eq!(o.stderr_text(), "err\n");
    assert_eq!((o.code(), o.signal()), (Some(7), None));
}

#[test]
fn a_missing_command_is_127_naming_it_on_exit_and_stderr() {
    let mut a = Agent::start();
    let o = a.run(9, &["nosuchcmd-msb-test", "arg"]);
    assert_eq!(o.code(), Some(127));
    assert_eq!(o.signal(), None);
    assert_eq!(o.error().as_deref(), Some("command not found: nosuchcmd-msb-test"));
    assert_eq!(o.stderr_text(), "msb: command not found: nosuchcmd-msb-test\n");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_file_that_is_not_executable_is_126() {
    let dir = std::env::temp_dir().join(format!("msb-agent-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script");
    std::fs::write(&file, "#!/bin/sh\necho nope\n").unwrap();
    let mut a = Agent::start();
    let o = a.run(1, &[file.to_str().unwrap()]);
    assert_eq!(o.code(), Some(126), "{}", o.exit);
    assert!(o.error().unwrap().contains("permission denied") && o.error().unwrap().contains("script"));
    assert!(o.stderr_text().starts_with("msb: permission denied: "));
    // Not executable in PATH: found but refused is 126 as well.
    let o2 = a.run(2, &["sh", "-c", &format!("PATH={} exec script", dir.display())]);
    assert_eq!(o2.code(), Some(126), "the shell's own convention agrees: {}", o2.stderr_text());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_interpreter_is_126_naming_the_program() {
    let dir = std::env::temp_dir().join(format!("msb-agent-interp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script");
    std::fs::write(&file, "#!/nonexistent/interpreter\n").unwrap();
    std::process::Command::new("chmod").arg("755").arg(&file).status().unwrap();
    let mut a = Agent::start();
    let o = a.run(1, &[file.to_str().unwrap()]);
    assert_eq!(o.code(), Some(126), "{}", o.exit);
    assert!(o.error().unwrap().contains("interpreter"), "{}", o.exit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_working_directory_is_125_naming_it() {
    let mut a = Agent::start();
    a.exec(4, r#"{"argv":["pwd"],"cwd":"/no/such/dir-msb"}"#);
    let o = a.collect(4);
    assert_eq!(o.code(), Some(125));
    assert_eq!(o.error().as_deref(), Some("working directory does not exist: /no/such/dir-msb"));
    assert_eq!(o.stderr_text(), "msb: working directory does not exist: /no/such/dir-msb\n");
    a.exec(5, r#"{"argv":["pwd"],"cwd":"/etc/hostname"}"#);
    let o = a.collect(5);
    assert_eq!(o.code(), Some(125));
    assert!(o.error().unwrap().contains("/etc/hostname"));
}

#[test]
fn a_nul_byte_in_an_argument_is_a_bad_request_125() {
    let mut a = Agent::start();
    a.exec(1, r#"{"argv":["echo","a\u0000b"]}"#);
    let o = a.collect(1);
    assert_eq!(o.code(), Some(125));
    assert_eq!(o.error().as_deref(), Some("bad request: argv[1] contains a NUL byte"));
}

#[test]
fn killed_by_a_signal_reports_the_signal_not_a_code() {
    let mut a = Agent::start();
    let o = a.run(7, &["sh", "-c", "kill -9 $$"]);
    assert_eq!(o.exit, r#"{"code":null,"signal":9}"#);
}

#[test]
fn signal_reaches_the_whole_process_group() {
    let mut a = Agent::start();
    // The shell starts a background sleep and waits; SIGTERM must reach both.
    a.exec(2, &exec_json(&["sh", "-c", "sleep 60 & echo $!; wait"], false));
    let first = a.recv_on(2);
    assert_eq!(first.kind, STDOUT);
    let child: i32 = first.text().trim().parse().unwrap();
    let started = Instant::now();
    a.send(2, SIGNAL, br#"{"signal":15}"#);
    let o = a.collect(2);
    assert_eq!(o.signal(), Some(15), "{}", o.exit);
    assert!(started.elapsed() < Duration::from_secs(20), "EXIT came only after the sleep would have ended");
    // The background sleep got the signal too (then re-parented to the agent and reaped).
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !std::path::Path::new(&format!("/proc/{child}")).exists()
    });
    assert!(gone, "background child {child} survived SIGNAL to its process group");
}

#[test]
fn each_exec_is_its_own_session_and_process_group_leader() {
    let mut a = Agent::start();
    // Fields 5 and 6 of /proc/PID/stat are the process group and the session.
    let o = a.run(1, &["sh", "-c", "echo $$; cut -d' ' -f5,6 /proc/$$/stat"]);
    let out = o.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    let pid = lines[0];
    assert_eq!(lines[1], format!("{pid} {pid}"), "pgrp and session should equal the exec's pid");
}

#[test]
fn environment_is_init_base_overlaid_by_exec_env() {
    let mut a = Agent::start();
    a.exec(1, r#"{"argv":["sh","-c","echo $MSB_TEST $OWN; echo $PATH"],"env":{"OWN":"mine"}}"#);
    let o = a.collect(1);
    let out = o.stdout_text();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("base mine"));
    assert_eq!(lines.next(), Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    a.exec(2, r#"{"argv":["sh","-c","echo $MSB_TEST"],"env":{"MSB_TEST":"override"}}"#);
    assert_eq!(a.collect(2).stdout_text(), "override\n");
    // Nothing leaks from the agent's own environment.
    a.exec(3, r#"{"argv":["sh","-c","echo ${CARGO_MANIFEST_DIR:-unset}"]}"#);
    assert_eq!(a.collect(3).stdout_text(), "unset\n");
}

#[test]
fn the_working_directory_is_applied() {
    let mut a = Agent::start();
    a.exec(1, r#"{"argv":["pwd"],"cwd":"/tmp"}"#);
    assert_eq!(a.collect(1).stdout_text(), "/tmp\n");
    a.exec(2, r#"{"argv":["pwd"]}"#);
    assert_eq!(a.collect(2).stdout_text(), "/\n", "default cwd is /");
}

#[test]
fn without_stdin_the_process_reads_end_of_file() {
    let mut a = Agent::start();
    let o = a.run(1, &["sh", "-c", "cat; echo done; test -c /dev/stdin && echo chardev"]);
    assert_eq!(o.stdout_text(), "done\nchardev\n", "stdin should be /dev/null");
    assert_eq!(o.code(), Some(0));
}

#[test]
fn exit_does_not_wait_for_descendants_holding_the_pipes() {
    let mut a = Agent::start();
    let started = Instant::now();
    let o = a.run(1, &["sh", "-c", "(sleep 5; echo late) & echo early"]);
    assert_eq!(o.stdout_text(), "early\n", "output written after EXIT is dropped");
    assert_eq!(o.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "EXIT waited for the background job");
    a.ping(b"still here");
}

#[test]
fn all_output_comes_before_exit() {
    let mut a = Agent::start();
    // The process exits immediately after writing a lot: nothing may be lost or reordered.
    let o = a.run(1, &["sh", "-c", "head -c 1000000 /dev/urandom | od -An -v -tx1 | head -c 2000000; echo END >&2"]);
    assert_eq!(o.stdout.len(), 2_000_000);
    assert_eq!(o.stderr_text(), "END\n");
}
