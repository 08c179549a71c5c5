//! A bound on the tar entries the tar reader keeps in memory whole: PAX extended headers
//! (`x`) and GNU long names (`L`, `K`). The `tar` crate reads each into one buffer before the
//! entry it describes, so a layer holding a 4 GB one would take 4 GB of memory (a zstd layer
//! can pack that into 20 MB that `--max-expansion` lets through). Go's `archive/tar` (docker,
//! containerd, umoci) refuses them past 1 MiB (`maxSpecialFileSize`); so does d2v.
//!
//! [`SpecialLimit`] watches the stream on its way to the tar reader, finding the headers where
//! the tar reader does (its own parsers: header size, PAX `size` records, GNU sparse extension
//! blocks). Anything it cannot follow makes it step aside: it never refuses what it has not
//! understood.

use std::io::{self, Read};

/// The most a PAX extended header or GNU long name may hold (Go's `maxSpecialFileSize`).
pub const MAX_SPECIAL: u64 = 1 << 20;

const BLOCK: usize = 512;

/// A PAX extended header or GNU long name larger than [`MAX_SPECIAL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "layer {layer}: tar entry {name:?} is a {kind} of {size} bytes; d2v reads at most {MAX_SPECIAL} \
     (as Go's archive/tar, which docker and containerd use): the layer is malformed or a memory bomb"
)]
pub struct SpecialTooLarge {
    /// The layer.
    pub layer: String,
    /// The special entry's own name field.
    pub name: String,
    /// `PAX extended header` or `GNU long name`.
    pub kind: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// A layer's tar stream, refusing special entries past [`MAX_SPECIAL`] before the tar reader
/// buffers them; [`SpecialLimit::exceeded`] says which.
pub struct SpecialLimit<R> {
    inner: R,
    layer: String,
    header: [u8; BLOCK],
    filled: usize,
    /// GNU sparse extension blocks follow.
    extension: bool,
    /// Bytes of the current entry's data (and padding) still to pass.
    skip: u64,
    /// A PAX extended header's records, collected while they pass (≤ `MAX_SPECIAL`).
    pax: Option<Vec<u8>>,
    /// Its data bytes still to collect.
    pax_left: u64,
    /// The records of the last PAX header, for the entry they describe.
    pending_pax: Option<Vec<u8>>,
    /// At the end of the archive, or lost: everything passes unexamined.
    aside: bool,
    exceeded: Option<SpecialTooLarge>,
}

impl<R: Read> SpecialLimit<R> {
    /// Watches `inner`, the tar stream of `layer`.
    pub fn new(inner: R, layer: &str) -> SpecialLimit<R> {
        SpecialLimit {
            inner,
            layer: layer.to_string(),
            header: [0; BLOCK],
            filled: 0,
            extension: false,
            skip: 0,
            pax: None,
            pax_left: 0,
            pending_pax: None,
            aside: false,
            exceeded: None,
        }
    }

    /// The special entry that was too large, if one was.
    pub fn exceeded(&self) -> Option<&SpecialTooLarge> {
        self.exceeded.as_ref()
    }

