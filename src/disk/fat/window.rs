//! A `Read + Write + Seek` view of one region of a file, so a filesystem library can format
//! and fill a partition inside the disk image. Small reads and writes (FAT entries, directory
//! entries, 512-byte clusters) go through a bounded write-back cache of 4 KiB blocks;
//! [`Window::flush`] writes it out.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

const BLOCK: u64 = 4096;
/// Cache size bound (blocks): 4 MiB.
const MAX_BLOCKS: usize = 1024;
/// Largest single write of adjacent dirty blocks.
const MAX_RUN: usize = 1 << 20;

struct Block {
    data: Box<[u8; BLOCK as usize]>,
    dirty: bool,
}

pub(crate) struct Window<'f> {
    file: &'f File,
    offset: u64,
    size: u64,
    pos: u64,
    cache: BTreeMap<u64, Block>,
}

impl<'f> Window<'f> {
    pub(crate) fn new(file: &'f File, offset: u64, size: u64) -> Window<'f> {
        Window {
            file,
            offset,
            size,
            pos: 0,
            cache: BTreeMap::new(),
        }
    }

    fn room(&self, want: usize) -> usize {
        (want as u64).min(self.size.saturating_sub(self.pos)) as usize
    }

    /// The cached block `index`, read from the file on a miss (past the file's end reads as
    /// zeros; the window's size need not be a multiple of the block size).
    fn block(&mut self, index: u64) -> io::Result<&mut Block> {
        if !self.cache.contains_key(&index) {
            if self.cache.len() >= MAX_BLOCKS {
                self.write_back()?;
                self.cache.clear();
            }
            let mut data = Box::new([0u8; BLOCK as usize]);
            let start = index * BLOCK;
            let len = BLOCK.min(self.size - start) as usize;
            let mut got = 0;
            while got < len {
                let n = self
                    .file
                    .read_at(&mut data[got..len], self.offset + start + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            self.cache.insert(index, Block { data, dirty: false });
        }
        Ok(self.cache.get_mut(&index).expect("inserted above"))
    }

    /// Writes dirty blocks to the file (runs of adjacent blocks in one call).
    fn write_back(&mut self) -> io::Result<()> {
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let dirty: Vec<u64> = self
            .cache
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(&i, _)| i)
            .collect();
        for i in dirty {
            let start = i * BLOCK;
            if !run.is_empty() && (run_start + run.len() as u64 != start || run.len() >= MAX_RUN) {
                self.file.write_all_at(&run, self.offset + run_start)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = start;
            }
            let len = BLOCK.min(self.size - start) as usize;
            let b = self.cache.get_mut(&i).expect("listed above");
            run.extend_from_slice(&b.data[..len]);
            b.dirty = false;
        }
        if !run.is_empty() {
            self.file.write_all_at(&run, self.offset + run_start)?;
        }
        Ok(())
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let (index, at) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let n = n.min(BLOCK as usize - at);
        let b = self.block(index)?;
        buf[..n].copy_from_slice(&b.data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
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
        let (index, at) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let n = n.min(BLOCK as usize - at);
        let b = self.block(index)?;
        b.data[at..at + n].copy_from_slice(&buf[..n]);
        b.dirty = true;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back()
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
    fn stays_inside_its_region_and_writes_back_on_flush() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(10_000).unwrap();
        let mut w = Window::new(&f, 10, 5000);
        w.seek(SeekFrom::Start(4090)).unwrap();
        w.write_all(b"across a block edge").unwrap();
        let mut b = [0u8; 19];
        f.read_exact_at(&mut b, 4100).unwrap();
        assert_eq!(&b, &[0u8; 19], "written back only on flush");
        w.flush().unwrap();
        f.read_exact_at(&mut b, 4100).unwrap();
        assert_eq!(&b, b"across a block edge");
        w.seek(SeekFrom::End(-1)).unwrap();
        assert!(w.write_all(b"xy").is_err());
        assert!(w.seek(SeekFrom::Start(5001)).is_err());
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 5000);
        assert_eq!(&all[4090..4109], b"across a block edge");
        // Nothing outside the window was touched.
        let mut outside = [1u8; 10];
        f.read_exact_at(&mut outside, 0).unwrap();
        assert_eq!(outside, [0u8; 10]);
    }

    #[test]
    fn eviction_keeps_every_write() {
        let f = tempfile::tempfile().unwrap();
        let size = (MAX_BLOCKS as u64 + 10) * BLOCK;
        let mut w = Window::new(&f, 0, size);
        for i in 0..(MAX_BLOCKS as u64 + 10) {
            w.seek(SeekFrom::Start(i * BLOCK + 7)).unwrap();
            w.write_all(&i.to_le_bytes()).unwrap();
        }
        w.flush().unwrap();
        for i in [0, 1, MAX_BLOCKS as u64 - 1, MAX_BLOCKS as u64 + 9] {
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, i * BLOCK + 7).unwrap();
            assert_eq!(u64::from_le_bytes(b), i);
        }
    }
}
