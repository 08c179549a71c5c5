//! Reading back what an x86_64-efi GRUB image carries — the reverse of [`super::efi`] and
//! [`super::modules::area`]: its `mods` section is the module area (a `grub_module_info64`,
//! then objects each behind a `grub_module_header`), holding the built-in modules (ELF
//! objects named by their `.modname` section), the early config and the prefix. d2v reads a
//! distribution's signed GRUB this way (`grubx64.efi.signed`, which it cannot rebuild without
//! losing the signature) to learn where that GRUB looks for its `grub.cfg`.

use super::elf::Elf;
use super::modules::{MODULE_MAGIC, OBJ_TYPE_CONFIG, OBJ_TYPE_ELF, OBJ_TYPE_PREFIX};
use crate::pe::{Pe, PeError};

/// `sizeof (struct grub_module_info64)` and `sizeof (struct grub_module_header)`.
const INFO64: usize = 24;
const OBJ_HEADER: usize = 8;

/// Why a GRUB EFI image's embedded objects could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddedError {
    /// Not a PE image.
    #[error(transparent)]
    Pe(#[from] PeError),
    /// The PE image has no `mods` section: not an image grub-mkimage wrote.
    #[error("no mods section: not a GRUB image")]
    NoMods,
    /// The module area does not start with GRUB's module magic.
    #[error("the mods section has no GRUB module magic")]
    NoMagic,
    /// An object header or body runs past the area's end.
    #[error("the GRUB module area is truncated at {0:#x}")]
    Truncated(usize),
}

/// What a GRUB image has built in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embedded {
    /// `$prefix` as built in (`-p`), e.g. `/EFI/debian`; `None` without a prefix object.
    pub prefix: Option<String>,
    /// The early config (`-c`).
    pub config: Option<String>,
    /// The built-in modules' names, in image order.
    pub modules: Vec<String>,
}

