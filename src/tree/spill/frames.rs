//! Packed spill storage: a file's contents as [`FRAME`]-sized frames, each compressed on its
//! own with zstd (or kept as is when that saves nothing, or left out when all zeros), packed
//! one after another in the spill file. A frame can be read without its neighbours, so files
//! stay readable at any offset, in any order.
//!
//! Packed files live in a logical address range of their own above every verbatim file's
//! bytes: each starts at a frame boundary, so frame `k` of the file at logical offset `L` is
//! entry `(L - base) / FRAME + k` of the frame table. The range costs no disk; the frames do.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::BLOCK;

/// Bytes of file per frame (the last frame of a file may be shorter).
pub(super) const FRAME: usize = 64 * 1024;

/// zstd's level for frames. Level 1 packs the scale benchmark's text to 0.25 of its size,
/// level 3 to 0.23, for about the same time; see BENCHMARKS.md.
const LEVEL: i32 = 1;

/// Where one frame's bytes are in the spill file.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Offset in the spill file of the stored bytes.
    phys: u64,
    /// Stored length; 0 for a frame of zeros (nothing stored).
    stored: u32,
    /// The stored bytes are zstd's (otherwise the frame itself).
    compressed: bool,
}

/// The frame table and the end of the stored bytes.
#[derive(Debug)]
pub(super) struct Frames {
    /// Logical offset of the first frame.
    base: u64,
    frames: Vec<Frame>,
    /// End of the stored bytes in the spill file.
    phys_end: u64,
    /// Blocks of the spill file that packed files share (a file's stored bytes start and end
    /// anywhere in a block): how many files not yet released have bytes in each. A shared
    /// block is given back when the last of them is released.
    shared: Mutex<HashMap<u64, u32>>,
}

