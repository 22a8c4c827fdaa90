// virtio-blk backed by a host file: read, write (unless read-only), flush and GET_ID. Requests
// are bounded in size and must stay inside the disk; anything else completes with an error
// status rather than touching the file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use super::mmio::{pop_valid, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use super::queue::Queue;
use crate::vstate::memory::GuestMemory;

pub const VIRTIO_ID_BLOCK: u32 = 2;
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
pub const SECTOR: u64 = 512;
const HEADER_LEN: usize = 16;
pub const ID_LEN: usize = 20;
/// Largest single request accepted (Linux's default max_sectors is well under this).
const MAX_REQUEST: u64 = 4 << 20;
const QUEUE_SIZE: u16 = 256;
/// Data segments per request the driver may use (the queue also holds header and status).
const SEG_MAX: u32 = 126;
const CONFIG_SEG_MAX: usize = 12;

pub struct Block {
    file: File,
    read_only: bool,
    capacity_sectors: u64,
    serial: [u8; ID_LEN],
    label: String,
}

impl Block {
    pub fn open(path: &str, read_only: bool, serial: Option<&str>) -> Result<Block, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| format!("cannot open disk {path}{}: {e}", if read_only { "" } else { " read-write" }))?;
        let len = file.metadata().map_err(|e| format!("cannot stat disk {path}: {e}"))?.len();
        let mut id = [0u8; ID_LEN];
        if let Some(s) = serial {
            if s.len() > ID_LEN {
                return Err(format!("disk {path}: serial {s:?} is longer than {ID_LEN} bytes"));
            }
            id[..s.len()].copy_from_slice(s.as_bytes());
        }
        Ok(Block { file, read_only, capacity_sectors: len / SECTOR, serial: id, label: format!("virtio-blk {path}") })
    }

    fn handle(&mut self, mem: &GuestMemory, chain: &super::queue::DescChain) -> (u8, u64) {
        if chain.readable_len() > HEADER_LEN as u64 + MAX_REQUEST {
            return (S_IOERR, 0);
        }
        let readable = chain.read_all(mem, HEADER_LEN + MAX_REQUEST as usize);
        if readable.len() < HEADER_LEN || chain.writable_len() < 1 {
            return (S_IOERR, 0);
        }
        let ty = u32::from_le_bytes(readable[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(readable[8..16].try_into().unwrap());
        let data_in = chain.writable_len() - 1; // last writable byte is the status
        match ty {
            T_IN => {
                if !data_in.is_multiple_of(SECTOR) || data_in > MAX_REQUEST || !self.in_range(sector, data_in) {
                    return (S_IOERR, 0);
                }
                let mut buf = vec![0u8; data_in as usize];
                if self.file.read_exact_at(&mut buf, sector * SECTOR).is_err() {
                    return (S_IOERR, 0);
                }
                let n = chain.write_at(mem, 0, &buf) as u64;
                (S_OK, n)
            }
            T_OUT => {
                let data = &readable[HEADER_LEN..];
                let n = data.len() as u64;
                if self.read_only {
                    return (S_IOERR, 0);
                }
                if !n.is_multiple_of(SECTOR) || !self.in_range(sector, n) {
                    return (S_IOERR, 0);
                }
                if self.file.write_all_at(data, sector * SECTOR).is_err() {
                    return (S_IOERR, 0);
                }
                (S_OK, 0)
            }
            T_FLUSH => {
                if self.read_only || self.file.sync_data().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => {
                let n = (data_in as usize).min(ID_LEN);
                let w = chain.write_at(mem, 0, &self.serial[..n]) as u64;
                (S_OK, w)
            }
            _ => (S_UNSUPP, 0),
        }
    }

    fn in_range(&self, sector: u64, len: u64) -> bool {
        let sectors = len / SECTOR;
        sector.checked_add(sectors).is_some_and(|end| end <= self.capacity_sectors)
    }
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }
    fn name(&self) -> &str {
        &self.label
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | if self.read_only { VIRTIO_BLK_F_RO } else { 0 }
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // Config space: capacity (le64), size_max (le32, not offered), seg_max (le32).
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        cfg[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&SEG_MAX.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset.checked_add(i as u64).and_then(|o| cfg.get(o as usize)).copied().unwrap_or(0);
        }
    }
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError> {
        if q != 0 {
            return Ok(false);
        }
        let mut used = false;
        while let Some(chain) = pop_valid(&mut queues[0], mem)? {
            let (status, written) = self.handle(mem, &chain);
            let wl = chain.writable_len();
            if wl > 0 {
                chain.write_at(mem, wl - 1, &[status]);
            }
            queues[0].add_used(mem, chain.head, (written + if wl > 0 { 1 } else { 0 }) as u32)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::testing::Driver;
    use super::super::queue::*;
    use super::*;

    fn disk(sectors: usize) -> (String, File) {
        let path = std::env::temp_dir().join(format!("msbvmm-blk-{}-{:?}", std::process::id(), std::thread::current().id()));
        let mut data = vec![0u8; sectors * 512];
        data[..5].copy_from_slice(b"hello");
        std::fs::write(&path, &data).unwrap();
        (path.to_string_lossy().into_owned(), File::open(&path).unwrap())
    }

    fn request(m: &GuestMemory, d: &mut Driver, ty: u32, sector: u64, data_len: u32, write_data: bool) {
        m.write_u32(0x8000, ty).unwrap();
        m.write_u64(0x8008, sector).unwrap();
        d.set_desc(m, 0, 0x8000, 16, VIRTQ_DESC_F_NEXT, 1);
        let f = if write_data { 0 } else { VIRTQ_DESC_F_WRITE };
        d.set_desc(m, 1, 0x9000, data_len, f | VIRTQ_DESC_F_NEXT, 2);
        d.set_desc(m, 2, 0xa000, 1, VIRTQ_DESC_F_WRITE, 0);
        m.write(0xa000, &[0xff]).unwrap();
        d.publish(m, 0);
    }

    fn status(m: &GuestMemory) -> u8 {
        let mut b = [0u8];
        m.read(0xa000, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn reads_writes_flushes_and_reports_id() {
        let (path, _) = disk(8);
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut b = Block::open(&path, false, Some("vol-1")).unwrap();
        let mut d = Driver::new(8);
        request(&m, &mut d, T_IN, 0, 512, false);
        assert!(b.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap());
        assert_eq!(status(&m), S_OK);
        assert_eq!(d.used_elem(&m, 0), (0, 513));
        let mut got = [0u8; 5];
        m.read(0x9000, &mut got).unwrap();
        assert_eq!(&got, b"hello");

        m.write(0x9000, b"WRITTEN").unwrap();
        request(&m, &mut d, T_OUT, 3, 512, true);
        b.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_OK);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[3 * 512..3 * 512 + 7], b"WRITTEN");

        request(&m, &mut d, T_FLUSH, 0, 0, true);
        b.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_OK);

        request(&m, &mut d, T_GET_ID, 0, 20, false);
        b.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        let mut id = [0u8; 20];
        m.read(0x9000, &mut id).unwrap();
        assert_eq!(&id[..6], b"vol-1\0");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn rejects_out_of_range_read_only_and_odd_requests() {
        let (path, _) = disk(4);
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut rw = Block::open(&path, false, None).unwrap();
        let mut d = Driver::new(8);
        // Past the end of the disk.
        request(&m, &mut d, T_IN, 4, 512, false);
        rw.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_IOERR);
        // Sector number that would overflow.
        request(&m, &mut d, T_IN, u64::MAX, 512, false);
        rw.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_IOERR);
        // Not a multiple of the sector size.
        request(&m, &mut d, T_IN, 0, 100, false);
        rw.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_IOERR);
        // Unknown type.
        request(&m, &mut d, 99, 0, 512, false);
        rw.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_UNSUPP);
        // A write larger than MAX_REQUEST is refused whole, not truncated.
        let big = GuestMemory::new(16 << 20).unwrap();
        let mut d2 = Driver::new(8);
        big.write_u32(0x8000, T_OUT).unwrap();
        big.write_u64(0x8008, 0).unwrap();
        d2.set_desc(&big, 0, 0x8000, 16, VIRTQ_DESC_F_NEXT, 1);
        d2.set_desc(&big, 1, 0x100000, (MAX_REQUEST + 512) as u32, VIRTQ_DESC_F_NEXT, 2);
        d2.set_desc(&big, 2, 0xa000, 1, VIRTQ_DESC_F_WRITE, 0);
        d2.publish(&big, 0);
        rw.process_queue(&big, std::slice::from_mut(&mut d2.q), 0).unwrap();
        assert_eq!(big.read_u16(0xa000).unwrap() & 0xff, S_IOERR as u16);
        // Read-only disk refuses writes and keeps the file intact.
        let mut ro = Block::open(&path, true, None).unwrap();
        assert_ne!(ro.features() & VIRTIO_BLK_F_RO, 0);
        m.write(0x9000, b"EVIL").unwrap();
        request(&m, &mut d, T_OUT, 0, 512, true);
        ro.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(status(&m), S_IOERR);
        assert_eq!(&std::fs::read(&path).unwrap()[..5], b"hello");
        let mut cfg = [0u8; 4];
        ro.read_config(CONFIG_SEG_MAX as u64, &mut cfg);
        assert_eq!(u32::from_le_bytes(cfg), SEG_MAX);
        ro.read_config(0, &mut cfg);
        assert_eq!(u32::from_le_bytes(cfg), 4);
        // Serial too long is a clear error.
        assert!(Block::open(&path, true, Some("0123456789012345678901")).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
