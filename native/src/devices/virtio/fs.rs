// virtio-fs: one shared host directory served by the FUSE server in crate::fuse. The same
// chain handling serves the native VMM's MMIO device and the vhost-user backend for QEMU.

use super::mmio::{pop_valid, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use super::queue::{DescChain, Queue};
use crate::fuse::{self, FuseServer};
use crate::vstate::memory::GuestMemory;

pub const VIRTIO_ID_FS: u32 = 26;
/// The tag the guest mounts by (`mount -t virtiofs TAG DIR`): at most 36 bytes, no NUL.
pub const TAG_LEN: usize = 36;
/// Queue 0 is the high-priority queue (FORGET, INTERRUPT), then one request queue.
pub const NUM_QUEUES: usize = 2;
/// Large enough for a 1 MiB READ/WRITE (256 pages + headers) without indirect descriptors.
pub const QUEUE_SIZE: u16 = 1024;

/// Checks a share tag: 1..=36 bytes, printable ASCII without spaces (it becomes a mount source).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > TAG_LEN || !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("virtio-fs tag {tag:?} must be 1..{TAG_LEN} printable ASCII characters without spaces"));
    }
    Ok(())
}

/// Serves one request chain: reads the request (bounded), writes the reply. Returns the bytes
/// written into the chain's writable part (0 for requests without a reply).
pub fn serve_chain(server: &mut FuseServer, mem: &GuestMemory, chain: &DescChain) -> u32 {
    let req = chain.read_all(mem, fuse::MAX_REQUEST);
    let Some(mut reply) = server.handle(&req) else { return 0 };
    let room = chain.writable_len();
    if reply.len() as u64 > room {
        if room < fuse::OUT_HEADER_LEN as u64 {
            return 0;
        }
        // The driver's reply buffer is too small for the answer: say so instead of truncating.
        reply.truncate(fuse::OUT_HEADER_LEN);
        reply[0..4].copy_from_slice(&(fuse::OUT_HEADER_LEN as u32).to_le_bytes());
        reply[4..8].copy_from_slice(&(-fuse::host::ERANGE).to_le_bytes());
    }
    chain.write_at(mem, 0, &reply) as u32
}

/// Serves every available chain of `queue`; returns whether any went back to the driver.
pub fn serve_queue(server: &mut FuseServer, mem: &GuestMemory, queue: &mut Queue) -> Result<bool, DeviceError> {
    let mut used = false;
    while let Some(chain) = pop_valid(queue, mem)? {
        let n = serve_chain(server, mem, &chain);
        queue.add_used(mem, chain.head, n)?;
        used = true;
    }
    Ok(used)
}

pub struct Fs {
    tag: String,
    server: FuseServer,
}

impl Fs {
    pub fn new(tag: &str, dir: &str, read_only: bool) -> Result<Fs, String> {
        check_tag(tag)?;
        Ok(Fs { tag: tag.to_string(), server: FuseServer::new(dir, read_only)? })
    }
}

