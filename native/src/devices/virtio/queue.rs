// A split virtqueue as the device sees it. The rings and descriptors live in guest memory and are
// hostile: indices are bounded by the queue size, chains by a step limit (so loops end), and
// every buffer address by guest RAM.

use std::fmt;
use std::sync::atomic::{fence, Ordering};

use crate::vstate::memory::GuestMemory;

pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
const DESC_LEN: u64 = 16;
const RING_HEADER: u64 = 4;
const USED_ELEM_LEN: u64 = 8;

#[derive(Debug, PartialEq)]
pub enum QueueError {
    /// The queue layout (size, alignment, placement) is invalid.
    BadLayout,
    /// The driver moved avail.idx further than the queue size ahead of the device.
    AvailOverrun { avail: u16, next: u16 },
    /// A descriptor index is beyond the queue size.
    BadIndex(u16),
    /// A chain is longer than the queue: a loop.
    ChainLoop,
    /// A buffer lies outside guest RAM.
    BadBuffer { addr: u64, len: u32 },
    /// A device-readable buffer follows a device-writable one.
    ReadableAfterWritable,
    /// The driver used an indirect descriptor, which this device did not offer.
    Indirect,
    /// A ring access fell outside guest memory (the layout changed under us).
    Memory,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            QueueError::BadLayout => write!(f, "virtqueue layout is invalid (size not a power of two, misaligned or outside RAM)"),
            QueueError::AvailOverrun { avail, next } => write!(f, "driver's avail.idx {avail} is more than a queue ahead of {next}"),
            QueueError::BadIndex(i) => write!(f, "descriptor index {i} is beyond the queue size"),
            QueueError::ChainLoop => write!(f, "descriptor chain is longer than the queue (a loop)"),
            QueueError::BadBuffer { addr, len } => write!(f, "descriptor buffer {addr:#x}+{len:#x} is outside guest RAM"),
            QueueError::ReadableAfterWritable => write!(f, "device-readable descriptor after a device-writable one"),
            QueueError::Indirect => write!(f, "indirect descriptor used but VIRTIO_F_INDIRECT_DESC was not offered"),
            QueueError::Memory => write!(f, "virtqueue ring is outside guest RAM"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// A validated descriptor chain: readable buffers first, then writable ones.
#[derive(Debug)]
pub struct DescChain {
    pub head: u16,
    pub descs: Vec<Desc>,
}

impl DescChain {
    pub fn readable_len(&self) -> u64 {
        self.descs.iter().filter(|d| !d.write).map(|d| d.len as u64).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.descs.iter().filter(|d| d.write).map(|d| d.len as u64).sum()
    }

    /// Reads up to `max` bytes of the readable part.
    pub fn read_all(&self, mem: &GuestMemory, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for d in self.descs.iter().filter(|d| !d.write) {
            let take = (d.len as usize).min(max - out.len());
            let start = out.len();
            out.resize(start + take, 0);
            // Validated at pop time; a failure here can only come from a racing layout change.
            if mem.read(d.addr, &mut out[start..]).is_err() {
                out.truncate(start);
                break;
            }
            if out.len() == max {
                break;
            }
        }
        out
    }

    /// Writes `data` into the writable part starting `offset` bytes in; returns bytes written.
    pub fn write_at(&self, mem: &GuestMemory, mut offset: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for d in self.descs.iter().filter(|d| d.write) {
            if done == data.len() {
                break;
            }
            if offset >= d.len as u64 {
                offset -= d.len as u64;
                continue;
            }
            let room = (d.len as u64 - offset) as usize;
            let n = room.min(data.len() - done);
            if mem.write(d.addr + offset, &data[done..done + n]).is_err() {
                break;
            }
            done += n;
            offset = 0;
        }
        done
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
}

impl Queue {
    pub fn new(max_size: u16) -> Queue {
        Queue { max_size, size: max_size, ready: false, desc_table: 0, avail_ring: 0, used_ring: 0, next_avail: 0, next_used: 0 }
    }

    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    pub fn is_valid(&self, mem: &GuestMemory) -> bool {
        let s = self.size as u64;
        self.size != 0
            && self.size <= self.max_size
            && self.size.is_power_of_two()
            && self.desc_table.is_multiple_of(16)
            && self.avail_ring.is_multiple_of(2)
            && self.used_ring.is_multiple_of(4)
            && mem.check_range(self.desc_table, (DESC_LEN * s) as usize).is_ok()
            && mem.check_range(self.avail_ring, (RING_HEADER + 2 * s + 2) as usize).is_ok()
            && mem.check_range(self.used_ring, (RING_HEADER + USED_ELEM_LEN * s + 2) as usize).is_ok()
    }

    /// Whether the driver has made buffers available that the device has not taken.
    pub fn has_available(&self, mem: &GuestMemory) -> bool {
        mem.read_u16(self.avail_ring + 2).map(|i| i != self.next_avail).unwrap_or(false)
    }

    /// Takes the next available chain. `Ok(None)`: nothing available. A malformed chain is an
    /// `Err` carrying its head (when known), so the caller can return it used with length 0.
    pub fn pop(&mut self, mem: &GuestMemory) -> Result<Option<DescChain>, (Option<u16>, QueueError)> {
        if !self.ready {
            return Ok(None);
        }
        let avail_idx = mem.read_u16(self.avail_ring + 2).map_err(|_| (None, QueueError::Memory))?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err((None, QueueError::AvailOverrun { avail: avail_idx, next: self.next_avail }));
        }
        // Ring entries must be read after the index that published them.
        fence(Ordering::Acquire);
        let slot = self.next_avail % self.size;
        let head = mem
            .read_u16(self.avail_ring + RING_HEADER + 2 * slot as u64)
            .map_err(|_| (None, QueueError::Memory))?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if head >= self.size {
            return Err((None, QueueError::BadIndex(head)));
        }
        self.walk(mem, head).map(Some).map_err(|e| (Some(head), e))
    }

    fn walk(&self, mem: &GuestMemory, head: u16) -> Result<DescChain, QueueError> {
        let mut descs = Vec::new();
        let mut idx = head;
        let mut seen_write = false;
        loop {
            if descs.len() >= self.size as usize {
                return Err(QueueError::ChainLoop);
            }
            let at = self.desc_table + DESC_LEN * idx as u64;
            let addr = mem.read_u64(at).map_err(|_| QueueError::Memory)?;
            let len = mem.read_u32(at + 8).map_err(|_| QueueError::Memory)?;
            let flags = mem.read_u16(at + 12).map_err(|_| QueueError::Memory)?;
            let next = mem.read_u16(at + 14).map_err(|_| QueueError::Memory)?;
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            if mem.check_range(addr, len as usize).is_err() {
                return Err(QueueError::BadBuffer { addr, len });
            }
            let write = flags & VIRTQ_DESC_F_WRITE != 0;
            if !write && seen_write {
                return Err(QueueError::ReadableAfterWritable);
            }
            seen_write |= write;
            descs.push(Desc { addr, len, write });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            if next >= self.size {
                return Err(QueueError::BadIndex(next));
            }
            idx = next;
        }
        Ok(DescChain { head, descs })
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), QueueError> {
        let slot = self.next_used % self.size;
        let at = self.used_ring + RING_HEADER + USED_ELEM_LEN * slot as u64;
        mem.write_u32(at, head as u32).map_err(|_| QueueError::Memory)?;
        mem.write_u32(at + 4, len).map_err(|_| QueueError::Memory)?;
        self.next_used = self.next_used.wrapping_add(1);
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        mem.write_u16(self.used_ring + 2, self.next_used).map_err(|_| QueueError::Memory)?;
        Ok(())
    }
}

/// Test helper: a driver-side view that builds rings in synthetic guest memory.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// `count` ready queues of 8 descriptors, each with its rings in its own 16 KiB of `mem`
    /// from 0x10000 (for devices with several queues; `Driver` drives a single one).
    pub fn queues(mem: &GuestMemory, count: u64) -> Vec<Queue> {
        (0..count)
            .map(|i| {
                let mut q = Queue::new(8);
                q.size = 8;
                q.desc_table = 0x10000 + i * 0x4000;
                q.avail_ring = q.desc_table + 0x1000;
                q.used_ring = q.desc_table + 0x2000;
                q.ready = q.is_valid(mem);
                q
            })
            .collect()
    }

    /// Puts one descriptor `desc` (no chain) in `q` and makes it available, as a driver would.
    pub fn post(mem: &GuestMemory, q: &Queue, avail: &mut u16, desc: u16, addr: u64, len: u32, flags: u16) {
        let at = q.desc_table + 16 * desc as u64;
        mem.write_u64(at, addr).unwrap();
        mem.write_u32(at + 8, len).unwrap();
        mem.write_u16(at + 12, flags).unwrap();
        mem.write_u16(at + 14, 0).unwrap();
        mem.write_u16(q.avail_ring + 4 + 2 * (*avail % q.size) as u64, desc).unwrap();
        *avail += 1;
        mem.write_u16(q.avail_ring + 2, *avail).unwrap();
    }

    pub struct Driver {
        pub q: Queue,
        pub avail_idx: u16,
    }

    pub const DESC: u64 = 0x1000;
    pub const AVAIL: u64 = 0x2000;
    pub const USED: u64 = 0x3000;

    impl Driver {
        pub fn new(size: u16) -> Driver {
            let mut q = Queue::new(size);
            q.size = size;
            q.desc_table = DESC;
            q.avail_ring = AVAIL;
            q.used_ring = USED;
            q.ready = true;
            Driver { q, avail_idx: 0 }
        }
        pub fn set_desc(&self, mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = DESC + 16 * i as u64;
            mem.write_u64(at, addr).unwrap();
            mem.write_u32(at + 8, len).unwrap();
            mem.write_u16(at + 12, flags).unwrap();
            mem.write_u16(at + 14, next).unwrap();
        }
        pub fn publish(&mut self, mem: &GuestMemory, head: u16) {
            let slot = self.avail_idx % self.q.size;
            mem.write_u16(AVAIL + 4 + 2 * slot as u64, head).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_u16(AVAIL + 2, self.avail_idx).unwrap();
        }
        pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
            mem.read_u16(USED + 2).unwrap()
        }
        pub fn used_elem(&self, mem: &GuestMemory, n: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * (n % self.q.size) as u64;
            (mem.read_u32(at).unwrap(), mem.read_u32(at + 4).unwrap())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::new(1 << 20).unwrap()
    }

    #[test]
    fn pops_a_two_descriptor_chain_and_publishes_used() {
        let m = mem();
        let mut d = Driver::new(8);
        assert!(d.q.is_valid(&m));
        d.set_desc(&m, 0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 3);
        d.set_desc(&m, 3, 0x9000, 16, VIRTQ_DESC_F_WRITE, 0);
        m.write(0x8000, b"ping").unwrap();
        d.publish(&m, 0);
        let c = d.q.pop(&m).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(c.readable_len(), 4);
        assert_eq!(c.writable_len(), 16);
        assert_eq!(c.read_all(&m, 100), b"ping");
        assert_eq!(c.write_at(&m, 2, b"pong"), 4);
        assert_eq!(&{ let mut b = [0u8; 4]; m.read(0x9002, &mut b).unwrap(); b }, b"pong");
        d.q.add_used(&m, c.head, 6).unwrap();
        assert_eq!(d.used_idx(&m), 1);
        assert_eq!(d.used_elem(&m, 0), (0, 6));
        assert!(d.q.pop(&m).unwrap().is_none());
    }

    #[test]
    fn looping_chain_is_rejected() {
        let m = mem();
        let mut d = Driver::new(4);
        d.set_desc(&m, 0, 0x8000, 4, VIRTQ_DESC_F_NEXT, 1);
        d.set_desc(&m, 1, 0x8000, 4, VIRTQ_DESC_F_NEXT, 0);
        d.publish(&m, 0);
        assert_eq!(d.q.pop(&m).unwrap_err(), (Some(0), QueueError::ChainLoop));
        // Self-loop.
        d.set_desc(&m, 2, 0x8000, 4, VIRTQ_DESC_F_NEXT, 2);
        d.publish(&m, 2);
        assert_eq!(d.q.pop(&m).unwrap_err(), (Some(2), QueueError::ChainLoop));
    }

    #[test]
    fn out_of_range_buffers_and_indices_are_rejected() {
        let m = mem();
        let mut d = Driver::new(4);
        d.set_desc(&m, 0, 0xff000, 0x2000, 0, 0);
        d.publish(&m, 0);
        assert!(matches!(d.q.pop(&m), Err((Some(0), QueueError::BadBuffer { .. }))));
        d.set_desc(&m, 1, u64::MAX - 2, 8, 0, 0);
        d.publish(&m, 1);
        assert!(matches!(d.q.pop(&m), Err((Some(1), QueueError::BadBuffer { .. }))));
        d.set_desc(&m, 2, 0x8000, 8, VIRTQ_DESC_F_NEXT, 9);
        d.publish(&m, 2);
        assert_eq!(d.q.pop(&m).unwrap_err(), (Some(2), QueueError::BadIndex(9)));
        d.publish(&m, 7); // head beyond size
        assert_eq!(d.q.pop(&m).unwrap_err(), (None, QueueError::BadIndex(7)));
        d.set_desc(&m, 3, 0x8000, 8, VIRTQ_DESC_F_INDIRECT, 0);
        d.publish(&m, 3);
        assert_eq!(d.q.pop(&m).unwrap_err(), (Some(3), QueueError::Indirect));
    }

    #[test]
    fn avail_overrun_and_readable_after_writable_are_rejected() {
        let m = mem();
        let mut d = Driver::new(4);
        m.write_u16(AVAIL + 2, 100).unwrap();
        assert!(matches!(d.q.pop(&m), Err((None, QueueError::AvailOverrun { .. }))));
        let mut d = Driver::new(4);
        d.set_desc(&m, 0, 0x8000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
        d.set_desc(&m, 1, 0x8000, 8, 0, 0);
        m.write_u16(AVAIL + 2, 0).unwrap();
        d.publish(&m, 0);
        assert_eq!(d.q.pop(&m).unwrap_err(), (Some(0), QueueError::ReadableAfterWritable));
    }

    #[test]
    fn invalid_layouts_are_detected() {
        let m = mem();
        let mut d = Driver::new(8);
        d.q.size = 6;
        assert!(!d.q.is_valid(&m));
        d.q.size = 16;
        assert!(!d.q.is_valid(&m));
        d.q.size = 8;
        d.q.desc_table = 0xffff8;
        assert!(!d.q.is_valid(&m));
        d.q.desc_table = 0x1001;
        assert!(!d.q.is_valid(&m));
    }
}
