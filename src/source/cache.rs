//! The content-addressed blob cache: `<dir>/blobs/sha256/<hex>`, each file written to a
//! temporary file in `<dir>/tmp` and renamed into place only after its digest was checked,
//! so two d2v processes can fill the same cache at once.
//!
//! A registry download goes to `<dir>/tmp/<hex>.partial`, locked (`flock`) while a process
//! writes it and kept when the download fails, so the next run resumes it with a Range request
//! instead of starting again (its bytes are hashed again first). A process that finds the
//! partial file locked by another downloads into a temporary file instead. Temporary files are
//! [`Temp`]s, removed when d2v is interrupted; a partial file is kept then too.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::reference::check_digest;
use super::SourceError;
use crate::error::io_err;
use crate::interrupt::Temp;

/// The default cache directory: `$XDG_CACHE_HOME/d2v`, else `~/.cache/d2v`; when d2v cannot
/// write there (a read-only root filesystem, as d2v's own container image runs with, or no
/// home), `$TMPDIR/d2v-cache-UID` (`/tmp/d2v-cache-UID`).
pub(crate) fn default_dir() -> PathBuf {
    let preferred = match std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        Some(x) => PathBuf::from(x).join("d2v"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/d2v"),
    };
    choose_dir(preferred, &std::env::temp_dir())
}

