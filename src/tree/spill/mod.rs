//! The spill file: file contents of the staging tree, appended one after another, so that
//! memory use does not grow with the image size.
//!
//! The first [`PACK_AFTER`] bytes of data are stored verbatim, all-zero stretches left as
//! holes: a file's bytes are then a range of the spill file that the kernel can copy
//! (`copy_file_range`) and probe (`SEEK_DATA`). Past that, files are packed ([`frames`]):
//! compressed frame by frame, so that a large image's staging tree takes nearer its compressed
//! output's disk than all of its data (1.13× the OVA at 8 GiB of data instead of 1.74×).
//!
//! A build's spill stores less still ([`Spill::deferring`]): only the files read before the
//! root's data pass; the others are [`deferred`], left in their layers and read from them
//! again, each file given the offset it would have had if stored, so the filesystem written
//! is the same.

mod deferred;
mod frames;

pub use deferred::{LayerCursor, LayerStreams};

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use frames::{Frames, FRAME};

/// Bytes of file data stored verbatim before files are packed. Packing costs CPU on the
/// flatten's one thread (zstd at level 1 both ways: the systemd fixture's 360 MB packed whole
/// took 1.2 s more CPU and 0.5 s more wall time, +12 %), which an image of this size does not
/// win back: its spill is small and short-lived. Past it, disk is what runs out: an 8 GiB
/// image's peak temporary disk goes from 1.74× its OVA to 1.13× (BENCHMARKS.md, scale).
pub const PACK_AFTER: u64 = 512 << 20;

/// The unit of the spill file's space: verbatim files start on a block, and a punched hole
/// is whole blocks.
const BLOCK: u64 = 4096;

/// Where a regular file's contents live in the spill file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileData {
    /// Byte offset in the spill file; for a packed file, its logical offset (see [`frames`]).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The spill file: the staging tree's file contents, one after another, verbatim with holes
/// for all-zero stretches, then packed.
pub struct Spill {
    file: File,
    /// End of the files' (logical) offsets.
    end: u64,
    /// The file's length: the end of the last write or `set_len` (no `fstat` per file).
    file_len: u64,
    /// Bytes of data stored verbatim (holes left out).
    verbatim_data: u64,
    /// Files are packed once `verbatim_data` reaches this.
    pack_after: u64,
    /// The packed files' frames, once packing has begun.
    frames: Option<Frames>,
    /// Files left in their layers, for a spill that defers ([`Spill::deferring`]).
    deferred: Option<deferred::Deferred>,
}

/// Size of the pieces appended at a time; an all-zero piece becomes a hole (a packed file's
/// frame: the two are the same size, so a file's holes are the same either way).
const CHUNK: usize = FRAME;

impl Spill {
    /// A spill file over `file`, which must be empty.
    pub(crate) fn new(file: File) -> Spill {
        Spill::packing_after(file, PACK_AFTER)
    }

    /// A spill file over `file` (empty) that packs files once `bytes` of data are stored
    /// verbatim (0: every file).
    pub fn packing_after(file: File, bytes: u64) -> Spill {
        Spill {
            file,
            end: 0,
            file_len: 0,
            verbatim_data: 0,
            pack_after: bytes,
            frames: None,
            deferred: None,
        }
    }

    /// A spill file over `file` (empty) that can leave files in their layers
    /// ([`Spill::defer`]), read again through `streams`. It never packs: what it stores are
    /// the files read early, few and small beside the image.
    pub fn deferring(file: File, streams: Arc<dyn LayerStreams>) -> Spill {
        Spill {
            deferred: Some(deferred::Deferred::new(streams)),
            ..Spill::packing_after(file, u64::MAX)
        }
    }

    /// Whether files can be deferred ([`Spill::deferring`]).
    pub fn defers(&self) -> bool {
        self.deferred.is_some()
    }

