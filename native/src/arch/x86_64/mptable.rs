// The Intel MultiProcessor table, so the guest finds its vCPUs, the IOAPIC and the ISA IRQ
// routing without ACPI (the guest kernel is built with X86_MPPARSE).

use std::fmt;

use super::layout;
use crate::vstate::memory::GuestMemory;

const MPC_SPEC: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
const MPC_APIC_USABLE: u8 = 1;
const IOAPIC_PINS: u8 = 24;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;

#[derive(Debug)]
pub enum MptableError {
    /// Too many vCPUs for the table's space below 640 KiB.
    TooManyCpus(u8),
    /// The table does not fit in guest memory.
    NoMemory,
}

impl fmt::Display for MptableError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MptableError::TooManyCpus(n) => write!(f, "{n} vCPUs requested; at most {} are supported", layout::MAX_VCPUS),
            MptableError::NoMemory => write!(f, "guest memory is too small to hold the MP table"),
        }
    }
}

fn checksum(b: &[u8]) -> u8 {
    (0u8).wrapping_sub(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

/// Builds the floating pointer + configuration table as bytes for `cpus` vCPUs.
pub fn build(cpus: u8, at: u64) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > layout::MAX_VCPUS {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    for i in 0..cpus {
        let mut e = vec![MP_PROCESSOR, i, APIC_VERSION, CPU_ENABLED | if i == 0 { CPU_BOOTPROCESSOR } else { 0 }];
        e.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        e.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        e.extend_from_slice(&[0u8; 8]);
        entries.extend(e);
    }
    entries.extend_from_slice(&[MP_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, MPC_APIC_USABLE]);
    entries.extend_from_slice(&(layout::IOAPIC_DEFAULT_BASE as u32).to_le_bytes());
    for irq in 0..IOAPIC_PINS {
        // irqflag 0: conforming to the bus (ISA: edge, active high), as irqfd delivers edges.
        entries.extend_from_slice(&[MP_INTSRC, MP_IRQ_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    entries.extend_from_slice(&[MP_LINTSRC, MP_IRQ_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[MP_LINTSRC, MP_IRQ_NMI, 0, 0, 0, 0, 0xff, 1]);

    let table_at = at + FLOATING_LEN as u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(MPC_SPEC);
    header.push(0); // checksum
    header.extend_from_slice(b"MSB     ");
    header.extend_from_slice(b"MSBVMM      ");
    header.extend_from_slice(&0u32.to_le_bytes()); // oem table
    header.extend_from_slice(&0u16.to_le_bytes()); // oem size
    header.extend_from_slice(&((cpus as u16) + 2 + IOAPIC_PINS as u16 + 2).to_le_bytes());
    header.extend_from_slice(&(layout::APIC_DEFAULT_BASE as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let mut table = header;
    table.extend(entries);
    table[7] = checksum(&table);

    let mut fl = Vec::with_capacity(FLOATING_LEN);
    fl.extend_from_slice(b"_MP_");
    fl.extend_from_slice(&(table_at as u32).to_le_bytes());
    fl.push(1); // length in 16-byte units
    fl.push(MPC_SPEC);
    fl.push(0); // checksum
    fl.extend_from_slice(&[0u8; 5]);
    fl[10] = checksum(&fl);

    let mut out = fl;
    out.extend(table);
    Ok(out)
}

pub fn setup(mem: &GuestMemory, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus, layout::MPTABLE)?;
    if layout::MPTABLE + bytes.len() as u64 > layout::EBDA_END {
        return Err(MptableError::TooManyCpus(cpus));
    }
    mem.write(layout::MPTABLE, &bytes).map_err(|_| MptableError::NoMemory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_valid() {
        let b = build(4, layout::MPTABLE).unwrap();
        assert_eq!(&b[0..4], b"_MP_");
        assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let t = &b[16..];
        assert_eq!(&t[0..4], b"PCMP");
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;
        assert_eq!(len, t.len());
        assert_eq!(t.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        // First processor entry is the BSP, APIC id 0.
        assert_eq!(t[HEADER_LEN], MP_PROCESSOR);
        assert_eq!(t[HEADER_LEN + 3], CPU_ENABLED | CPU_BOOTPROCESSOR);
        assert!(build(0, 0).is_err());
        assert!(build(33, 0).is_err());
        // The largest table still fits below 640 KiB.
        assert!(layout::MPTABLE + build(32, layout::MPTABLE).unwrap().len() as u64 <= layout::EBDA_END);
    }
}
