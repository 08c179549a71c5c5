//! Layer blob files held open from before the flatten to the disk's data pass, which reads
//! their tar streams again ([`HeldLayer`]). Holding the files makes the second reading see
//! the bytes the first one checked even when a path is replaced meanwhile (a build next door
//! storing the same blob in a shared cache renames its copy over this one; a cache prune
//! removes it); a write into a file itself shows in its stamp, and the second reading is
//! refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use super::layer::{decompressor, read_ahead};
use super::{Layer, SourceError};

/// One layer, its blob's file held open (shared with the other layers in the same file: a
/// docker archive holds them all).
pub(crate) struct HeldLayer {
    layer: Layer,
    file: Arc<HeldFile>,
}

/// A file held open, and its stamp when it was opened.
struct HeldFile {
    file: File,
    stamp: BlobStamp,
}

/// Files a process may open besides the layers' (its outputs, temporary files, sockets,
/// threads' pipes): what [`HeldLayer::open_all`] leaves free.
const OTHER_FILES: u64 = 64;

impl HeldLayer {
    /// Opens the files holding `layers`' blobs, each once, and notes their stamps. The
    /// process's open-files limit is raised to what they need (up to its hard limit, which
    /// an unprivileged process may do); [`SourceError::OpenFilesLimit`] if the hard limit is
    /// lower.
    pub(crate) fn open_all(layers: &[Layer]) -> Result<Vec<HeldLayer>, SourceError> {
        let mut paths: Vec<&Path> = layers.iter().map(|l| l.path.as_path()).collect();
        paths.sort();
        paths.dedup();
        allow_open_files(paths.len() as u64).map_err(|limit| SourceError::OpenFilesLimit {
            files: paths.len() as u64,
            limit,
        })?;
        let files = paths
            .into_iter()
            .map(|p| Ok((p, Arc::new(HeldFile::open(p)?))))
            .collect::<Result<HashMap<_, _>, SourceError>>()?;
        Ok(layers
            .iter()
            .map(|layer| HeldLayer {
                layer: layer.clone(),
                file: files[layer.path.as_path()].clone(),
            })
            .collect())
    }

    /// The layer's tar stream from its start, decompressed on a read-ahead thread, with no
    /// digest check (the flatten read the whole blob and checked it; a second reader stops
    /// where it has what it came for). [`SourceError::BlobChanged`] if the file was written
    /// to since it was opened.
    pub(crate) fn reread(&self) -> Result<Box<dyn Read + Send>, SourceError> {
        let layer = &self.layer;
        if BlobStamp::of(&self.file.file, &layer.path).ok().as_ref() != Some(&self.file.stamp) {
            return Err(SourceError::BlobChanged {
                layer: layer.digest.clone(),
                path: layer.path.clone(),
            });
        }
        let blob = ReadAt {
            file: self.file.clone(),
            pos: layer.offset,
            end: layer.offset + layer.size,
        };
        Ok(Box::new(read_ahead(
            decompressor(layer, Box::new(blob), None, false)?.inner,
            layer,
        )?))
    }
}

impl HeldFile {
    fn open(path: &Path) -> Result<HeldFile, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stamp = BlobStamp::of(&file, path)?;
        Ok(HeldFile { file, stamp })
    }
}

