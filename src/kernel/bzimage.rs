//! The x86 boot protocol's setup header of a bzImage (Linux
//! `Documentation/arch/x86/boot.rst`): the `HdrS` magic at 0x202 marks an x86 kernel, and the
//! 16-bit `kernel_version` field at 0x20E points (minus 0x200) at its NUL-terminated version
//! string, `6.1.0-28-cloud-amd64 (debian-kernel@…) #1 SMP …`, whose first word is the release
//! (`uname -r`). Anything else is described for the error: an ELF file's machine, an arm64
//! `Image`, compressed data.

use std::io::Read;

/// Bytes read from the start of the file: the setup header and the farthest version string
/// its 16-bit pointer can name.
const HEAD: u64 = 0x200 + 0x1_0000 + 256;

/// What a kernel file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    /// An x86 bzImage with its version string.
    X86 {
        /// The whole version string.
        version: String,
    },
    /// Not an x86 bzImage: what it is instead.
    Other(String),
}

impl Header {
    /// The release: the version string's first word.
    pub(crate) fn release(version: &str) -> &str {
        version.split_whitespace().next().unwrap_or("")
    }
}

/// Reads the header of the kernel file `r`.
pub(crate) fn read(r: impl Read) -> std::io::Result<Header> {
    let mut head = Vec::new();
    r.take(HEAD).read_to_end(&mut head)?;
    Ok(parse(&head))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The header of a kernel file starting with `head`.
pub(crate) fn parse(head: &[u8]) -> Header {
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Header::Other(describe(head));
    }
    let protocol = u16_at(head, 0x206).unwrap_or(0);
    let pointer = u16_at(head, 0x20E).unwrap_or(0);
    if protocol < 0x0200 || pointer == 0 {
        return Header::Other(format!(
            "boot protocol {}.{:02} without a kernel version string",
            protocol >> 8,
            protocol & 0xff
        ));
    }
    let start = pointer as usize + 0x200;
    let Some(rest) = head.get(start..) else {
        return Header::Other("its kernel version pointer is past the end of the file".into());
    };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Header::X86 {
        version: String::from_utf8_lossy(&rest[..end]).into_owned(),
    }
}

/// The machine a kernel file starting with `head` is for, when its first bytes say it is
/// another than x86 (an ELF file's `e_machine`, an arm64 or RISC-V `Image`'s magic).
pub(crate) fn foreign_machine(head: &[u8]) -> Option<&'static str> {
    match crate::elf::machine(head) {
        Some(crate::elf::EM_X86_64) => return None,
        Some(m) => return Some(crate::elf::machine_name(m)),
        None => {}
    }
    match head.get(0x38..0x3C)? {
        b"ARM\x64" => Some(crate::elf::machine_name(crate::elf::EM_AARCH64)),
        b"RSC\x05" => Some("riscv"),
        _ => None,
    }
}

/// What a file without `HdrS` is, as far as its first bytes tell.
fn describe(head: &[u8]) -> String {
    if let Some(m) = crate::elf::machine(head) {
        let machine = match m {
            crate::elf::EM_X86_64 => "x86-64, an uncompressed vmlinux, not a bzImage",
            m => crate::elf::machine_name(m),
        };
        return format!("an ELF file for {machine} (e_machine {m})");
    }
    if head.get(0x38..0x3C) == Some(b"ARM\x64") {
        return "an arm64 kernel Image (magic ARM\\x64 at 0x38)".into();
    }
    if head.get(0x38..0x3C) == Some(b"RSC\x05") {
        return "a RISC-V kernel Image".into();
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return "gzip-compressed data (an arm64 Image.gz?), no HdrS at 0x202".into();
    }
    if head.len() < 0x206 {
        return format!("{} bytes, too short for a boot header", head.len());
    }
    "no HdrS signature at 0x202".into()
}

/// A minimal bzImage head for tests: `HdrS`, protocol 2.15, the version string at
/// 0x200 + 0x100.
#[cfg(test)]
pub(crate) fn fake(version: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    b[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    b[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_string_and_release() {
        let v = "6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP";
        let h = parse(&fake(v));
        assert_eq!(h, Header::X86 { version: v.into() });
        assert_eq!(Header::release(v), "6.1.0-28-cloud-amd64");
    }

    #[test]
    fn other_files_are_described() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18..20].copy_from_slice(&183u16.to_le_bytes());
        let Header::Other(what) = parse(&elf) else {
            panic!()
        };
        assert!(what.contains("aarch64"), "{what}");
        let mut image = vec![0u8; 0x1000];
        image[0x38..0x3C].copy_from_slice(b"ARM\x64");
        let Header::Other(what) = parse(&image) else {
            panic!()
        };
        assert!(what.contains("arm64"), "{what}");
        assert_eq!(foreign_machine(&image), Some("arm64 (aarch64)"));
        assert_eq!(foreign_machine(&elf), Some("arm64 (aarch64)"));
        assert_eq!(foreign_machine(&fake("6.1")), None);
        let Header::Other(what) = parse(&[0u8; 0x1000]) else {
            panic!()
        };
        assert!(what.contains("no HdrS"), "{what}");
        let mut bad = fake("x");
        bad[0x20E..0x210].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert!(matches!(parse(&bad), Header::Other(_)));
    }
}
