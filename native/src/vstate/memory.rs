// Guest physical memory: anonymous host mappings registered with KVM, and bounds-checked access
// to them. Every guest-supplied address goes through `checked_slice`, so a hostile address or
// length can only produce an error, never a host access outside the mapping.

use std::fmt;
use std::os::raw::c_void;

use crate::sys;

/// The low RAM region ends here; [MMIO_GAP_START, 4 GiB) holds the device windows.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;

#[derive(Debug)]
pub enum MemoryError {
    /// The host refused to map guest RAM (mmap errno).
    Map(std::io::Error),
    /// A guest address range is outside guest RAM.
    OutOfRange { addr: u64, len: u64 },
    /// Guest memory size is zero or too large.
    BadSize(u64),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MemoryError::Map(e) => write!(f, "cannot map guest memory: {e}"),
            MemoryError::OutOfRange { addr, len } => {
                write!(f, "guest address range {addr:#x}+{len:#x} is outside guest RAM")
            }
            MemoryError::BadSize(s) => write!(f, "guest memory size {s} bytes is not usable (needs 1 MiB .. 64 GiB)"),
        }
    }
}

pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub host: *mut u8,
}

pub struct GuestMemory {
    regions: Vec<Region>,
    /// What Drop unmaps: the regions themselves, or (vhost-user) whole fd mappings that the
    /// regions start somewhere inside.
    mappings: Vec<(*mut u8, usize)>,
}

// The mappings live as long as GuestMemory; concurrent access from vCPU and device threads is
// inherent to a VM (the guest races itself) and is done with plain copies, never references.
unsafe impl Send for GuestMemory {}
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `size` bytes of RAM, split around the 32-bit MMIO gap.
    pub fn new(size: u64) -> Result<GuestMemory, MemoryError> {
        if !((1 << 20)..=(64 << 30)).contains(&size) || !size.is_multiple_of(4096) {
            return Err(MemoryError::BadSize(size));
        }
        let mut layout = vec![(0u64, size.min(MMIO_GAP_START))];
        if size > MMIO_GAP_START {
            layout.push((FOUR_GIB, size - MMIO_GAP_START));
        }
        let mut regions = Vec::new();
        for (gpa, len) in layout {
            let p = unsafe {
                sys::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    sys::PROT_READ | sys::PROT_WRITE,
                    sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == sys::MAP_FAILED {
                return Err(MemoryError::Map(std::io::Error::last_os_error()));
            }
            // A fork of the host process (Bun spawning a child) must not copy guest RAM.
            unsafe { sys::madvise(p, len as usize, sys::MADV_DONTFORK) };
            regions.push(Region { gpa, size: len, host: p as *mut u8 });
        }
        let mappings = regions.iter().map(|r| (r.host, r.size as usize)).collect();
        Ok(GuestMemory { regions, mappings })
    }

    /// Guest memory mapped by someone else's description (a vhost-user memory table). The
    /// mappings become ours: Drop unmaps them. Overlapping or wrapping regions are refused.
    /// # Safety
    /// Each region's [host, host+size) must lie inside one of `mappings`, which must be live
    /// mmap()ed ranges not otherwise unmapped.
    pub unsafe fn from_mappings(regions: Vec<Region>, mappings: Vec<(*mut u8, usize)>) -> Result<GuestMemory, MemoryError> {
        let mem = GuestMemory { regions, mappings };
        for (i, r) in mem.regions.iter().enumerate() {
            let end = r.gpa.checked_add(r.size).ok_or(MemoryError::OutOfRange { addr: r.gpa, len: r.size })?;
            if r.size == 0 || mem.regions[..i].iter().any(|o| r.gpa < o.gpa + o.size && o.gpa < end) {
                return Err(MemoryError::OutOfRange { addr: r.gpa, len: r.size });
            }
        }
        Ok(mem)
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn total_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// End of the RAM below the MMIO gap.
    pub fn low_end(&self) -> u64 {
        self.regions[0].gpa + self.regions[0].size
    }

    /// A host pointer for [addr, addr+len), which must lie inside one region.
    fn checked_ptr(&self, addr: u64, len: usize) -> Result<*mut u8, MemoryError> {
        let err = MemoryError::OutOfRange { addr, len: len as u64 };
        let end = addr.checked_add(len as u64).ok_or(MemoryError::OutOfRange { addr, len: len as u64 })?;
        for r in &self.regions {
            if addr >= r.gpa && end <= r.gpa + r.size {
                return Ok(unsafe { r.host.add((addr - r.gpa) as usize) });
            }
        }
        Err(err)
    }

    pub fn check_range(&self, addr: u64, len: usize) -> Result<(), MemoryError> {
        self.checked_ptr(addr, len).map(|_| ())
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let p = self.checked_ptr(addr, buf.len())?;
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), MemoryError> {
        let p = self.checked_ptr(addr, buf.len())?;
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        Ok(())
    }

    pub fn fill(&self, addr: u64, len: usize, byte: u8) -> Result<(), MemoryError> {
        let p = self.checked_ptr(addr, len)?;
        unsafe { std::ptr::write_bytes(p, byte, len) };
        Ok(())
    }

    pub fn read_u16(&self, addr: u64) -> Result<u16, MemoryError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    pub fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    pub fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    pub fn write_u16(&self, addr: u64, v: u16) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }
    pub fn write_u32(&self, addr: u64, v: u32) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }
    pub fn write_u64(&self, addr: u64, v: u64) -> Result<(), MemoryError> {
        self.write(addr, &v.to_le_bytes())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for &(p, len) in &self.mappings {
            unsafe { sys::munmap(p as *mut c_void, len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_wrapping_addresses() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut b = [0u8; 4];
        assert!(m.read(0, &mut b).is_ok());
        assert!(m.read((1 << 20) - 4, &mut b).is_ok());
        assert!(m.read((1 << 20) - 3, &mut b).is_err());
        assert!(m.read(u64::MAX - 1, &mut b).is_err());
        assert!(m.write(u64::MAX, &[1]).is_err());
        m.write_u32(0x100, 0xdeadbeef).unwrap();
        assert_eq!(m.read_u32(0x100).unwrap(), 0xdeadbeef);
    }

    #[test]
    fn splits_large_memory_around_the_mmio_gap() {
        let m = GuestMemory::new(MMIO_GAP_START + (1 << 20)).unwrap();
        assert_eq!(m.regions().len(), 2);
        assert_eq!(m.low_end(), MMIO_GAP_START);
        assert!(m.read_u32(MMIO_GAP_START).is_err());
        assert!(m.read_u32(FOUR_GIB).is_ok());
        assert!(GuestMemory::new(12345).is_err());
    }
}
