// Configures the guest's network from INIT's `net` (the host's network stack decides it): brings
// up lo and the virtio-net interface with its MTU, addresses and default routes, and writes
// resolv.conf and hosts into the sandbox root. Uses the classic interface ioctls (no netlink).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::{c_int, c_short, c_ulong, c_ushort, c_void};

use crate::sys;

const AF_INET: c_int = 2;
const AF_INET6: c_int = 10;
const SOCK_DGRAM: c_int = 2;
const SOCK_CLOEXEC: c_int = 0o2000000;

const SIOCADDRT: c_ulong = 0x890B;
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const SIOCSIFADDR: c_ulong = 0x8916;
const SIOCSIFNETMASK: c_ulong = 0x891C;
const SIOCSIFMTU: c_ulong = 0x8922;
const SIOCGIFINDEX: c_ulong = 0x8933;

const IFF_UP: c_short = 0x1;
const RTF_UP: c_ushort = 0x1;
const RTF_GATEWAY: c_ushort = 0x2;
const IFNAMSIZ: usize = 16;

extern "C" {
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
}

/// INIT's `net`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    pub mtu: u32,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: u8,
    pub ipv4_gateway: Ipv4Addr,
    pub ipv6: Option<(Ipv6Addr, u8, Ipv6Addr)>,
    pub nameservers: Vec<String>,
    pub hosts: Vec<(String, String)>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrIn {
    family: c_ushort,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
union IfrData {
    addr: SockaddrIn,
    flags: c_short,
    mtu: c_int,
    ifindex: c_int,
    pad: [u8; 24],
}

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: IfrData,
}

#[repr(C)]
struct RtEntry {
    pad1: c_ulong,
    dst: SockaddrIn,
    gateway: SockaddrIn,
    genmask: SockaddrIn,
    flags: c_ushort,
    pad2: c_short,
    pad3: c_ulong,
    pad4: *mut c_void,
    metric: c_short,
    dev: *mut u8,
    mtu: c_ulong,
    window: c_ulong,
    irtt: c_ushort,
}

#[repr(C)]
struct In6Ifreq {
    addr: [u8; 16],
    prefixlen: u32,
    ifindex: c_int,
}

#[repr(C)]
struct In6Rtmsg {
    dst: [u8; 16],
    src: [u8; 16],
    gateway: [u8; 16],
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: c_ulong,
    flags: u32,
    ifindex: c_int,
}

fn sockaddr_in(ip: Ipv4Addr) -> SockaddrIn {
    SockaddrIn { family: AF_INET as c_ushort, port: 0, addr: ip.octets(), zero: [0; 8] }
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    let mut req = IfReq { name: [0; IFNAMSIZ], data: IfrData { pad: [0; 24] } };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    Ok(req)
}

