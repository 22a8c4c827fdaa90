// msb-agent: the guest agent. As PID 1 (/init in the sandbox VM) it sets up the machine and
// serves the host over the virtio-console port named `agent` (docs/protocol.md). With
// --serve-stdio or --connect-unix it serves the same protocol on the host, for tests.

mod flow;
mod frame;
mod json;
mod message;
mod netconf;
mod overlay;
mod pid1;
mod server;
mod spawn;
mod sys;
mod trust;
mod volumes;
mod users;
mod files;

use server::{Config, Conn, Server};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// How long PID 1 looks for the agent port before giving up (devices can trail init; TCG is slow).
const PORT_WAIT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
msb-agent: the msb guest agent. In the sandbox VM it runs as /init (PID 1) and needs no arguments.

Host-side test mode (no mounts, no clock or hostname changes, no reboot; exits when done):
  msb-agent --serve-stdio [--root DIR]          serve the protocol on stdin/stdout
  msb-agent --connect-unix PATH [--root DIR]    connect to a unix socket and serve it
  --root DIR   chroot into DIR at INIT (needs root); default / (no chroot)
  --version    print the version
";

fn main() {
    if sys::my_pid() == 1 {
        // The kernel passes unrecognised command-line words as arguments: ignore them.
        run_as_pid1();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match host_mode(&args) {
        Ok(never) => match never {},
        Err(msg) => {
            eprintln!("msb-agent: {msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn run_as_pid1() -> ! {
    std::panic::set_hook(Box::new(|info| {
        // PID 1 must not die (the kernel would panic): log and reset the VM instead.
        pid1::log(&format!("internal error: {info}"));
        pid1::power_off("the agent hit an internal error", None, &[]);
    }));
    let booted = pid1::early_boot();
    pid1::log(&format!("{} starting as PID 1", message::AGENT_VERSION));
    if let Err(e) = booted {
        pid1::power_off(&format!("early mounts failed: {e}"), None, &[]);
    }
    let sigchld = sys::sigchld_pipe().unwrap_or_else(|e| pid1::power_off(&format!("cannot watch children: {e}"), None, &[]));
    let (port, path) = pid1::open_agent_port(PORT_WAIT).unwrap_or_else(|e| pid1::power_off(&e, None, &[]));
    pid1::log(&format!("agent port is {path}; sending HELLO"));
    // The kernel hands unrecognised `name=value` command-line words to init as environment.
    let init_deadline = std::env::var("msb_init_timeout")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|secs| std::time::Instant::now() + std::time::Duration::from_secs(secs));
    let cfg = Config { pid1: true, root_override: None, init_deadline };
    Server::new(cfg, Conn::port(port), sigchld).run()
}

fn host_mode(args: &[String]) -> Result<std::convert::Infallible, String> {
    let mut stdio = false;
    let mut unix: Option<String> = None;
    let mut root: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--serve-stdio" => stdio = true,
            "--connect-unix" => unix = Some(it.next().ok_or("--connect-unix needs a socket path")?.clone()),
            "--root" => root = Some(it.next().ok_or("--root needs a directory")?.clone()),
            "--version" => {
                println!("msb-agent {}", message::AGENT_VERSION);
                std::process::exit(0);
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(r) = &root {
        if !r.starts_with('/') {
            return Err(format!("--root must be an absolute path, got {r:?}"));
        }
    }
    let conn = match (stdio, unix) {
        (true, None) => Conn::stdio().map_err(|e| format!("cannot use stdin/stdout: {e}"))?,
        (false, Some(path)) => {
            let s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("cannot connect to {path}: {e}"))?;
            Conn::socket(OwnedFd::from(s)).map_err(|e| format!("cannot use {path}: {e}"))?
        }
        (true, Some(_)) => return Err("choose one of --serve-stdio and --connect-unix".into()),
        (false, None) => {
            return Err("not running as PID 1; outside the VM, pass --serve-stdio or --connect-unix PATH".into())
        }
    };
    pid1::ensure_std_fds();
    // Orphans come back to the agent as they would to PID 1, so reaping is the same code.
    sys::become_subreaper().map_err(|e| format!("cannot become a child subreaper: {e}"))?;
    let sigchld = sys::sigchld_pipe().map_err(|e| format!("cannot watch children: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot chdir to /: {e}"))?;
    Server::new(Config { pid1: false, root_override: root, init_deadline: None }, conn, sigchld).run()
}
