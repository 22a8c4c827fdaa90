// virtio-console with VIRTIO_CONSOLE_F_MULTIPORT and one named port, as QEMU's virtio-serial +
// virtserialport present it: the guest sees port 1 named "agent" (vport0p1) and the host gets the
// port's raw byte stream on a unix socket.

use std::collections::VecDeque;
use std::os::unix::io::RawFd;

use super::mmio::{pop_valid, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use super::queue::Queue;
use super::stream::HostStream;
use crate::sys;
use crate::vstate::memory::GuestMemory;

pub const VIRTIO_ID_CONSOLE: u32 = 3;
const VIRTIO_CONSOLE_F_MULTIPORT: u64 = 1 << 1;
const MAX_PORTS: u32 = 2;
/// Our one port; port 0 is the (unannounced) console port, as with QEMU's virtserialport.
pub const AGENT_PORT: u32 = 1;

const Q_PORT0_RX: usize = 0;
const Q_PORT0_TX: usize = 1;
const Q_CTRL_RX: usize = 2;
const Q_CTRL_TX: usize = 3;
const Q_PORT1_RX: usize = 4;
const Q_PORT1_TX: usize = 5;
const QUEUE_SIZE: u16 = 128;

pub const DEVICE_READY: u16 = 0;
pub const DEVICE_ADD: u16 = 1;
pub const PORT_READY: u16 = 3;
pub const CONSOLE_PORT: u16 = 4;
pub const PORT_OPEN: u16 = 6;
pub const PORT_NAME: u16 = 7;
const CTRL_LEN: usize = 8;
/// Bytes read from the host at once, and held at most until the guest takes them.
const RX_CHUNK: usize = 64 * 1024;
/// Bytes taken from one guest buffer (Linux sends at most 32 KiB per buffer); the rest is dropped.
const TX_MAX_PER_BUFFER: usize = 1 << 20;
/// Bound on queued control messages; a guest spamming DEVICE_READY cannot grow it further.
const MAX_PENDING_CTRL: usize = 64;

pub struct Console {
    name: String,
    host: HostStream,
    ctrl_out: VecDeque<Vec<u8>>,
    rx_pending: Vec<u8>,
    guest_open: bool,
}

pub fn ctrl_msg(id: u32, event: u16, value: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(CTRL_LEN);
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&event.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m
}

impl Console {
    pub fn new(port_name: &str, host: HostStream) -> Console {
        Console { name: port_name.to_string(), host, ctrl_out: VecDeque::new(), rx_pending: Vec::new(), guest_open: false }
    }

    pub fn guest_open(&self) -> bool {
        self.guest_open
    }

    fn send_ctrl(&mut self, msg: Vec<u8>) {
        if self.ctrl_out.len() < MAX_PENDING_CTRL {
            self.ctrl_out.push_back(msg);
        }
    }

    fn handle_ctrl(&mut self, msg: &[u8]) {
        if msg.len() < CTRL_LEN {
            return;
        }
        let id = u32::from_le_bytes(msg[0..4].try_into().unwrap());
        let event = u16::from_le_bytes(msg[4..6].try_into().unwrap());
        let value = u16::from_le_bytes(msg[6..8].try_into().unwrap());
        match event {
            DEVICE_READY if value == 1 => self.send_ctrl(ctrl_msg(AGENT_PORT, DEVICE_ADD, 0)),
            PORT_READY if id == AGENT_PORT && value == 1 => {
                let mut m = ctrl_msg(AGENT_PORT, PORT_NAME, 1);
                m.extend_from_slice(self.name.as_bytes());
                self.send_ctrl(m);
                if !self.host.closed {
                    self.send_ctrl(ctrl_msg(AGENT_PORT, PORT_OPEN, 1));
                }
            }
            PORT_OPEN if id == AGENT_PORT => self.guest_open = value == 1,
            _ => {}
        }
    }

    fn flush_ctrl(&mut self, mem: &GuestMemory, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while !self.ctrl_out.is_empty() {
            let Some(chain) = pop_valid(q, mem)? else { break };
            let msg = self.ctrl_out.pop_front().unwrap();
            let n = chain.write_at(mem, 0, &msg);
            q.add_used(mem, chain.head, n as u32)?;
            used = true;
        }
        Ok(used)
    }

    fn deliver_rx(&mut self, mem: &GuestMemory, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while !self.rx_pending.is_empty() {
            let Some(chain) = pop_valid(q, mem)? else { break };
            let n = chain.write_at(mem, 0, &self.rx_pending);
            self.rx_pending.drain(..n);
            q.add_used(mem, chain.head, n as u32)?;
            used = true;
        }
        Ok(used)
    }

    fn take_tx(&mut self, mem: &GuestMemory, q: &mut Queue, keep: bool) -> Result<bool, DeviceError> {
        let mut used = false;
        while self.host.can_accept() {
            let Some(chain) = pop_valid(q, mem)? else { break };
            let data = chain.read_all(mem, TX_MAX_PER_BUFFER);
            if keep {
                self.host.queue(&data);
            }
            q.add_used(mem, chain.head, 0)?;
            used = true;
        }
        self.host.flush();
        Ok(used)
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }
    fn name(&self) -> &str {
        "virtio-console"
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 2 + 2 * MAX_PORTS as usize]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_console_config { u16 cols; u16 rows; u32 max_nr_ports; u32 emerg_wr; }
        let mut cfg = [0u8; 12];
        cfg[4..8].copy_from_slice(&MAX_PORTS.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.checked_add(i as u64).and_then(|o| cfg.get(o as usize)).copied().unwrap_or(0);
        }
    }
    fn reset(&mut self) {
        self.ctrl_out.clear();
        self.guest_open = false;
    }
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError> {
        match q {
            Q_CTRL_TX => {
                let mut used = false;
                while let Some(chain) = pop_valid(&mut queues[Q_CTRL_TX], mem)? {
                    let msg = chain.read_all(mem, CTRL_LEN);
                    self.handle_ctrl(&msg);
                    queues[Q_CTRL_TX].add_used(mem, chain.head, 0)?;
                    used = true;
                }
                Ok(self.flush_ctrl(mem, &mut queues[Q_CTRL_RX])? | used)
            }
            Q_CTRL_RX => self.flush_ctrl(mem, &mut queues[Q_CTRL_RX]),
            Q_PORT1_TX => self.take_tx(mem, &mut queues[Q_PORT1_TX], true),
            Q_PORT1_RX => self.deliver_rx(mem, &mut queues[Q_PORT1_RX]),
            // Port 0 was never announced; anything sent there is dropped.
            Q_PORT0_TX => self.take_tx(mem, &mut queues[Q_PORT0_TX], false),
            Q_PORT0_RX => Ok(false),
            _ => Ok(false),
        }
    }
    fn host_poll(&self) -> Option<(RawFd, i16)> {
        let fd = self.host.fd()?;
        // Not polling at all while there is nothing to do keeps a hung-up peer (POLLHUP is
        // always reported) from spinning the device thread.
        let ev = self.host.events(self.rx_pending.is_empty());
        if ev == 0 {
            return None;
        }
        Some((fd, ev))
    }
    fn process_host(&mut self, mem: &GuestMemory, queues: &mut [Queue], revents: i16) -> Result<bool, DeviceError> {
        if revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) != 0 && self.rx_pending.is_empty() {
            self.host.read_into(&mut self.rx_pending, RX_CHUNK);
        }
        self.host.flush();
        if queues.len() <= Q_PORT1_TX {
            return Ok(false);
        }
        let mut used = self.deliver_rx(mem, &mut queues[Q_PORT1_RX])?;
        // Room again on the host side: take what the guest queued meanwhile.
        if self.host.can_accept() {
            used |= self.take_tx(mem, &mut queues[Q_PORT1_TX], true)?;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::testing::{post, queues, Driver};
    use super::super::queue::*;
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn announces_the_named_port_and_relays_bytes_both_ways() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let (a, mut host) = UnixStream::pair().unwrap();
        let mut c = Console::new("agent", HostStream::new(Some(a)));
        let mut qs = queues(&m, 6);
        let mut av = [0u16; 6];
        for i in 0..4u16 {
            let q = qs[Q_CTRL_RX].clone();
            post(&m, &q, &mut av[Q_CTRL_RX], i, 0x40000 + 0x100 * i as u64, 64, VIRTQ_DESC_F_WRITE);
        }
        m.write(0x50000, &ctrl_msg(0, DEVICE_READY, 1)).unwrap();
        let q = qs[Q_CTRL_TX].clone();
        post(&m, &q, &mut av[Q_CTRL_TX], 0, 0x50000, 8, 0);
        assert!(c.process_queue(&m, &mut qs, Q_CTRL_TX).unwrap());
        assert_eq!(m.read_u16(0x40004).unwrap(), DEVICE_ADD);
        assert_eq!(m.read_u32(0x40000).unwrap(), AGENT_PORT);
        m.write(0x50000, &ctrl_msg(AGENT_PORT, PORT_READY, 1)).unwrap();
        let q = qs[Q_CTRL_TX].clone();
        post(&m, &q, &mut av[Q_CTRL_TX], 1, 0x50000, 8, 0);
        c.process_queue(&m, &mut qs, Q_CTRL_TX).unwrap();
        assert_eq!(m.read_u16(0x40104).unwrap(), PORT_NAME);
        let mut name = [0u8; 5];
        m.read(0x40108, &mut name).unwrap();
        assert_eq!(&name, b"agent");
        assert_eq!(m.read_u16(0x40204).unwrap(), PORT_OPEN);

        // Guest -> host.
        m.write(0x60000, b"ping").unwrap();
        let q = qs[Q_PORT1_TX].clone();
        post(&m, &q, &mut av[Q_PORT1_TX], 0, 0x60000, 4, 0);
        c.process_queue(&m, &mut qs, Q_PORT1_TX).unwrap();
        let mut got = [0u8; 4];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        // Host -> guest, arriving before the guest posted a buffer.
        host.write_all(b"pong").unwrap();
        c.process_host(&m, &mut qs, sys::POLLIN).unwrap();
        let q = qs[Q_PORT1_RX].clone();
        post(&m, &q, &mut av[Q_PORT1_RX], 0, 0x70000, 64, VIRTQ_DESC_F_WRITE);
        assert!(c.process_queue(&m, &mut qs, Q_PORT1_RX).unwrap());
        let mut got = [0u8; 4];
        m.read(0x70000, &mut got).unwrap();
        assert_eq!(&got, b"pong");
        assert_eq!(m.read_u32(qs[Q_PORT1_RX].used_ring + 8).unwrap(), 4);
    }

    #[test]
    fn a_closed_host_peer_is_dropped_not_polled() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let (a, host) = UnixStream::pair().unwrap();
        drop(host);
        let mut c = Console::new("agent", HostStream::new(Some(a)));
        let mut qs = queues(&m, 6);
        let mut av = [0u16; 6];
        m.write(0x60000, b"data").unwrap();
        let q = qs[Q_PORT1_TX].clone();
        post(&m, &q, &mut av[Q_PORT1_TX], 0, 0x60000, 4, 0);
        // The write hits EPIPE (sent with MSG_NOSIGNAL); the buffer still goes back to the guest.
        assert!(c.process_queue(&m, &mut qs, Q_PORT1_TX).unwrap());
        assert!(c.host.closed);
        assert!(c.host_poll().is_none());
    }

    #[test]
    fn short_and_bogus_control_messages_are_ignored() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut c = Console::new("agent", HostStream::new(None));
        c.handle_ctrl(&[1, 2, 3]);
        c.handle_ctrl(&ctrl_msg(77, PORT_READY, 1));
        assert!(c.ctrl_out.is_empty());
        for _ in 0..1000 {
            c.handle_ctrl(&ctrl_msg(0, DEVICE_READY, 1));
        }
        assert_eq!(c.ctrl_out.len(), MAX_PENDING_CTRL);
        let _ = m;
        let _ = Driver::new(2);
    }
}
