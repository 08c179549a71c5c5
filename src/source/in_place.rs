//! Blobs of local sources read where they are — a layout's blob file, an archive's member at
//! its byte offset — never copied: the blob cache is for what comes over the network. Small
//! blobs (manifests, configs) are read into memory and checked at once ([`read_at`],
//! [`check_bytes`]); a layer is checked while [`open_layer`](super::open_layer) streams it
//! ([`Checked`]), so a local image is read once.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::cache::sha256_digest;
use super::SourceError;
use crate::error::io_err;

/// Checks bytes in memory against `digest` and, when given, `size`.
pub(crate) fn check_bytes(
    bytes: &[u8],
    digest: &str,
    size: Option<u64>,
    what: &str,
) -> Result<(), SourceError> {
    if let Some(s) = size.filter(|s| *s != bytes.len() as u64) {
        return Err(SourceError::SizeMismatch {
            what: what.to_string(),
            digest: digest.to_string(),
            expected: s,
            got: bytes.len() as u64,
        });
    }
    let got = sha256_digest(bytes);
    if got != digest {
        return Err(SourceError::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            got,
        });
    }
    Ok(())
}

/// The `len` bytes at `offset` of `path`; more than `max` is refused as too large.
pub(crate) fn read_at(
    path: &Path,
    offset: u64,
    len: u64,
    max: u64,
) -> Result<Vec<u8>, SourceError> {
    if len > max {
        return Err(SourceError::TooLarge {
            what: format!("{} (at byte {offset})", path.display()),
            limit: max,
        });
    }
    let f = File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0; len as usize];
    f.read_exact_at(&mut buf, offset).map_err(io_err(path))?;
    Ok(buf)
}

/// The digest of the `len` bytes at `offset` of `path`.
pub(crate) fn digest_at(path: &Path, offset: u64, len: u64) -> Result<String, SourceError> {
    let mut r = open_at(path, offset, len)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 << 10];
    let mut left = len;
    while left > 0 {
        let n = r.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Err(SourceError::Io {
                path: path.to_path_buf(),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The `len` bytes at `offset` of `path`, as a reader.
pub(crate) fn open_at(path: &Path, offset: u64, len: u64) -> Result<io::Take<File>, SourceError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(offset)).map_err(io_err(path))?;
    Ok(f.take(len))
}

/// A blob read in place, hashed as it passes. A decompressor may stop before the end of its
/// input, so the check is not left to the end of the stream: [`Checked::finish`] (on a
/// clone kept for it) reads what is left and compares size and digest.
#[derive(Clone)]
pub(crate) struct Checked {
    state: Arc<Mutex<State>>,
    /// The blob, for errors: its digest and where it is.
    what: Arc<str>,
    digest: Arc<str>,
    size: u64,
}

struct State {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    read: u64,
}

impl Checked {
    /// `inner` yields the blob `digest` of `size` bytes (and nothing after it).
    pub(crate) fn new(inner: Box<dyn Read + Send>, what: &str, digest: &str, size: u64) -> Checked {
        Checked {
            state: Arc::new(Mutex::new(State {
                inner,
                hasher: Sha256::new(),
                read: 0,
            })),
            what: what.into(),
            digest: digest.into(),
            size,
        }
    }

    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other(format!("{}: a reader panicked", self.what)))
    }

    /// Reads the rest of the blob and checks its size and digest; the error (`InvalidData`)
    /// carries a [`SourceError`] naming the blob.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let mut buf = vec![0; 64 << 10];
        let mut s = self.state()?;
        loop {
            let n = s.inner.read(&mut buf)?;
            if n == 0 {
                break;
            }
            s.hasher.update(&buf[..n]);
            s.read += n as u64;
        }
        let got = format!("sha256:{}", hex::encode(s.hasher.clone().finalize()));
        let e = if s.read != self.size {
            SourceError::SizeMismatch {
                what: self.what.to_string(),
                digest: self.digest.to_string(),
                expected: self.size,
                got: s.read,
            }
        } else if got != *self.digest {
            SourceError::InPlaceMismatch {
                what: self.what.to_string(),
                expected: self.digest.to_string(),
                got,
            }
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state()?;
        let n = s.inner.read(buf)?;
        s.hasher.update(&buf[..n]);
        s.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(bytes: &[u8], digest: &str) -> Checked {
        Checked::new(
            Box::new(io::Cursor::new(bytes.to_vec())),
            "blob x",
            digest,
            5,
        )
    }

    #[test]
    fn a_blob_read_in_part_is_checked_whole() {
        let good = sha256_digest(b"hello");
        let mut c = checked(b"hello", &good);
        let mut two = [0; 2];
        c.read_exact(&mut two).unwrap();
        c.clone().finish().unwrap();
        // One byte changed, read in part: the rest is read and the digest compared.
        let mut c = checked(b"hellO", &good);
        c.read_exact(&mut two).unwrap();
        let e = c.finish().unwrap_err();
        let inner = e.get_ref().unwrap().downcast_ref::<SourceError>().unwrap();
        assert!(matches!(inner, SourceError::InPlaceMismatch { .. }), "{e}");
        assert!(e.to_string().contains("blob x") && e.to_string().contains(&good));
        // Shorter than its descriptor says.
        let e = checked(b"hell", &good).finish().unwrap_err();
        assert!(e.to_string().contains("size mismatch"), "{e}");
    }

    #[test]
    fn members_are_read_at_their_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        std::fs::write(&p, b"..hello..").unwrap();
        assert_eq!(read_at(&p, 2, 5, 5).unwrap(), b"hello");
        assert!(matches!(
            read_at(&p, 2, 5, 4),
            Err(SourceError::TooLarge { .. })
        ));
        assert_eq!(digest_at(&p, 2, 5).unwrap(), sha256_digest(b"hello"));
        assert!(digest_at(&p, 2, 50).is_err());
        check_bytes(b"hello", &sha256_digest(b"hello"), Some(5), "x").unwrap();
        assert!(check_bytes(b"hello", &sha256_digest(b"hello"), Some(6), "x").is_err());
        assert!(check_bytes(b"hellO", &sha256_digest(b"hello"), None, "x").is_err());
    }
}
