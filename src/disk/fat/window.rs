//! A `Read + Write + Seek` view of one region of a file, so a filesystem library can format
//! and fill a partition inside the disk image with positioned I/O.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

pub struct Window<'f> {
    file: &'f File,
    offset: u64,
    size: u64,
    pos: u64,
}

impl<'f> Window<'f> {
    pub fn new(file: &'f File, offset: u64, size: u64) -> Window<'f> {
        Window {
            file,
            offset,
            size,
            pos: 0,
        }
    }

    fn room(&self, want: usize) -> usize {
        (want as u64).min(self.size.saturating_sub(self.pos)) as usize
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.offset + self.pos)?;
        // Past the end of a sparse file still inside the window reads as zeros.
        let got = if got == 0 {
            buf[..n].fill(0);
            n
        } else {
            got
        };
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.file.write_all_at(&buf[..n], self.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) if p <= self.size => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_inside_its_region() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(100).unwrap();
        let mut w = Window::new(&f, 10, 20);
        w.write_all(b"abc").unwrap();
        let mut b = [0u8; 3];
        f.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"abc");
        w.seek(SeekFrom::End(-1)).unwrap();
        assert!(w.write_all(b"xy").is_err());
        assert!(w.seek(SeekFrom::Start(21)).is_err());
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 20);
    }
}
