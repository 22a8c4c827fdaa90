// Test harness helper: opens a TAP device and carries its frames over a unix stream socket as
// u32-BE-length + frame, exactly like qemu's `-netdev stream` does for a VM's NIC. One thread per
// direction so the kernel side runs at native speed while the stack handles the other end.
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

extern "C" {
    fn ioctl(fd: i32, req: u64, ...) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
}

#[repr(C)]
struct PollFd { fd: i32, events: i16, revents: i16 }

const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;
const O_NONBLOCK: i32 = 0o4000;
const POLLIN: i16 = 1;
/** Frames read back to back are sent in one write of up to this many bytes (fewer syscalls, like a batching VMM). */
const BATCH: usize = 256 * 1024;

const TUNSETIFF: u64 = 0x400454ca;
const TUNSETOFFLOAD: u64 = 0x400454d0;
const TUNSETVNETHDRSZ: u64 = 0x400454d8;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const TUN_F_CSUM: u64 = 1;
const TUN_F_TSO4: u64 = 2;
const TUN_F_TSO6: u64 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // With --vnet every frame carries a 12-byte virtio_net_hdr_v1 and the TAP offers checksum
    // offload and TSO, like a virtio-net device whose VMM passes the header through.
    let vnet = args.len() == 4 && args[3] == "--vnet";
    if args.len() != 3 && !vnet {
        eprintln!("usage: tap-pump <ifname> <unix-socket> [--vnet]");
        std::process::exit(2);
    }
    let tap = OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("open /dev/net/tun");
    let mut ifr = [0u8; 40];
    let name = args[1].as_bytes();
    ifr[..name.len()].copy_from_slice(name);
    let flags = IFF_TAP | IFF_NO_PI | if vnet { IFF_VNET_HDR } else { 0 };
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    if unsafe { ioctl(tap.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
        eprintln!("TUNSETIFF {}: {}", args[1], std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if vnet {
        let sz: i32 = 12;
        if unsafe { ioctl(tap.as_raw_fd(), TUNSETVNETHDRSZ, &sz as *const i32) } < 0
            || unsafe { ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) } < 0
        {
            eprintln!("TAP offload setup: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
    let sock = UnixStream::connect(&args[2]).expect("connect unix socket");
    // Tell the parent the device exists (it moves it into the namespace next).
    println!("ready");
    std::io::stdout().flush().ok();
    let mut tap_r = tap.try_clone().unwrap();
    let mut tap_w = tap;
    let mut sock_w = sock.try_clone().unwrap();
    let mut sock_r = std::io::BufReader::with_capacity(1 << 20, sock);
    let t = std::thread::spawn(move || {
        let fd = tap_r.as_raw_fd();
        unsafe { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) };
        let mut buf = vec![0u8; BATCH + 4 + 65536 + 128];
        let mut used = 0usize;
        loop {
            match tap_r.read(&mut buf[used + 4..used + 4 + 65536 + 128]) {
                Ok(0) => return,
                Ok(n) => {
                    buf[used..used + 4].copy_from_slice(&(n as u32).to_be_bytes());
                    used += 4 + n;
                    if used < BATCH { continue; }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if used == 0 {
                        let mut p = PollFd { fd, events: POLLIN, revents: 0 };
                        unsafe { poll(&mut p, 1, -1) };
                        continue;
                    }
                }
                Err(e) if e.raw_os_error() == Some(4) => continue,
                Err(_) => return,
            }
            if sock_w.write_all(&buf[..used]).is_err() { return; }
            used = 0;
        }
    });
    let mut frame = vec![0u8; 65536 + 128];
    loop {
        let mut len = [0u8; 4];
        if sock_r.read_exact(&mut len).is_err() { break; }
        let n = u32::from_be_bytes(len) as usize;
        if n > frame.len() { eprintln!("frame too long: {}", n); break; }
        if sock_r.read_exact(&mut frame[..n]).is_err() { break; }
        // A full TAP queue drops the frame like a real NIC would; TCP recovers.
        let _ = tap_w.write(&frame[..n]);
    }
    drop(t);
}
