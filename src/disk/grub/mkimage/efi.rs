//! x86_64-efi: GRUB's `kernel.img` is a relocatable ELF object. Its code sections and then
//! its data sections (and zeroed .bss) are laid out after the PE headers, its relocations
//! applied for image base 0, and every absolute (R_X86_64_64) one recorded as a PE base
//! relocation so the firmware can load the image anywhere. The module area becomes the `mods`
//! section, where the kernel looks for its modules. The PE/COFF layout is the one GRUB 2.06's
//! grub-mkimage writes (4 KiB section and file alignment, sections .text, .data, mods, .reloc).

use super::elf::{self, Elf, SHN_ABS, SHN_UNDEF, SHT_NOBITS, SHT_REL, SHT_RELA, SHT_SYMTAB};
use super::MkimageError;

/// PE section and file alignment (`GRUB_PE32_SECTION_ALIGNMENT`, the EFI page).
const ALIGN: u64 = 4096;
/// MS-DOS header; `e_lfanew` at 0x3c points past it to the PE signature.
const DOS_HEADER: usize = 0x80;
const COFF_HEADER: usize = 20;
const OPTIONAL_HEADER: usize = 240;
const SECTION_HEADER: usize = 40;
const SECTIONS: usize = 4;
/// Headers rounded up to the file alignment: also where .text starts (its RVA).
const HEADERS: u64 = align(
    (DOS_HEADER + 4 + COFF_HEADER + OPTIONAL_HEADER + SECTIONS * SECTION_HEADER) as u64,
    ALIGN,
);

const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
/// EXECUTABLE_IMAGE | LINE_NUMS_STRIPPED | LOCAL_SYMS_STRIPPED | DEBUG_STRIPPED.
const CHARACTERISTICS: u16 = 0x0002 | 0x0004 | 0x0008 | 0x0200;
const PE32_PLUS: u16 = 0x20b;
const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
const DATA_DIRECTORIES: u32 = 16;
const BASE_RELOCATION_DIRECTORY: usize = 5;
const SCN_CNT_CODE: u32 = 0x20;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x40;
const SCN_MEM_DISCARDABLE: u32 = 0x0200_0000;
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const SCN_MEM_READ: u32 = 0x4000_0000;
const SCN_MEM_WRITE: u32 = 0x8000_0000;
const IMAGE_REL_BASED_DIR64: u16 = 10;

const R_X86_64_NONE: u32 = 0;
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32: u32 = 10;
const R_X86_64_32S: u32 = 11;
const R_X86_64_PC64: u32 = 24;

const fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The kernel laid out in the PE's address space, its first byte at RVA [`HEADERS`].
#[derive(Debug)]
pub struct Kernel {
    /// Code, data and zeroed .bss; `exec_size` and the whole length are multiples of 4 KiB.
    pub(crate) image: Vec<u8>,
    pub(crate) exec_size: u64,
    /// RVA of `_start`.
    pub(crate) entry: u64,
    /// RVAs of the 64-bit absolute addresses the loader must add its load address to.
    pub(crate) fixups: Vec<u64>,
}

fn is_text(s: &elf::Section) -> bool {
    s.is_alloc() && s.is_exec()
}
fn is_data(s: &elf::Section) -> bool {
    s.is_alloc() && !s.is_exec() && s.kind != SHT_NOBITS
}
fn is_bss(s: &elf::Section) -> bool {
    s.is_alloc() && !s.is_exec() && s.kind == SHT_NOBITS
}

/// The largest kernel laid out (code, data, .bss); GRUB's is about 200 KiB.
const MAX_KERNEL: u64 = 64 << 20;

