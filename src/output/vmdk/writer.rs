//! The streamOptimized writer: one reader thread (holes skipped), compression on every core,
//! grains written in disk order by the calling thread. Memory is bounded by a fixed pool of
//! grain buffers: a buffer goes back to the reader only once its grain has been written.

use super::format::*;
use super::{descriptor, VmdkError, VmdkOptions, VmdkSummary, MAX_LEVEL};
use libdeflater::{CompressionLvl, Compressor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

struct Job {
    seq: u64,
    grain: u64,
    buf: Vec<u8>,
}

struct Done {
    seq: u64,
    grain: u64,
    buf: Vec<u8>,
    /// Grain marker + zlib data padded to a sector; `None` for an all-zero grain.
    block: Option<Vec<u8>>,
}

/// Write `raw` (a plain, possibly sparse disk image) as a streamOptimized VMDK to `out`.
/// `out` is written strictly sequentially (no seeks), so it may be a pipe or a tar entry:
/// header and descriptor, the grains (each grain table after its grains), then the grain
/// directory, the footer and the end-of-stream marker.
pub fn write_stream_optimized(
    raw: &File,
    out: &mut dyn Write,
    opts: &VmdkOptions,
) -> Result<VmdkSummary, VmdkError> {
    if opts.compression_level > MAX_LEVEL {
        return Err(VmdkError::Level(opts.compression_level));
    }
    let read_err = |source| VmdkError::Read { offset: 0, source };
    let len = raw.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Err(VmdkError::Empty);
    }
    let capacity_sectors = len.div_ceil(SECTOR);
    let desc = descriptor(capacity_sectors, opts)?;
    if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(VmdkError::FileName(opts.file_name.clone()));
    }
    let extents = crate::sparse::data_extents(raw, 0, len).map_err(read_err)?;
    if let Some(bar) = &opts.progress {
        bar.set_length(grains_in(&extents) * GRAIN_BYTES);
    }

    let mut w = Out { inner: out, pos: 0 };
    // Header + descriptor, padded to the first grain boundary.
    w.put(
        &Header {
            capacity_sectors,
            gd_offset: GD_AT_END,
        }
        .encode(),
    )?;
    let mut head = vec![0u8; ((OVERHEAD_SECTORS - 1) * SECTOR) as usize];
    head[..desc.len()].copy_from_slice(desc.as_bytes());
    w.put(&head)?;
    crate::interrupt::pause_point("vmdk");

    let gts = gt_count(capacity_sectors);
    let mut tables = Tables {
        gd: Vec::with_capacity(gts as usize),
        gt: vec![0; GTES_PER_GT as usize],
    };
    let grains = write_grains(raw, len, &extents, opts, &mut tables, &mut w)?;
    tables.advance_to(gts, &mut w)?;
    write_tail(&mut w, &tables, gts, capacity_sectors)?;
    Ok(VmdkSummary {
        capacity: capacity_sectors * SECTOR,
        populated_size: grains * GRAIN_BYTES,
        file_size: w.pos,
        grains,
    })
}

/// Reads the grains on one thread, compresses them on `opts.threads` (default: every core),
/// and writes them in disk order with their grain tables. Returns how many were not all zero.
fn write_grains(
    raw: &File,
    len: u64,
    extents: &[(u64, u64)],
    opts: &VmdkOptions,
    tables: &mut Tables,
    w: &mut Out,
) -> Result<u64, VmdkError> {
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let pool_size = threads * 8;
    let level = opts.compression_level;
    let mut grains = 0u64;
    std::thread::scope(|s| -> Result<(), VmdkError> {
        let (pool_tx, pool_rx) = channel::<Vec<u8>>();
        for _ in 0..pool_size {
            pool_tx
                .send(vec![0u8; GRAIN_BYTES as usize])
                .expect("pool receiver alive");
        }
        let (job_tx, job_rx) = sync_channel::<Job>(pool_size);
        let (done_tx, done_rx) = sync_channel::<Result<Done, VmdkError>>(pool_size);
        let job_rx = Arc::new(Mutex::new(job_rx));

        let reader = s.spawn(move || read_grains(raw, len, extents, pool_rx, job_tx));
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            s.spawn(move || compress_grains(level, &job_rx, &done_tx));
        }
        drop(done_tx);

        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        for r in done_rx.iter() {
            let d = r?;
            pending.insert(d.seq, d);
            while let Some(d) = pending.remove(&next) {
                next += 1;
                if let Some(block) = &d.block {
                    tables.advance_to(d.grain / GTES_PER_GT, w)?;
                    let sector = u32::try_from(w.pos / SECTOR).map_err(|_| VmdkError::TooLarge)?;
                    tables.gt[(d.grain % GTES_PER_GT) as usize] = sector;
                    w.put(block)?;
                    grains += 1;
                }
                if let Some(bar) = &opts.progress {
                    bar.inc(GRAIN_BYTES);
                }
                // The reader may have stopped on an error; then nobody needs the buffer.
                let _ = pool_tx.send(d.buf);
            }
        }
        drop(pool_tx);
        reader.join().expect("reader thread panicked")?;
        Ok(())
    })?;
    Ok(grains)
}