fn open_socket(domain: c_int) -> io::Result<OwnedFd> {
    let fd = unsafe { socket(domain, SOCK_DGRAM | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn do_ioctl<T>(sock: &OwnedFd, request: c_ulong, arg: &mut T, what: &str) -> Result<(), String> {
    sys::ioctl_struct(sock.as_raw_fd(), request, arg).map_err(|e| format!("{what}: {e}"))
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), String> {
    let mut req = ifreq(name).map_err(|e| e.to_string())?;
    do_ioctl(sock, SIOCGIFFLAGS, &mut req, &format!("reading the flags of {name}"))?;
    unsafe { req.data.flags |= IFF_UP };
    do_ioctl(sock, SIOCSIFFLAGS, &mut req, &format!("bringing {name} up"))
}

fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    Ipv4Addr::from(bits)
}

/// The first network interface that is not loopback (the virtio-net NIC), waiting briefly for it.
fn find_nic() -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut names: Vec<String> = fs::read_dir("/sys/class/net")
            .map_err(|e| format!("cannot list /sys/class/net: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(name) = names.into_iter().next() {
            return Ok(name);
        }
        if std::time::Instant::now() >= deadline {
            return Err("the host gave a network configuration but the guest has no network interface".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Brings up lo (always: programs expect localhost even without a NIC).
pub fn loopback_up() -> Result<(), String> {
    let sock = open_socket(AF_INET).map_err(|e| format!("socket: {e}"))?;
    set_up(&sock, "lo")
}

/// Configures the NIC. Returns its name.
pub fn configure(net: &NetConfig) -> Result<String, String> {
    let nic = find_nic()?;
    let sock = open_socket(AF_INET).map_err(|e| format!("socket: {e}"))?;

    let mut req = ifreq(&nic).map_err(|e| e.to_string())?;
    req.data.mtu = net.mtu as c_int;
    do_ioctl(&sock, SIOCSIFMTU, &mut req, &format!("setting the MTU of {nic} to {}", net.mtu))?;

    let mut req = ifreq(&nic).map_err(|e| e.to_string())?;
    req.data.addr = sockaddr_in(net.ipv4);
    do_ioctl(&sock, SIOCSIFADDR, &mut req, &format!("setting {nic}'s address to {}", net.ipv4))?;
    let mut req = ifreq(&nic).map_err(|e| e.to_string())?;
    req.data.addr = sockaddr_in(netmask(net.ipv4_prefix));
    do_ioctl(&sock, SIOCSIFNETMASK, &mut req, &format!("setting {nic}'s netmask to /{}", net.ipv4_prefix))?;

    if net.ipv6.is_some() {
        // The host's stack owns these addresses; duplicate detection would only delay them.
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{nic}/accept_dad"), "0");
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{nic}/accept_ra"), "0");
    }
    set_up(&sock, &nic)?;

    let mut route = RtEntry {
        pad1: 0,
        dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        gateway: sockaddr_in(net.ipv4_gateway),
        genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        flags: RTF_UP | RTF_GATEWAY,
        pad2: 0,
        pad3: 0,
        pad4: std::ptr::null_mut(),
        metric: 0,
        dev: std::ptr::null_mut(),
        mtu: 0,
        window: 0,
        irtt: 0,
    };
    do_ioctl(&sock, SIOCADDRT, &mut route, &format!("adding the default route via {}", net.ipv4_gateway))?;

    if let Some((address, prefix, gateway)) = net.ipv6 {
        let mut index_req = ifreq(&nic).map_err(|e| e.to_string())?;
        do_ioctl(&sock, SIOCGIFINDEX, &mut index_req, &format!("finding the index of {nic}"))?;
        let ifindex = unsafe { index_req.data.ifindex };
        let sock6 = open_socket(AF_INET6).map_err(|e| format!("IPv6 socket: {e}"))?;
        let mut addr = In6Ifreq { addr: address.octets(), prefixlen: u32::from(prefix), ifindex };
        do_ioctl(&sock6, SIOCSIFADDR, &mut addr, &format!("setting {nic}'s address to {address}/{prefix}"))?;
        let mut route6 = In6Rtmsg {
            dst: [0; 16],
            src: [0; 16],
            gateway: gateway.octets(),
            kind: 0,
            dst_len: 0,
            src_len: 0,
            metric: 1,
            info: 0,
            flags: u32::from(RTF_UP | RTF_GATEWAY),
            ifindex,
        };
        do_ioctl(&sock6, SIOCADDRT, &mut route6, &format!("adding the IPv6 default route via {gateway}"))?;
    }
    Ok(nic)
}

/// /etc/resolv.conf for the nameservers.
pub fn resolv_conf(net: &NetConfig) -> String {
    let mut out = String::from("# written by msb: the sandbox's DNS is answered by the host\n");
    for server in &net.nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    out
}

/// /etc/hosts with localhost, the sandbox's own name and the host's entries.
pub fn hosts_file(net: Option<&NetConfig>, hostname: &str) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match net {
        Some(net) => out.push_str(&format!("{}\t{hostname}\n", net.ipv4)),
        None => out.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    for (name, address) in net.map(|n| n.hosts.as_slice()).unwrap_or(&[]) {
        out.push_str(&format!("{address}\t{name}\n"));
    }
    out
}

/// Writes resolv.conf and hosts into the sandbox root (`root` is its outer path).
pub fn write_files(root: &str, net: Option<&NetConfig>, hostname: &str) -> Result<(), String> {
    let base = root.trim_end_matches('/');
    let etc = format!("{base}/etc");
    fs::create_dir_all(&etc).map_err(|e| format!("cannot create {etc}: {e}"))?;
    for (name, text) in [("hosts", hosts_file(net, hostname)), ("resolv.conf", net.map(resolv_conf).unwrap_or_default())] {
        if name == "resolv.conf" && net.is_none() {
            continue;
        }
        let path = format!("{etc}/{name}");
        // A symlink here (systemd-resolved images) would send our write elsewhere in the root.
        let _ = fs::remove_file(&path);
        fs::write(&path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetConfig {
        NetConfig {
            mtu: 65520,
            ipv4: "10.0.2.15".parse().unwrap(),
            ipv4_prefix: 24,
            ipv4_gateway: "10.0.2.2".parse().unwrap(),
            ipv6: Some(("fd6d:7362::15".parse().unwrap(), 64, "fd6d:7362::2".parse().unwrap())),
            nameservers: vec!["10.0.2.3".into(), "fd6d:7362::3".into()],
            hosts: vec![("host.msb.internal".into(), "10.0.2.2".into())],
        }
    }

    #[test]
    fn struct_layouts_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::size_of::<In6Ifreq>(), 24);
        assert_eq!(std::mem::size_of::<In6Rtmsg>(), 80);
        assert_eq!(std::mem::size_of::<SockaddrIn>(), 16);
    }

    #[test]
    fn netmasks_from_prefixes() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(10), Ipv4Addr::new(255, 192, 0, 0));
    }

    #[test]
    fn resolv_conf_and_hosts() {
        let net = sample();
        assert_eq!(resolv_conf(&net).lines().filter(|l| l.starts_with("nameserver")).count(), 2);
        let hosts = hosts_file(Some(&net), "box");
        assert!(hosts.contains("10.0.2.15\tbox\n"), "{hosts}");
        assert!(hosts.contains("10.0.2.2\thost.msb.internal\n"), "{hosts}");
        assert!(hosts_file(None, "box").contains("127.0.1.1\tbox\n"));
    }

    #[test]
    fn interface_names_are_bounded() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}