/// Places section `s` at the next offset (counted from .text's start) that puts its RVA on
/// its alignment; returns where it starts.
fn place(s: &elf::Section, at: &mut u64) -> Result<u64, MkimageError> {
    if s.align > 1 {
        if s.align > MAX_KERNEL {
            return Err(MkimageError::Alignment {
                section: elf::show(&s.name),
                align: s.align,
            });
        }
        *at = align(*at + HEADERS, s.align) - HEADERS;
    }
    let start = *at;
    *at = at
        .checked_add(s.size)
        .filter(|&end| end <= MAX_KERNEL)
        .ok_or(MkimageError::SectionsTooLarge(MAX_KERNEL))?;
    Ok(start)
}

/// Where each section of the kernel goes, counted from .text's start.
struct Placement {
    addr: Vec<u64>,
    /// Sections laid out (code, data, .bss); the rest are not part of the image.
    kept: Vec<bool>,
    exec_size: u64,
    bss_start: u64,
    end: u64,
}

impl Placement {
    /// A kept section's RVA in the PE image.
    fn rva(&self, i: usize) -> u64 {
        self.addr[i] + HEADERS
    }
}

/// Lays out and relocates an x86_64-efi `kernel.img`.
pub fn load_kernel(data: &[u8]) -> Result<Kernel, MkimageError> {
    let e = Elf::parse(data)?;
    if !e.is64 || e.machine != elf::EM_X86_64 || e.kind != elf::ET_REL {
        return Err(MkimageError::NotX86_64);
    }
    let p = place_sections(&e)?;
    let mut image = vec![0u8; p.end as usize];
    for (i, s) in e.sections.iter().enumerate() {
        if p.kept[i] && s.kind != SHT_NOBITS {
            let bytes = e.section_data(i)?;
            image[p.addr[i] as usize..][..bytes.len()].copy_from_slice(bytes);
        }
    }
    let (symbols, entry) = resolve_symbols(&e, &p)?;
    let mut fixups = Vec::new();
    for (ri, rs) in e.sections.iter().enumerate() {
        if rs.kind != SHT_REL && rs.kind != SHT_RELA {
            continue;
        }
        let target = rs.info as usize;
        if target >= e.sections.len() || !p.kept[target] {
            continue;
        }
        for r in e.relocations(ri)? {
            let sym =
                symbols
                    .get(r.sym as usize)
                    .ok_or_else(|| MkimageError::RelocationSymbol {
                        section: elf::show(&rs.name),
                        symbol: r.sym,
                    })?;
            let value = sym.value.wrapping_add(r.addend as u64);
            if relocate(&e, &p, &mut image, target, &rs.name, &r, value)? {
                fixups.push(p.rva(target) + r.offset);
            }
        }
    }
    Ok(Kernel {
        image,
        exec_size: p.exec_size,
        entry,
        fixups,
    })
}

/// Code first, then data, then .bss, each section on its alignment.
fn place_sections(e: &Elf) -> Result<Placement, MkimageError> {
    let n = e.sections.len();
    let mut addr = vec![0u64; n];
    let mut kept = vec![false; n];
    let mut at = 0u64;
    let mut place_all =
        |pick: fn(&elf::Section) -> bool, at: &mut u64| -> Result<(), MkimageError> {
            for (i, s) in e.sections.iter().enumerate() {
                if pick(s) {
                    addr[i] = place(s, at)?;
                    kept[i] = true;
                }
            }
            Ok(())
        };
    place_all(is_text, &mut at)?;
    let exec_size = align(at, ALIGN);
    at = exec_size;
    place_all(is_data, &mut at)?;
    let bss_start = at;
    place_all(is_bss, &mut at)?;
    Ok(Placement {
        addr,
        kept,
        exec_size,
        bss_start,
        end: align(at, ALIGN),
    })
}

