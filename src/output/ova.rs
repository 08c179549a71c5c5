//! OVA: a POSIX ustar archive holding the `.ovf` first, then the `.mf` manifest, then the disk.
//! Deterministic: fixed modes, uid/gid 0, mtime from the caller.

use sha2::{Digest, Sha256};
use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;

/// The `.mf` manifest: one `SHA256(name)= hex` line per file, in the given order.
pub(crate) fn manifest(entries: &[(&str, &[u8; 32])]) -> String {
    entries
        .iter()
        .map(|(name, d)| format!("SHA256({name})= {}\n", hex::encode(d)))
        .collect()
}

/// SHA-256 of a byte string.
pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// A `Write` adapter that hashes (SHA-256) and counts what passes through.
pub(crate) struct HashingWriter<W: Write> {
    pub(crate) inner: W,
    hasher: Sha256,
    pub(crate) bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    /// The digest so far and the inner writer.
    pub(crate) fn finish(self) -> ([u8; 32], W) {
        (self.hasher.finalize().into(), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Errors building a tar header.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error(
        "file name {0:?} does not fit a ustar header (100 bytes, ASCII): use a shorter VM name"
    )]
    Name(String),
}

/// Write one octal field: `width - 1` digits and a NUL; sizes too large for octal use the
/// base-256 encoding GNU tar and libarchive read.
fn numeric(field: &mut [u8], v: u64) {
    let w = field.len();
    if v < 1u64 << (3 * (w - 1)) {
        let s = format!("{v:0width$o}", width = w - 1);
        field[..w - 1].copy_from_slice(s.as_bytes());
        field[w - 1] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        for (i, b) in v.to_be_bytes().iter().enumerate() {
            field[w - 8 + i] = *b;
        }
    }
}

/// A ustar header block for a regular file.
pub(crate) fn header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], TarError> {
    if name.is_empty() || name.len() > 100 || !name.is_ascii() {
        return Err(TarError::Name(name.into()));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    numeric(&mut h[100..108], 0o644);
    numeric(&mut h[108..116], 0);
    numeric(&mut h[116..124], 0);
    numeric(&mut h[124..136], size);
    numeric(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// A whole entry: header, `data`, zeros to the next block.
pub(crate) fn entry(name: &str, data: &[u8], mtime: u64) -> Result<Vec<u8>, TarError> {
    let mut e = header(name, data.len() as u64, mtime)?.to_vec();
    e.extend_from_slice(data);
    e.resize(BLOCK + (data.len()).next_multiple_of(BLOCK), 0);
    Ok(e)
}

/// What ends an archive whose last entry holds `size` bytes: zeros to the next block, then
/// two zero blocks.
pub(crate) fn end(size: u64) -> Vec<u8> {
    let pad = size.next_multiple_of(BLOCK as u64) - size;
    vec![0u8; pad as usize + 2 * BLOCK]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_and_fields() {
        let h = header("vm.ovf", 1234, 1_700_000_000).unwrap();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut c = h;
        c[148..156].fill(b' ');
        assert_eq!(stored, c.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(&h[257..263], b"ustar\0");
        assert!(header(&"x".repeat(101), 0, 0).is_err());
    }

    #[test]
    fn big_sizes_use_base256() {
        let h = header("disk.vmdk", 10 << 30, 0).unwrap();
        assert_eq!(h[124], 0x80);
        assert_eq!(
            u64::from_be_bytes(h[128..136].try_into().unwrap()),
            10 << 30
        );
    }

    #[test]
    fn manifest_format() {
        let d = sha256(b"abc");
        assert_eq!(
            manifest(&[("a.ovf", &d)]),
            "SHA256(a.ovf)= ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        );
    }
}
