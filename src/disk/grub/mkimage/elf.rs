//! Just enough of ELF (the System V ABI's object file format, little-endian, 32- and 64-bit)
//! to read GRUB's `kernel.img`: the header, section headers, symbols and relocations.
//! Every offset and size is checked against the file, so a damaged kernel.img is an error
//! naming what is wrong, never a panic.

use super::MkimageError;

/// `sh_type` values used here.
pub(crate) const SHT_PROGBITS: u32 = 1;
pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const SHT_RELA: u32 = 4;
pub(crate) const SHT_NOBITS: u32 = 8;
pub(crate) const SHT_REL: u32 = 9;
/// `sh_flags` bits.
pub(crate) const SHF_ALLOC: u64 = 0x2;
pub(crate) const SHF_EXECINSTR: u64 = 0x4;
/// Special section indexes of a symbol.
pub(crate) const SHN_UNDEF: u16 = 0;
pub(crate) const SHN_ABS: u16 = 0xfff1;
/// `e_type`.
pub(crate) const ET_REL: u16 = 1;
pub(crate) const ET_EXEC: u16 = 2;
/// `e_machine`.
pub(crate) const EM_386: u16 = 3;
pub(crate) const EM_X86_64: u16 = 62;

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: Vec<u8>,
    pub(crate) kind: u32,
    pub(crate) flags: u64,
    pub(crate) addr: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) link: u32,
    pub(crate) info: u32,
    pub(crate) align: u64,
    pub(crate) entsize: u64,
}

impl Section {
    pub(crate) fn is_alloc(&self) -> bool {
        self.flags & SHF_ALLOC != 0
    }
    pub(crate) fn is_exec(&self) -> bool {
        self.flags & SHF_EXECINSTR != 0
    }
}

/// One symbol table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Symbol {
    pub(crate) name: Vec<u8>,
    pub(crate) value: u64,
    pub(crate) shndx: u16,
}

/// One relocation (`Elf_Rel` has no addend: 0 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reloc {
    pub(crate) offset: u64,
    pub(crate) sym: u32,
    pub(crate) kind: u32,
    pub(crate) addend: i64,
}

/// A parsed ELF file borrowing its bytes.
#[derive(Debug)]
pub(crate) struct Elf<'a> {
    data: &'a [u8],
    pub(crate) is64: bool,
    pub(crate) kind: u16,
    pub(crate) machine: u16,
    pub(crate) sections: Vec<Section>,
}

type R<T> = std::result::Result<T, MkimageError>;

fn get(data: &[u8], at: u64, len: usize) -> R<&[u8]> {
    usize::try_from(at)
        .ok()
        .and_then(|at| data.get(at..at.checked_add(len)?))
        .ok_or(MkimageError::Truncated { len, at })
}

fn u16_at(data: &[u8], at: u64) -> R<u16> {
    Ok(u16::from_le_bytes(get(data, at, 2)?.try_into().unwrap()))
}
fn u32_at(data: &[u8], at: u64) -> R<u32> {
    Ok(u32::from_le_bytes(get(data, at, 4)?.try_into().unwrap()))
}
fn u64_at(data: &[u8], at: u64) -> R<u64> {
    Ok(u64::from_le_bytes(get(data, at, 8)?.try_into().unwrap()))
}

/// One section header (its bytes, at least the class's size): the offset of its name in the
/// section-name string table, and the section without its name.
fn section_header(s: &[u8], is64: bool) -> (u32, Section) {
    let w = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
    let x = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
    let sec = if is64 {
        Section {
            name: Vec::new(),
            kind: w(4),
            flags: x(8),
            addr: x(16),
            offset: x(24),
            size: x(32),
            link: w(40),
            info: w(44),
            align: x(48),
            entsize: x(56),
        }
    } else {
        Section {
            name: Vec::new(),
            kind: w(4),
            flags: w(8) as u64,
            addr: w(12) as u64,
            offset: w(16) as u64,
            size: w(20) as u64,
            link: w(24),
            info: w(28),
            align: w(32) as u64,
            entsize: w(36) as u64,
        }
    };
    (w(0), sec)
}

