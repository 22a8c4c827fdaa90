// The PVH boot protocol: load an ELF vmlinux's PT_LOAD segments, find its
// XEN_ELFNOTE_PHYS32_ENTRY note, place the initramfs and command line, and write hvm_start_info
// with the e820 memory map. The ELF file is untrusted input too: every offset is checked.

use std::fmt;

use super::layout;
use crate::vstate::memory::GuestMemory;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const MAX_PHDRS: usize = 64;

const HVM_START_MAGIC: u32 = 0x336e_c578;
const HVM_START_VERSION: u32 = 1;
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
const PAGE: u64 = 4096;

#[derive(Debug)]
pub enum BootError {
    /// The kernel file is not a 64-bit little-endian x86-64 ELF.
    NotElf(&'static str),
    /// The ELF has no PVH entry note.
    NoPvhNote,
    /// A segment lies outside the file or guest RAM, or below 1 MiB.
    BadSegment { paddr: u64, memsz: u64 },
    /// The initramfs does not fit in guest RAM next to the kernel.
    InitrdTooLarge { size: u64, room: u64 },
    /// The command line is longer than the guest kernel accepts.
    CmdlineTooLong(usize),
    /// The command line contains a NUL byte.
    CmdlineNul,
    /// Writing boot structures into guest memory failed.
    Memory(String),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            BootError::NotElf(why) => write!(f, "kernel is not a usable x86-64 ELF vmlinux: {why} (pass the uncompressed vmlinux, not bzImage)"),
            BootError::NoPvhNote => write!(f, "kernel ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y"),
            BootError::BadSegment { paddr, memsz } => {
                write!(f, "kernel segment at {paddr:#x} (+{memsz:#x}) lies outside the file or guest RAM (give the VM more memory?)")
            }
            BootError::InitrdTooLarge { size, room } => {
                write!(f, "initramfs of {size} bytes does not fit in the {room} bytes of guest RAM above the kernel; give the VM more memory")
            }
            BootError::CmdlineTooLong(n) => write!(f, "kernel command line is {n} bytes; the limit is {}", layout::CMDLINE_MAX),
            BootError::CmdlineNul => write!(f, "kernel command line contains a NUL byte"),
            BootError::Memory(e) => write!(f, "cannot write boot data into guest memory: {e}"),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug)]
pub struct ElfImage {
    pub segments: Vec<Segment>,
    pub pvh_entry: Option<u64>,
}