/// The grain directory, the footer (the header again, now with the directory's offset) and
/// the end-of-stream marker.
fn write_tail(
    w: &mut Out,
    tables: &Tables,
    gts: u64,
    capacity_sectors: u64,
) -> Result<(), VmdkError> {
    let gd_sectors = (gts * 4).div_ceil(SECTOR);
    w.put(&metadata_marker(gd_sectors, MARKER_GD))?;
    let gd_offset = w.pos / SECTOR;
    let mut gd = Vec::with_capacity((gd_sectors * SECTOR) as usize);
    for e in &tables.gd {
        gd.extend_from_slice(&e.to_le_bytes());
    }
    gd.resize((gd_sectors * SECTOR) as usize, 0);
    w.put(&gd)?;
    w.put(&metadata_marker(1, MARKER_FOOTER))?;
    w.put(
        &Header {
            capacity_sectors,
            gd_offset,
        }
        .encode(),
    )?;
    w.put(&metadata_marker(0, MARKER_EOS))?;
    w.inner.flush().map_err(VmdkError::Write)
}

/// A writer that counts bytes, so grain table entries know their sector.
struct Out<'a> {
    inner: &'a mut dyn Write,
    pos: u64,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), VmdkError> {
        self.inner.write_all(b).map_err(VmdkError::Write)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

/// The grain directory built so far and the grain table being filled.
struct Tables {
    gd: Vec<u32>,
    gt: Vec<u32>,
}

impl Tables {
    /// Write out every grain table before table index `gt` (empty ones too, so every GD entry
    /// points at a table).
    fn advance_to(&mut self, gt: u64, w: &mut Out) -> Result<(), VmdkError> {
        while (self.gd.len() as u64) < gt {
            w.put(&metadata_marker(GT_SECTORS, MARKER_GT))?;
            let sector = u32::try_from(w.pos / SECTOR).map_err(|_| VmdkError::TooLarge)?;
            self.gd.push(sector);
            let mut b = Vec::with_capacity((GT_SECTORS * SECTOR) as usize);
            for e in &self.gt {
                b.extend_from_slice(&e.to_le_bytes());
            }
            w.put(&b)?;
            self.gt.iter_mut().for_each(|e| *e = 0);
        }
        Ok(())
    }
}

/// The grains overlapping the data extents (sorted, disjoint `[start, end)`), in order, each
/// once (two extents may share a grain).
fn grains(extents: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    let mut next_grain = 0u64; // first grain not yet given
    extents.iter().flat_map(move |&(start, end)| {
        let first = (start / GRAIN_BYTES).max(next_grain);
        let last = (end - 1) / GRAIN_BYTES;
        next_grain = next_grain.max(last + 1);
        first..=last
    })
}

/// How many grains [`read_grains`] reads for `extents`.
pub(super) fn grains_in(extents: &[(u64, u64)]) -> u64 {
    grains(extents).count() as u64
}

/// Reader thread: every grain overlapping a data extent, in order, into pool buffers.
fn read_grains(
    raw: &File,
    len: u64,
    extents: &[(u64, u64)],
    pool: Receiver<Vec<u8>>,
    jobs: SyncSender<Job>,
) -> Result<(), VmdkError> {
    for (seq, grain) in grains(extents).enumerate() {
        let Ok(mut buf) = pool.recv() else {
            return Ok(()); // writer gave up
        };
        let off = grain * GRAIN_BYTES;
        let n = (len - off).min(GRAIN_BYTES) as usize;
        raw.read_exact_at(&mut buf[..n], off)
            .map_err(|e| VmdkError::Read {
                offset: off,
                source: e,
            })?;
        buf[n..].fill(0);
        let seq = seq as u64;
        if jobs.send(Job { seq, grain, buf }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Worker thread: zero check, then zlib (RFC 1950) compression (libdeflate) of a whole grain into
/// grain marker + data, padded to a sector.
fn compress_grains(
    level: u32,
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Result<Done, VmdkError>>,
) {
    let lvl = CompressionLvl::new(level as i32).unwrap_or_default();
    let mut z = Compressor::new(lvl);
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(Job { seq, grain, buf }) = job else {
            return;
        };
        let r = if crate::bytes::is_zero(&buf) {
            Ok(None)
        } else {
            compress_one(&mut z, grain, &buf).map(Some)
        };
        let msg = r.map(|block| Done {
            seq,
            grain,
            buf,
            block,
        });
        if done.send(msg).is_err() {
            return;
        }
    }
}

fn compress_one(z: &mut Compressor, grain: u64, data: &[u8]) -> Result<Vec<u8>, VmdkError> {
    let bound = z.zlib_compress_bound(data.len());
    let mut out = vec![0u8; (GRAIN_MARKER_LEN + bound).next_multiple_of(SECTOR as usize)];
    out[..8].copy_from_slice(&(grain * GRAIN_SECTORS).to_le_bytes());
    let size = z
        .zlib_compress(data, &mut out[GRAIN_MARKER_LEN..])
        .map_err(|e| VmdkError::Compress(format!("{e:?}")))?;
    out[8..12].copy_from_slice(&(size as u32).to_le_bytes());
    out.truncate((GRAIN_MARKER_LEN + size).next_multiple_of(SECTOR as usize));
    out[GRAIN_MARKER_LEN + size..].fill(0);
    Ok(out)
}