    /// Reads `data` (a file's bytes, at `pos` of layer `layer`'s tar stream) to its end but
    /// stores none of it: the file is read from its layer again when needed. Notes which
    /// [`CHUNK`]-sized pieces are all zeros, as a stored file's holes. A spill that does not
    /// defer stores the file ([`Spill::append`]).
    pub(crate) fn defer(
        &mut self,
        data: &mut dyn Read,
        layer: usize,
        pos: u64,
    ) -> io::Result<FileData> {
        let Some(deferred) = &mut self.deferred else {
            return self.append(data);
        };
        let offset = self.end.next_multiple_of(BLOCK);
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let len = for_each_chunk(data, |piece, at| {
            if !crate::bytes::is_zero(piece) {
                let end = at + piece.len() as u64;
                match ranges.last_mut() {
                    Some(r) if r.1 == at => r.1 = end,
                    _ => ranges.push((at, end)),
                }
            }
            Ok(())
        })?;
        if len > 0 {
            // (an empty file is nothing to read: no entry, and its offset may be the next's)
            deferred.push(offset, len, layer, pos, ranges);
            self.end = offset + len;
        }
        Ok(FileData { offset, len })
    }

    /// Whether `data`'s bytes are left in their layer.
    fn is_deferred(&self, data: &FileData) -> bool {
        data.len > 0 && self.deferred.as_ref().is_some_and(|d| d.holds(data.offset))
    }

    /// For a deferred file: its layer and the position of its first byte in the layer's tar
    /// stream, to read with a [`Spill::layer_cursor`].
    pub fn stream_at(&self, data: &FileData) -> Option<(usize, u64)> {
        match data.len {
            0 => None,
            _ => self.deferred.as_ref()?.stream_at(data.offset),
        }
    }

    /// A reader of the layers' streams for deferred files, if this spill defers.
    pub fn layer_cursor(&self) -> Option<LayerCursor> {
        self.deferred.as_ref().map(|d| d.cursor())
    }

    /// How many deferred files were read before the disk's data pass (each read from its
    /// layer then, and kept).
    pub fn early_reads(&self) -> usize {
        self.deferred.as_ref().map_or(0, |d| d.early_reads())
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

    /// Appends everything `data` yields, verbatim or packed (see the module's doc).
    pub(crate) fn append(&mut self, data: &mut dyn Read) -> io::Result<FileData> {
        if self.frames.is_none() && self.verbatim_data >= self.pack_after {
            let base = self.end.max(self.file_len).next_multiple_of(FRAME as u64);
            // Past the last verbatim file's last block, which its release punches whole.
            self.frames = Some(Frames::new(base, self.file_len.next_multiple_of(BLOCK)));
        }
        match &mut self.frames {
            Some(frames) => {
                let (offset, start) = (frames.next_offset(), frames.phys_end());
                let len = for_each_chunk(data, |piece, _| frames.push(&self.file, piece))?;
                frames.file_stored(start);
                self.end = offset + len;
                Ok(FileData { offset, len })
            }
            None => self.append_verbatim(data),
        }
    }

    /// Appends `data` verbatim. Offsets are kept 4 KiB-aligned so that block-sized pieces of
    /// a file map to block-sized pieces of the spill file.
    fn append_verbatim(&mut self, data: &mut dyn Read) -> io::Result<FileData> {
        let offset = self.end.next_multiple_of(BLOCK);
        let len = for_each_chunk(data, |piece, pos| {
            if !crate::bytes::is_zero(piece) {
                // Positioned writes: no seek per file or per hole.
                let at = offset + pos;
                self.file.write_all_at(piece, at)?;
                self.file_len = self.file_len.max(at + piece.len() as u64);
                self.verbatim_data += piece.len() as u64;
            }
            Ok(())
        })?;
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
        if self.is_deferred(data) {
            let d = self.deferred.as_ref().expect("deferring");
            return d.read_early(data.offset, data.len, pos, buf);
        }
        match self.packed(data) {
            Some(f) => f.read_at(&self.file, (data.offset, data.len), pos, buf),
            None => self.file.read_exact_at(buf, data.offset + pos),
        }
    }

    /// The frames of `data`, if it is a packed file.
    fn packed(&self, data: &FileData) -> Option<&Frames> {
        self.frames.as_ref().filter(|f| f.holds(data.offset))
    }

    /// Where `data`'s bytes lie as they are in the spill file ([`Spill::file`]), if they do:
    /// not for a packed file.
    pub fn verbatim_offset(&self, data: &FileData) -> Option<u64> {
        (self.packed(data).is_none() && !self.is_deferred(data)).then_some(data.offset)
    }

    /// Byte ranges `[start, end)` of `data`, from its start, that hold data rather than
    /// zeros left out (holes of the verbatim spill, frames of zeros of a packed file).
    pub fn data_ranges(&self, data: &FileData) -> io::Result<Vec<(u64, u64)>> {
        if let Some(f) = self.packed(data) {
            return Ok(f.data_ranges(data.offset, data.len));
        }
        if let Some(r) = (self.deferred.as_ref())
            .filter(|_| data.len > 0)
            .and_then(|d| d.data_ranges(data.offset, data.len))
        {
            return Ok(r);
        }
        let start = data.offset;
        let ranges = crate::sparse::data_extents(&self.file, start, start + data.len)?;
        Ok(ranges
            .into_iter()
            .map(|(a, b)| (a - start, b - start))
            .collect())
    }

    /// Gives back the disk space of `data`'s bytes (punching a hole), which must not be read
    /// again. Only space is at stake: a filesystem that cannot punch keeps the bytes.
    pub fn release(&self, data: &FileData) {
        if data.len == 0 || self.is_deferred(data) {
            return;
        }
        if let Some(f) = self.packed(data) {
            return f.release(&self.file, data.offset, data.len);
        }
        // Verbatim files start on a block and own the blocks they touch: whole blocks go.
        crate::sparse::punch_hole(&self.file, data.offset, data.len.next_multiple_of(BLOCK));
    }

    /// Gives back the blocks wholly within the first `upto` bytes of `data`, which must not be
    /// read again, if it is verbatim; a packed file's frames go only with [`Spill::release`]
    /// (its first and last blocks are shared, and counted).
    fn release_front(&self, data: &FileData, upto: u64) {
        if self.verbatim_offset(data).is_some() {
            crate::sparse::punch_hole(&self.file, data.offset, upto / BLOCK * BLOCK);
        }
    }

    /// A reader over one file's contents that gives back the space of what it has read as it
    /// goes (whole blocks of a verbatim file, every [`RELEASE_EVERY`] bytes) and of the rest
    /// at its end: for a file read once and never again (a kernel image's `kernel.tar`, whose
    /// tree is dropped after its modules are taken). A packed file is given back at its end.
    pub fn consuming_reader<'a>(&'a self, data: &FileData) -> ConsumingReader<'a> {
        ConsumingReader {
            inner: self.reader(data),
            released: 0,
            done: false,
        }
    }

    /// Bytes of the spill file in use: the end of the verbatim bytes or of the packed frames.
    #[cfg(test)]
    fn stored_end(&self) -> u64 {
        self.frames.as_ref().map_or(self.file_len, Frames::phys_end)
    }

    /// A reader over one file's contents.
    pub fn reader<'a>(&'a self, data: &FileData) -> SpillReader<'a> {
        SpillReader {
            spill: self,
            data: *data,
            pos: 0,
            packed: self.packed(data).is_some(),
            frame: None,
        }
    }

    /// The underlying file, for consumers that want `SEEK_DATA`/`SEEK_HOLE` or `copy_file_range`.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// A reader over one file's contents ([`Spill::reader`]).