thread_local! {
    /// One zstd context per thread for each direction: contexts are costly to create per frame
    /// and cannot be shared between threads reading the same tree.
    static CCTX: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// A frame's bytes, when a read wants only part of it.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A frame's stored (compressed) bytes, on their way in or out.
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Frames {
    /// An empty table whose first frame will be at logical offset `base` and whose stored
    /// bytes start at `phys` in the spill file.
    pub(super) fn new(base: u64, phys: u64) -> Frames {
        debug_assert_eq!(base % FRAME as u64, 0);
        Frames {
            base,
            frames: Vec::new(),
            phys_end: phys,
            shared: Mutex::default(),
        }
    }

    /// Logical offset of the next frame: where the next packed file starts.
    pub(super) fn next_offset(&self) -> u64 {
        self.base + (self.frames.len() * FRAME) as u64
    }

    /// Whether logical offset `offset` is a packed file's.
    pub(super) fn holds(&self, offset: u64) -> bool {
        offset >= self.base
    }

    /// End of the stored bytes in the spill file.
    pub(super) fn phys_end(&self) -> u64 {
        self.phys_end
    }

    /// Notes the file whose frames were pushed since the stored bytes ended at `start`: the
    /// blocks it shares with other files.
    pub(super) fn file_stored(&mut self, start: u64) {
        let shared = self.shared.get_mut().unwrap_or_else(|p| p.into_inner());
        for block in shared_blocks(start, self.phys_end) {
            *shared.entry(block).or_insert(0) += 1;
        }
    }

    /// Stores `chunk` (at most [`FRAME`] bytes; shorter only as a file's last) as the next
    /// frame, writing its bytes to `file`.
    pub(super) fn push(&mut self, file: &File, chunk: &[u8]) -> io::Result<()> {
        debug_assert!(chunk.len() <= FRAME && !chunk.is_empty());
        let mut frame = Frame {
            phys: self.phys_end,
            stored: 0,
            compressed: false,
        };
        if !crate::bytes::is_zero(chunk) {
            STORED.with_borrow_mut(|packed| {
                frame.compressed = compress(chunk, packed)?;
                let bytes = if frame.compressed { &packed[..] } else { chunk };
                file.write_all_at(bytes, self.phys_end)?;
                frame.stored = bytes.len() as u32;
                io::Result::Ok(())
            })?;
            self.phys_end += frame.stored as u64;
        }
        self.frames.push(frame);
        Ok(())
    }

    /// Frame `k` of the file at `offset` and the file's `len`: its table entry and length.
    fn frame(&self, offset: u64, len: u64, k: u64) -> (Frame, usize) {
        let first = ((offset - self.base) / FRAME as u64) as usize;
        let size = (len - k * FRAME as u64).min(FRAME as u64) as usize;
        (self.frames[first + k as usize], size)
    }

    /// Reads `buf.len()` bytes of the file at `offset` (of `len` bytes) from `pos` on.
    pub(super) fn read_at(
        &self,
        file: &File,
        (offset, len): (u64, u64),
        pos: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = pos + done as u64;
            let k = at / FRAME as u64;
            let (frame, size) = self.frame(offset, len, k);
            let skip = (at - k * FRAME as u64) as usize;
            let n = (size - skip).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if skip == 0 && n == size {
                read_frame(file, frame, out)?;
            } else {
                SCRATCH.with_borrow_mut(|s| {
                    s.resize(size, 0);
                    read_frame(file, frame, s)?;
                    out.copy_from_slice(&s[skip..skip + n]);
                    io::Result::Ok(())
                })?;
            }
            done += n;
        }
        Ok(())
    }

    /// Byte ranges of the file at `offset` (of `len` bytes), from its start, that hold data:
    /// every frame but the ones of zeros.
    pub(super) fn data_ranges(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for k in 0..len.div_ceil(FRAME as u64) {
            let (frame, size) = self.frame(offset, len, k);
            if frame.stored == 0 {
                continue;
            }
            let (a, b) = (k * FRAME as u64, k * FRAME as u64 + size as u64);
            match out.last_mut() {
                Some(l) if l.1 == a => l.1 = b,
                _ => out.push((a, b)),
            }
        }
        out
    }

    /// The stored bytes of the file at `offset` (of `len` bytes) in the spill file: one range,
    /// since a file's frames are stored one after another.
    fn stored_range(&self, offset: u64, len: u64) -> (u64, u64) {
        let frames = len.div_ceil(FRAME as u64);
        if frames == 0 {
            return (0, 0);
        }
        let (first, _) = self.frame(offset, len, 0);
        let (last, _) = self.frame(offset, len, frames - 1);
        (first.phys, last.phys + last.stored as u64)
    }

    /// Gives back the space of the file at `offset` (of `len` bytes), released once: the
    /// blocks wholly its own, and the shared ones it was the last to hold.
    pub(super) fn release(&self, file: &File, offset: u64, len: u64) {
        let (a, b) = self.stored_range(offset, len);
        let (own_start, own_end) = (a.next_multiple_of(BLOCK), b / BLOCK * BLOCK);
        if own_end > own_start {
            crate::sparse::punch_hole(file, own_start, own_end - own_start);
        }
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for block in shared_blocks(a, b) {
            let Some(holders) = shared.get_mut(&block) else {
                continue;
            };
            *holders -= 1;
            if *holders == 0 {
                shared.remove(&block);
                crate::sparse::punch_hole(file, block * BLOCK, BLOCK);
            }
        }
    }
}

/// The blocks that the stored bytes `[a, b)` touch without covering them whole: at most the
/// first and the last.
fn shared_blocks(a: u64, b: u64) -> impl Iterator<Item = u64> {
    let (first, last) = (a / BLOCK, b.saturating_sub(1) / BLOCK);
    let partial = move |k: u64| a < b && (k * BLOCK < a || (k + 1) * BLOCK > b);
    let last = (last != first).then_some(last);
    std::iter::once(first)
        .chain(last)
        .filter(move |&k| partial(k))
}

/// Compresses `chunk` into `out`; whether that made it smaller (else `out` is to be ignored).
fn compress(chunk: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
    CCTX.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(chunk.len()));
        let n = c.compress_to_buffer(chunk, out)?;
        Ok(n < chunk.len())
    })
}

/// The whole of `frame` into `out` (its exact length).
fn read_frame(file: &File, frame: Frame, out: &mut [u8]) -> io::Result<()> {
    if frame.stored == 0 {
        out.fill(0);
        return Ok(());
    }
    if !frame.compressed {
        return file.read_exact_at(out, frame.phys);
    }
    let n = STORED.with_borrow_mut(|stored| {
        stored.resize(frame.stored as usize, 0);
        file.read_exact_at(stored, frame.phys)?;
        DCTX.with_borrow_mut(|d| {
            let d = match d {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new()?),
            };
            d.decompress_to_buffer(&stored[..], out)
        })
    })?;
    if n != out.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a packed frame of the spill file is shorter than it was",
        ));
    }
    Ok(())
}
