// The sandbox root: with --root the agent chroots at INIT and every lookup happens inside.

mod common;
use common::*;
use std::path::Path;

const BUSYBOX: &str = "/bin/busybox";

#[test]
fn chroot_root_isolates_lookup_skipped_unless_root_with_static_busybox() {
    // SAFETY-free check for root: /proc/self/status Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    if uid != "0" || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs root (chroot) and a static {BUSYBOX} (apt-get install busybox-static)");
        return;
    }
    let root = std::env::temp_dir().join(format!("msb-agent-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "echo", "cat", "pwd"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    // An absolute symlink inside the root must resolve inside it (busybox picks the applet
    // from the link's name).
    std::os::unix::fs::symlink("/bin/busybox", root.join("data/echo")).unwrap();
    std::fs::write(root.join("data/marker"), "inside\n").unwrap();

    let mut a = Agent::spawn_raw(&["--root", root.to_str().unwrap()]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, br#"{"protocol":1,"root":{"kind":"initramfs","path":"/rootfs"},"env":{"PATH":"/bin"}}"#);
    assert_eq!(a.recv_any().kind, READY, "{}", a.log_text());

    let o = a.run(1, &["ls", "/"]);
    assert_eq!(o.stdout_text(), "bin\ndata\n", "the process sees only the sandbox root");
    let o = a.run(2, &["cat", "/data/marker"]);
    assert_eq!(o.stdout_text(), "inside\n");
    let o = a.run(3, &["/data/echo", "via absolute symlink"]);
    assert_eq!(o.stdout_text(), "via absolute symlink\n", "{}", o.exit);
    // Present on the host, absent in the root: not found.
    let o = a.run(4, &["bash", "-c", "true"]);
    assert_eq!(o.code(), Some(127));
    a.exec(5, r#"{"argv":["pwd"],"cwd":"/data"}"#);
    assert_eq!(a.collect(5).stdout_text(), "/data\n");
    drop(a);
    std::fs::remove_dir_all(&root).unwrap();
}