/// `preferred` when a file can be created in it, else `TMP/d2v-cache-UID` when that is (or can
/// be made) a directory of this user that no other can write to, else `preferred` still (whose
/// error [`Cache::open`] then reports).
fn choose_dir(preferred: PathBuf, tmp: &Path) -> PathBuf {
    let writable = |d: &Path| {
        fs::create_dir_all(d.join("tmp")).is_ok() && tempfile::tempfile_in(d.join("tmp")).is_ok()
    };
    if writable(&preferred) {
        return preferred;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let fallback = tmp.join(format!("d2v-cache-{uid}"));
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // A shared /tmp: the directory may have been made by someone else (to plant blobs); use
    // it only when it is this user's own (not a symlink) and closed to others.
    let _ = fs::DirBuilder::new().mode(0o700).create(&fallback);
    let private = fs::symlink_metadata(&fallback)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0);
    if private && writable(&fallback) {
        fallback
    } else {
        preferred
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl<P: AsRef<Path>> From<crate::error::IoFailure<P>> for SourceError {
    fn from(f: crate::error::IoFailure<P>) -> SourceError {
        SourceError::Io {
            path: f.context.as_ref().to_path_buf(),
            source: f.source,
        }
    }
}

impl Cache {
    pub(crate) fn open(dir: &Path) -> Result<Cache, SourceError> {
        for sub in ["blobs/sha256", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| SourceError::Layout {
                path: dir.to_path_buf(),
                why: format!(
                    "cannot use it as the blob cache ({}: {e}); pass --cache-dir with a writable directory",
                    p.display()
                ),
            })?;
        }
        // Temporary files of a d2v that died a day ago or more (live ones are younger).
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            let day = std::time::Duration::from_secs(86_400);
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if old.is_some_and(|a| a > day) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives (whether or not it is there yet).
    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf, SourceError> {
        Ok(self.dir.join("blobs/sha256").join(check_digest(digest)?))
    }

    /// The cached blob when it is present with the expected size.
    pub(crate) fn get(
        &self,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Option<PathBuf>, SourceError> {
        let p = self.path(digest)?;
        match fs::metadata(&p) {
            Ok(m) if m.is_file() && size.is_none_or(|s| s == m.len()) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// Reads a small cached blob (manifest, config), re-checking its digest.
    pub(crate) fn read_small(
        &self,
        digest: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(p) = self.get(digest, None)? else {
            return Ok(None);
        };
        let f = File::open(&p).map_err(io_err(&p))?;
        let mut buf = Vec::new();
        f.take(max + 1).read_to_end(&mut buf).map_err(io_err(&p))?;
        if buf.len() as u64 > max || sha256_digest(&buf) != digest {
            // A damaged or foreign file: drop it and fetch again.
            let _ = fs::remove_file(&p);
            return Ok(None);
        }
        Ok(Some(buf))
    }

    /// Starts writing a blob.
    pub(crate) fn writer(&self) -> Result<BlobWriter, SourceError> {
        let tmpdir = self.dir.join("tmp");
        let (file, temp) = Temp::create(|| {
            tempfile::NamedTempFile::new_in(&tmpdir)?
                .keep()
                .map_err(|e| e.error)
        })
        .map_err(io_err(&tmpdir))?;
        Ok(BlobWriter {
            tmp: Tmp::Anonymous { file, temp },
            hasher: Sha256::new(),
            len: 0,
            resumed: 0,
            cache: self.clone(),
        })
    }

    /// Starts or resumes writing the blob `digest` in its partial file: what an earlier,
    /// failed download left is kept (and hashed again), [`BlobWriter::len`] says where to go
    /// on. When another process holds the partial file, an unnamed one is used.
    pub(crate) fn resumable_writer(&self, digest: &str) -> Result<BlobWriter, SourceError> {
        let path = self
            .dir
            .join("tmp")
            .join(format!("{}.partial", check_digest(digest)?));
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a valid descriptor; the lock goes with the descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return self.writer();
        }
        let mut hasher = Sha256::new();
        let len = io::copy(&mut &file, &mut HashSink(&mut hasher)).map_err(io_err(&path))?;
        file.seek(io::SeekFrom::End(0)).map_err(io_err(&path))?;
        Ok(BlobWriter {
            tmp: Tmp::Partial { file, path },
            hasher,
            len,
            resumed: len,
            cache: self.clone(),
        })
    }

    /// Stores bytes already in memory, checking them against `digest` when given.
    pub(crate) fn put_bytes(
        &self,
        bytes: &[u8],
        expect: Option<(&str, u64)>,
        what: &str,
    ) -> Result<String, SourceError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err(&self.dir))?;
        let (digest, _) = w.commit(expect, what)?;
        Ok(digest)
    }
}

/// Feeds what is written to a hasher.
struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Tmp {
    /// Removed when dropped uncommitted.
    Anonymous { file: File, temp: Temp },
    /// `tmp/<hex>.partial`, locked; kept when dropped uncommitted.
    Partial { file: File, path: PathBuf },
}

impl Tmp {
    fn file(&mut self) -> &mut File {
        match self {
            Tmp::Anonymous { file, .. } => file,
            Tmp::Partial { file, .. } => file,
        }
    }
}

/// A blob being written into the cache; hashes as it goes.
pub(crate) struct BlobWriter {
    tmp: Tmp,
    hasher: Sha256,
    len: u64,
    /// Bytes an earlier download had left in the partial file.
    resumed: u64,
    cache: Cache,
}

impl BlobWriter {
    /// Bytes written so far (where a resumed download continues).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes taken over from an earlier, failed download of the same blob.
    pub(crate) fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Throws away what was written (the server restarted the body from byte 0).
    pub(crate) fn restart(&mut self) -> io::Result<()> {
        let f = self.tmp.file();
        f.set_len(0)?;
        f.seek(io::SeekFrom::Start(0))?;
        self.hasher = Sha256::new();
        self.len = 0;
        self.resumed = 0;
        Ok(())
    }

    /// Checks digest and size against `expect` (when given) and renames the file into the cache.
    /// Returns the digest and size.
    pub(crate) fn commit(
        self,
        expect: Option<(&str, u64)>,
        what: &str,
    ) -> Result<(String, u64), SourceError> {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        let bad = expect.is_some_and(|(want, size)| self.len != size || digest != want);
        if let (true, Tmp::Partial { path, .. }) = (bad, &self.tmp) {
            // Wrong bytes: a later run must not resume from them.
            let _ = fs::remove_file(path);
        }
        if let Some((want, size)) = expect {
            if self.len != size {
                return Err(SourceError::SizeMismatch {
                    what: what.to_string(),
                    digest: want.to_string(),
                    expected: size,
                    got: self.len,
                });
            }
            if digest != want {
                return Err(SourceError::DigestMismatch {
                    what: what.to_string(),
                    expected: want.to_string(),
                    got: digest,
                });
            }
        }
        let dest = self.cache.path(&digest)?;
        let mut tmp = self.tmp;
        tmp.file().sync_data().map_err(io_err(&dest))?;
        match tmp {
            Tmp::Anonymous { temp, .. } => {
                temp.finish(|t| fs::rename(t, &dest))
                    .map_err(io_err(&dest))?;
            }
            // Renamed while still locked: a process waiting for the lock finds the blob.
            Tmp::Partial { path, .. } => fs::rename(&path, &dest).map_err(io_err(&dest))?,
        }
        Ok((digest, self.len))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.file().write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.file().flush()
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_default_falls_back_to_a_private_tmp_dir() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let uid = unsafe { libc::geteuid() };
        let fallback = tmp.join(format!("d2v-cache-{uid}"));
        // A writable preferred directory is used.
        let home = d.path().join("home/.cache/d2v");
        assert_eq!(choose_dir(home.clone(), &tmp), home);
        assert!(!fallback.exists());
        // One that cannot be created (under a file; a read-only root gives EROFS, and root
        // ignores modes) is not: the fallback is made, mode 0700, and the cache opens there.
        fs::write(d.path().join("file"), b"").unwrap();
        let bad = d.path().join("file/.cache/d2v");
        assert_eq!(choose_dir(bad.clone(), &tmp), fallback);
        let m = fs::metadata(&fallback).unwrap();
        assert_eq!((m.mode() & 0o777, m.uid()), (0o700, uid));
        Cache::open(&fallback).unwrap();
        // An existing fallback others can write to (or a symlink) is refused.
        fs::set_permissions(&fallback, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(choose_dir(bad.clone(), &tmp), bad);
        fs::remove_dir_all(&fallback).unwrap();
        std::os::unix::fs::symlink(d.path().join("home"), &fallback).unwrap();
        assert_eq!(choose_dir(bad.clone(), &tmp), bad);
    }

    #[test]
    fn write_verify_and_find() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let digest = sha256_digest(b"hello");
        assert!(c.get(&digest, None).unwrap().is_none());
        let got = c
            .put_bytes(b"hello", Some((&digest, 5)), "test blob")
            .unwrap();
        assert_eq!(got, digest);
        let p = c.get(&digest, Some(5)).unwrap().unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert!(c.get(&digest, Some(6)).unwrap().is_none());
        assert_eq!(c.read_small(&digest, 100).unwrap().unwrap(), b"hello");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn mismatches_are_refused_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let digest = sha256_digest(b"hello");
        let e = c
            .put_bytes(b"hellO", Some((&digest, 5)), "layer 1 of x")
            .unwrap_err();
        assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("layer 1 of x"));
        let e = c.put_bytes(b"hell", Some((&digest, 5)), "x").unwrap_err();
        assert!(matches!(e, SourceError::SizeMismatch { .. }), "{e}");
        assert!(c.get(&digest, None).unwrap().is_none());
        assert_eq!(
            fs::read_dir(d.path().join("blobs/sha256")).unwrap().count(),
            0
        );
    }

    #[test]
    fn partial_downloads_are_kept_resumed_and_locked() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let data = b"0123456789abcdef";
        let digest = sha256_digest(data);
        let partial = d
            .path()
            .join("tmp")
            .join(format!("{}.partial", &digest[7..]));
        {
            let mut w = c.resumable_writer(&digest).unwrap();
            assert_eq!((w.len(), w.resumed()), (0, 0));
            w.write_all(&data[..6]).unwrap();
            // Another process (here: another descriptor) finds it locked and writes elsewhere.
            let other = c.resumable_writer(&digest).unwrap();
            assert_eq!(other.len(), 0);
            drop(other);
            assert_eq!(fs::read(&partial).unwrap(), &data[..6]);
        } // dropped uncommitted: the partial file stays
        assert_eq!(fs::read(&partial).unwrap(), &data[..6]);
        let mut w = c.resumable_writer(&digest).unwrap();
        assert_eq!((w.len(), w.resumed()), (6, 6));
        w.write_all(&data[6..]).unwrap();
        w.commit(Some((&digest, 16)), "x").unwrap();
        assert!(!partial.exists());
        assert_eq!(
            fs::read(c.get(&digest, Some(16)).unwrap().unwrap()).unwrap(),
            data
        );

        // Wrong bytes in a partial file: the commit fails and removes it.
        let digest2 = sha256_digest(b"other");
        let partial2 = d
            .path()
            .join("tmp")
            .join(format!("{}.partial", &digest2[7..]));
        fs::write(&partial2, b"oth").unwrap();
        let mut w = c.resumable_writer(&digest2).unwrap();
        w.write_all(b"XX").unwrap();
        let e = w.commit(Some((&digest2, 5)), "y").unwrap_err();
        assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
        assert!(!partial2.exists());
    }

    #[test]
    fn damaged_cached_file_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let digest = c.put_bytes(b"{}", None, "x").unwrap();
        fs::write(c.path(&digest).unwrap(), b"[]").unwrap();
        assert!(c.read_small(&digest, 100).unwrap().is_none());
        assert!(c.get(&digest, None).unwrap().is_none());
    }
}