impl<'a> Elf<'a> {
    /// Parses the ELF header and section headers.
    pub(crate) fn parse(data: &'a [u8]) -> R<Elf<'a>> {
        let ident = get(data, 0, 16).map_err(|_| MkimageError::NotElf("too short"))?;
        if &ident[..4] != b"\x7fELF" {
            return Err(MkimageError::NotElf("no \\x7fELF magic"));
        }
        let is64 = match ident[4] {
            1 => false,
            2 => true,
            c => return Err(MkimageError::ElfClass(c)),
        };
        if ident[5] != 1 {
            return Err(MkimageError::BigEndian);
        }
        let kind = u16_at(data, 16)?;
        let machine = u16_at(data, 18)?;
        // e_entry (at 24) is not read: GRUB's kernel.img is relocatable, its entry a symbol.
        let (shoff, shentsize, shnum, shstrndx) = if is64 {
            (
                u64_at(data, 40)?,
                u16_at(data, 58)?,
                u16_at(data, 60)?,
                u16_at(data, 62)?,
            )
        } else {
            (
                u32_at(data, 32)? as u64,
                u16_at(data, 46)?,
                u16_at(data, 48)?,
                u16_at(data, 50)?,
            )
        };
        let want = if is64 { 64 } else { 40 };
        if shnum > 0 && (shentsize as usize) < want {
            return Err(MkimageError::SectionHeaderSize {
                size: shentsize,
                want,
            });
        }
        let mut sections = Vec::with_capacity(shnum as usize);
        let mut names = Vec::with_capacity(shnum as usize);
        for i in 0..shnum as u64 {
            let at = shoff + i * shentsize as u64;
            let s = get(data, at, want).map_err(|e| MkimageError::SectionHeader {
                index: i,
                source: Box::new(e),
            })?;
            let (name, sec) = section_header(s, is64);
            names.push(name);
            sections.push(sec);
        }
        let mut elf = Elf {
            data,
            is64,
            kind,
            machine,
            sections,
        };
        if let Some(strtab) = elf.sections.get(shstrndx as usize).cloned() {
            for (s, name) in elf.sections.iter_mut().zip(names) {
                s.name = string_at(data, &strtab, name)?;
            }
        }
        Ok(elf)
    }

    /// The bytes of section `i` (empty for `SHT_NOBITS`).
    pub(crate) fn section_data(&self, i: usize) -> R<&'a [u8]> {
        let s = self.sections.get(i).ok_or(MkimageError::NoSection(i))?;
        if s.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        let len = usize::try_from(s.size).map_err(|_| MkimageError::SectionTooLarge(i))?;
        get(self.data, s.offset, len).map_err(|e| MkimageError::Section {
            name: show(&s.name),
            source: Box::new(e),
        })
    }

    /// The index of the first section named `name`.
    pub(crate) fn find(&self, name: &[u8]) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    /// The symbols of the symbol table section `i`, in table order.
    pub(crate) fn symbols(&self, i: usize) -> R<Vec<Symbol>> {
        let s = &self.sections[i];
        let strtab = self
            .sections
            .get(s.link as usize)
            .ok_or(MkimageError::NoStringTable(s.link))?;
        let size = if self.is64 { 24 } else { 16 };
        let data = self.section_data(i)?;
        if s.entsize < size as u64 {
            return Err(MkimageError::SymbolSize {
                size: s.entsize,
                want: size,
            });
        }
        data.chunks_exact(s.entsize as usize)
            .map(|e| {
                let name = u32::from_le_bytes(e[0..4].try_into().unwrap());
                let (value, shndx) = if self.is64 {
                    (
                        u64::from_le_bytes(e[8..16].try_into().unwrap()),
                        u16::from_le_bytes(e[6..8].try_into().unwrap()),
                    )
                } else {
                    (
                        u32::from_le_bytes(e[4..8].try_into().unwrap()) as u64,
                        u16::from_le_bytes(e[14..16].try_into().unwrap()),
                    )
                };
                Ok(Symbol {
                    name: string_at(self.data, strtab, name)?,
                    value,
                    shndx,
                })
            })
            .collect()
    }

