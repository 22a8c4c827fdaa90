// Many execs on one connection.

mod common;
use common::*;

#[test]
fn forty_concurrent_execs_on_one_connection() {
    let mut a = Agent::start();
    let ids: Vec<u32> = (1..=40).collect();
    // Each process blocks on stdin, so all forty are alive at the same time before any ends.
    for &id in &ids {
        a.exec(id, &exec_json(&["sh", "-c", "read x; echo out-$x; echo err-$x >&2; exit $((x % 7))"], true));
    }
    for &id in ids.iter().rev() {
        a.send(id, STDIN, format!("{id}\n").as_bytes());
        a.send(id, STDIN, b"");
    }
    let outs = a.collect_all(&ids);
    for id in ids {
        let o = &outs[&id];
        assert_eq!(o.stdout_text(), format!("out-{id}\n"));
        assert_eq!(o.stderr_text(), format!("err-{id}\n"));
        assert_eq!(o.code(), Some((id % 7) as i32), "stream {id}: {}", o.exit);
    }
}

#[test]
fn stream_ids_are_reusable_and_nothing_leaks() {
    let mut a = Agent::start();
    let pid = a.run(1, &["sh", "-c", "echo $PPID"]).stdout_text().trim().to_string();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = fds();
    for round in 0..50 {
        for id in 1..=4 {
            let o = a.run(id, &["sh", "-c", &format!("echo {round}-{id}")]);
            assert_eq!(o.stdout_text(), format!("{round}-{id}\n"));
        }
        // Failed starts must not leak either.
        assert_eq!(a.run(5, &["nosuchcmd-msb"]).code(), Some(127));
    }
    assert_eq!(fds(), before, "the agent's descriptor count grew");
    // No zombies left among the agent's children.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    for child in children.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(!stat.contains(") Z "), "zombie child {child}");
    }
}

#[test]
fn many_streams_with_output_interleave_correctly() {
    let mut a = Agent::start();
    let ids: Vec<u32> = (100..120).collect();
    for &id in &ids {
        a.exec(id, &exec_json(&["sh", "-c", &format!("i=0; while [ $i -lt 2000 ]; do echo {id}-$i; i=$((i+1)); done")], false));
    }
    let outs = a.collect_all(&ids);
    for id in ids {
        let expected: String = (0..2000).map(|i| format!("{id}-{i}\n")).collect();
        assert_eq!(outs[&id].stdout_text(), expected, "stream {id}");
    }
}