/// The symbol table with each symbol's value made an RVA (`__bss_start` and `_end` defined
/// by the layout), and the entry point (`_start` or `start`).
fn resolve_symbols(e: &Elf, p: &Placement) -> Result<(Vec<elf::Symbol>, u64), MkimageError> {
    let symtab = e
        .sections
        .iter()
        .position(|s| s.kind == SHT_SYMTAB)
        .ok_or(MkimageError::NoSymbolTable)?;
    let mut symbols = e.symbols(symtab)?;
    let mut entry = None;
    for sym in &mut symbols {
        match sym.shndx {
            SHN_ABS => continue,
            SHN_UNDEF if sym.name.is_empty() => continue,
            SHN_UNDEF if sym.name == b"__bss_start" => sym.value = p.bss_start,
            SHN_UNDEF if sym.name == b"_end" => sym.value = p.end,
            SHN_UNDEF => return Err(MkimageError::UndefinedSymbol(elf::show(&sym.name))),
            i if i as usize >= e.sections.len() => {
                return Err(MkimageError::SymbolSection {
                    symbol: elf::show(&sym.name),
                    section: i,
                })
            }
            i => sym.value = sym.value.wrapping_add(p.rva(i as usize)),
        }
        if entry.is_none() && (sym.name == b"_start" || sym.name == b"start") {
            entry = Some(sym.value);
        }
    }
    Ok((symbols, entry.ok_or(MkimageError::NoStart)?))
}

/// Applies relocation `r` of section `target` (its relocation section named `rel_name`) with
/// the symbol's `value`; whether the loader must fix the field up (an absolute address).
fn relocate(
    e: &Elf,
    p: &Placement,
    image: &mut [u8],
    target: usize,
    rel_name: &[u8],
    r: &elf::Reloc,
    value: u64,
) -> Result<bool, MkimageError> {
    let width = match r.kind {
        R_X86_64_NONE => return Ok(false),
        R_X86_64_64 | R_X86_64_PC64 => 8,
        R_X86_64_PC32 | R_X86_64_PLT32 => 4,
        R_X86_64_32 | R_X86_64_32S => return Err(MkimageError::Relocation32(elf::show(rel_name))),
        k => {
            return Err(MkimageError::RelocationType {
                kind: k,
                section: elf::show(rel_name),
            })
        }
    };
    if r.offset
        .checked_add(width)
        .is_none_or(|x| x > e.sections[target].size)
    {
        return Err(MkimageError::RelocationOutside {
            offset: r.offset,
            section: elf::show(&e.sections[target].name),
        });
    }
    let place = p.rva(target) + r.offset;
    let at = (p.addr[target] + r.offset) as usize;
    let field = &mut image[at..at + width as usize];
    match r.kind {
        R_X86_64_64 => {
            let v = u64::from_le_bytes(field[..].try_into().unwrap()).wrapping_add(value);
            field.copy_from_slice(&v.to_le_bytes());
            Ok(true)
        }
        R_X86_64_PC64 => {
            let v = u64::from_le_bytes(field[..].try_into().unwrap())
                .wrapping_add(value)
                .wrapping_sub(place);
            field.copy_from_slice(&v.to_le_bytes());
            Ok(false)
        }
        _ => {
            let v = (u32::from_le_bytes(field[..].try_into().unwrap()) as u64)
                .wrapping_add(value)
                .wrapping_sub(place) as u32;
            field.copy_from_slice(&v.to_le_bytes());
            Ok(false)
        }
    }
}

