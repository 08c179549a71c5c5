//! The compression pass: grains of the raw disk are read as they become final (see
//! [`crate::finality`]: the VMDK is written while the disk is still being written), in disk
//! order, compressed on every core, put back in disk order and written out by an
//! [`Emitter`] as they come: nothing of the VMDK waits anywhere but in memory.
//!
//! Memory is bounded by a fixed pool of grain buffers ([`POOL_PER_THREAD`] per thread): a
//! buffer goes back to the reader once its grain is written out. Holes of the raw file are
//! never read.

use super::emit::Emitter;
use super::format::*;
use super::{VmdkError, VmdkOptions, VmdkSummary, MAX_LEVEL};
use crate::finality::{Finality, Ready};
use libdeflater::{CompressionLvl, Compressor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

struct Job {
    /// The job's place in the reader's order.
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

/// Writes the `len` bytes of `raw` as a streamOptimized VMDK to `out`, sequentially, as they
/// become final by `finality`. Returns when the disk is whole and written out;
/// [`VmdkError::Aborted`] when the disk writer gave up (`out` then holds a part).
pub fn compress(
    raw: &File,
    len: u64,
    finality: &Finality,
    opts: &VmdkOptions,
    out: &mut dyn Write,
) -> Result<VmdkSummary, VmdkError> {
    if opts.compression_level > MAX_LEVEL {
        return Err(VmdkError::Level(opts.compression_level));
    }
    if len == 0 {
        return Err(VmdkError::Empty);
    }
    let capacity_sectors = len.div_ceil(SECTOR);
    let descriptor = super::descriptor(capacity_sectors, opts)?;
    if descriptor.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(VmdkError::FileName(opts.file_name.clone()));
    }
    if let Some(bar) = &opts.progress {
        bar.set_length(len);
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut emitter = Emitter::start(out, capacity_sectors, &descriptor)?;
    crate::interrupt::pause_point("vmdk");
    if pipeline(raw, len, finality, opts, threads, &mut emitter)? {
        return Err(VmdkError::Aborted);
    }
    emitter.finish()
}

/// Grain buffers per compressor thread (2 MiB). Grains are written out in disk order, so a
/// grain slow to compress (or its emitter slow to be scheduled) holds the buffers of every
/// grain after it; the pool is how far the compressors can run ahead of that. `d2v pull` of
/// the systemd fixture on 2 cores, wall / (CPU / cores): 1.095 with 8 per thread, 1.073 with
/// 32 (medians of 8 runs, alternating), 1.074 with 64 (of 6); peak RSS +1 MiB there, +4.7 MiB
/// (41.2 → 45.9) for the 8 GiB image of `cargo xtask bench scale`.
const POOL_PER_THREAD: usize = 32;

/// The reader, `threads` compressors and the emitter on the calling thread. Whether the disk
/// writer gave up.
fn pipeline(
    raw: &File,
    len: u64,
    finality: &Finality,
    opts: &VmdkOptions,
    threads: usize,
    out: &mut Emitter,
) -> Result<bool, VmdkError> {
    let pool_size = threads * POOL_PER_THREAD;
    let level = opts.compression_level;
    std::thread::scope(|s| {
        let (pool_tx, pool_rx) = channel::<Vec<u8>>();
        for _ in 0..pool_size {
            pool_tx
                .send(vec![0u8; GRAIN_BYTES as usize])
                .expect("pool receiver alive");
        }
        let (job_tx, job_rx) = sync_channel::<Job>(pool_size);
        let (done_tx, done_rx) = sync_channel::<Result<Done, VmdkError>>(pool_size);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let bar = opts.progress.clone();
        let punch = Puncher::new(raw, opts.consume);
        let reader =
            s.spawn(move || read_final_grains(raw, len, finality, pool_rx, job_tx, bar, punch));
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            s.spawn(move || compress_grains(level, &job_rx, &done_tx));
        }
        drop(done_tx);
        let emitted = emit_in_order(done_rx, &pool_tx, out);
        drop(pool_tx);
        let read = reader.join().expect("reader thread panicked");
        emitted?;
        read
    })
}

/// Writes every compressed grain out in the reader's order (the compressors finish in any
/// order), giving each buffer back to the reader once its grain is out.
fn emit_in_order(
    done: Receiver<Result<Done, VmdkError>>,
    pool: &Sender<Vec<u8>>,
    out: &mut Emitter,
) -> Result<(), VmdkError> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for r in done.iter() {
        let d = r?;
        waiting.insert(d.seq, d);
        while let Some(d) = waiting.remove(&next) {
            if let Some(block) = &d.block {
                out.grain(d.grain, block)?;
            }
            next += 1;
            // The reader may have stopped on an error; then nobody needs the buffer.
            let _ = pool.send(d.buf);
        }
    }
    Ok(())
}

