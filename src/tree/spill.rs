//! The spill file: file contents of the staging tree, appended one after another, so that
//! memory use does not grow with the image size. All-zero stretches are left as holes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Where a regular file's contents live in the spill file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileData {
    pub offset: u64,
    pub len: u64,
}

pub struct Spill {
    file: File,
    end: u64,
}

/// Size of the pieces appended at a time; an all-zero piece becomes a hole.
const CHUNK: usize = 64 * 1024;

impl Spill {
    pub fn new(file: File) -> Spill {
        Spill { file, end: 0 }
    }

    /// An unnamed temporary file in `$TMPDIR` (removed by the OS when closed).
    pub fn temp() -> io::Result<Spill> {
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

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Appends everything `data` yields. Offsets are kept 4 KiB-aligned so that block-sized
    /// pieces of a file map to block-sized pieces of the spill file.
    pub fn append(&mut self, data: &mut dyn Read) -> io::Result<FileData> {
        let offset = self.end.next_multiple_of(4096);
        self.file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; CHUNK];
        let mut len = 0u64;
        loop {
            let n = read_full(data, &mut buf)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().all(|&b| b == 0) {
                self.file.seek(SeekFrom::Current(n as i64))?;
            } else {
                self.file.write_all(&buf[..n])?;
            }
            len += n as u64;
            if n < CHUNK {
                break;
            }
        }
        self.end = offset + len;
        // Make a trailing hole part of the file so reads of it return zeros.
        if self.file.metadata()?.len() < self.end {
            self.file.set_len(self.end)?;
        }
        Ok(FileData { offset, len })
    }

    /// Reads `buf.len()` bytes of `data` starting `pos` bytes into it.
    pub fn read_at(&self, data: &FileData, pos: u64, buf: &mut [u8]) -> io::Result<()> {
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
