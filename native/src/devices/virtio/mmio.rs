// The virtio-mmio (version 2) transport: the register window the guest driver programs, feature
// negotiation, queue set-up and the interrupt status. Device models plug in behind
// `VirtioDevice`; all guest register values are checked before a device sees them.

use std::fmt;
use std::os::unix::io::RawFd;
use std::sync::Arc;

use super::queue::{Queue, QueueError};
use crate::sys::EventFd;
use crate::vstate::memory::GuestMemory;

pub const MMIO_MAGIC: u32 = 0x7472_6976;
pub const MMIO_VERSION: u32 = 2;
pub const VENDOR_ID: u32 = 0x4d53_4221; // "!BSM"
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

#[derive(Debug)]
pub enum DeviceError {
    /// The guest broke the virtqueue protocol.
    Queue(QueueError),
    /// The host side (file, socket) failed.
    Host(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceError::Queue(e) => write!(f, "guest driver error: {e}"),
            DeviceError::Host(e) => write!(f, "host I/O error: {e}"),
        }
    }
}

impl From<QueueError> for DeviceError {
    fn from(e: QueueError) -> Self {
        DeviceError::Queue(e)
    }
}

pub trait VirtioDevice: Send {
    fn device_id(&self) -> u32;
    fn name(&self) -> &str;
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits offered, VIRTIO_F_VERSION_1 included.
    fn features(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver reset the device: drop in-flight guest state (host connections stay).
    fn reset(&mut self) {}
    /// The guest notified queue `q`; returns whether buffers were returned to the guest.
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError>;
    /// A host fd to poll and the events wanted now.
    fn host_poll(&self) -> Option<(RawFd, i16)> {
        None
    }
    fn process_host(&mut self, _mem: &GuestMemory, _queues: &mut [Queue], _revents: i16) -> Result<bool, DeviceError> {
        Ok(false)
    }
}

/// Pops chains from `q`; malformed chains go back used with length 0, so a broken driver
/// stalls only itself. A ring-level error (no head) is returned.
pub fn pop_valid(queue: &mut Queue, mem: &GuestMemory) -> Result<Option<super::queue::DescChain>, DeviceError> {
    loop {
        match queue.pop(mem) {
            Ok(c) => return Ok(c),
            Err((Some(head), _)) => queue.add_used(mem, head, 0)?,
            Err((None, e)) => return Err(e.into()),
        }
    }
}

pub struct MmioTransport {
    pub device: Box<dyn VirtioDevice>,
    pub queues: Vec<Queue>,
    pub mem: Arc<GuestMemory>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    irq: Option<Arc<EventFd>>,
    /// Set when the guest broke the protocol; the device does nothing until reset.
    pub broken: Option<String>,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: Arc<GuestMemory>, irq: Option<Arc<EventFd>>) -> MmioTransport {
        let queues = device.queue_max_sizes().into_iter().map(Queue::new).collect();
        MmioTransport {
            device,
            queues,
            mem,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            irq,
            broken: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.broken.is_none()
    }

    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        if let Some(irq) = &self.irq {
            irq.signal();
        }
    }

