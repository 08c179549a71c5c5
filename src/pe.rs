//! PE/COFF images as UEFI firmware loads them — shim, a signed GRUB, a Linux kernel's EFI
//! stub: their sections, and whether they carry an Authenticode signature.
//!
//! "Signed" here means what Secure Boot looks at first: the optional header's certificate
//! table (data directory 4, `IMAGE_DIRECTORY_ENTRY_SECURITY`) is non-empty, lies inside the
//! file and starts with a `WIN_CERTIFICATE` of type PKCS#7 signed data. d2v does not verify
//! the signature cryptographically (the firmware and shim do, against their keys).

/// Offset of `e_lfanew` (the PE header's file offset) in the MS-DOS header.
const E_LFANEW: usize = 0x3c;
/// `sizeof (IMAGE_FILE_HEADER)`.
const COFF_HEADER: usize = 20;
const SECTION_HEADER: usize = 40;
/// Optional header magics.
const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// `IMAGE_DIRECTORY_ENTRY_SECURITY`: the certificate table (a file offset, not an RVA).
const SECURITY_DIRECTORY: usize = 4;
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA`: an Authenticode signature.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 2;

/// Why bytes are not a PE image d2v can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    /// No `MZ` at the start.
    #[error("not a PE image (no MZ header)")]
    NotMz,
    /// `e_lfanew` does not point at `PE\0\0`.
    #[error("not a PE image (no PE signature at {0:#x})")]
    NoSignature(usize),
    /// A header runs past the end of the file.
    #[error("truncated PE image: the {0} runs past the end")]
    Truncated(&'static str),
    /// The optional header is neither PE32 nor PE32+.
    #[error("PE optional header magic {0:#x} is neither PE32 nor PE32+")]
    Magic(u16),
}

/// A section header's fields d2v uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    /// The name, NUL-padded to 8 bytes.
    pub(crate) name: [u8; 8],
    pub(crate) virtual_size: u32,
    pub(crate) raw_size: u32,
    pub(crate) raw_offset: u32,
}

/// A parsed PE image borrowing its bytes.
#[derive(Debug)]
pub(crate) struct Pe<'a> {
    data: &'a [u8],
    sections: Vec<Section>,
    /// The certificate table's file offset and size (zeros: none).
    security: (u32, u32),
}

fn u16_at(d: &[u8], at: usize, what: &'static str) -> Result<u16, PeError> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(PeError::Truncated(what))
}

fn u32_at(d: &[u8], at: usize, what: &'static str) -> Result<u32, PeError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .ok_or(PeError::Truncated(what))
}

impl<'a> Pe<'a> {
    /// Parses the headers and the section table.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Pe<'a>, PeError> {
        if !data.starts_with(b"MZ") {
            return Err(PeError::NotMz);
        }
        let pe = u32_at(data, E_LFANEW, "MS-DOS header")? as usize;
        if data.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
            return Err(PeError::NoSignature(pe));
        }
        let coff = pe + 4;
        let nsections = u16_at(data, coff + 2, "COFF header")? as usize;
        let opt_size = u16_at(data, coff + 16, "COFF header")? as usize;
        let opt = coff + COFF_HEADER;
        // Where NumberOfRvaAndSizes and the data directories are, by the header's kind.
        let (count_at, dirs_at) = match u16_at(data, opt, "optional header")? {
            PE32 => (opt + 92, opt + 96),
            PE32_PLUS => (opt + 108, opt + 112),
            m => return Err(PeError::Magic(m)),
        };
        let ndirs = u32_at(data, count_at, "optional header")? as usize;
        let security = if ndirs > SECURITY_DIRECTORY {
            let at = dirs_at + 8 * SECURITY_DIRECTORY;
            (
                u32_at(data, at, "data directories")?,
                u32_at(data, at + 4, "data directories")?,
            )
        } else {
            (0, 0)
        };
        let table = opt + opt_size;
        let sections = (0..nsections)
            .map(|i| {
                let at = table + i * SECTION_HEADER;
                let h = data
                    .get(at..at + SECTION_HEADER)
                    .ok_or(PeError::Truncated("section table"))?;
                let w = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
                Ok(Section {
                    name: h[..8].try_into().unwrap(),
                    virtual_size: w(8),
                    raw_size: w(16),
                    raw_offset: w(20),
                })
            })
            .collect::<Result<_, PeError>>()?;
        Ok(Pe {
            data,
            sections,
            security,
        })
    }

    /// Whether the image carries an Authenticode signature (module docs: not verified).
    pub(crate) fn signed(&self) -> bool {
        let (offset, size) = (self.security.0 as usize, self.security.1 as usize);
        size >= 8
            && offset
                .checked_add(size)
                .is_some_and(|end| end <= self.data.len())
            && u16_at(self.data, offset + 6, "certificate") == Ok(WIN_CERT_TYPE_PKCS_SIGNED_DATA)
    }

    /// The file bytes of the section named `name` (up to its virtual size), if it has one
    /// that lies inside the file.
    pub(crate) fn section(&self, name: &[u8]) -> Option<&'a [u8]> {
        let s = self
            .sections
            .iter()
            .find(|s| s.name.split(|&b| b == 0).next() == Some(name))?;
        // The file holds raw_size bytes, padded; the section itself is virtual_size long.
        let len = match s.virtual_size {
            0 => s.raw_size,
            v => v.min(s.raw_size),
        } as usize;
        let start = s.raw_offset as usize;
        self.data.get(start..start.checked_add(len)?)
    }
}

/// Whether `data` is a PE image carrying an Authenticode signature ([`Pe::signed`]); `false`
/// for anything that is not a PE image.
pub(crate) fn is_signed(data: &[u8]) -> bool {
    Pe::parse(data).is_ok_and(|pe| pe.signed())
}

/// Test images: a minimal PE32+ with the given sections and an optional certificate table.
#[cfg(test)]
pub(crate) mod testing {
    /// A PE32+ image: headers in the first 0x200 bytes, then each section's bytes in order;
    /// with `cert`, a `WIN_CERTIFICATE` of type `cert_type` appended and named by the
    /// security directory.
    pub(crate) fn image(sections: &[(&str, &[u8])], cert: Option<u16>) -> Vec<u8> {
        let mut d = vec![0u8; 0x200];
        d[..2].copy_from_slice(b"MZ");
        d[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        d[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        d[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        d[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        let opt_size = 112 + 16 * 8;
        d[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
        let opt = coff + 20;
        d[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        d[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let mut table = opt + opt_size;
        for (name, body) in sections {
            let at = d.len();
            d.extend_from_slice(body);
            let h = &mut d[table..table + 40];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            h[16..20].copy_from_slice(&(body.len() as u32).to_le_bytes());
            h[20..24].copy_from_slice(&(at as u32).to_le_bytes());
            table += 40;
        }
        if let Some(kind) = cert {
            let at = d.len();
            let mut c = vec![0u8; 16];
            c[..4].copy_from_slice(&16u32.to_le_bytes());
            c[4..6].copy_from_slice(&0x200u16.to_le_bytes());
            c[6..8].copy_from_slice(&kind.to_le_bytes());
            d.extend_from_slice(&c);
            let dir = opt + 112 + 8 * 4;
            d[dir..dir + 4].copy_from_slice(&(at as u32).to_le_bytes());
            d[dir + 4..dir + 8].copy_from_slice(&16u32.to_le_bytes());
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_table_of_signed_data_is_a_signature() {
        let signed = testing::image(&[(".text", b"code")], Some(2));
        assert!(is_signed(&signed));
        let unsigned = testing::image(&[(".text", b"code")], None);
        assert!(!is_signed(&unsigned));
        // A certificate of another type (X.509, 1) is no Authenticode signature.
        assert!(!is_signed(&testing::image(&[], Some(1))));
    }

    #[test]
    fn a_certificate_table_past_the_end_is_no_signature() {
        let mut d = testing::image(&[], Some(2));
        d.truncate(d.len() - 4);
        assert!(!is_signed(&d));
    }

    #[test]
    fn sections_are_found_by_name() {
        let d = testing::image(&[(".text", b"code"), ("mods", b"modules")], None);
        let pe = Pe::parse(&d).unwrap();
        assert_eq!(pe.section(b"mods"), Some(&b"modules"[..]));
        assert_eq!(pe.section(b".text"), Some(&b"code"[..]));
        assert_eq!(pe.section(b".data"), None);
    }

    #[test]
    fn non_pe_bytes_are_refused() {
        assert_eq!(Pe::parse(b"\x7fELF").unwrap_err(), PeError::NotMz);
        let mut d = testing::image(&[], None);
        d[0x40] = b'X';
        assert_eq!(Pe::parse(&d).unwrap_err(), PeError::NoSignature(0x40));
        assert!(!is_signed(b"MZ"));
    }

    /// The host's Debian-signed shim and GRUB, when installed (`shim-signed`,
    /// `grub-efi-amd64-signed`), and their unsigned builds.
    #[test]
    fn debian_signed_binaries_are_signed() {
        for (path, want) in [
            ("/usr/lib/shim/shimx64.efi.signed", true),
            ("/usr/lib/shim/shimx64.efi", false),
            ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", true),
        ] {
            if let Ok(d) = std::fs::read(path) {
                assert_eq!(is_signed(&d), want, "{path}");
            }
        }
    }
}