    /// The relocations of the `SHT_REL`/`SHT_RELA` section `i`.
    pub(crate) fn relocations(&self, i: usize) -> R<Vec<Reloc>> {
        let s = &self.sections[i];
        let rela = s.kind == SHT_RELA;
        let size = match (self.is64, rela) {
            (true, true) => 24,
            (true, false) => 16,
            (false, true) => 12,
            (false, false) => 8,
        };
        if s.entsize < size {
            return Err(MkimageError::RelocationSize {
                size: s.entsize,
                want: size,
                section: show(&s.name),
            });
        }
        let data = self.section_data(i)?;
        Ok(data
            .chunks_exact(s.entsize as usize)
            .map(|e| {
                if self.is64 {
                    let info = u64::from_le_bytes(e[8..16].try_into().unwrap());
                    Reloc {
                        offset: u64::from_le_bytes(e[0..8].try_into().unwrap()),
                        sym: (info >> 32) as u32,
                        kind: info as u32,
                        addend: if rela {
                            i64::from_le_bytes(e[16..24].try_into().unwrap())
                        } else {
                            0
                        },
                    }
                } else {
                    let info = u32::from_le_bytes(e[4..8].try_into().unwrap());
                    Reloc {
                        offset: u32::from_le_bytes(e[0..4].try_into().unwrap()) as u64,
                        sym: info >> 8,
                        kind: info & 0xff,
                        addend: if rela {
                            i32::from_le_bytes(e[8..12].try_into().unwrap()) as i64
                        } else {
                            0
                        },
                    }
                }
            })
            .collect())
    }
}

/// The NUL-terminated string at `at` in the string table section `strtab`.
fn string_at(data: &[u8], strtab: &Section, at: u32) -> R<Vec<u8>> {
    if at as u64 >= strtab.size {
        return Err(MkimageError::StringOutside {
            at,
            size: strtab.size,
        });
    }
    // Saturating: an offset past u64 is past the end of the file (`get` says so).
    let start = strtab.offset.saturating_add(at as u64);
    let len = (strtab.size - at as u64) as usize;
    let bytes = get(data, start, len)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(bytes[..end].to_vec())
}

/// A section or symbol name for messages.
pub(crate) fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable: sections NULL, .text (4 bytes), .shstrtab.
    fn tiny64() -> Vec<u8> {
        let shstrtab = b"\0.text\0.shstrtab\0";
        let text = [0x90u8, 0x90, 0x90, 0xc3];
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_REL.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        let text_off = f.len() as u64;
        f.extend_from_slice(&text);
        let str_off = f.len() as u64;
        f.extend_from_slice(shstrtab);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len() as u64;
        f[40..48].copy_from_slice(&shoff.to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&3u16.to_le_bytes());
        f[62..64].copy_from_slice(&2u16.to_le_bytes());
        let sh = |name: u32, kind: u32, flags: u64, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h
        };
        f.extend(sh(0, 0, 0, 0, 0));
        f.extend(sh(1, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, text_off, 4));
        f.extend(sh(7, 3, 0, str_off, shstrtab.len() as u64));
        f
    }

    #[test]
    fn reads_sections_and_their_names() {
        let f = tiny64();
        let e = Elf::parse(&f).unwrap();
        assert!(e.is64);
        assert_eq!((e.kind, e.machine), (ET_REL, EM_X86_64));
        assert_eq!(e.sections.len(), 3);
        assert_eq!(e.sections[1].name, b".text");
        assert!(e.sections[1].is_alloc() && e.sections[1].is_exec());
        assert_eq!(e.find(b".shstrtab"), Some(2));
        assert_eq!(e.section_data(1).unwrap(), &[0x90, 0x90, 0x90, 0xc3]);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let f = tiny64();
        assert!(matches!(Elf::parse(b"MZ"), Err(MkimageError::NotElf(_))));
        assert!(matches!(
            Elf::parse(&f[..40]),
            Err(MkimageError::Truncated { .. })
        ));
        // The section headers cut off.
        let cut = &f[..f.len() - 10];
        assert!(matches!(
            Elf::parse(cut),
            Err(MkimageError::SectionHeader { index: 2, .. })
        ));
        // .text pointing past the end.
        let mut bad = f.clone();
        let shoff = u64::from_le_bytes(bad[40..48].try_into().unwrap()) as usize;
        let text_size = shoff + 64 + 32;
        bad[text_size..text_size + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = Elf::parse(&bad).unwrap();
        assert!(matches!(
            e.section_data(1),
            Err(MkimageError::Section { name, .. }) if name == ".text"
        ));
        // A name offset plus the string table's offset past u64 (found by fuzzing,
        // testdata/fuzz/grub_elf/): the NULL section named at 7, the table at u64::MAX - 3.
        let mut bad = f.clone();
        bad[shoff..shoff + 4].copy_from_slice(&7u32.to_le_bytes());
        let str_off = shoff + 2 * 64 + 24;
        bad[str_off..str_off + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(matches!(
            Elf::parse(&bad),
            Err(MkimageError::Truncated { .. })
        ));
    }
}
