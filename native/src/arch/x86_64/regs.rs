// Initial register state: the PVH entry state for the boot vCPU (32-bit protected mode, flat
// segments, paging off, ebx = hvm_start_info), FPU defaults, and LAPIC LINT0/LINT1 wiring.

use super::layout;
use crate::vstate::memory::{GuestMemory, MemoryError};
use crate::vstate::vcpu::{Fpu, LapicState, Regs, Segment, Sregs};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const RFLAGS_RESERVED: u64 = 0x2;
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

const GDT_CODE: u16 = 0x08;
const GDT_DATA: u16 = 0x10;
const GDT_TSS: u16 = 0x18;

/// A GDT entry from flags/base/limit (as in the SDM's descriptor layout).
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

fn segment_from_gdt(entry: u64, selector: u16) -> Segment {
    Segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: {
            let l = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
            if (entry >> 55) & 1 == 1 {
                (l << 12) | 0xfff
            } else {
                l
            }
        },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// Writes the boot GDT and returns sregs for the PVH entry state.
pub fn pvh_sregs(mem: &GuestMemory, base: Sregs) -> Result<Sregs, MemoryError> {
    let gdt = [
        0u64,
        gdt_entry(0xc09b, 0, 0xfffff), // 32-bit code, 4 GiB
        gdt_entry(0xc093, 0, 0xfffff), // data, 4 GiB
        gdt_entry(0x008b, 0, 0x67),    // 32-bit TSS (busy)
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_u64(layout::BOOT_GDT + 8 * i as u64, *e)?;
    }
    let mut s = base;
    s.gdt.base = layout::BOOT_GDT;
    s.gdt.limit = (gdt.len() * 8 - 1) as u16;
    s.cs = segment_from_gdt(gdt[1], GDT_CODE);
    let data = segment_from_gdt(gdt[2], GDT_DATA);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = segment_from_gdt(gdt[3], GDT_TSS);
    s.cr0 = X86_CR0_PE | X86_CR0_ET;
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
    Ok(s)
}

pub fn pvh_regs(entry: u64, start_info: u64) -> Regs {
    Regs { rip: entry, rbx: start_info, rflags: RFLAGS_RESERVED, ..Default::default() }
}

pub fn boot_fpu() -> Fpu {
    Fpu {
        fpr: [[0; 16]; 8],
        fcw: 0x37f,
        fsw: 0,
        ftwx: 0,
        pad1: 0,
        last_opcode: 0,
        last_ip: 0,
        last_dp: 0,
        xmm: [[0; 16]; 16],
        mxcsr: 0x1f80,
        pad2: 0,
    }
}

fn lapic_reg(l: &LapicState, off: usize) -> u32 {
    u32::from_le_bytes([l.regs[off], l.regs[off + 1], l.regs[off + 2], l.regs[off + 3]])
}

fn set_lapic_reg(l: &mut LapicState, off: usize, v: u32) {
    l.regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// LINT0 delivers the PIC's ExtINT and LINT1 NMIs, as on a PC.
pub fn wire_lapic(l: &mut LapicState) {
    let lvt0 = lapic_reg(l, APIC_LVT0);
    set_lapic_reg(l, APIC_LVT0, (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8));
    let lvt1 = lapic_reg(l, APIC_LVT1);
    set_lapic_reg(l, APIC_LVT1, (lvt1 & !0x700) | (APIC_MODE_NMI << 8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(gdt_entry(0xc09b, 0, 0xfffff), GDT_CODE);
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.db, 1);
        assert_eq!(code.present, 1);
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), GDT_TSS);
        assert_eq!(tss.limit, 0x67);
        assert_eq!(tss.s, 0);
    }

    #[test]
    fn lapic_lint_wiring() {
        let mut l = LapicState { regs: [0; 1024] };
        set_lapic_reg(&mut l, APIC_LVT0, 0x10000);
        wire_lapic(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x10700);
        assert_eq!(lapic_reg(&l, APIC_LVT1) >> 8 & 7, 4);
    }
}