    fn fail(&mut self, why: String) {
        self.broken = Some(why);
        self.status |= STATUS_NEEDS_RESET;
        self.raise(INT_CONFIG);
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.broken = None;
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        // Registers are 32 bits wide and aligned; anything else reads as zero.
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let v = match offset {
            REG_MAGIC => MMIO_MAGIC,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_id(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.queues.get(self.queue_sel as usize).map_or(0, |q| q.max_size as u32),
            REG_QUEUE_READY => self.queues.get(self.queue_sel as usize).map_or(0, |q| q.ready as u32),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// Handles a register write; returns the queue index for a QueueNotify write (when the
    /// ioeventfd did not catch it, e.g. a non-4-byte write or an unmatched value).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<usize> {
        if offset >= REG_CONFIG {
            self.device.write_config(offset - REG_CONFIG, data);
            return None;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let configuring = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
                _ => {}
            },
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM if configuring => {
                if let Some(q) = self.selected() {
                    q.size = v.min(u16::MAX as u32) as u16;
                }
            }
            REG_QUEUE_READY => {
                let mem = self.mem.clone();
                if let Some(q) = self.selected() {
                    if v == 0 {
                        q.ready = false;
                    } else {
                        // A queue the guest laid out wrongly never becomes ready.
                        q.ready = q.is_valid(&mem);
                    }
                }
            }
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH | REG_QUEUE_DRIVER_LOW | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW | REG_QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.selected() {
                    if !q.ready {
                        let field = match offset & !0xf {
                            REG_QUEUE_DESC_LOW => &mut q.desc_table,
                            REG_QUEUE_DRIVER_LOW => &mut q.avail_ring,
                            _ => &mut q.used_ring,
                        };
                        if offset & 4 == 0 {
                            *field = (*field & !0xffff_ffff) | v as u64;
                        } else {
                            *field = (*field & 0xffff_ffff) | ((v as u64) << 32);
                        }
                    }
                }
            }
            REG_QUEUE_NOTIFY
                if (v as usize) < self.queues.len() => {
                    return Some(v as usize);
                }
            REG_INTERRUPT_ACK => self.interrupt_status &= !v,
            REG_STATUS => self.write_status(v),
            _ => {}
        }
        None
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                // The driver sees FEATURES_OK not stick and gives up on the device.
                v &= !STATUS_FEATURES_OK;
            }
        }
        if v & STATUS_DRIVER_OK != 0 && self.status & STATUS_FEATURES_OK == 0 && v & STATUS_FEATURES_OK == 0 {
            v &= !STATUS_DRIVER_OK;
        }
        self.status = v | (self.status & STATUS_NEEDS_RESET);
    }

    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Runs the device for a guest notification on queue `q`.
    pub fn notify(&mut self, q: usize) {
        if !self.is_active() || q >= self.queues.len() {
            return;
        }
        let mem = self.mem.clone();
        match self.device.process_queue(&mem, &mut self.queues, q) {
            Ok(true) => self.raise(INT_USED_RING),
            Ok(false) => {}
            Err(e) => {
                let why = format!("{}: {e}", self.device.name());
                self.fail(why);
            }
        }
    }

    pub fn host_poll(&self) -> Option<(RawFd, i16)> {
        self.device.host_poll()
    }

    pub fn host_event(&mut self, revents: i16) {
        let mem = self.mem.clone();
        let active = self.is_active();
        // Host events are handled even before the driver is ready, so the device can notice a
        // closed connection; with no ready queues nothing reaches the guest.
        let r = if active {
            self.device.process_host(&mem, &mut self.queues, revents)
        } else {
            let mut none: Vec<Queue> = Vec::new();
            self.device.process_host(&mem, &mut none, revents)
        };
        match r {
            Ok(true) if active => self.raise(INT_USED_RING),
            Ok(_) => {}
            Err(e) => {
                let why = format!("{}: {e}", self.device.name());
                self.fail(why);
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    struct Dummy;
    impl VirtioDevice for Dummy {
        fn device_id(&self) -> u32 {
            42
        }
        fn name(&self) -> &str {
            "dummy"
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![8]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn read_config(&self, _o: u64, d: &mut [u8]) {
            d.fill(0xab)
        }
        fn process_queue(&mut self, _m: &GuestMemory, _q: &mut [Queue], _i: usize) -> Result<bool, DeviceError> {
            Ok(true)
        }
    }

    pub fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    pub fn wr(t: &mut MmioTransport, off: u64, v: u32) -> Option<usize> {
        t.write(off, &v.to_le_bytes())
    }

    /// Drives a transport through the driver's init sequence with rings at fixed addresses.
    pub fn activate(t: &mut MmioTransport, features_hi: u32, features_lo: u32, queue_base: &[u64], size: u32) {
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(t, REG_DRIVER_FEATURES_SEL, 1);
        wr(t, REG_DRIVER_FEATURES, features_hi);
        wr(t, REG_DRIVER_FEATURES_SEL, 0);
        wr(t, REG_DRIVER_FEATURES, features_lo);
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        for (i, base) in queue_base.iter().enumerate() {
            wr(t, REG_QUEUE_SEL, i as u32);
            wr(t, REG_QUEUE_NUM, size);
            wr(t, REG_QUEUE_DESC_LOW, *base as u32);
            wr(t, REG_QUEUE_DRIVER_LOW, (*base + 0x1000) as u32);
            wr(t, REG_QUEUE_DEVICE_LOW, (*base + 0x2000) as u32);
            wr(t, REG_QUEUE_READY, 1);
        }
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    }

    #[test]
    fn identifies_and_negotiates() {
        let mem = Arc::new(GuestMemory::new(1 << 20).unwrap());
        let mut t = MmioTransport::new(Box::new(Dummy), mem, None);
        assert_eq!(rd(&mut t, REG_MAGIC), MMIO_MAGIC);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), 42);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1);
        // Unknown feature bits are refused: FEATURES_OK does not stick.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1 | 2);
        wr(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
        wr(&mut t, REG_STATUS, 0);
        activate(&mut t, 1, 0, &[0x10000], 8);
        assert!(t.is_active());
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        t.notify(0);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_USED_RING);
        wr(&mut t, REG_INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
    }

    /// xorshift64: deterministic garbage for the fuzz loop below.
    pub fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Every device model against random rings and descriptors in small guest memory: whatever
    /// the guest writes, processing must neither panic nor touch memory outside the guest's.
    #[test]
    fn devices_survive_random_rings() {
        use super::super::{blk::Block, console::Console, net::Net, rng::Rng, stream::HostStream};
        let path = std::env::temp_dir().join(format!("msbvmm-fuzz-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut completed, mut broken) = (0u64, 0u64);
        for round in 0..300 {
            let mem = Arc::new(GuestMemory::new(1 << 20).unwrap());
            let (a, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let dev: Box<dyn VirtioDevice> = match round % 4 {
                0 => Box::new(Block::open(path.to_str().unwrap(), round % 8 == 0, Some("fuzz")).unwrap()),
                1 => Box::new(Net::new(HostStream::new(Some(a)), [2, 0, 0, 0, 0, 1])),
                2 => Box::new(Console::new("agent", HostStream::new(Some(a)))),
                _ => Box::new(Rng::new().unwrap()),
            };
            let nq = dev.queue_max_sizes().len();
            let mut t = MmioTransport::new(dev, mem.clone(), None);
            let bases: Vec<u64> = (0..nq as u64).map(|q| 0x10000 + q * 0x4000).collect();
            let lo = t.device.features() as u32;
            activate(&mut t, 1, lo, &bases, 8);
            for _ in 0..20 {
                // Scribble over rings and descriptors, sometimes with plausible values.
                for _ in 0..64 {
                    let q = bases[(rng(&mut seed) % nq as u64) as usize];
                    let off = rng(&mut seed) % 0x2100;
                    let v = rng(&mut seed);
                    let v = match v % 4 {
                        0 => v % 8,
                        1 => 0x80000 + v % 0x80000,
                        2 => v % 0x200,
                        _ => v,
                    };
                    let _ = mem.write_u64(q + off - off % 2, v);
                }
                let q = (rng(&mut seed) % nq as u64) as usize;
                t.notify(q);
                t.host_event(crate::sys::POLLIN | crate::sys::POLLOUT);
            }
            completed += t.queues.iter().map(|q| q.next_used as u64).sum::<u64>();
            broken += t.broken.is_some() as u64;
        }
        std::fs::remove_file(&path).unwrap();
        // The garbage must reach both outcomes: chains processed and devices refusing to go on.
        assert!(completed > 0 && broken > 0, "completed {completed}, broken {broken}");
    }

    #[test]
    fn hostile_register_values_are_contained() {
        let mem = Arc::new(GuestMemory::new(1 << 20).unwrap());
        let mut t = MmioTransport::new(Box::new(Dummy), mem, None);
        // Queue select beyond the device's queues: reads 0, writes ignored.
        wr(&mut t, REG_QUEUE_SEL, 1000);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0);
        wr(&mut t, REG_QUEUE_NUM, 8);
        wr(&mut t, REG_QUEUE_READY, 1);
        // Notify of a queue that does not exist is dropped.
        assert_eq!(wr(&mut t, REG_QUEUE_NOTIFY, 77), None);
        // A queue outside RAM never becomes ready.
        wr(&mut t, REG_QUEUE_SEL, 0);
        wr(&mut t, REG_QUEUE_DESC_LOW, 0xffff_f000);
        wr(&mut t, REG_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        // Odd sizes and misaligned offsets read as zero.
        let mut b = [0xffu8; 2];
        t.read(REG_MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        t.read(0x3, &mut [0u8; 4]);
        // Config reads beyond the device config go to the device, which bounds them.
        let mut c = [0u8; 4];
        t.read(REG_CONFIG + 0x1000, &mut c);
        // DRIVER_OK without FEATURES_OK is refused.
        wr(&mut t, REG_STATUS, STATUS_DRIVER_OK);
        assert!(!t.is_active());
    }
}