/// An object's body up to its first NUL, as text.
fn c_string(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The name of an ELF module (its `.modname` section); `None` when it has none.
fn module_name(object: &[u8]) -> Option<String> {
    let e = Elf::parse(object).ok()?;
    let data = e.section_data(e.find(b".modname")?).ok()?;
    Some(c_string(data))
}

/// The objects of a 64-bit module area: `(type, body)` pairs.
pub(crate) fn objects(area: &[u8]) -> Result<Vec<(u32, &[u8])>, EmbeddedError> {
    let word = |at: usize| -> Result<u64, EmbeddedError> {
        area.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or(EmbeddedError::Truncated(at))
    };
    if area.get(..4) != Some(&MODULE_MAGIC.to_le_bytes()[..]) {
        return Err(EmbeddedError::NoMagic);
    }
    let (mut at, end) = (word(8)? as usize, word(16)? as usize);
    if end > area.len() || at < INFO64 {
        return Err(EmbeddedError::Truncated(area.len()));
    }
    let mut out = Vec::new();
    while at.saturating_add(OBJ_HEADER) <= end {
        let kind = u32::from_le_bytes(area[at..at + 4].try_into().unwrap());
        let size = u32::from_le_bytes(area[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = area
            .get(at + OBJ_HEADER..at.saturating_add(size))
            .filter(|_| size >= OBJ_HEADER && at.saturating_add(size) <= end)
            .ok_or(EmbeddedError::Truncated(at))?;
        out.push((kind, body));
        at += size;
    }
    Ok(out)
}

/// What the x86_64-efi GRUB image `pe` has built in.
pub fn read(pe: &[u8]) -> Result<Embedded, EmbeddedError> {
    let pe = Pe::parse(pe)?;
    let area = pe.section(b"mods").ok_or(EmbeddedError::NoMods)?;
    let mut out = Embedded::default();
    for (kind, body) in objects(area)? {
        match kind {
            OBJ_TYPE_ELF => out.modules.extend(module_name(body)),
            OBJ_TYPE_CONFIG => out.config = Some(c_string(body)),
            OBJ_TYPE_PREFIX => out.prefix = Some(c_string(body)),
            _ => {}
        }
    }
    Ok(out)
}

/// A minimal GRUB module for tests: an ELF64 object whose `.modname` section names it.
#[cfg(test)]
pub(crate) fn test_module(name: &str) -> Vec<u8> {
    let shstrtab = b"\0.modname\0.shstrtab\0";
    let mut f = vec![0u8; 64];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    f[16..18].copy_from_slice(&super::elf::ET_REL.to_le_bytes());
    f[18..20].copy_from_slice(&super::elf::EM_X86_64.to_le_bytes());
    let name_at = f.len() as u64;
    f.extend_from_slice(name.as_bytes());
    f.push(0);
    let str_at = f.len() as u64;
    f.extend_from_slice(shstrtab);
    f.resize(f.len().div_ceil(8) * 8, 0);
    let shoff = f.len() as u64;
    f[40..48].copy_from_slice(&shoff.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&3u16.to_le_bytes());
    f[62..64].copy_from_slice(&2u16.to_le_bytes());
    let header = |name: u32, kind: u32, off: u64, size: u64| {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h
    };
    f.extend(header(0, 0, 0, 0));
    f.extend(header(1, 1, name_at, name.len() as u64 + 1));
    f.extend(header(10, 3, str_at, shstrtab.len() as u64));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::grub::mkimage::modules::area;
    use crate::pe::testing::image;

    #[test]
    fn prefix_and_config_are_read_back_from_the_area() {
        let a = area(
            8,
            &[vec![1, 2, 3]],
            "normal (memdisk)/grub.cfg\n",
            "/EFI/debian",
        );
        let pe = image(&[(".text", b"x"), ("mods", &a)], Some(2));
        let e = read(&pe).unwrap();
        assert_eq!(e.prefix.as_deref(), Some("/EFI/debian"));
        assert_eq!(e.config.as_deref(), Some("normal (memdisk)/grub.cfg\n"));
        // Not an ELF object: no name.
        assert!(e.modules.is_empty());
    }

    #[test]
    fn built_in_modules_are_named_by_their_modname() {
        let mods = [test_module("linux"), test_module("fat")];
        let a = area(8, &mods, "", "/EFI/debian");
        let e = read(&image(&[("mods", &a)], None)).unwrap();
        assert_eq!(e.modules, ["linux", "fat"]);
    }

    #[test]
    fn images_without_a_module_area_are_refused() {
        let pe = image(&[(".text", b"x")], None);
        assert_eq!(read(&pe).unwrap_err(), EmbeddedError::NoMods);
        let pe = image(&[("mods", b"not an area, long enough to be read")], None);
        assert_eq!(read(&pe).unwrap_err(), EmbeddedError::NoMagic);
        assert!(matches!(read(b"ELF").unwrap_err(), EmbeddedError::Pe(_)));
    }

    #[test]
    fn a_truncated_area_is_an_error() {
        let mut a = area(8, &[vec![1; 64]], "", "/p");
        // Claim a bigger object than there is.
        a[28..32].copy_from_slice(&4096u32.to_le_bytes());
        let pe = image(&[("mods", &a)], None);
        assert!(matches!(read(&pe), Err(EmbeddedError::Truncated(24))));
    }

    /// Debian's signed GRUB (`grub-efi-amd64-signed`) on the host, when installed: its prefix
    /// and the modules grub.cfg needs under Secure Boot (where nothing can be insmodded).
    #[test]
    fn debian_signed_grub_has_its_prefix_and_modules() {
        let Ok(d) = std::fs::read("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed") else {
            return;
        };
        let e = read(&d).unwrap();
        assert_eq!(e.prefix.as_deref(), Some("/EFI/debian"));
        for m in [
            "linux",
            "gzio",
            "serial",
            "terminal",
            "search_fs_uuid",
            "fat",
        ] {
            assert!(e.modules.iter().any(|n| n == m), "{m} in {:?}", e.modules);
        }
    }
}
