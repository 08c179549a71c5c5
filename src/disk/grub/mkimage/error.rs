//! Why an image could not be assembled: a module directory that lacks a file, a `moddep.lst`
//! line without its colon, or a `kernel.img`, `diskboot.img` or `lzma_decompress.img` d2v
//! cannot use. One enum for the whole assembler ([`super::elf`], [`super::pc`],
//! [`super::efi`], [`super::modules`]); the context variants (`Kernel`, `CoreImg`, `InDir`,
//! `SectionHeader`, `Section`) keep the error they put a name to as their source.

use std::path::PathBuf;

/// A section or symbol name as messages show it.
type Name = String;

/// Why GRUB's `core.img` or `BOOTX64.EFI` could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum MkimageError {
    // The module directory (mod.rs).
    /// A file of the module directory could not be read.
    #[error("{}: {source}: the GRUB module directory is incomplete", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An error about a file of module directory `dir`.
    #[error("{}/{source}", dir.display())]
    InDir {
        /// The module directory.
        dir: PathBuf,
        /// The error.
        source: Box<MkimageError>,
    },
    /// An error about `dir/kernel.img`.
    #[error("{}/kernel.img: {source}", dir.display())]
    Kernel {
        /// The module directory.
        dir: PathBuf,
        /// The error.
        source: Box<MkimageError>,
    },
    /// An error assembling the `core.img` of module directory `dir`.
    #[error("{} core.img: {source}", dir.display())]
    CoreImg {
        /// The module directory.
        dir: PathBuf,
        /// The error.
        source: Box<MkimageError>,
    },

    // moddep.lst (modules.rs).
    /// A `moddep.lst` line without its colon.
    #[error("moddep.lst line {line}: no ':' in {text:?}")]
    Moddep {
        /// Its line number.
        line: usize,
        /// The line.
        text: String,
    },

    // ELF files (elf.rs).
    /// An ELF read past the end of the file.
    #[error("truncated: {len} bytes at {at:#x} are past the end")]
    Truncated {
        /// Bytes read.
        len: usize,
        /// Their offset.
        at: u64,
    },
    /// Not an ELF file: too short, or no `\x7fELF` magic.
    #[error("not an ELF file ({0})")]
    NotElf(&'static str),
    /// An ELF class other than 32 or 64 bit (`EI_CLASS`).
    #[error("unknown ELF class {0}")]
    ElfClass(u8),
    /// A big-endian ELF file.
    #[error("not a little-endian ELF file")]
    BigEndian,
    /// Section headers smaller than the ELF class's (`e_shentsize`).
    #[error("section header size {size} < {want}")]
    SectionHeaderSize {
        /// Their size.
        size: u16,
        /// The size needed.
        want: usize,
    },
    /// An error in a section header.
    #[error("section header {index}: {source}")]
    SectionHeader {
        /// The header's index.
        index: u64,
        /// The error.
        source: Box<MkimageError>,
    },
    /// A section index with no section header.
    #[error("no section {0}")]
    NoSection(usize),
    /// A section too large to address in memory; its index.
    #[error("section {0} too large")]
    SectionTooLarge(usize),
    /// An error in a section.
    #[error("section {name}: {source}")]
    Section {
        /// The section's name.
        name: Name,
        /// The error.
        source: Box<MkimageError>,
    },
    /// A symbol table whose string table section (`sh_link`) does not exist.
    #[error("symbol table's string table {0} is missing")]
    NoStringTable(u32),
    /// Symbol table entries smaller than the ELF class's.
    #[error("symbol entry size {size} < {want}")]
    SymbolSize {
        /// Their size (`sh_entsize`).
        size: u64,
        /// The size needed.
        want: usize,
    },
    /// Relocation entries smaller than the ELF class's.
    #[error("relocation entry size {size} < {want} in {section}")]
    RelocationSize {
        /// Their size (`sh_entsize`).
        size: u64,
        /// The size needed.
        want: u64,
        /// The relocation section.
        section: Name,
    },
    /// A string offset outside its string table.
    #[error("string {at} is outside its table ({size} bytes)")]
    StringOutside {
        /// The offset.
        at: u32,
        /// The table's size.
        size: u64,
    },

    // i386-pc (pc.rs).
    /// `kernel.img` for `i386-pc` is not an i386 ELF executable.
    #[error("not an i386 ELF executable")]
    NotI386,
    /// A section below the kernel's link address.
    #[error("{section} is below {link:#x}")]
    BelowLink {
        /// The section.
        section: Name,
        /// The link address.
        link: u64,
    },
    /// The first section does not start at the link address.
    #[error("{section} starts at {addr:#x}, not at {link:#x}")]
    NotAtLink {
        /// The section.
        section: Name,
        /// Its address.
        addr: u64,
        /// The link address.
        link: u64,
    },
    /// A section reaching past the end of the kernel's memory.
    #[error("{section} reaches past {end:#x}")]
    PastKernelEnd {
        /// The section.
        section: Name,
        /// The end address.
        end: u64,
    },
    /// A section overlapping the end of the kernel image; its name.
    #[error("{0} overlaps the end")]
    OverlapsEnd(Name),
    /// LZMA compression of the core image failed.
    #[error("LZMA: {0}")]
    Lzma(#[source] std::io::Error),
    /// `diskboot.img` is not one sector.
    #[error("diskboot.img is {size} bytes; it must be {want}")]
    DiskbootSize {
        /// Its size.
        size: usize,
        /// The size it must have.
        want: usize,
    },
    /// `diskboot.img` loads to another segment than GRUB's i386-pc one.
    #[error(
        "diskboot.img loads to segment {segment:#x}, not {want:#x}: not GRUB's i386-pc diskboot.img"
    )]
    DiskbootSegment {
        /// The segment it loads to.
        segment: u16,
        /// GRUB's.
        want: u16,
    },
    /// `lzma_decompress.img` larger than GRUB's.
    #[error("lzma_decompress.img is {size} bytes; GRUB's is at most {max}")]
    DecompressorSize {
        /// Its size.
        size: usize,
        /// The largest GRUB's is.
        max: usize,
    },
    /// The core image, or the kernel with its `.bss`, reaches past what GRUB's BIOS loader allows.
    #[error(
        "core image is too big ({end:#x} > {max:#x}, kernel and .bss end at {kernel_end:#x}): \
         fewer or smaller GRUB modules"
    )]
    CoreTooBig {
        /// Where it ends.
        end: u64,
        /// The limit.
        max: u64,
        /// Where the kernel and its `.bss` end.
        kernel_end: u64,
    },

    // x86_64-efi (efi.rs).
    /// `kernel.img` for `x86_64-efi` is not an x86-64 relocatable ELF object.
    #[error("not an x86-64 relocatable ELF object")]
    NotX86_64,
    /// A section aligned beyond what the PE image holds.
    #[error("{section} has alignment {align:#x}")]
    Alignment {
        /// The section.
        section: Name,
        /// Its alignment.
        align: u64,
    },
    /// The sections exceed the PE image's kernel size limit; the limit.
    #[error("sections larger than {0} bytes")]
    SectionsTooLarge(u64),
    /// No symbol table section.
    #[error("no symbol table")]
    NoSymbolTable,
    /// A symbol that is neither defined nor one d2v provides; its name.
    #[error("undefined symbol {0}")]
    UndefinedSymbol(Name),
    /// A symbol whose section index has no section.
    #[error("symbol {symbol} in section {section}, which does not exist")]
    SymbolSection {
        /// The symbol.
        symbol: Name,
        /// The section index.
        section: u16,
    },
    /// No `_start` (or `start`) symbol, the PE entry point.
    #[error("no _start symbol")]
    NoStart,
    /// A relocation naming a symbol index the symbol table lacks.
    #[error("relocation in {section} names symbol {symbol}")]
    RelocationSymbol {
        /// The relocation's section.
        section: Name,
        /// The symbol index.
        symbol: u32,
    },
    /// A 32-bit absolute relocation (`R_X86_64_32`, `R_X86_64_32S`), which a PE image cannot
    /// relocate; the section.
    #[error("relocation R_X86_64_32(S) in {0} cannot be relocated in a PE image")]
    Relocation32(Name),
    /// A relocation type d2v does not apply.
    #[error("relocation type {kind} in {section} is not supported")]
    RelocationType {
        /// The type.
        kind: u32,
        /// The section.
        section: Name,
    },
    /// A relocation outside its target section.
    #[error("relocation at {offset:#x} is outside {section}")]
    RelocationOutside {
        /// Its offset.
        offset: u64,
        /// The section.
        section: Name,
    },
}
