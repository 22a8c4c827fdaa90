// One vCPU: its fd and shared kvm_run page, register/CPUID/MSR/LAPIC set-up, and decoding of
// KVM_RUN exits into a small enum the run loop matches on.

use std::fmt;
use std::fs::File;
use std::os::raw::c_void;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};

use super::kvm::{Cpuid2, CpuidEntry2};
use super::vm::Vm;
use crate::sys;

#[derive(Debug)]
pub enum VcpuError {
    /// A vCPU ioctl failed.
    Ioctl(&'static str, std::io::Error),
    /// The kvm_run page could not be mapped.
    MapRun(std::io::Error),
    /// KVM accepted fewer MSRs than given.
    Msrs { set: usize, wanted: usize },
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            VcpuError::Ioctl(what, e) => write!(f, "KVM vCPU ioctl {what} failed: {e}"),
            VcpuError::MapRun(e) => write!(f, "cannot map the vCPU's kvm_run page: {e}"),
            VcpuError::Msrs { set, wanted } => write!(f, "KVM set only {set} of {wanted} boot MSRs"),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct DTable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DTable,
    pub idt: DTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

#[repr(C)]
pub struct Fpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

#[repr(C)]
struct Msrs {
    nmsrs: u32,
    pad: u32,
    entries: [MsrEntry; 32],
}

#[repr(C)]
pub struct LapicState {
    pub regs: [u8; 1024],
}

/// What a KVM_RUN returned, with the data the run loop needs.
#[derive(Debug)]
pub enum VcpuExit {
    IoOut { port: u16, size: usize, count: usize, data_offset: usize },
    IoIn { port: u16, size: usize, count: usize, data_offset: usize },
    MmioRead { addr: u64, len: usize },
    MmioWrite { addr: u64, len: usize, data: [u8; 8] },
    Hlt,
    Shutdown,
    SystemEvent(u32),
    FailEntry(u64),
    InternalError { suberror: u32, data: Vec<u64> },
    /// KVM_RUN was interrupted (a kick) or returned early.
    Interrupted,
    Other(u32),
}

// Offsets inside struct kvm_run.
const RUN_IMMEDIATE_EXIT: usize = 1;
const RUN_EXIT_REASON: usize = 8;
const RUN_UNION: usize = 32;

pub struct Vcpu {
    file: File,
    pub id: u8,
    run: *mut u8,
    run_size: usize,
}

unsafe impl Send for Vcpu {}
unsafe impl Sync for Vcpu {}

impl Vcpu {
    pub fn new(vm: &Vm, id: u8, run_size: usize) -> Result<Vcpu, VcpuError> {
        let fd = sys::ioctl_val(vm.fd(), sys::KVM_CREATE_VCPU, id as u64).map_err(|e| VcpuError::Ioctl("CREATE_VCPU", e))?;
        let file = unsafe { File::from_raw_fd(fd) };
        let p = unsafe {
            sys::mmap(std::ptr::null_mut(), run_size, sys::PROT_READ | sys::PROT_WRITE, sys::MAP_SHARED, fd, 0)
        };
        if p == sys::MAP_FAILED {
            return Err(VcpuError::MapRun(std::io::Error::last_os_error()));
        }
        Ok(Vcpu { file, id, run: p as *mut u8, run_size })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn set_cpuid(&self, entries: &[CpuidEntry2]) -> Result<(), VcpuError> {
        let c = Cpuid2::from_entries(entries);
        sys::ioctl_ptr(self.fd(), sys::KVM_SET_CPUID2, &*c).map_err(|e| VcpuError::Ioctl("SET_CPUID2", e))?;
        Ok(())
    }

    pub fn set_msrs(&self, list: &[MsrEntry]) -> Result<(), VcpuError> {
        let mut m = Msrs { nmsrs: list.len().min(32) as u32, pad: 0, entries: [MsrEntry::default(); 32] };
        m.entries[..list.len().min(32)].copy_from_slice(&list[..list.len().min(32)]);
        let n = sys::ioctl_ptr(self.fd(), sys::KVM_SET_MSRS, &m).map_err(|e| VcpuError::Ioctl("SET_MSRS", e))?;
        if n as usize != m.nmsrs as usize {
            return Err(VcpuError::Msrs { set: n as usize, wanted: m.nmsrs as usize });
        }
        Ok(())
    }

    pub fn get_regs(&self) -> Result<Regs, VcpuError> {
        let mut r = Regs::default();
        sys::ioctl_out(self.fd(), sys::KVM_GET_REGS, &mut r).map_err(|e| VcpuError::Ioctl("GET_REGS", e))?;
        Ok(r)
    }

    pub fn set_regs(&self, r: &Regs) -> Result<(), VcpuError> {
        sys::ioctl_ptr(self.fd(), sys::KVM_SET_REGS, r).map_err(|e| VcpuError::Ioctl("SET_REGS", e))?;
        Ok(())
    }

    pub fn get_sregs(&self) -> Result<Sregs, VcpuError> {
        let mut s = Sregs::default();
        sys::ioctl_out(self.fd(), sys::KVM_GET_SREGS, &mut s).map_err(|e| VcpuError::Ioctl("GET_SREGS", e))?;
        Ok(s)
    }

    pub fn set_sregs(&self, s: &Sregs) -> Result<(), VcpuError> {
        sys::ioctl_ptr(self.fd(), sys::KVM_SET_SREGS, s).map_err(|e| VcpuError::Ioctl("SET_SREGS", e))?;
        Ok(())
    }

    pub fn set_fpu(&self, f: &Fpu) -> Result<(), VcpuError> {
        sys::ioctl_ptr(self.fd(), sys::KVM_SET_FPU, f).map_err(|e| VcpuError::Ioctl("SET_FPU", e))?;
        Ok(())
    }

    pub fn get_lapic(&self) -> Result<LapicState, VcpuError> {
        let mut l = LapicState { regs: [0; 1024] };
        sys::ioctl_out(self.fd(), sys::KVM_GET_LAPIC, &mut l).map_err(|e| VcpuError::Ioctl("GET_LAPIC", e))?;
        Ok(l)
    }

    pub fn set_lapic(&self, l: &LapicState) -> Result<(), VcpuError> {
        sys::ioctl_ptr(self.fd(), sys::KVM_SET_LAPIC, l).map_err(|e| VcpuError::Ioctl("SET_LAPIC", e))?;
        Ok(())
    }

    /// Makes the next (or current, with a signal) KVM_RUN return at once.
    pub fn set_immediate_exit(&self, on: bool) {
        unsafe { std::ptr::write_volatile(self.run.add(RUN_IMMEDIATE_EXIT), on as u8) };
    }

    fn run_u8(&self, off: usize) -> u8 {
        unsafe { std::ptr::read_volatile(self.run.add(off)) }
    }
    fn run_u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.run_u8(off), self.run_u8(off + 1)])
    }
    fn run_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.run_u8(off + i);
        }
        u32::from_le_bytes(b)
    }
    fn run_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.run_u8(off + i);
        }
        u64::from_le_bytes(b)
    }

    fn in_run(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.run_size)
    }

    /// Copies port-I/O data KVM left in the kvm_run page (at data_offset). Offsets come from
    /// KVM, but are still bounds-checked against the mapping.
    pub fn read_io(&self, offset: usize, buf: &mut [u8]) -> bool {
        if !self.in_run(offset, buf.len()) {
            return false;
        }
        unsafe { std::ptr::copy_nonoverlapping(self.run.add(offset), buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Places port-I/O input data into the kvm_run page for KVM to hand to the guest.
    pub fn write_io(&self, offset: usize, data: &[u8]) -> bool {
        if !self.in_run(offset, data.len()) {
            return false;
        }
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.run.add(offset), data.len()) };
        true
    }

    pub fn set_mmio_read_data(&self, data: &[u8]) {
        let n = data.len().min(8);
        self.write_io(RUN_UNION + 8, &data[..n]);
    }

    pub fn run(&self) -> Result<VcpuExit, VcpuError> {
        let r = unsafe { sys::ioctl(self.fd(), sys::KVM_RUN, 0u64) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(sys::EINTR) | Some(sys::EAGAIN) => Ok(VcpuExit::Interrupted),
                _ => Err(VcpuError::Ioctl("RUN", e)),
            };
        }
        let reason = self.run_u32(RUN_EXIT_REASON);
        let u = RUN_UNION;
        Ok(match reason {
            sys::KVM_EXIT_IO => {
                let dir = self.run_u8(u);
                let size = self.run_u8(u + 1) as usize;
                let port = self.run_u16(u + 2);
                let count = self.run_u32(u + 4) as usize;
                let data_offset = self.run_u64(u + 8) as usize;
                if dir == 1 {
                    VcpuExit::IoOut { port, size, count, data_offset }
                } else {
                    VcpuExit::IoIn { port, size, count, data_offset }
                }
            }
            sys::KVM_EXIT_MMIO => {
                let addr = self.run_u64(u);
                let mut data = [0u8; 8];
                for (i, x) in data.iter_mut().enumerate() {
                    *x = self.run_u8(u + 8 + i);
                }
                let len = (self.run_u32(u + 16) as usize).min(8);
                if self.run_u8(u + 20) != 0 {
                    VcpuExit::MmioWrite { addr, len, data }
                } else {
                    VcpuExit::MmioRead { addr, len }
                }
            }
            sys::KVM_EXIT_HLT => VcpuExit::Hlt,
            sys::KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            sys::KVM_EXIT_SYSTEM_EVENT => VcpuExit::SystemEvent(self.run_u32(u)),
            sys::KVM_EXIT_FAIL_ENTRY => VcpuExit::FailEntry(self.run_u64(u)),
            sys::KVM_EXIT_INTERNAL_ERROR => {
                let suberror = self.run_u32(u);
                let ndata = (self.run_u32(u + 4) as usize).min(16);
                let data = (0..ndata).map(|i| self.run_u64(u + 8 + 8 * i)).collect();
                VcpuExit::InternalError { suberror, data }
            }
            sys::KVM_EXIT_INTR => VcpuExit::Interrupted,
            other => VcpuExit::Other(other),
        })
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        unsafe { sys::munmap(self.run as *mut c_void, self.run_size) };
    }
}