/// Parses headers and notes; touches no guest memory.
pub fn parse_elf(file: &[u8]) -> Result<ElfImage, BootError> {
    if file.len() < EHDR_LEN || &file[0..4] != ELF_MAGIC {
        return Err(BootError::NotElf("no ELF magic"));
    }
    if file[4] != ELFCLASS64 || file[5] != ELFDATA2LSB {
        return Err(BootError::NotElf("not ELF64 little-endian"));
    }
    if u16_at(file, 18) != Some(EM_X86_64) {
        return Err(BootError::NotElf("machine is not x86-64"));
    }
    let phoff = u64_at(file, 32).ok_or(BootError::NotElf("truncated header"))? as usize;
    let phentsize = u16_at(file, 54).ok_or(BootError::NotElf("truncated header"))? as usize;
    let phnum = u16_at(file, 56).ok_or(BootError::NotElf("truncated header"))? as usize;
    if phentsize < PHDR_LEN || phnum == 0 || phnum > MAX_PHDRS {
        return Err(BootError::NotElf("bad program header table"));
    }
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for i in 0..phnum {
        let off = phoff.checked_add(i * phentsize).ok_or(BootError::NotElf("bad program header table"))?;
        let p_type = u32_at(file, off).ok_or(BootError::NotElf("program header outside the file"))?;
        let p_offset = u64_at(file, off + 8).ok_or(BootError::NotElf("program header outside the file"))?;
        let p_paddr = u64_at(file, off + 24).ok_or(BootError::NotElf("program header outside the file"))?;
        let p_filesz = u64_at(file, off + 32).ok_or(BootError::NotElf("program header outside the file"))?;
        let p_memsz = u64_at(file, off + 40).ok_or(BootError::NotElf("program header outside the file"))?;
        let in_file = p_offset.checked_add(p_filesz).is_some_and(|e| e <= file.len() as u64);
        match p_type {
            PT_LOAD => {
                if !in_file || p_filesz > p_memsz {
                    return Err(BootError::BadSegment { paddr: p_paddr, memsz: p_memsz });
                }
                segments.push(Segment { offset: p_offset, paddr: p_paddr, filesz: p_filesz, memsz: p_memsz });
            }
            PT_NOTE if in_file => {
                let notes = &file[p_offset as usize..(p_offset + p_filesz) as usize];
                if let Some(e) = find_pvh_note(notes) {
                    pvh_entry = Some(e);
                }
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(BootError::NotElf("no loadable segments"));
    }
    Ok(ElfImage { segments, pvh_entry })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn find_pvh_note(mut notes: &[u8]) -> Option<u64> {
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let ntype = u32_at(notes, 8)?;
        let name_end = 12usize.checked_add(align4(namesz))?;
        let desc_end = name_end.checked_add(align4(descsz))?;
        if desc_end > notes.len() {
            return None;
        }
        let name = &notes[12..12 + namesz];
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            let d = &notes[name_end..name_end + descsz];
            return match descsz {
                4 => Some(u32_at(d, 0)? as u64),
                8 => Some(u64_at(d, 0)?),
                _ => None,
            };
        }
        notes = &notes[desc_end..];
    }
    None
}

/// Copies segments into guest memory; returns (PVH entry, highest address used by the kernel).
pub fn load_kernel(mem: &GuestMemory, file: &[u8]) -> Result<(u64, u64), BootError> {
    let img = parse_elf(file)?;
    let entry = img.pvh_entry.ok_or(BootError::NoPvhNote)?;
    let mut top = 0;
    for s in &img.segments {
        let bad = BootError::BadSegment { paddr: s.paddr, memsz: s.memsz };
        if s.paddr < layout::HIGH_MEMORY || mem.check_range(s.paddr, s.memsz as usize).is_err() {
            return Err(bad);
        }
        let src = &file[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write(s.paddr, src).map_err(|e| BootError::Memory(e.to_string()))?;
        mem.fill(s.paddr + s.filesz, (s.memsz - s.filesz) as usize, 0).map_err(|e| BootError::Memory(e.to_string()))?;
        top = top.max(s.paddr + s.memsz);
    }
    Ok((entry, top))
}

/// Places the initramfs at the top of low RAM; returns its guest address.
pub fn load_initrd(mem: &GuestMemory, data: &[u8], kernel_end: u64) -> Result<u64, BootError> {
    let end = mem.low_end();
    let size = data.len() as u64;
    let start_floor = (kernel_end + PAGE - 1) & !(PAGE - 1);
    let room = end.saturating_sub(start_floor);
    if size > room {
        return Err(BootError::InitrdTooLarge { size, room });
    }
    let addr = (end - size) & !(PAGE - 1);
    mem.write(addr, data).map_err(|e| BootError::Memory(e.to_string()))?;
    Ok(addr)
}

pub fn e820_map(mem: &GuestMemory) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, layout::MPTABLE, E820_RAM),
        (layout::MPTABLE, layout::EBDA_END - layout::MPTABLE, E820_RESERVED),
    ];
    for r in mem.regions() {
        if r.gpa == 0 {
            map.push((layout::HIGH_MEMORY, r.size - layout::HIGH_MEMORY, E820_RAM));
        } else {
            map.push((r.gpa, r.size, E820_RAM));
        }
    }
    map
}