pub struct SpillReader<'a> {
    spill: &'a Spill,
    data: FileData,
    pos: u64,
    /// The file is packed: reads go through one whole frame at a time.
    packed: bool,
    /// The frame last read of a packed file (its number and bytes), so that small reads do
    /// not decompress it again.
    frame: Option<(u64, Vec<u8>)>,
}

/// Bytes read between two punches of a [`ConsumingReader`].
pub const RELEASE_EVERY: u64 = 8 << 20;

/// See [`Spill::consuming_reader`].
pub struct ConsumingReader<'a> {
    inner: SpillReader<'a>,
    /// Bytes from the file's start given back (of a verbatim file) when last asked.
    released: u64,
    /// The whole file was given back (once: a packed file's blocks are counted).
    done: bool,
}

impl ConsumingReader<'_> {
    /// Gives back the whole file, read to its end or not.
    pub fn finish(mut self) {
        self.release_all();
    }

    fn release_all(&mut self) {
        if !self.done {
            self.inner.spill.release(&self.inner.data);
            self.done = true;
        }
    }
}

impl Read for ConsumingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let pos = self.inner.pos;
        if n == 0 && !buf.is_empty() {
            self.release_all();
        } else if pos - self.released >= RELEASE_EVERY {
            self.inner.spill.release_front(&self.inner.data, pos);
            self.released = pos;
        }
        Ok(n)
    }
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len - self.pos;
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        if !self.packed {
            self.spill.read_at(&self.data, self.pos, &mut buf[..n])?;
            self.pos += n as u64;
            return Ok(n);
        }
        let k = self.pos / FRAME as u64;
        let start = k * FRAME as u64;
        if self.frame.as_ref().is_none_or(|(at, _)| *at != k) {
            let size = (self.data.len - start).min(FRAME as u64) as usize;
            let mut bytes = self.frame.take().map(|(_, b)| b).unwrap_or_default();
            bytes.resize(size, 0);
            self.spill.read_at(&self.data, start, &mut bytes)?;
            self.frame = Some((k, bytes));
        }
        let bytes = &self.frame.as_ref().expect("just read").1;
        let skip = (self.pos - start) as usize;
        let n = n.min(bytes.len() - skip);
        buf[..n].copy_from_slice(&bytes[skip..skip + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads `data` in [`CHUNK`]-sized pieces (the last one shorter), handing each to `piece` with
/// its position in the file; returns the file's length.
fn for_each_chunk(
    data: &mut dyn Read,
    mut piece: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<u64> {
    // Not kept between calls: a buffer held by the tree would stay resident through the ext4
    // stage, when d2v's memory use peaks; reusing one measured no faster.
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = read_full(data, &mut buf)?;
        if n == 0 {
            return Ok(len);
        }
        piece(&buf[..n], len)?;
        len += n as u64;
        if n < CHUNK {
            return Ok(len);
        }
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

    /// Bytes that compress (text), that do not (xorshift), and zeros, `len` of them.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| match (i / 50_000) % 3 {
                0 => b"spill frames of text "[i % 21],
                1 => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
                _ => 0,
            })
            .collect()
    }

    fn read_all(s: &Spill, fd: &FileData) -> Vec<u8> {
        let mut got = Vec::new();
        s.reader(fd).read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn packed_files_read_back_whole_in_pieces_and_at_any_offset() {
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 0);
        let files: Vec<Vec<u8>> = [0, 1, 10, CHUNK - 1, CHUNK, 3 * CHUNK + 77, 400_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| mixed(n, i as u64 + 1))
            .collect();
        let fds: Vec<FileData> = files
            .iter()
            .map(|f| s.append(&mut &f[..]).unwrap())
            .collect();
        for (fd, want) in fds.iter().zip(&files) {
            assert_eq!(s.verbatim_offset(fd), None, "packed from the first byte");
            assert_eq!(fd.offset % CHUNK as u64, 0);
            assert_eq!(read_all(&s, fd), *want);
            // Small reads through the reader, and positioned reads across frame boundaries.
            let mut r = s.reader(fd);
            let mut got = Vec::new();
            let mut piece = [0u8; 1000];
            loop {
                let n = r.read(&mut piece).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&piece[..n]);
            }
            assert_eq!(got, *want);
            if want.len() > CHUNK + 10 {
                let mut buf = vec![0u8; CHUNK];
                s.read_at(fd, 10, &mut buf).unwrap();
                assert_eq!(buf, want[10..10 + CHUNK]);
            }
            let mut past = [0u8; 2];
            let last = (want.len() as u64).saturating_sub(1);
            assert!(s.read_at(fd, last, &mut past).is_err());
        }
        // Text compresses, noise is stored as is, zeros not at all: less than the data.
        let total: usize = files.iter().map(Vec::len).sum();
        assert!(
            s.stored_end() < total as u64 * 3 / 4,
            "{} of {total}",
            s.stored_end()
        );
    }

    #[test]
    fn packed_data_ranges_are_the_frames_that_are_not_zeros() {
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 0);
        let mut f = vec![0u8; 4 * CHUNK + 5];
        f[CHUNK + 3] = 1; // frame 1
        f[4 * CHUNK + 4] = 2; // frame 4, the short last one
        let fd = s.append(&mut &f[..]).unwrap();
        let c = CHUNK as u64;
        assert_eq!(
            s.data_ranges(&fd).unwrap(),
            [(c, 2 * c), (4 * c, 4 * c + 5)]
        );
        // The verbatim spill reports the same ranges from its holes.
        let mut v = Spill::temp().unwrap();
        let vd = v.append(&mut &f[..]).unwrap();
        assert_eq!(
            v.data_ranges(&vd).unwrap(),
            [(c, 2 * c), (4 * c, 4 * c + 5)]
        );
    }

    #[test]
    fn files_are_packed_once_the_verbatim_data_reaches_the_bound() {
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 2 * CHUNK as u64);
        let a = mixed(CHUNK + 1, 1);
        let b = mixed(CHUNK + 100, 2);
        let c = mixed(3 * CHUNK, 3);
        let (fa, fb, fc) = (
            s.append(&mut &a[..]).unwrap(),
            s.append(&mut &b[..]).unwrap(),
            s.append(&mut &c[..]).unwrap(),
        );
        assert_eq!(s.verbatim_offset(&fa), Some(0));
        assert!(
            s.verbatim_offset(&fb).is_some(),
            "under the bound when it began"
        );
        assert_eq!(s.verbatim_offset(&fc), None);
        assert!(fc.offset >= fb.offset + fb.len);
        for (fd, want) in [(&fa, &a), (&fb, &b), (&fc, &c)] {
            assert_eq!(read_all(&s, fd), *want);
        }
        // Giving back the last verbatim file (whole blocks, past its unaligned end) leaves
        // the first packed one whole.
        s.release(&fb);
        assert_eq!(read_all(&s, &fc), c);
        assert_eq!(read_all(&s, &fa), a);
    }

    #[test]
    fn releasing_a_packed_file_gives_back_its_own_blocks_only() {
        use std::os::unix::fs::MetadataExt;
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 0);
        let noise = |seed| mixed(20 * CHUNK, seed).into_iter().enumerate();
        // Incompressible only: every frame is stored as is.
        let f: Vec<Vec<u8>> = (1..4u64)
            .map(|seed| {
                noise(seed)
                    .filter(|(i, _)| (i / 50_000) % 3 == 1)
                    .map(|p| p.1)
                    .collect()
            })
            .collect();
        let fds: Vec<FileData> = f.iter().map(|d| s.append(&mut &d[..]).unwrap()).collect();
        let allocated = |s: &Spill| s.file().metadata().unwrap().blocks() * 512;
        let before = allocated(&s);
        s.release(&fds[1]);
        let freed = before - allocated(&s);
        let len = f[1].len() as u64;
        assert!(
            freed + 8192 >= len && freed <= len,
            "{freed} of {len} bytes given back"
        );
        assert_eq!(read_all(&s, &fds[0]), f[0], "the neighbours are intact");
        assert_eq!(read_all(&s, &fds[2]), f[2]);
        // The blocks shared with the middle file go with the last of their holders.
        s.release(&fds[0]);
        s.release(&fds[2]);
        assert_eq!(allocated(&s), 0);
    }

    #[test]
    fn a_consuming_reader_gives_back_what_it_has_read() {
        use std::os::unix::fs::MetadataExt;
        let allocated = |s: &Spill| s.file().metadata().unwrap().blocks() * 512;
        // Verbatim: noise (no holes), a neighbour after it that must stay.
        let mut s = Spill::temp().unwrap();
        let len = 3 * RELEASE_EVERY as usize + 5000;
        let data: Vec<u8> = mixed(3 * len, 9)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (i / 50_000) % 3 == 1)
            .map(|p| p.1)
            .take(len)
            .collect();
        let fd = s.append(&mut &data[..]).unwrap();
        let next = s.append(&mut &b"neighbour"[..]).unwrap();
        let whole = allocated(&s);
        let mut r = s.consuming_reader(&fd);
        let mut got = vec![0u8; RELEASE_EVERY as usize + 4096];
        r.read_exact(&mut got).unwrap();
        assert_eq!(got, data[..got.len()]);
        let freed = whole - allocated(&s);
        assert!(
            (RELEASE_EVERY..=got.len() as u64).contains(&freed),
            "{freed} bytes given back after reading {}",
            got.len()
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(
            rest,
            data[got.len()..],
            "what is ahead of the reader is intact"
        );
        assert!(allocated(&s) <= 4096, "{} bytes left", allocated(&s));
        assert_eq!(read_all(&s, &next), b"neighbour");
        // Packed: given back at the end, once (its shared blocks are counted).
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 0);
        let files: Vec<Vec<u8>> = (1..4u64).map(|i| mixed(3 * CHUNK + 11, i)).collect();
        let fds: Vec<FileData> = files
            .iter()
            .map(|d| s.append(&mut &d[..]).unwrap())
            .collect();
        let mut r = s.consuming_reader(&fds[1]);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, files[1]);
        assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);
        r.finish();
        assert_eq!(read_all(&s, &fds[0]), files[0], "the neighbours are intact");
        assert_eq!(read_all(&s, &fds[2]), files[2]);
        s.release(&fds[0]);
        s.release(&fds[2]);
        assert_eq!(allocated(&s), 0);
    }

    #[test]
    fn blocks_shared_by_many_small_packed_files_go_with_the_last_of_them() {
        use std::os::unix::fs::MetadataExt;
        let mut s = Spill::packing_after(tempfile::tempfile().unwrap(), 0);
        // Tens of bytes stored each: many files to a block, and files across block ends.
        let f: Vec<Vec<u8>> = (0..2000u64)
            .map(|i| mixed(20 + (i as usize * 37) % 300, i))
            .collect();
        let fds: Vec<FileData> = f.iter().map(|d| s.append(&mut &d[..]).unwrap()).collect();
        let allocated = |s: &Spill| s.file().metadata().unwrap().blocks() * 512;
        // Every third file first: the rest must read back whole.
        for fd in fds.iter().step_by(3) {
            s.release(fd);
        }
        for (i, (fd, want)) in fds.iter().zip(&f).enumerate().filter(|(i, _)| i % 3 != 0) {
            assert_eq!(read_all(&s, fd), *want, "file {i}");
        }
        for fd in fds
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|p| p.1)
        {
            s.release(fd);
        }
        assert_eq!(allocated(&s), 0, "of {} bytes stored", s.stored_end());
    }

    /// One "layer": the bytes of `files` one after another, at known positions.
    struct OneLayer(Vec<u8>, std::sync::atomic::AtomicUsize);

    impl LayerStreams for OneLayer {
        fn open(&self, index: usize) -> io::Result<Box<dyn Read + Send>> {
            assert_eq!(index, 3);
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Box::new(io::Cursor::new(self.0.clone())))
        }
    }

    #[test]
    fn deferred_files_take_the_offsets_and_holes_stored_ones_would() {
        let mut holey = mixed(5 * CHUNK + 9, 4);
        holey[..CHUNK].fill(0);
        holey[3 * CHUNK..4 * CHUNK].fill(0);
        let files = [
            mixed(10_000, 1),
            vec![0u8; 3 * CHUNK],
            holey,
            Vec::new(),
            b"x".to_vec(),
        ];
        let stream: Vec<u8> = files.concat();
        let layer = Arc::new(OneLayer(stream, Default::default()));
        let mut d = Spill::deferring(tempfile::tempfile().unwrap(), layer.clone());
        let mut v = Spill::temp().unwrap();
        let mut pos = 0u64;
        let mut fds = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let (fd, plain) = match i % 2 {
                0 => (
                    d.defer(&mut &f[..], 3, pos).unwrap(),
                    v.append(&mut &f[..]).unwrap(),
                ),
                _ => (
                    d.append(&mut &f[..]).unwrap(),
                    v.append(&mut &f[..]).unwrap(),
                ),
            };
            assert_eq!(fd, plain, "file {i}");
            assert_eq!(d.data_ranges(&fd).unwrap(), v.data_ranges(&plain).unwrap());
            let deferred = i % 2 == 0 && !f.is_empty();
            assert_eq!(d.stream_at(&fd).is_some(), deferred, "file {i}");
            assert_eq!(d.verbatim_offset(&fd).is_none(), deferred, "file {i}");
            fds.push((fd, pos));
            pos += f.len() as u64;
        }
        assert_eq!(d.stream_at(&fds[2].0), Some((3, fds[2].1)));
        // Only the stored files take space in the spill file.
        use std::os::unix::fs::MetadataExt;
        assert!(d.file().metadata().unwrap().blocks() * 512 <= 8192);
        // Read before the data pass: from the layer, once per file, then kept.
        assert_eq!(d.early_reads(), 0);
        for _ in 0..2 {
            for ((fd, _), f) in fds.iter().zip(&files) {
                assert_eq!(read_all(&d, fd), *f);
            }
        }
        assert_eq!(d.early_reads(), 3, "the three deferred files with bytes");
        let opened = layer.1.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(opened, 1, "read forwards on one opening of the layer");
        // A cursor goes back by opening the layer again.
        let mut c = d.layer_cursor().unwrap();
        let mut buf = [0u8; 4];
        c.seek(3, fds[2].1 + CHUNK as u64 + 1).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, files[2][CHUNK + 1..CHUNK + 5]);
        c.seek(3, 5).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, files[0][5..9]);
        assert!(c.seek(3, pos + 1).is_err(), "past the end of the layer");
    }
}
