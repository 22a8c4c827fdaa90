// The VM fd: guest memory slots, the in-kernel irqchip and PIT, irqfd and ioeventfd wiring.

use std::fmt;
use std::fs::File;
use std::os::unix::io::{AsRawFd, RawFd};

use super::kvm::Kvm;
use super::memory::GuestMemory;
use crate::sys;

/// Where KVM puts its three-page TSS for real-mode emulation; just below the 4 GiB BIOS area.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
const KVM_PIT_SPEAKER_DUMMY: u32 = 1;
const KVM_IOEVENTFD_FLAG_DATAMATCH: u32 = 1;

#[derive(Debug)]
pub enum VmError {
    /// A VM-level KVM ioctl failed.
    Ioctl(&'static str, std::io::Error),
    /// Creating the VM failed.
    Create(super::kvm::KvmError),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VmError::Ioctl(what, e) => write!(f, "KVM VM ioctl {what} failed: {e}"),
            VmError::Create(e) => write!(f, "cannot create a KVM VM: {e}"),
        }
    }
}

#[repr(C)]
struct UserMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

#[repr(C)]
struct IrqFd {
    fd: u32,
    gsi: u32,
    flags: u32,
    resamplefd: u32,
    pad: [u8; 16],
}

#[repr(C)]
struct IoEventFd {
    datamatch: u64,
    addr: u64,
    len: u32,
    fd: i32,
    flags: u32,
    pad: [u8; 36],
}

#[repr(C)]
struct PitConfig {
    flags: u32,
    pad: [u32; 15],
}

#[repr(C)]
struct IrqLevel {
    irq: u32,
    level: u32,
}

pub struct Vm {
    file: File,
}

impl Vm {
    /// Creates the VM with its irqchip (PIC + IOAPIC + per-vCPU LAPIC) and PIT in the kernel.
    pub fn new(kvm: &Kvm) -> Result<Vm, VmError> {
        let file = kvm.create_vm().map_err(VmError::Create)?;
        let vm = Vm { file };
        sys::ioctl_val(vm.fd(), sys::KVM_SET_TSS_ADDR, KVM_TSS_ADDRESS).map_err(|e| VmError::Ioctl("SET_TSS_ADDR", e))?;
        sys::ioctl_val(vm.fd(), sys::KVM_CREATE_IRQCHIP, 0).map_err(|e| VmError::Ioctl("CREATE_IRQCHIP", e))?;
        let pit = PitConfig { flags: KVM_PIT_SPEAKER_DUMMY, pad: [0; 15] };
        sys::ioctl_ptr(vm.fd(), sys::KVM_CREATE_PIT2, &pit).map_err(|e| VmError::Ioctl("CREATE_PIT2", e))?;
        Ok(vm)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), VmError> {
        for (slot, r) in mem.regions().iter().enumerate() {
            let region = UserMemoryRegion {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: r.gpa,
                memory_size: r.size,
                userspace_addr: r.host as u64,
            };
            sys::ioctl_ptr(self.fd(), sys::KVM_SET_USER_MEMORY_REGION, &region)
                .map_err(|e| VmError::Ioctl("SET_USER_MEMORY_REGION", e))?;
        }
        Ok(())
    }

    /// Signalling `fd` raises an edge on interrupt line `gsi`.
    pub fn register_irqfd(&self, fd: RawFd, gsi: u32) -> Result<(), VmError> {
        let irqfd = IrqFd { fd: fd as u32, gsi, flags: 0, resamplefd: 0, pad: [0; 16] };
        sys::ioctl_ptr(self.fd(), sys::KVM_IRQFD, &irqfd).map_err(|e| VmError::Ioctl("IRQFD", e))?;
        Ok(())
    }

    /// A guest MMIO write of `value` (4 bytes) at `addr` signals `fd` without leaving the kernel.
    pub fn register_ioeventfd(&self, fd: RawFd, addr: u64, value: u32) -> Result<(), VmError> {
        let ev = IoEventFd { datamatch: value as u64, addr, len: 4, fd, flags: KVM_IOEVENTFD_FLAG_DATAMATCH, pad: [0; 36] };
        sys::ioctl_ptr(self.fd(), sys::KVM_IOEVENTFD, &ev).map_err(|e| VmError::Ioctl("IOEVENTFD", e))?;
        Ok(())
    }

    pub fn set_irq_line(&self, irq: u32, level: bool) -> Result<(), VmError> {
        let l = IrqLevel { irq, level: level as u32 };
        sys::ioctl_ptr(self.fd(), sys::KVM_IRQ_LINE, &l).map_err(|e| VmError::Ioctl("IRQ_LINE", e))?;
        Ok(())
    }
}