/// Writes the command line, module list, memory map and hvm_start_info; returns its address.
pub fn write_start_info(
    mem: &GuestMemory,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
) -> Result<u64, BootError> {
    if cmdline.len() > layout::CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let m = |e: crate::vstate::memory::MemoryError| BootError::Memory(e.to_string());
    mem.write(layout::CMDLINE, cmdline.as_bytes()).map_err(m)?;
    mem.write(layout::CMDLINE + cmdline.len() as u64, &[0]).map_err(m)?;
    let map = e820_map(mem);
    for (i, (addr, size, ty)) in map.iter().enumerate() {
        let at = layout::PVH_MEMMAP + 24 * i as u64;
        mem.write_u64(at, *addr).map_err(m)?;
        mem.write_u64(at + 8, *size).map_err(m)?;
        mem.write_u32(at + 16, *ty).map_err(m)?;
        mem.write_u32(at + 20, 0).map_err(m)?;
    }
    let mut nr_modules = 0;
    if let Some((addr, size)) = initrd {
        mem.write_u64(layout::PVH_MODLIST, addr).map_err(m)?;
        mem.write_u64(layout::PVH_MODLIST + 8, size).map_err(m)?;
        mem.write_u64(layout::PVH_MODLIST + 16, 0).map_err(m)?;
        mem.write_u64(layout::PVH_MODLIST + 24, 0).map_err(m)?;
        nr_modules = 1;
    }
    let s = layout::PVH_START_INFO;
    mem.write_u32(s, HVM_START_MAGIC).map_err(m)?;
    mem.write_u32(s + 4, HVM_START_VERSION).map_err(m)?;
    mem.write_u32(s + 8, 0).map_err(m)?;
    mem.write_u32(s + 12, nr_modules).map_err(m)?;
    mem.write_u64(s + 16, if nr_modules > 0 { layout::PVH_MODLIST } else { 0 }).map_err(m)?;
    mem.write_u64(s + 24, layout::CMDLINE).map_err(m)?;
    mem.write_u64(s + 32, 0).map_err(m)?; // no ACPI RSDP
    mem.write_u64(s + 40, layout::PVH_MEMMAP).map_err(m)?;
    mem.write_u32(s + 48, map.len() as u32).map_err(m)?;
    mem.write_u32(s + 52, 0).map_err(m)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD and one PT_NOTE carrying the PVH entry.
    pub fn tiny_elf(paddr: u64, code: &[u8], entry: u32) -> Vec<u8> {
        let mut f = vec![0u8; EHDR_LEN + 2 * PHDR_LEN];
        f[0..4].copy_from_slice(ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR_LEN as u64).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.to_le_bytes());
        let code_off = f.len() as u64;
        let note_off = code_off + code.len() as u64;
        let ph = |f: &mut Vec<u8>, i: usize, t: u32, off: u64, pa: u64, sz: u64| {
            let o = EHDR_LEN + i * PHDR_LEN;
            f[o..o + 4].copy_from_slice(&t.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
            f[o + 24..o + 32].copy_from_slice(&pa.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&sz.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&sz.to_le_bytes());
        };
        ph(&mut f, 0, PT_LOAD, code_off, paddr, code.len() as u64);
        ph(&mut f, 1, PT_NOTE, note_off, 0, note.len() as u64);
        f.extend_from_slice(code);
        f.extend_from_slice(&note);
        f
    }

    #[test]
    fn loads_segments_and_finds_the_pvh_entry() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let elf = tiny_elf(0x100000, &[0xf4, 0xf4], 0x100001);
        let (entry, top) = load_kernel(&mem, &elf).unwrap();
        assert_eq!(entry, 0x100001);
        assert_eq!(top, 0x100002);
        assert_eq!(mem.read_u16(0x100000).unwrap(), 0xf4f4);
    }

    #[test]
    fn rejects_hostile_elf_files() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        assert!(matches!(load_kernel(&mem, b"not an elf"), Err(BootError::NotElf(_))));
        // Segment beyond guest RAM.
        let elf = tiny_elf(0x7fff_0000, &[0x90], 0x100000);
        assert!(matches!(load_kernel(&mem, &elf), Err(BootError::BadSegment { .. })));
        // Segment below 1 MiB would overwrite boot structures.
        let elf = tiny_elf(0x1000, &[0x90], 0x1000);
        assert!(matches!(load_kernel(&mem, &elf), Err(BootError::BadSegment { .. })));
        // Truncated file: filesz reaches past the end.
        let mut elf = tiny_elf(0x100000, &[0x90; 16], 0x100000);
        elf.truncate(elf.len() - 30);
        assert!(load_kernel(&mem, &elf).is_err());
        // No note.
        let mut elf = tiny_elf(0x100000, &[0x90], 0x100000);
        let o = EHDR_LEN + PHDR_LEN;
        elf[o..o + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(load_kernel(&mem, &elf), Err(BootError::NoPvhNote)));
    }

    #[test]
    fn start_info_and_initrd_placement() {
        let mem = GuestMemory::new(8 << 20).unwrap();
        let addr = load_initrd(&mem, &[7u8; 5000], 0x200000).unwrap();
        assert_eq!(addr % 4096, 0);
        assert!(addr + 5000 <= 8 << 20);
        assert!(load_initrd(&mem, &vec![0u8; 8 << 20], 0x200000).is_err());
        let s = write_start_info(&mem, "console=ttyS0", Some((addr, 5000))).unwrap();
        assert_eq!(mem.read_u32(s).unwrap(), HVM_START_MAGIC);
        assert_eq!(mem.read_u32(s + 12).unwrap(), 1);
        assert_eq!(mem.read_u32(s + 48).unwrap(), 3);
        assert!(write_start_info(&mem, &"x".repeat(3000), None).is_err());
        assert!(write_start_info(&mem, "a\0b", None).is_err());
    }
}
