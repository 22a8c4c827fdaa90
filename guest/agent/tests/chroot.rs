// The sandbox root: with --root the agent chroots at INIT and every lookup happens inside.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
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

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUbXNiLWNh\n-----END CERTIFICATE-----\n";

#[test]
fn init_ca_is_trusted_inside_the_root_skipped_unless_root_with_static_busybox() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    if uid != "0" || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs root (chroot) and a static {BUSYBOX} (apt-get install busybox-static)");
        return;
    }
    let root = std::env::temp_dir().join(format!("msb-agent-ca-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "env", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    // Debian's layout, with cert.pem an ABSOLUTE link: it must resolve inside the root (outside,
    // it would name this machine's own bundle, which must stay untouched).
    std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    let image_bundle = "# image bundle\n-----BEGIN CERTIFICATE-----\nSU1BR0U=\n-----END CERTIFICATE-----\n";
    std::fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), image_bundle).unwrap();
    std::os::unix::fs::symlink("/etc/ssl/certs/ca-certificates.crt", root.join("etc/ssl/cert.pem")).unwrap();
    let host_bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").ok();

    let init = format!(
        r#"{{"protocol":1,"root":{{"kind":"initramfs","path":"/rootfs"}},"env":{{"PATH":"/bin","CURL_CA_BUNDLE":"/mine.pem"}},"ca":{}}}"#,
        json_str(CA_PEM)
    );
    let mut a = Agent::spawn_raw(&["--root", root.to_str().unwrap()]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, init.as_bytes());
    assert_eq!(a.recv_any().kind, READY, "{}", a.log_text());

    let o = a.run(1, &["cat", "/etc/msb/ca.pem"]);
    assert_eq!(o.stdout_text(), CA_PEM);
    let o = a.run(2, &["cat", "/etc/ssl/cert.pem"]);
    assert_eq!(o.stdout_text(), format!("{image_bundle}{CA_PEM}"), "one copy, reached through the link too");
    let o = a.run(3, &["env"]);
    let env = o.stdout_text();
    for line in [
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
        "CURL_CA_BUNDLE=/mine.pem",
        "NODE_EXTRA_CA_CERTS=/etc/msb/ca.pem",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from:\n{env}");
    }
    // An exec's own env still overlays the base.
    a.exec(4, r#"{"argv":["env"],"env":{"SSL_CERT_FILE":"/other.pem"}}"#);
    assert!(a.collect(4).stdout_text().lines().any(|l| l == "SSL_CERT_FILE=/other.pem"));
    drop(a);
    assert_eq!(std::fs::read("/etc/ssl/certs/ca-certificates.crt").ok(), host_bundle, "this machine's bundle is untouched");
    assert_eq!(std::fs::metadata(root.join("etc/msb/ca.pem")).unwrap().permissions().mode() & 0o777, 0o644);

    // A second boot of the same root (a persistent sandbox's upper layer) adds nothing.
    let mut a = Agent::spawn_raw(&["--root", root.to_str().unwrap()]);
    assert_eq!(a.recv_any().kind, HELLO);
    a.send(0, INIT, init.as_bytes());
    assert_eq!(a.recv_any().kind, READY, "{}", a.log_text());
    assert_eq!(a.run(1, &["cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout_text(), format!("{image_bundle}{CA_PEM}"));
    drop(a);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn init_ca_without_a_sandbox_root_is_refused() {
    // Host test mode at "/" would edit this machine's bundles: the agent refuses instead.
    let mut a = Agent::spawn_raw(&[]);
    assert_eq!(a.recv_any().kind, HELLO);
    let init = format!(r#"{{"protocol":1,"root":{{"kind":"initramfs","path":"/rootfs"}},"ca":{}}}"#, json_str(CA_PEM));
    a.send(0, INIT, init.as_bytes());
    let f = a.recv_any();
    assert_eq!((f.kind, field(&f.text(), "code").as_deref()), (ERROR, Some("init")), "{}", f.text());
    assert!(field(&f.text(), "message").unwrap().contains("INIT.ca needs a sandbox root"), "{}", f.text());
}
