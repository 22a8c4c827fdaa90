// The /dev/kvm handle: API version and capability checks, and the CPUID the host supports.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::io::{AsRawFd, FromRawFd};

use crate::sys;

pub const KVM_API_VERSION: i32 = 12;
pub const MAX_CPUID_ENTRIES: usize = 256;

#[derive(Debug)]
pub enum KvmError {
    /// /dev/kvm cannot be opened.
    Open(std::io::Error),
    /// The kernel speaks a KVM API version this VMM was not written for.
    ApiVersion(i32),
    /// A capability the VMM needs is missing.
    MissingCap(&'static str),
    /// An ioctl on /dev/kvm failed.
    Ioctl(&'static str, std::io::Error),
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            KvmError::Open(e) => write!(
                f,
                "cannot open /dev/kvm: {e} (is KVM enabled and do you have access? try the qemu backend: --backend qemu)"
            ),
            KvmError::ApiVersion(v) => write!(f, "/dev/kvm reports API version {v}, expected {KVM_API_VERSION}"),
            KvmError::MissingCap(c) => write!(f, "this host's KVM lacks {c}, which the native VMM needs; use --backend qemu"),
            KvmError::Ioctl(what, e) => write!(f, "KVM {what} failed: {e}"),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct CpuidEntry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

/// kvm_cpuid2 with room for MAX_CPUID_ENTRIES entries.
#[repr(C)]
pub struct Cpuid2 {
    pub nent: u32,
    pub padding: u32,
    pub entries: [CpuidEntry2; MAX_CPUID_ENTRIES],
}

impl Cpuid2 {
    pub fn from_entries(list: &[CpuidEntry2]) -> Box<Cpuid2> {
        let mut c = Box::new(Cpuid2 { nent: 0, padding: 0, entries: [CpuidEntry2::default(); MAX_CPUID_ENTRIES] });
        let n = list.len().min(MAX_CPUID_ENTRIES);
        c.entries[..n].copy_from_slice(&list[..n]);
        c.nent = n as u32;
        c
    }
}

pub struct Kvm {
    file: File,
}

impl Kvm {
    pub fn new() -> Result<Kvm, KvmError> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(KvmError::Open)?;
        let v = sys::ioctl_val(file.as_raw_fd(), sys::KVM_GET_API_VERSION, 0).map_err(|e| KvmError::Ioctl("GET_API_VERSION", e))?;
        if v != KVM_API_VERSION {
            return Err(KvmError::ApiVersion(v));
        }
        let kvm = Kvm { file };
        for (cap, name) in [
            (sys::KVM_CAP_IRQCHIP, "an in-kernel irqchip (KVM_CAP_IRQCHIP)"),
            (sys::KVM_CAP_USER_MEMORY, "user memory regions (KVM_CAP_USER_MEMORY)"),
            (sys::KVM_CAP_IRQFD, "irqfd (KVM_CAP_IRQFD)"),
            (sys::KVM_CAP_IOEVENTFD, "ioeventfd (KVM_CAP_IOEVENTFD)"),
            (sys::KVM_CAP_PIT2, "an in-kernel PIT (KVM_CAP_PIT2)"),
            (sys::KVM_CAP_IMMEDIATE_EXIT, "immediate exit (KVM_CAP_IMMEDIATE_EXIT)"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCap(name));
            }
        }
        Ok(kvm)
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    pub fn check_extension(&self, cap: u64) -> bool {
        matches!(sys::ioctl_val(self.fd(), sys::KVM_CHECK_EXTENSION, cap), Ok(n) if n > 0)
    }

    pub fn vcpu_mmap_size(&self) -> Result<usize, KvmError> {
        sys::ioctl_val(self.fd(), sys::KVM_GET_VCPU_MMAP_SIZE, 0)
            .map(|n| n as usize)
            .map_err(|e| KvmError::Ioctl("GET_VCPU_MMAP_SIZE", e))
    }

    pub fn supported_cpuid(&self) -> Result<Vec<CpuidEntry2>, KvmError> {
        let mut c = Cpuid2::from_entries(&[]);
        c.nent = MAX_CPUID_ENTRIES as u32;
        sys::ioctl_out(self.fd(), sys::KVM_GET_SUPPORTED_CPUID, &mut *c)
            .map_err(|e| KvmError::Ioctl("GET_SUPPORTED_CPUID", e))?;
        Ok(c.entries[..c.nent as usize].to_vec())
    }

    /// Creates a VM; the returned file is the VM fd.
    pub fn create_vm(&self) -> Result<File, KvmError> {
        let fd = sys::ioctl_val(self.fd(), sys::KVM_CREATE_VM, 0).map_err(|e| KvmError::Ioctl("CREATE_VM", e))?;
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

/// Whether this host's /dev/kvm is real hardware virtualization. kvm_pvm is a software
/// hypervisor on which guest kernel code runs ~3000x slower (see shared/KERNEL.md).
pub fn kvm_kind() -> KvmKind {
    if !std::path::Path::new("/dev/kvm").exists() {
        return KvmKind::Absent;
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return KvmKind::Software;
    }
    KvmKind::Hardware
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    Absent = -1,
    Software = 0,
    Hardware = 1,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_kvm_and_reads_supported_cpuid() {
        if kvm_kind() == KvmKind::Absent {
            eprintln!("skipped: no /dev/kvm on this host");
            return;
        }
        let kvm = Kvm::new().unwrap();
        let cpuid = kvm.supported_cpuid().unwrap();
        assert!(cpuid.iter().any(|e| e.function == 0));
        assert!(cpuid.iter().any(|e| e.function == 1));
        assert!(kvm.vcpu_mmap_size().unwrap() >= 4096);
    }
}
