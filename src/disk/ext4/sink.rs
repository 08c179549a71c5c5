//! Where the write pass puts its bytes: block writes coalesced into large `pwrite`s
//! ([`Writer`]), inode records into the groups' tables ([`Itable`]), and file contents copied
//! from the spill file, inside the kernel where it can ([`DataCopy`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::ino::Ino;
use super::inode::Extent;
use super::layout::{Layout, BLOCK, INODE_SIZE};
use super::{io_err, Ext4Error};
use crate::tree::{FileData, LayerCursor, Spill};

/// Largest single buffered write (and the size of each write buffer).
pub(super) const CAP: usize = 128 << 10;

/// Coalesces writes to consecutive blocks into large `pwrite`s.
pub(super) struct Writer<'f> {
    file: &'f File,
    base: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'f> Writer<'f> {
    pub(super) fn new(file: &'f File, base: u64) -> Writer<'f> {
        Writer {
            file,
            base,
            buf: Vec::with_capacity(CAP),
            start: 0,
        }
    }

    pub(super) fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.base + self.start * BLOCK)
                .map_err(io_err("writing the ext4 image"))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// A zeroed slice of `len` bytes that will land at block `block`.
    pub(super) fn slot(&mut self, block: u64, len: usize) -> Result<&mut [u8], Ext4Error> {
        let contiguous = self.start * BLOCK + self.buf.len() as u64 == block * BLOCK;
        if !contiguous || self.buf.len() + len > CAP {
            self.flush()?;
            self.start = block;
        }
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        Ok(&mut self.buf[at..])
    }

    pub(super) fn put(&mut self, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
        self.slot(block, data.len())?.copy_from_slice(data);
        Ok(())
    }
}

/// Inode records go into the groups' inode tables through a buffer of consecutive records.
pub(super) struct Itable<'f, 'l> {
    file: &'f File,
    base: u64,
    layout: &'l Layout,
    buf: Vec<u8>,
    /// Inode number of the first record in `buf`.
    first: u64,
}

impl<'f, 'l> Itable<'f, 'l> {
    pub(super) fn new(file: &'f File, base: u64, layout: &'l Layout) -> Itable<'f, 'l> {
        Itable {
            file,
            base,
            layout,
            buf: Vec::with_capacity(CAP),
            first: 1,
        }
    }

    fn group(&self, ino: u64) -> u64 {
        (ino - 1) / self.layout.inodes_per_group as u64
    }

    pub(super) fn put(
        &mut self,
        ino: Ino,
        rec: &[u8; INODE_SIZE as usize],
    ) -> Result<(), Ext4Error> {
        let ino = ino.get() as u64;
        let next = self.first + self.buf.len() as u64 / INODE_SIZE;
        if ino != next || self.group(ino) != self.group(self.first) || self.buf.len() >= CAP {
            self.flush()?;
            self.first = ino;
        }
        self.buf.extend_from_slice(rec);
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), Ext4Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let ipg = self.layout.inodes_per_group as u64;
        let g = self.group(self.first);
        let index = (self.first - 1) % ipg;
        debug_assert!(
            (index * INODE_SIZE + self.buf.len() as u64) <= self.layout.itable_blocks * BLOCK
        );
        let at = self.layout.meta[g as usize].inode_table * BLOCK + index * INODE_SIZE;
        self.file
            .write_all_at(&self.buf, self.base + at)
            .map_err(io_err("writing the ext4 inode tables"))?;
        self.buf.clear();
        Ok(())
    }
}

/// Copies `len` bytes from `from` at `src` to `to` at `dst` inside the kernel. `Ok(false)`:
/// `copy_file_range` cannot do it for these files (nothing was copied); the caller copies
/// through its own buffer instead.
fn kernel_copy(from: &File, src: u64, to: &File, dst: u64, len: u64) -> std::io::Result<bool> {
    let (mut off_in, mut off_out) = (src as libc::loff_t, dst as libc::loff_t);
    let mut left = len;
    while left > 0 {
        // SAFETY: both descriptors are valid; the offsets are our own variables, so the
        // descriptors' file positions are untouched.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                left.min(1 << 30) as usize,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EPERM)
            );
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                _ if unsupported && left == len => return Ok(false),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the spill file ended early",
            ));
        }
        left -= n as u64;
    }
    Ok(true)
}

/// How file contents reach the image.
pub(super) struct DataCopy<'a> {
    spill: &'a Spill,
    out: &'a File,
    base: u64,
    /// `copy_file_range` works between the spill file and the output (until it fails so). Only
    /// used when the output region reads as zeros, so block tails need no writing.
    kernel: bool,
    /// Punch each file's data out of the spill once copied ([`super::Ext4Options::consume_spill`]).
    consume: bool,
    /// Where the layers are read again for the files left in them.
    layers: Layers,
}

/// The reader of the layers for the files left in them: not yet opened, being moved to the
/// first such file on a thread of its own ([`DataCopy::read_ahead_to`]), or open.
enum Layers {
    Closed,
    Seeking(std::thread::JoinHandle<std::io::Result<LayerCursor>>),
    Open(LayerCursor),
}