/// The grains overlapping the data extents (sorted, disjoint `[start, end)`), in order, each
/// once (two extents may share a grain).
pub(super) fn grains(extents: &[(u64, u64)]) -> impl Iterator<Item = u64> + '_ {
    let mut next_grain = 0u64; // first grain not yet given
    extents.iter().flat_map(move |&(start, end)| {
        let first = (start / GRAIN_BYTES).max(next_grain);
        let last = (end - 1) / GRAIN_BYTES;
        next_grain = next_grain.max(last + 1);
        first..=last
    })
}

/// Reader thread: each window of grains the watermark passes, its data grains into pool
/// buffers, in disk order. Whether the disk writer gave up.
fn read_final_grains(
    raw: &File,
    len: u64,
    finality: &Finality,
    pool: Receiver<Vec<u8>>,
    jobs: SyncSender<Job>,
    bar: Option<indicatif::ProgressBar>,
    mut punch: Puncher,
) -> Result<bool, VmdkError> {
    let total = len.div_ceil(GRAIN_BYTES);
    let (mut next, mut seq) = (0u64, 0u64);
    while next < total {
        let upto = match finality.wait_beyond((next + 1) * GRAIN_BYTES - 1) {
            Ready::Aborted => return Ok(true),
            Ready::All => total,
            Ready::Below(b) => (b / GRAIN_BYTES).min(total),
        };
        let (from, to) = (next * GRAIN_BYTES, (upto * GRAIN_BYTES).min(len));
        let extents =
            crate::sparse::data_extents(raw, from, to).map_err(|source| VmdkError::Read {
                offset: from,
                source,
            })?;
        for grain in grains(&extents) {
            let Ok(mut buf) = pool.recv() else {
                return Ok(false); // the emitter gave up
            };
            let off = grain * GRAIN_BYTES;
            let n = (len - off).min(GRAIN_BYTES) as usize;
            raw.read_exact_at(&mut buf[..n], off)
                .map_err(|source| VmdkError::Read {
                    offset: off,
                    source,
                })?;
            buf[n..].fill(0);
            if jobs.send(Job { seq, grain, buf }).is_err() {
                return Ok(false);
            }
            seq += 1;
            punch.add(grain);
            if grain % CONSUMED_EVERY == 0 {
                finality.consumed(grain * GRAIN_BYTES);
            }
        }
        finality.consumed(to);
        if let Some(bar) = &bar {
            bar.inc(to - from);
        }
        next = upto;
    }
    Ok(false)
}

/// Grains between two reports of the reader's progress to the writer.
const CONSUMED_EVERY: u64 = (8 << 20) / GRAIN_BYTES;

/// Gives back the raw disk's space behind the reader ([`VmdkOptions::consume`]): runs of
/// grains read, punched out of the file every 32 MiB and where a run breaks. A grain is only
/// added once read and final, so nothing punched is read or written again.
struct Puncher<'f> {
    file: Option<&'f File>,
    /// Grains `[start, end)` read and not punched yet.
    run: (u64, u64),
}

impl<'f> Puncher<'f> {
    const RUN_GRAINS: u64 = (32 << 20) / GRAIN_BYTES;

    fn new(file: &'f File, consume: bool) -> Puncher<'f> {
        Puncher {
            file: consume.then_some(file),
            run: (0, 0),
        }
    }

    fn add(&mut self, grain: u64) {
        if self.file.is_none() {
            return;
        }
        if grain != self.run.1 || self.run.1 - self.run.0 >= Self::RUN_GRAINS {
            self.flush();
            self.run.0 = grain;
        }
        self.run.1 = grain + 1;
    }

    fn flush(&mut self) {
        let (a, b) = std::mem::take(&mut self.run);
        if let Some(f) = self.file.filter(|_| b > a) {
            // Only space is at stake: a filesystem that cannot punch keeps the bytes.
            crate::sparse::punch_hole(f, a * GRAIN_BYTES, (b - a) * GRAIN_BYTES);
        }
    }
}

impl Drop for Puncher<'_> {
    fn drop(&mut self) {
        self.flush();
    }
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
        if done
            .send(r.map(|block| Done {
                seq,
                grain,
                buf,
                block,
            }))
            .is_err()
        {
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
