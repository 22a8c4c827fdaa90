// A host that stops reading: the agent stops taking its frames instead of buffering without
// bound, and loses nothing once the host reads again.

mod common;
use common::*;
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_host_that_stops_reading_is_paused_not_buffered_and_nothing_is_lost() {
    let mut a = Agent::start();
    let payload = [0u8; 56];
    let pid: u32 = a.run(1, &["sh", "-c", "echo $PPID"]).stdout_text().trim().parse().unwrap();
    // Enough PINGs that their PONGs exceed the agent's output limit several times over.
    let n: u64 = 200_000;
    a.pause_reading(true);
    let w = a.writer();
    let writer = std::thread::spawn(move || {
        let mut burst = Vec::with_capacity(1 << 20);
        for i in 0..n {
            burst.extend(common::encode(0, PING, &[&i.to_be_bytes()[..], &payload].concat()));
            if burst.len() >= 1 << 20 || i == n - 1 {
                let mut g = w.lock().unwrap();
                std::io::Write::write_all(g.as_mut().unwrap(), &burst).unwrap();
                burst.clear();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let rss = rss_kib(pid);
    assert!(rss < 48 * 1024, "agent RSS grew to {rss} KiB while the host was not reading");
    assert!(!writer.is_finished(), "the agent took 13 MB of PINGs without anyone reading its PONGs");
    a.pause_reading(false);
    for i in 0..n {
        let f = a.recv_on(0);
        assert_eq!(f.kind, PONG, "{}", f.text());
        assert_eq!(f.payload[..8], i.to_be_bytes(), "PONG {i} out of order or lost");
    }
    writer.join().unwrap();
    a.ping(b"end");
}

/// The agent stops taking frames when its output backs up: frames it already read must still
/// be answered once the output drains, even if the host sends nothing more. Where the pause
/// falls in the input depends on buffer sizes, so try totals around the output limit.
#[test]
fn frames_read_before_a_pause_are_not_stranded() {
    // 64-byte PINGs: 73-byte PONGs; the agent pauses after about 4 MiB of unread output.
    let payload = [7u8; 56];
    for n in (57_000u64..60_000).step_by(250) {
        let mut a = Agent::start();
        a.pause_reading(true);
        let mut burst = Vec::new();
        for i in 0..n {
            burst.extend(common::encode(0, PING, &[&i.to_be_bytes()[..], &payload].concat()));
        }
        let w = a.writer();
        let writer = std::thread::spawn(move || {
            let mut g = w.lock().unwrap();
            std::io::Write::write_all(g.as_mut().unwrap(), &burst).unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        a.pause_reading(false);
        for i in 0..n {
            let f = a.recv_on(0);
            assert_eq!(f.payload[..8], i.to_be_bytes(), "n={n}: PONG {i} lost");
        }
        writer.join().unwrap();
    }
}
