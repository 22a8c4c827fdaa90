// virtio-rng: fills the guest's buffers from the host's /dev/urandom.

use std::fs::File;
use std::io::Read;

use super::mmio::{pop_valid, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};
use super::queue::Queue;
use crate::vstate::memory::GuestMemory;

pub const VIRTIO_ID_RNG: u32 = 4;
/// Bytes handed out per request; larger guest buffers are filled partially.
const MAX_PER_REQUEST: u64 = 64 * 1024;

pub struct Rng {
    source: File,
}

impl Rng {
    pub fn new() -> Result<Rng, String> {
        Ok(Rng { source: File::open("/dev/urandom").map_err(|e| format!("cannot open /dev/urandom for virtio-rng: {e}"))? })
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_RNG
    }
    fn name(&self) -> &str {
        "virtio-rng"
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![64]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(&mut self, mem: &GuestMemory, queues: &mut [Queue], q: usize) -> Result<bool, DeviceError> {
        if q != 0 {
            return Ok(false);
        }
        let mut used = false;
        while let Some(chain) = pop_valid(&mut queues[0], mem)? {
            let n = chain.writable_len().min(MAX_PER_REQUEST) as usize;
            let mut buf = vec![0u8; n];
            self.source.read_exact(&mut buf).map_err(|e| DeviceError::Host(e.to_string()))?;
            let w = chain.write_at(mem, 0, &buf);
            queues[0].add_used(mem, chain.head, w as u32)?;
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

    #[test]
    fn fills_writable_buffers_and_caps_large_ones() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut r = Rng::new().unwrap();
        let mut d = Driver::new(4);
        d.set_desc(&m, 0, 0x8000, 32, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 0);
        assert!(r.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap());
        assert_eq!(d.used_elem(&m, 0), (0, 32));
        let mut b = [0u8; 32];
        m.read(0x8000, &mut b).unwrap();
        assert_ne!(b, [0u8; 32]);
        d.set_desc(&m, 1, 0x10000, 0x80000, VIRTQ_DESC_F_WRITE, 0);
        d.publish(&m, 1);
        r.process_queue(&m, std::slice::from_mut(&mut d.q), 0).unwrap();
        assert_eq!(d.used_elem(&m, 1), (1, MAX_PER_REQUEST as u32));
    }
}