/// The `.reloc` section: base relocation blocks, one per 4 KiB page touched in a row (as
/// grub-mkimage groups them: a new block whenever the next address leaves the page), each
/// padded with ABSOLUTE entries to 8 bytes and the last to the file alignment.
pub(crate) fn base_relocations(fixups: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut block: Option<(u64, Vec<u16>)> = None;
    let close = |out: &mut Vec<u8>, page: u64, entries: &[u16]| {
        out.extend_from_slice(&(page as u32).to_le_bytes());
        out.extend_from_slice(&((8 + 2 * entries.len()) as u32).to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.to_le_bytes());
        }
    };
    for &a in fixups {
        if let Some((page, entries)) = &mut block {
            if a < *page || a >= *page + 0x1000 {
                while !(8 + 2 * entries.len()).is_multiple_of(8) {
                    entries.push(0);
                }
                close(&mut out, *page, entries);
                block = None;
            }
        }
        let (page, entries) = block.get_or_insert_with(|| (a & !0xfff, Vec::new()));
        entries.push((IMAGE_REL_BASED_DIR64 << 12) | (a - *page) as u16);
    }
    if let Some((page, mut entries)) = block {
        let next = out.len() as u64 + 8 + 2 * entries.len() as u64;
        entries.resize(
            entries.len() + ((align(next, ALIGN) - next) / 2) as usize,
            0,
        );
        close(&mut out, page, &entries);
    }
    out
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The EFI application: headers, .text and .data from `kernel`, `mods` holding `modules`
/// (the module area) and .reloc. Long on purpose: the headers field by field in the PE/COFF
/// specification's order, which reads best as one sequence.
pub fn pe_image(kernel: &Kernel, modules: &[u8]) -> Vec<u8> {
    let reloc = base_relocations(&kernel.fixups);
    let kernel_size = kernel.image.len() as u64;
    let core = kernel_size + modules.len() as u64;
    let size = align(HEADERS + core, ALIGN) + align(reloc.len() as u64, ALIGN);
    let mut pe = vec![0u8; size as usize];
    pe[HEADERS as usize..][..kernel.image.len()].copy_from_slice(&kernel.image);
    pe[(HEADERS + kernel_size) as usize..][..modules.len()].copy_from_slice(modules);

    pe[0..2].copy_from_slice(b"MZ");
    put32(&mut pe, 0x3c, DOS_HEADER as u64);
    pe[DOS_HEADER..DOS_HEADER + 4].copy_from_slice(b"PE\0\0");
    let coff = DOS_HEADER + 4;
    put16(&mut pe, coff, IMAGE_FILE_MACHINE_AMD64);
    put16(&mut pe, coff + 2, SECTIONS as u16);
    // TimeDateStamp stays 0: no clock in the output.
    put16(&mut pe, coff + 16, OPTIONAL_HEADER as u16);
    put16(&mut pe, coff + 18, CHARACTERISTICS);

    let data_raw = kernel_size - kernel.exec_size;
    let data_virtual = align(data_raw, ALIGN);
    let mods_start = HEADERS + kernel_size;
    let reloc_start = size - align(reloc.len() as u64, ALIGN);
    let mods_raw = reloc_start - mods_start;
    let o = coff + COFF_HEADER;
    put16(&mut pe, o, PE32_PLUS);
    put32(&mut pe, o + 4, kernel.exec_size);
    put32(
        &mut pe,
        o + 8,
        data_virtual + align(modules.len() as u64, ALIGN),
    );
    put32(&mut pe, o + 16, kernel.entry);
    put32(&mut pe, o + 20, HEADERS);
    // ImageBase 0: every absolute address is relocated by the loader.
    put32(&mut pe, o + 32, ALIGN);
    put32(&mut pe, o + 36, ALIGN);
    put32(&mut pe, o + 56, size);
    put32(&mut pe, o + 60, HEADERS);
    put16(&mut pe, o + 68, SUBSYSTEM_EFI_APPLICATION);
    for field in [72, 80, 88, 96] {
        put64(&mut pe, o + field, 0x10000);
    }
    put32(&mut pe, o + 108, DATA_DIRECTORIES as u64);
    let dir = o + 112 + 8 * BASE_RELOCATION_DIRECTORY;
    let reloc_virtual = align(reloc.len() as u64, ALIGN);

    let mut rva = HEADERS;
    let mut raw = HEADERS;
    let mut section = o + OPTIONAL_HEADER;
    let mut add = |pe: &mut [u8], name: &[u8], virt: u64, raw_size: u64, flags: u32| {
        pe[section..section + name.len()].copy_from_slice(name);
        put32(pe, section + 8, virt);
        put32(pe, section + 12, rva);
        put32(pe, section + 16, raw_size);
        put32(pe, section + 20, raw);
        put32(pe, section + 36, flags as u64);
        let at = rva;
        rva = align(rva + virt, ALIGN);
        raw += raw_size;
        section += SECTION_HEADER;
        at
    };
    let rw = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ | SCN_MEM_WRITE;
    add(
        &mut pe,
        b".text",
        kernel.exec_size,
        kernel.exec_size,
        SCN_CNT_CODE | SCN_MEM_EXECUTE | SCN_MEM_READ,
    );
    add(&mut pe, b".data", data_virtual, data_raw, rw);
    add(&mut pe, b"mods", align(mods_raw, ALIGN), mods_raw, rw);
    let reloc_rva = add(
        &mut pe,
        b".reloc",
        reloc_virtual,
        reloc.len() as u64,
        SCN_CNT_INITIALIZED_DATA | SCN_MEM_DISCARDABLE | SCN_MEM_READ,
    );
    put32(&mut pe, dir, reloc_rva);
    put32(&mut pe, dir + 4, reloc_virtual);
    pe[reloc_start as usize..][..reloc.len()].copy_from_slice(&reloc);
    pe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_fit_in_one_page() {
        assert_eq!(HEADERS, 4096);
    }

    #[test]
    fn base_relocations_group_by_page_and_pad() {
        let r = base_relocations(&[0x1008, 0x1010, 0x1ff8, 0x3000]);
        // Block 1: page 0x1000, 3 entries + 1 padding = 16 bytes.
        assert_eq!(u32::from_le_bytes(r[0..4].try_into().unwrap()), 0x1000);
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 16);
        assert_eq!(u16::from_le_bytes(r[8..10].try_into().unwrap()), 0xa008);
        assert_eq!(u16::from_le_bytes(r[12..14].try_into().unwrap()), 0xaff8);
        assert_eq!(&r[14..16], &[0, 0]);
        // Block 2: page 0x3000, padded so the section is one 4 KiB page.
        assert_eq!(u32::from_le_bytes(r[16..20].try_into().unwrap()), 0x3000);
        assert_eq!(u32::from_le_bytes(r[20..24].try_into().unwrap()), 4096 - 16);
        assert_eq!(u16::from_le_bytes(r[24..26].try_into().unwrap()), 0xa000);
        assert_eq!(r.len(), 4096);
        // An address below the open block's page starts a new block too.
        let r = base_relocations(&[0x2000, 0x1000]);
        assert_eq!(u32::from_le_bytes(r[16..20].try_into().unwrap()), 0x1000);
        assert!(base_relocations(&[]).is_empty());
    }

    #[test]
    fn pe_headers_describe_the_sections() {
        let kernel = Kernel {
            image: vec![0xcc; 3 * 4096],
            exec_size: 2 * 4096,
            entry: 0x1010,
            fixups: vec![0x2000],
        };
        let pe = pe_image(&kernel, &[7u8; 100]);
        // headers + .text (2 pages) + .data + mods (1 page) + .reloc (1 page)
        assert_eq!(pe.len(), 4096 * 6);
        assert_eq!(&pe[0..2], b"MZ");
        assert_eq!(&pe[0x80..0x84], b"PE\0\0");
        let w = |at: usize| u32::from_le_bytes(pe[at..at + 4].try_into().unwrap());
        let o = 0x98;
        assert_eq!(w(o + 16), 0x1010);
        assert_eq!(w(o + 56), 4096 * 6);
        let sec = |i: usize| o + 240 + 40 * i;
        assert_eq!(&pe[sec(2)..sec(2) + 4], b"mods");
        assert_eq!(w(sec(2) + 12), 4096 * 4, "mods RVA");
        assert_eq!(w(sec(2) + 20), 4096 * 4, "mods file offset");
        assert_eq!(pe[4096 * 4], 7);
        assert_eq!(w(sec(3) + 12), 4096 * 5, ".reloc RVA");
        assert_eq!(w(o + 112 + 40), 4096 * 5, "base relocation directory");
        assert_eq!(w(4096 * 5), 0x2000, "first block's page");
    }
}