/// Bytes `pos..end` of a held file, read at their offsets: readers sharing the file each
/// keep their own position.
struct ReadAt {
    file: Arc<HeldFile>,
    pos: u64,
    end: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = self.file.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// What changes when a blob's file is written to: its length and modification time. (Not
/// its change time: that moves when the path is renamed over and the file loses its name.)
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlobStamp {
    len: u64,
    mtime: (i64, i64),
}

impl BlobStamp {
    /// The stamp of `file`, opened from `path`.
    fn of(file: &File, path: &Path) -> Result<BlobStamp, SourceError> {
        let m = file.metadata().map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(BlobStamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// Makes room for `n` more open files than the process has now (and [`OTHER_FILES`]): the
/// soft open-files limit is raised if it is lower, up to the hard one. `Err` holds the limit
/// that stands in the way.
fn allow_open_files(n: u64) -> Result<(), u64> {
    let open = std::fs::read_dir("/proc/self/fd").map_or(OTHER_FILES, |d| d.count() as u64);
    let need = open + n + OTHER_FILES;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // nothing known: opening the files will say
    }
    let unlimited = |v: libc::rlim_t| v == libc::RLIM_INFINITY;
    if unlimited(lim.rlim_cur) || lim.rlim_cur >= need {
        return Ok(());
    }
    if !unlimited(lim.rlim_max) && lim.rlim_max < need {
        return Err(lim.rlim_max);
    }
    let raised = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the limits from the struct it is given.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
        0 => Ok(()),
        _ => Err(lim.rlim_cur),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::manifest::OCI_LAYER_GZIP;
    use std::io::Write;

    fn sha(b: &[u8]) -> String {
        crate::source::cache::sha256_digest(b)
    }

    /// `data` gzipped into `path` at `offset` (after that many bytes of noise).
    fn gzip_layer(path: &Path, offset: u64, data: &[u8]) -> Layer {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        let gz = gz.finish().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(&vec![
            0xa5;
            offset as usize - f.metadata().unwrap().len() as usize
        ])
        .unwrap();
        f.write_all(&gz).unwrap();
        Layer {
            digest: sha(&gz),
            size: gz.len() as u64,
            media_type: OCI_LAYER_GZIP.into(),
            diff_id: sha(data),
            path: path.to_path_buf(),
            offset,
            in_place: true,
        }
    }

    #[test]
    fn held_layers_read_from_their_start_unchecked_and_refuse_a_written_blob() {
        let d = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let mut l = gzip_layer(&d.path().join("blob"), 0, &data);
        // Read in place with a wrong digest: a second reading checks nothing, it stops short.
        l.digest = sha(b"not this blob");
        let held = HeldLayer::open_all(std::slice::from_ref(&l))
            .unwrap()
            .remove(0);
        // Two readers at once, each from the start.
        let (mut a, mut b) = (held.reread().unwrap(), held.reread().unwrap());
        let mut piece = vec![0u8; 100_000];
        a.read_exact(&mut piece).unwrap();
        b.read_exact(&mut piece).unwrap();
        a.read_exact(&mut piece).unwrap();
        assert_eq!(piece, data[100_000..200_000]);
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data[100_000..]);
        // The same bytes written again: a write all the same.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let bytes = std::fs::read(&l.path).unwrap();
        std::fs::write(&l.path, bytes).unwrap();
        assert!(matches!(
            held.reread().err(),
            Some(SourceError::BlobChanged { layer, path }) if layer == l.digest && path == l.path
        ));
    }

    #[test]
    fn layers_in_one_file_share_it_and_each_reads_its_own_bytes() {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("archive.tar");
        let (one, two) = (vec![1u8; 70_000], vec![2u8; 90_000]);
        let l1 = gzip_layer(&archive, 512, &one);
        let l2 = gzip_layer(&archive, l1.offset + l1.size + 1024, &two);
        let other = gzip_layer(&d.path().join("other"), 0, &one);
        let held = HeldLayer::open_all(&[l1, l2, other]).unwrap();
        assert!(Arc::ptr_eq(&held[0].file, &held[1].file));
        assert!(!Arc::ptr_eq(&held[0].file, &held[2].file));
        for (h, want) in held.iter().zip([&one, &two, &one]) {
            let mut got = Vec::new();
            h.reread().unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn room_for_open_files_within_the_limit_is_granted() {
        // Within the current soft limit: nothing to raise. Past any hard limit: refused with it.
        assert_eq!(allow_open_files(1), Ok(()));
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in allow_open_files.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        if lim.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(allow_open_files(lim.rlim_max), Err(lim.rlim_max));
        }
    }
}