impl VirtioDevice for Fs {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_FS
    }
    fn name(&self) -> &str {
        "virtio-fs"
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; NUM_QUEUES]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_fs_config { u8 tag[36]; le32 num_request_queues; }
        let mut cfg = [0u8; TAG_LEN + 4];
        cfg[..self.tag.len()].copy_from_slice(self.tag.as_bytes());
        cfg[TAG_LEN..].copy_from_slice(&((NUM_QUEUES - 1) as u32).to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.checked_add(i as u64).and_then(|o| cfg.get(o as usize)).copied().unwrap_or(0);
        }
    }
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError> {
        match queues.get_mut(q) {
            Some(queue) => serve_queue(&mut self.server, mem, queue),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::testing::Driver;
    use super::super::queue::*;
    use super::*;
    use crate::fuse::tests::{req, Tmp};

    fn init_req() -> Vec<u8> {
        let mut b = Vec::new();
        for v in [7u32, 31, 0, u32::MAX] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        req(26, 0, &b)
    }

    fn run(fs: &mut Fs, m: &GuestMemory, d: &mut Driver) -> bool {
        fs.process_queue(m, std::slice::from_mut(&mut d.q), 0).unwrap()
    }

    #[test]
    fn config_space_carries_the_tag_and_queue_count() {
        let t = Tmp::new("cfg");
        let fs = Fs::new("work", &t.share(), false).unwrap();
        let mut c = [0u8; 40];
        fs.read_config(0, &mut c);
        assert_eq!(&c[..4], b"work");
        assert_eq!(u32::from_le_bytes(c[36..40].try_into().unwrap()), 1);
        let mut far = [0xffu8; 4];
        fs.read_config(u64::MAX - 1, &mut far);
        assert_eq!(far, [0; 4]);
        assert!(Fs::new("", &t.share(), false).is_err());
        assert!(Fs::new("has space", &t.share(), false).is_err());
        assert!(Fs::new(&"x".repeat(37), &t.share(), false).is_err());
        assert!(Fs::new("ok", "/nonexistent/msb", false).err().unwrap().contains("/nonexistent/msb"));
    }

    #[test]
    fn serves_requests_split_across_descriptors() {
        let t = Tmp::new("dev");
        std::fs::write(t.0.join("share/f"), b"hello").unwrap();
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut fs = Fs::new("t", &t.share(), false).unwrap();
        let mut d = Driver::new(8);
        let r = init_req();
        m.write(0x10000, &r).unwrap();
        d.set_desc(&m, 0, 0x10000, r.len() as u32, VIRTQ_DESC_F_NEXT, 1);
        d.set_desc(&m, 1, 0x11000, 16 + 64, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 0);
        assert!(run(&mut fs, &m, &mut d));
        assert_eq!(d.used_elem(&m, 0), (0, 80));
        // LOOKUP with the header and the name in separate descriptors, reply split in two.
        let r = req(1, 1, b"f\0");
        m.write(0x13000, &r[..40]).unwrap();
        m.write(0x13100, &r[40..]).unwrap();
        d.set_desc(&m, 2, 0x13000, 40, VIRTQ_DESC_F_NEXT, 3);
        d.set_desc(&m, 3, 0x13100, 2, VIRTQ_DESC_F_NEXT, 4);
        d.set_desc(&m, 4, 0x14000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 5);
        d.set_desc(&m, 5, 0x15000, 128, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 2);
        run(&mut fs, &m, &mut d);
        assert_eq!(d.used_elem(&m, 1), (2, 16 + 128));
        assert_eq!(m.read_u32(0x14004).unwrap(), 0, "no error");
        assert_eq!(m.read_u64(0x15000).unwrap(), 2, "first inode id after the root");
    }

    #[test]
    fn hostile_chains_are_returned_not_fatal() {
        let t = Tmp::new("hostile-dev");
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut fs = Fs::new("t", &t.share(), false).unwrap();
        let mut d = Driver::new(8);
        let r = init_req();
        m.write(0x10000, &r).unwrap();
        // Reply buffer too small for an INIT reply: an ERANGE header instead of a truncation.
        d.set_desc(&m, 0, 0x10000, r.len() as u32, VIRTQ_DESC_F_NEXT, 1);
        d.set_desc(&m, 1, 0x11000, 20, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 0);
        run(&mut fs, &m, &mut d);
        assert_eq!(d.used_elem(&m, 0), (0, 16));
        assert_eq!(m.read_u32(0x11004).unwrap() as i32, -34);
        // No writable part at all, a buffer outside RAM, a loop, a header that lies about its length.
        d.set_desc(&m, 2, 0x10000, r.len() as u32, 0, 0);
        d.publish(&m, 2);
        d.set_desc(&m, 3, 0xfff00, 0x10000, 0, 0);
        d.publish(&m, 3);
        d.set_desc(&m, 4, 0x10000, 40, VIRTQ_DESC_F_NEXT, 5);
        d.set_desc(&m, 5, 0x10000, 40, VIRTQ_DESC_F_NEXT, 4);
        d.publish(&m, 4);
        let mut liar = req(1, 1, b"x\0");
        liar[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        m.write(0x16000, &liar).unwrap();
        d.set_desc(&m, 6, 0x16000, liar.len() as u32, VIRTQ_DESC_F_NEXT, 7);
        d.set_desc(&m, 7, 0x17000, 256, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 6);
        run(&mut fs, &m, &mut d);
        assert_eq!(d.used_elem(&m, 1), (2, 0));
        assert_eq!(d.used_elem(&m, 2), (3, 0));
        assert_eq!(d.used_elem(&m, 3), (4, 0));
        assert_eq!(d.used_elem(&m, 4), (6, 16));
        assert_eq!(m.read_u32(0x17004).unwrap() as i32, -22);
        // Random descriptor tables never panic the device.
        let mut seed = 0xfeed_beefu64;
        for round in 0..2000u32 {
            let mut d = Driver::new(8);
            for i in 0..8u16 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let addr = if seed & 1 == 0 { seed >> 44 } else { seed };
                d.set_desc(&m, i, addr, (seed >> 20) as u32 % 0x13000, (seed >> 8) as u16 & 3, (seed >> 24) as u16 % 9);
            }
            d.publish(&m, (round % 8) as u16);
            let _ = fs.process_queue(&m, std::slice::from_mut(&mut d.q), 0);
        }
    }
}
