// x86-64 boot details: the guest physical layout, CPUID/MSR/register set-up, the MP table and
// the PVH boot protocol (ELF loading, hvm_start_info, e820 map).
pub mod cpuid;
pub mod mptable;
pub mod msr;
pub mod pvh;
pub mod regs;

/// Guest physical layout of the boot structures (all below 1 MiB).
pub mod layout {
    pub const BOOT_GDT: u64 = 0x500;
    pub const PVH_START_INFO: u64 = 0x6000;
    pub const PVH_MODLIST: u64 = 0x6040;
    pub const PVH_MEMMAP: u64 = 0x6100;
    pub const CMDLINE: u64 = 0x20000;
    /// Linux's COMMAND_LINE_SIZE on x86 is 2048, terminator included.
    pub const CMDLINE_MAX: usize = 2047;
    /// The MP table sits in the last KiB of base memory, where Linux scans for it.
    pub const MPTABLE: u64 = 0x9fc00;
    pub const EBDA_END: u64 = 0xa0000;
    pub const HIGH_MEMORY: u64 = 0x10_0000;
    /// virtio-mmio device windows, one page each, in the 32-bit MMIO gap.
    pub const MMIO_BASE: u64 = 0xd000_0000;
    pub const MMIO_SIZE: u64 = 0x1000;
    /// First GSI handed to virtio devices (0-4 are PIT, keyboard, cascade, COM2, COM1).
    pub const IRQ_BASE: u32 = 5;
    pub const IRQ_MAX: u32 = 23;
    pub const SERIAL_IRQ: u32 = 4;
    pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
    pub const IOAPIC_DEFAULT_BASE: u64 = 0xfec0_0000;
    pub const MAX_VCPUS: u8 = 32;
}