    /// Follows `bytes` through the archive's structure.
    fn watch(&mut self, mut bytes: &[u8]) -> Result<(), SpecialTooLarge> {
        while !bytes.is_empty() && !self.aside {
            if self.skip > 0 && !self.extension {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.collect(&bytes[..n]);
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (BLOCK - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.block()?;
            }
        }
        Ok(())
    }

    /// Keeps a PAX header's records as they pass; at their end they await their entry.
    fn collect(&mut self, data: &[u8]) {
        if let Some(pax) = &mut self.pax {
            let n = (self.pax_left.min(data.len() as u64)) as usize;
            pax.extend_from_slice(&data[..n]);
            self.pax_left -= n as u64;
            if self.pax_left == 0 {
                self.pending_pax = self.pax.take();
            }
        }
    }

    /// One whole 512-byte block where a header (or a GNU sparse extension) is due.
    fn block(&mut self) -> Result<(), SpecialTooLarge> {
        if self.extension {
            // `GnuExtSparseHeader`: 21 sparse entries, then `isextended`.
            self.extension = self.header[504] != 0;
            return Ok(());
        }
        if self.header.iter().all(|&b| b == 0) {
            // The tar reader stops at the first zero block.
            self.aside = true;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&self.header);
        let Ok(mut size) = h.entry_size() else {
            self.aside = true;
            return Ok(());
        };
        let kind = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let extension_header = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if !extension_header {
            let pax = self.pending_pax.take();
            if let Some(s) = pax.as_deref().and_then(pax_size) {
                size = s;
            }
        }
        let special = match kind {
            k if k.is_pax_local_extensions() => Some("PAX extended header"),
            k if k.is_gnu_longname() || k.is_gnu_longlink() => Some("GNU long name"),
            _ => None,
        };
        if let Some(what) = special.filter(|_| recognized) {
            if size > MAX_SPECIAL {
                return Err(SpecialTooLarge {
                    layer: self.layer.clone(),
                    name: crate::tree::show(&h.path_bytes()),
                    kind: what,
                    size,
                });
            }
            if kind.is_pax_local_extensions() {
                self.pax = Some(Vec::with_capacity(size as usize));
                self.pax_left = size;
                if size == 0 {
                    self.pending_pax = self.pax.take();
                }
            }
        }
        if kind.is_gnu_sparse() {
            self.extension = h.as_gnu().is_some_and(|g| g.is_extended());
        }
        match size.checked_next_multiple_of(BLOCK as u64) {
            Some(s) => self.skip = s,
            None => self.aside = true,
        }
        Ok(())
    }
}

/// The `size` record of PAX records, as the tar reader reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for SpecialLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.exceeded {
            return Err(io::Error::other(e.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.watch(&buf[..n]) {
            self.exceeded = Some(e.clone());
            return Err(io::Error::other(e));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::tar::{tar, Entry};

    /// A PAX extended header (type `x`) holding `key=value`, padded.
    fn pax_header(key: &str, value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        let mut data = format!("{len} {key}=").into_bytes();
        data.extend_from_slice(value);
        data.push(b'\n');
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeader/f").unwrap();
        h.set_size(data.len() as u64);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        out
    }

    /// A file `name` of `size` bytes (the header alone).
    fn file_header(name: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// A PAX header of `len` bytes (one `comment` record) before a file.
    fn pax_comment(len: usize) -> Vec<u8> {
        let mut a = pax_header("comment", &vec![b'c'; len]);
        a.extend(file_header("f", 3));
        a.extend_from_slice(b"abc");
        a.resize(a.len().next_multiple_of(BLOCK) + 1024, 0);
        a
    }

    fn through(bytes: &[u8]) -> Result<Vec<u8>, Option<SpecialTooLarge>> {
        let mut r = SpecialLimit::new(bytes, "sha256:l");
        let mut out = Vec::new();
        // Small reads: headers and records arrive in pieces.
        let mut buf = [0u8; 100];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return Err(r.exceeded().cloned()),
            }
        }
    }

    #[test]
    fn ordinary_archives_pass_unchanged() {
        let long = "d/".repeat(200) + "f";
        let archives = [
            tar(&[
                Entry::file(&long, "long name (PAX)"),
                Entry::file(&long, "long name (GNU)").gnu(),
                Entry::symlink("s", "t".repeat(300)).gnu(),
                Entry::file("x", "xattr").xattr("user.a", vec![1; 60_000]),
            ]),
            pax_comment(MAX_SPECIAL as usize - 100),
        ];
        for a in archives {
            assert_eq!(through(&a).unwrap(), a);
        }
    }

    #[test]
    fn a_huge_pax_header_or_long_name_is_refused() {
        let e = through(&pax_comment(2 << 20)).unwrap_err().unwrap();
        assert_eq!(e.kind, "PAX extended header");
        assert!(
            e.size > 2 << 20 && e.to_string().contains("sha256:l"),
            "{e}"
        );
        let name = "n".repeat(1 << 21);
        let e = through(&tar(&[Entry::file(&name, "x").gnu()]))
            .unwrap_err()
            .unwrap();
        assert_eq!(e.kind, "GNU long name");
    }

    #[test]
    fn a_pax_size_record_is_followed() {
        // A file whose PAX size (2 MiB of data) overrides the ustar size field (0): inside its
        // data sits what looks like a huge PAX header; it is data, not a header.
        let inner = pax_comment(2 << 20);
        let mut a = pax_header("size", inner.len().to_string().as_bytes());
        a.extend(file_header("data", 0));
        a.extend_from_slice(&inner);
        a.extend_from_slice(&[0; 1024]);
        assert_eq!(through(&a).unwrap(), a);
    }
}
