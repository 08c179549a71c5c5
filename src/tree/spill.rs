//! The spill file: file contents of the staging tree, appended one after another, so that
//! memory use does not grow with the image size. All-zero stretches are left as holes.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Where a regular file's contents live in the spill file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileData {
    /// Byte offset in the spill file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The spill file: the staging tree's file contents, one after another, with holes for
/// all-zero stretches.
pub struct Spill {
    file: File,
    end: u64,
    /// The file's length: the end of the last write or `set_len` (no `fstat` per file).
    file_len: u64,
}

/// Size of the pieces appended at a time; an all-zero piece becomes a hole.
const CHUNK: usize = 64 * 1024;

impl Spill {
    /// A spill file over `file`, which must be empty.
    pub(crate) fn new(file: File) -> Spill {
        Spill {
            file,
            end: 0,
            file_len: 0,
        }
    }

    /// An unnamed temporary file in `$TMPDIR` (removed by the OS when closed).
    pub(crate) fn temp() -> io::Result<Spill> {
        Ok(Spill::new(tempfile::tempfile()?))
    }

    /// An unnamed temporary file in `dir`.
    pub fn temp_in(dir: &std::path::Path) -> io::Result<Spill> {
        Ok(Spill::new(tempfile::tempfile_in(dir)?))
    }

    /// Total bytes appended so far (holes included).
    pub fn len(&self) -> u64 {
        self.end
    }

    /// Whether no file contents have been stored.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Appends everything `data` yields. Offsets are kept 4 KiB-aligned so that block-sized
    /// pieces of a file map to block-sized pieces of the spill file.
    pub(crate) fn append(&mut self, data: &mut dyn Read) -> io::Result<FileData> {
        let offset = self.end.next_multiple_of(4096);
        // Not kept between calls: a buffer held by the tree would stay resident through the
        // ext4 stage, when d2v's memory use peaks; reusing one measured no faster.
        let mut buf = vec![0u8; CHUNK];
        let mut len = 0u64;
        loop {
            let n = read_full(data, &mut buf)?;
            if n == 0 {
                break;
            }
            if !crate::bytes::is_zero(&buf[..n]) {
                // Positioned writes: no seek per file or per hole.
                let at = offset + len;
                self.file.write_all_at(&buf[..n], at)?;
                self.file_len = self.file_len.max(at + n as u64);
            }
            len += n as u64;
            if n < CHUNK {
                break;
            }
        }
        self.end = offset + len;
        // Make a trailing hole part of the file so reads of it return zeros.
        if self.file_len < self.end {
            self.file.set_len(self.end)?;
            self.file_len = self.end;
        }
        Ok(FileData { offset, len })
    }

    /// Reads `buf.len()` bytes of `data` starting `pos` bytes into it.
    pub(crate) fn read_at(&self, data: &FileData, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        if pos + buf.len() as u64 > data.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a spilled file",
            ));
        }
        self.file.read_exact_at(buf, data.offset + pos)
    }

    /// A reader over one file's contents.
    pub fn reader<'a>(&'a self, data: &FileData) -> SpillReader<'a> {
        SpillReader {
            spill: self,
            data: *data,
            pos: 0,
        }
    }

    /// The underlying file, for consumers that want `SEEK_DATA`/`SEEK_HOLE` or `copy_file_range`.
    pub fn file(&self) -> &File {
        &self.file
    }
}

pub struct SpillReader<'a> {
    spill: &'a Spill,
    data: FileData,
    pos: u64,
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len - self.pos;
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.spill.read_at(&self.data, self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_aligned_and_holes_read_as_zeros() {
        let mut s = Spill::temp().unwrap();
        // Data, a zero chunk, data, ending in a zero chunk: the file must reach its end.
        let mut a = vec![0u8; 3 * CHUNK + 10];
        a[5] = 1;
        a[2 * CHUNK + 3] = 2;
        let fa = s.append(&mut &a[..]).unwrap();
        let b = vec![0u8; CHUNK + 1]; // only zeros
        let fb = s.append(&mut &b[..]).unwrap();
        let fc = s.append(&mut &b"tail"[..]).unwrap();
        assert_eq!(s.len(), fc.offset + 4);
        let empty = s.append(&mut io::empty()).unwrap();
        assert_eq!((fa.offset, fa.len), (0, a.len() as u64));
        assert_eq!(fb.offset, (a.len() as u64).next_multiple_of(4096));
        assert_eq!(fc.offset, (fb.offset + fb.len).next_multiple_of(4096));
        assert_eq!(empty.len, 0);
        for (fd, want) in [(&fa, &a[..]), (&fb, &b[..]), (&fc, b"tail")] {
            let mut got = Vec::new();
            s.reader(fd).read_to_end(&mut got).unwrap();
            assert_eq!(got, want);
        }
        // Holes, not written zeros (where the file system supports them: tmpfs, ext4, xfs).
        let blocks = {
            use std::os::unix::fs::MetadataExt;
            s.file().metadata().unwrap().blocks() * 512
        };
        assert!(blocks < s.len(), "{blocks} bytes allocated for {}", s.len());
    }
}
