// virtio-net whose wire is a unix stream of frames, each a u32 big-endian length followed by the
// Ethernet frame: the format QEMU's `-netdev stream` uses, so the supervisor's netstack sees the
// same bytes from either backend.

use std::os::unix::io::RawFd;

use super::mmio::{pop_valid, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use super::queue::Queue;
use super::stream::HostStream;
use crate::sys;
use crate::vstate::memory::GuestMemory;

pub const VIRTIO_ID_NET: u32 = 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// struct virtio_net_hdr_v1 (num_buffers included, as VERSION_1 requires).
pub const NET_HDR_LEN: usize = 12;
const NUM_BUFFERS_OFFSET: u64 = 10;
const LEN_PREFIX: usize = 4;
pub const MIN_FRAME: usize = 14;
/// Without offloads a frame is at most MTU 1500 + Ethernet header + VLAN tag; allow jumbo-ish
/// headroom but nothing near the u32 the length field could claim.
pub const MAX_FRAME: usize = 65535;
const Q_RX: usize = 0;
const Q_TX: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// Default MAC, the one QEMU gives its first NIC, so the guest sees the same device either way.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Default, Debug, Clone, Copy)]
pub struct NetCounters {
    pub tx_frames: u64,
    pub rx_frames: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
}

pub struct Net {
    host: HostStream,
    mac: [u8; 6],
    rx_buf: Vec<u8>,
    /// The host sent a length outside [MIN_FRAME, MAX_FRAME]: the stream is out of sync, so
    /// nothing more is read from it.
    rx_desync: bool,
    pub counters: NetCounters,
}

impl Net {
    pub fn new(host: HostStream, mac: [u8; 6]) -> Net {
        Net { host, mac, rx_buf: Vec::new(), rx_desync: false, counters: NetCounters::default() }
    }

    /// A complete frame at the front of rx_buf, as (start, len).
    fn next_frame(&mut self) -> Option<(usize, usize)> {
        if self.rx_buf.len() < LEN_PREFIX {
            return None;
        }
        let len = u32::from_be_bytes(self.rx_buf[..4].try_into().unwrap()) as usize;
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            self.rx_desync = true;
            self.rx_buf.clear();
            return None;
        }
        if self.rx_buf.len() < LEN_PREFIX + len {
            return None;
        }
        Some((LEN_PREFIX, len))
    }

    fn deliver_rx(&mut self, mem: &GuestMemory, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while let Some((start, len)) = self.next_frame() {
            let Some(chain) = pop_valid(q, mem)? else { break };
            let total = NET_HDR_LEN + len;
            if chain.writable_len() < total as u64 {
                // The guest's buffer is too small for this frame: drop the frame, return the buffer.
                self.counters.rx_dropped += 1;
                q.add_used(mem, chain.head, 0)?;
            } else {
                let mut hdr = [0u8; NET_HDR_LEN];
                hdr[NUM_BUFFERS_OFFSET as usize..].copy_from_slice(&1u16.to_le_bytes());
                chain.write_at(mem, 0, &hdr);
                chain.write_at(mem, NET_HDR_LEN as u64, &self.rx_buf[start..start + len]);
                q.add_used(mem, chain.head, total as u32)?;
                self.counters.rx_frames += 1;
            }
            self.rx_buf.drain(..start + len);
            used = true;
        }
        Ok(used)
    }

    fn take_tx(&mut self, mem: &GuestMemory, q: &mut Queue) -> Result<bool, DeviceError> {
        let mut used = false;
        while self.host.can_accept() {
            let Some(chain) = pop_valid(q, mem)? else { break };
            let data = chain.read_all(mem, NET_HDR_LEN + MAX_FRAME + 1);
            if data.len() < NET_HDR_LEN + MIN_FRAME || data.len() > NET_HDR_LEN + MAX_FRAME {
                self.counters.tx_dropped += 1;
            } else {
                let frame = &data[NET_HDR_LEN..];
                self.host.queue(&(frame.len() as u32).to_be_bytes());
                self.host.queue(frame);
                self.counters.tx_frames += 1;
            }
            q.add_used(mem, chain.head, 0)?;
            used = true;
        }
        self.host.flush();
        Ok(used)
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }
    fn name(&self) -> &str {
        "virtio-net"
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.checked_add(i as u64).and_then(|o| self.mac.get(o as usize)).copied().unwrap_or(0);
        }
    }
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError> {
        match q {
            Q_RX => self.deliver_rx(mem, &mut queues[Q_RX]),
            Q_TX => self.take_tx(mem, &mut queues[Q_TX]),
            _ => Ok(false),
        }
    }
    fn host_poll(&self) -> Option<(RawFd, i16)> {
        let fd = self.host.fd()?;
        // Read more only when no complete frame is waiting for a guest buffer.
        let want_in = !self.rx_desync && self.rx_buf.len() < LEN_PREFIX + MAX_FRAME && {
            self.rx_buf.len() < LEN_PREFIX
                || self.rx_buf.len() < LEN_PREFIX + u32::from_be_bytes(self.rx_buf[..4].try_into().unwrap()) as usize
        };
        let ev = self.host.events(want_in);
        if ev == 0 {
            return None; // see Console::host_poll: a hung-up peer must not spin the device thread
        }
        Some((fd, ev))
    }
    fn process_host(&mut self, mem: &GuestMemory, queues: &mut [Queue], revents: i16) -> Result<bool, DeviceError> {
        if revents & (sys::POLLIN | sys::POLLHUP | sys::POLLERR) != 0 && !self.rx_desync {
            let room = (LEN_PREFIX + MAX_FRAME).saturating_sub(self.rx_buf.len()).max(1);
            self.host.read_into(&mut self.rx_buf, room);
        }
        self.host.flush();
        if queues.len() <= Q_TX {
            return Ok(false);
        }
        let mut used = self.deliver_rx(mem, &mut queues[Q_RX])?;
        if self.host.can_accept() {
            used |= self.take_tx(mem, &mut queues[Q_TX])?;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::testing::{post, queues};
    use super::super::queue::*;
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn frames_cross_in_both_directions_with_length_prefix() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let (a, mut host) = UnixStream::pair().unwrap();
        let mut n = Net::new(HostStream::new(Some(a)), DEFAULT_MAC);
        let mut qs = queues(&m, 2);
        let (mut rx_av, mut tx_av) = (0u16, 0u16);
        let frame: Vec<u8> = (0..60u8).collect();
        m.write(0x40000, &[0u8; NET_HDR_LEN]).unwrap();
        m.write(0x40000 + NET_HDR_LEN as u64, &frame).unwrap();
        let q = qs[Q_TX].clone();
        post(&m, &q, &mut tx_av, 0, 0x40000, (NET_HDR_LEN + 60) as u32, 0);
        n.process_queue(&m, &mut qs, Q_TX).unwrap();
        let mut got = [0u8; 64];
        host.read_exact(&mut got).unwrap();
        assert_eq!(u32::from_be_bytes(got[..4].try_into().unwrap()), 60);
        assert_eq!(&got[4..], &frame[..]);

        let mut wire = 60u32.to_be_bytes().to_vec();
        wire.extend(frame.iter().rev());
        host.write_all(&wire).unwrap();
        let q = qs[Q_RX].clone();
        post(&m, &q, &mut rx_av, 0, 0x50000, 1526, VIRTQ_DESC_F_WRITE);
        n.process_host(&m, &mut qs, sys::POLLIN).unwrap();
        assert_eq!(m.read_u32(qs[Q_RX].used_ring + 8).unwrap(), (NET_HDR_LEN + 60) as u32);
        assert_eq!(m.read_u16(0x50000 + NUM_BUFFERS_OFFSET).unwrap(), 1);
        let mut back = [0u8; 60];
        m.read(0x50000 + NET_HDR_LEN as u64, &mut back).unwrap();
        assert_eq!(back[0], 59);
        assert_eq!(n.counters.rx_frames, 1);
    }

    #[test]
    fn oversize_and_undersize_frames_are_dropped() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let (a, mut host) = UnixStream::pair().unwrap();
        host.set_nonblocking(true).unwrap();
        let mut n = Net::new(HostStream::new(Some(a)), DEFAULT_MAC);
        let mut qs = queues(&m, 2);
        let (mut rx_av, mut tx_av) = (0u16, 0u16);
        // TX: header only, and a frame larger than MAX_FRAME spread over two descriptors.
        let q = qs[Q_TX].clone();
        post(&m, &q, &mut tx_av, 0, 0x40000, 12, 0);
        let at = q.desc_table + 16;
        m.write_u64(at, 0x60000).unwrap();
        m.write_u32(at + 8, 0x10000).unwrap();
        m.write_u16(at + 12, VIRTQ_DESC_F_NEXT).unwrap();
        m.write_u16(at + 14, 2).unwrap();
        let at2 = q.desc_table + 32;
        m.write_u64(at2, 0x70000).unwrap();
        m.write_u32(at2 + 8, 0x100).unwrap();
        m.write_u16(at2 + 12, 0).unwrap();
        m.write_u16(q.avail_ring + 4 + 2, 1).unwrap();
        tx_av += 1;
        m.write_u16(q.avail_ring + 2, tx_av).unwrap();
        n.process_queue(&m, &mut qs, Q_TX).unwrap();
        assert_eq!(n.counters.tx_dropped, 2);
        assert_eq!(n.counters.tx_frames, 0);
        let mut b = [0u8; 4];
        assert!(host.read(&mut b).is_err()); // nothing was sent

        // RX: a frame bigger than the guest's buffer is dropped, the buffer returned empty.
        let mut wire = 100u32.to_be_bytes().to_vec();
        wire.extend([7u8; 100]);
        host.write_all(&wire).unwrap();
        let q = qs[Q_RX].clone();
        post(&m, &q, &mut rx_av, 0, 0x50000, 50, VIRTQ_DESC_F_WRITE);
        n.process_host(&m, &mut qs, sys::POLLIN).unwrap();
        assert_eq!(n.counters.rx_dropped, 1);
        assert_eq!(m.read_u32(qs[Q_RX].used_ring + 8).unwrap(), 0);

        // RX: an impossible length desynchronises the stream: reading stops, nothing delivered.
        host.write_all(&0xffff_fff0u32.to_be_bytes()).unwrap();
        n.process_host(&m, &mut qs, sys::POLLIN).unwrap();
        assert!(n.rx_desync);
        assert!(n.host_poll().is_none_or(|(_, ev)| ev & sys::POLLIN == 0));
    }
}
