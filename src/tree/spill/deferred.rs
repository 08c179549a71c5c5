//! Deferred files: contents the spill file does not hold, only where they are in the
//! decompressed tar stream of a layer, to be read again from the layer's blob when the disk
//! is written. A build reads its layers twice: once to apply them (the staging tree), once
//! in the root filesystem's data pass, front to back, straight into the disk. The spill then
//! holds only the files read before that (`/boot`, `/etc`, modules, GRUB's files), so the
//! temporary disk no longer grows with the image.
//!
//! A deferred file read before the data pass anyway (a guest check opening a file outside
//! the kept paths) is read from its layer then, and kept in a scratch file of its own: slow
//! (the layer is inflated again up to the file) but correct, and counted
//! ([`super::Spill::early_reads`]) so that the kept paths can follow what the build reads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// The layers an image's tree was flattened from, opened again: layer `index` (bottom 0) as
/// its decompressed tar stream from the start.
pub trait LayerStreams: Send + Sync {
    /// Layer `index`'s tar stream. Fails when the layer cannot be read again as it was read
    /// the first time (its blob gone or changed since).
    fn open(&self, index: usize) -> io::Result<Box<dyn Read + Send>>;
}

/// One deferred file: its bytes are `len` bytes (its `FileData`'s) from `pos` in the stream
/// of layer `layer`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its `FileData::offset`, the key.
    offset: u64,
    layer: u32,
    pos: u64,
    /// Index into [`Deferred::holey`] of its data ranges; [`ALL_DATA`]: one range, all of it.
    ranges: u32,
}

const ALL_DATA: u32 = u32::MAX;

/// The deferred files of one spill, and how to read them again.
pub(super) struct Deferred {
    streams: Arc<dyn LayerStreams>,
    /// In `offset` order (files are deferred in the order their offsets are handed out).
    entries: Vec<Entry>,
    /// Data ranges of the deferred files with all-zero pieces (left out of the disk).
    holey: Vec<Vec<(u64, u64)>>,
    early: Mutex<Early>,
}

/// Deferred files read before the data pass, kept in a scratch file.
#[derive(Default)]
struct Early {
    cursor: Option<LayerCursor>,
    file: Option<File>,
    end: u64,
    /// File offset (the key) to where its bytes are in `file`.
    kept: HashMap<u64, u64>,
}

impl Deferred {
    pub(super) fn new(streams: Arc<dyn LayerStreams>) -> Deferred {
        Deferred {
            streams,
            entries: Vec::new(),
            holey: Vec::new(),
            early: Mutex::new(Early::default()),
        }
    }

    /// Records a file at `offset` whose `len` bytes are at `pos` in layer `layer`'s stream,
    /// holding data in `ranges` (pieces of zeros left out).
    pub(super) fn push(
        &mut self,
        offset: u64,
        len: u64,
        layer: usize,
        pos: u64,
        ranges: Vec<(u64, u64)>,
    ) {
        debug_assert!(self.entries.last().is_none_or(|e| e.offset < offset));
        let ranges = if ranges == [(0, len)] {
            ALL_DATA
        } else {
            self.holey.push(ranges);
            (self.holey.len() - 1) as u32
        };
        self.entries.push(Entry {
            offset,
            layer: layer as u32,
            pos,
            ranges,
        });
    }

    fn entry(&self, offset: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.offset < offset);
        self.entries.get(i).filter(|e| e.offset == offset)
    }

    /// Whether the file at `offset` is deferred.
    pub(super) fn holds(&self, offset: u64) -> bool {
        self.entry(offset).is_some()
    }

    /// The layer and stream position of the first byte of the deferred file at `offset`.
    pub(super) fn stream_at(&self, offset: u64) -> Option<(usize, u64)> {
        self.entry(offset).map(|e| (e.layer as usize, e.pos))
    }

    /// The data ranges of the deferred file at `offset`, `len` bytes long.
    pub(super) fn data_ranges(&self, offset: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let e = self.entry(offset)?;
        Some(match e.ranges {
            ALL_DATA => vec![(0, len)],
            k => self.holey[k as usize].clone(),
        })
    }

    /// A cursor over the layers' streams, for reading deferred files in order.
    pub(super) fn cursor(&self) -> LayerCursor {
        LayerCursor::new(self.streams.clone())
    }

    /// Reads `buf.len()` bytes from `pos` of the deferred file at `offset` (`len` bytes long)
    /// before the data pass: the whole file is read from its layer the first time and kept.
    pub(super) fn read_early(
        &self,
        offset: u64,
        len: u64,
        pos: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let e = *self.entry(offset).expect("a deferred file");
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        let early = &mut *early;
        let at = match early.kept.get(&offset) {
            Some(&at) => at,
            None => {
                let file = match &mut early.file {
                    Some(f) => f,
                    None => early.file.insert(tempfile::tempfile()?),
                };
                let cursor = early.cursor.get_or_insert_with(|| self.cursor());
                let at = early.end;
                cursor.seek(e.layer as usize, e.pos)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(buf.len() as u64) as usize;
                    cursor.read_exact(&mut buf[..n])?;
                    file.write_all_at(&buf[..n], at + done)?;
                    done += n as u64;
                }
                early.end = (at + len).next_multiple_of(4096);
                early.kept.insert(offset, at);
                at
            }
        };
        let file = early.file.as_ref().expect("kept in the scratch file");
        file.read_exact_at(buf, at + pos)
    }

    /// How many deferred files were read before the data pass.
    pub(super) fn early_reads(&self) -> usize {
        self.early.lock().map_or(0, |e| e.kept.len())
    }
}

/// A forward reader over the layers' streams: seeks forward within the open layer by reading
/// and dropping, and opens a layer again to go back.
pub struct LayerCursor {
    streams: Arc<dyn LayerStreams>,
    /// The open layer, its stream and the position in it.
    at: Option<(usize, Box<dyn Read + Send>, u64)>,
}

impl LayerCursor {
    fn new(streams: Arc<dyn LayerStreams>) -> LayerCursor {
        LayerCursor { streams, at: None }
    }

    /// Moves to `pos` in layer `layer`'s stream.
    pub fn seek(&mut self, layer: usize, pos: u64) -> io::Result<()> {
        if !matches!(&self.at, Some((l, _, p)) if *l == layer && *p <= pos) {
            self.at = Some((layer, self.streams.open(layer)?, 0));
        }
        let (_, r, p) = self.at.as_mut().expect("opened");
        let skip = pos - *p;
        let skipped = io::copy(&mut r.take(skip), &mut io::sink())?;
        *p += skipped;
        if skipped < skip {
            return Err(ended(layer, pos));
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at the cursor.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let (layer, r, p) = self.at.as_mut().expect("seek before read");
        match r.read_exact(buf) {
            Ok(()) => {
                *p += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let (layer, p) = (*layer, *p);
                self.at = None;
                Err(ended(layer, p))
            }
            Err(e) => {
                self.at = None;
                Err(e)
            }
        }
    }
}

fn ended(layer: usize, pos: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("layer {layer} read again ended before byte {pos} of its tar stream, where a file was the first time"),
    )
}