impl<'a> DataCopy<'a> {
    /// `zeroed`: the output region reads as zeros, so the kernel may copy (block tails need
    /// no writing). `consume`: the spill's space is given back file by file.
    pub(super) fn new(
        spill: &'a Spill,
        out: &'a File,
        base: u64,
        zeroed: bool,
        consume: bool,
    ) -> DataCopy<'a> {
        DataCopy {
            spill,
            out,
            base,
            kernel: zeroed,
            consume,
            layers: Layers::Closed,
        }
    }

    /// Starts reading the layers again up to `at` (a layer and a position in its tar
    /// stream: the first file left in its layer) on a thread of its own, while the metadata
    /// pass runs: the bytes before it (the files kept in the spill, those deleted by later
    /// layers) are inflated and dropped then rather than in the data pass, whose readers
    /// would wait for them.
    pub(super) fn read_ahead_to(&mut self, (layer, pos): (usize, u64)) {
        let Some(mut cursor) = self.spill.layer_cursor() else {
            return;
        };
        let seek = move || cursor.seek(layer, pos).map(|()| cursor);
        let spawned = std::thread::Builder::new()
            .name("d2v-layer-seek".into())
            .spawn(seek);
        // (no thread: the data pass seeks itself)
        if let Ok(handle) = spawned {
            self.layers = Layers::Seeking(handle);
        }
    }

    /// The reader of the layers, opened or taken from its seeking thread.
    fn layer_cursor(&mut self) -> Result<&mut LayerCursor, Ext4Error> {
        let read_err = io_err("reading a layer again for the root's file data");
        self.layers = match std::mem::replace(&mut self.layers, Layers::Closed) {
            Layers::Closed => Layers::Open(
                (self.spill.layer_cursor())
                    .expect("a file left in its layer has a spill that defers"),
            ),
            Layers::Seeking(handle) => Layers::Open(
                handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                    .map_err(read_err)?,
            ),
            open => open,
        };
        match &mut self.layers {
            Layers::Open(c) => Ok(c),
            _ => unreachable!("just opened"),
        }
    }

    /// Writes the contents of `fd` (see [`DataCopy::extents`]), then gives back its space in
    /// the spill if consuming: every file's data is written once (hard links share an inode).
    pub(super) fn file(
        &mut self,
        fd: &FileData,
        extents: &[Extent],
        w: &mut Writer,
    ) -> Result<(), Ext4Error> {
        self.extents(fd, extents, w)?;
        if self.consume {
            self.spill.release(fd);
        }
        Ok(())
    }

    /// Writes the contents of `fd` covered by `extents`; block tails past the end of the file
    /// are zero (the region was punched) or written as zeros through `w`.
    fn extents(
        &mut self,
        fd: &FileData,
        extents: &[Extent],
        w: &mut Writer,
    ) -> Result<(), Ext4Error> {
        if let Some((layer, start)) = self.spill.stream_at(fd) {
            return self.copy_from_layer(fd, (layer, start), extents, w);
        }
        for e in extents {
            let pos = e.logical as u64 * BLOCK;
            let total = e.len as u64 * BLOCK;
            let avail = fd.len.saturating_sub(pos).min(total);
            if let Some(offset) = self.spill.verbatim_offset(fd).filter(|_| self.kernel) {
                let src = offset + pos;
                let dst = self.base + e.phys * BLOCK;
                if kernel_copy(self.spill.file(), src, self.out, dst, avail)
                    .map_err(io_err("copying file data from the spill file"))?
                {
                    continue;
                }
                self.kernel = false;
            }
            let mut done = 0u64;
            while done < total {
                let chunk = (total - done).min(CAP as u64);
                let avail = fd.len.saturating_sub(pos + done).min(chunk) as usize;
                let s = w.slot(e.phys + done / BLOCK, chunk as usize)?;
                self.spill
                    .read_at(fd, pos + done, &mut s[..avail])
                    .map_err(io_err("reading the spill file"))?;
                done += chunk;
            }
        }
        Ok(())
    }

    /// Writes the contents of `fd`, left in its layer at `(layer, start)` of the layer's tar
    /// stream, read again there: files come in the order of their bytes in the layers, so
    /// the stream is read forwards.
    fn copy_from_layer(
        &mut self,
        fd: &FileData,
        (layer, start): (usize, u64),
        extents: &[Extent],
        w: &mut Writer,
    ) -> Result<(), Ext4Error> {
        let read_err = io_err("reading a layer again for the root's file data");
        let cursor = self.layer_cursor()?;
        for e in extents {
            let pos = e.logical as u64 * BLOCK;
            let total = e.len as u64 * BLOCK;
            cursor.seek(layer, start + pos).map_err(&read_err)?;
            let mut done = 0u64;
            while done < total {
                let chunk = (total - done).min(CAP as u64);
                let avail = fd.len.saturating_sub(pos + done).min(chunk) as usize;
                let s = w.slot(e.phys + done / BLOCK, chunk as usize)?;
                cursor.read_exact(&mut s[..avail]).map_err(&read_err)?;
                done += chunk;
            }
        }
        Ok(())
    }
}
