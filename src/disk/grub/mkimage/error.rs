//! Why an image could not be assembled: a module directory that lacks a file, a `moddep.lst`
//! line without its colon, or a `kernel.img`, `diskboot.img` or `lzma_decompress.img` d2v
//! cannot use. One enum for the whole assembler ([`super::elf`], [`super::pc`],
//! [`super::efi`], [`super::modules`]); the context variants (`Kernel`, `CoreImg`, `InDir`,
//! `SectionHeader`, `Section`) keep the error they put a name to as their source.

use std::path::PathBuf;

/// A section or symbol name as messages show it.
type Name = String;

#[derive(Debug, thiserror::Error)]
pub enum MkimageError {
    // The module directory (mod.rs).
    #[error("{}: {source}: the GRUB module directory is incomplete", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}/{source}", dir.display())]
    InDir {
        dir: PathBuf,
        source: Box<MkimageError>,
    },
    #[error("{}/kernel.img: {source}", dir.display())]
    Kernel {
        dir: PathBuf,
        source: Box<MkimageError>,
    },
    #[error("{} core.img: {source}", dir.display())]
    CoreImg {
        dir: PathBuf,
        source: Box<MkimageError>,
    },

    // moddep.lst (modules.rs).
    #[error("moddep.lst line {line}: no ':' in {text:?}")]
    Moddep { line: usize, text: String },

    // ELF files (elf.rs).
    #[error("truncated: {len} bytes at {at:#x} are past the end")]
    Truncated { len: usize, at: u64 },
    #[error("not an ELF file ({0})")]
    NotElf(&'static str),
    #[error("unknown ELF class {0}")]
    ElfClass(u8),
    #[error("not a little-endian ELF file")]
    BigEndian,
    #[error("section header size {size} < {want}")]
    SectionHeaderSize { size: u16, want: usize },
    #[error("section header {index}: {source}")]
    SectionHeader {
        index: u64,
        source: Box<MkimageError>,
    },
    #[error("no section {0}")]
    NoSection(usize),
    #[error("section {0} too large")]
    SectionTooLarge(usize),
    #[error("section {name}: {source}")]
    Section {
        name: Name,
        source: Box<MkimageError>,
    },
    #[error("symbol table's string table {0} is missing")]
    NoStringTable(u32),
    #[error("symbol entry size {size} < {want}")]
    SymbolSize { size: u64, want: usize },
    #[error("relocation entry size {size} < {want} in {section}")]
    RelocationSize { size: u64, want: u64, section: Name },
    #[error("string {at} is outside its table ({size} bytes)")]
    StringOutside { at: u32, size: u64 },

    // i386-pc (pc.rs).
    #[error("not an i386 ELF executable")]
    NotI386,
    #[error("{section} is below {link:#x}")]
    BelowLink { section: Name, link: u64 },
    #[error("{section} starts at {addr:#x}, not at {link:#x}")]
    NotAtLink { section: Name, addr: u64, link: u64 },
    #[error("{section} reaches past {end:#x}")]
    PastKernelEnd { section: Name, end: u64 },
    #[error("{0} overlaps the end")]
    OverlapsEnd(Name),
    #[error("LZMA: {0}")]
    Lzma(#[source] std::io::Error),
    #[error("diskboot.img is {size} bytes; it must be {want}")]
    DiskbootSize { size: usize, want: usize },
    #[error(
        "diskboot.img loads to segment {segment:#x}, not {want:#x}: not GRUB's i386-pc diskboot.img"
    )]
    DiskbootSegment { segment: u16, want: u16 },
    #[error("lzma_decompress.img is {size} bytes; GRUB's is at most {max}")]
    DecompressorSize { size: usize, max: usize },
    #[error(
        "core image is too big ({end:#x} > {max:#x}, kernel and .bss end at {kernel_end:#x}): \
         fewer or smaller GRUB modules"
    )]
    CoreTooBig { end: u64, max: u64, kernel_end: u64 },

    // x86_64-efi (efi.rs).
    #[error("not an x86-64 relocatable ELF object")]
    NotX86_64,
    #[error("{section} has alignment {align:#x}")]
    Alignment { section: Name, align: u64 },
    #[error("sections larger than {0} bytes")]
    SectionsTooLarge(u64),
    #[error("no symbol table")]
    NoSymbolTable,
    #[error("undefined symbol {0}")]
    UndefinedSymbol(Name),
    #[error("symbol {symbol} in section {section}, which does not exist")]
    SymbolSection { symbol: Name, section: u16 },
    #[error("no _start symbol")]
    NoStart,
    #[error("relocation in {section} names symbol {symbol}")]
    RelocationSymbol { section: Name, symbol: u32 },
    #[error("relocation R_X86_64_32(S) in {0} cannot be relocated in a PE image")]
    Relocation32(Name),
    #[error("relocation type {kind} in {section} is not supported")]
    RelocationType { kind: u32, section: Name },
    #[error("relocation at {offset:#x} is outside {section}")]
    RelocationOutside { offset: u64, section: Name },
}
