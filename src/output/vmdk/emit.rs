//! Writing a [`Compressed`] disk out as a streamOptimized extent, strictly sequentially (no
//! seeks), so it may go to a pipe or into a tar entry: header and descriptor, the grains in
//! disk order (each grain table after its grains), the grain directory, the footer and the
//! end-of-stream marker. Every size is known before the first byte: [`Compressed::file_size`].

use super::format::*;
use super::{VmdkError, VmdkSummary};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// A disk whose grains are compressed: the store file, each non-zero grain's `(offset,
/// length)` in it, the capacity and the embedded descriptor.
pub struct Compressed {
    store: File,
    index: BTreeMap<u64, (u64, u32)>,
    capacity_sectors: u64,
    descriptor: String,
    /// Punch the store behind [`Compressed::emit`] ([`super::VmdkOptions::consume`]).
    consume: bool,
}

impl Compressed {
    pub(super) fn new(
        store: File,
        index: BTreeMap<u64, (u64, u32)>,
        capacity_sectors: u64,
        descriptor: String,
        consume: bool,
    ) -> Compressed {
        Compressed {
            store,
            index,
            capacity_sectors,
            descriptor,
            consume,
        }
    }

    /// What [`Compressed::emit`] will write, without writing it.
    pub fn summary(&self) -> Result<VmdkSummary, VmdkError> {
        self.write_out(&mut Out::counting())
    }

    /// Writes the VMDK to `out` (once, if the store is consumed on the way).
    pub fn emit(&self, out: &mut dyn Write) -> Result<VmdkSummary, VmdkError> {
        crate::interrupt::pause_point("vmdk");
        self.write_out(&mut Out::to(out))
    }

    fn write_out(&self, w: &mut Out) -> Result<VmdkSummary, VmdkError> {
        let capacity_sectors = self.capacity_sectors;
        // Header + descriptor, padded to the first grain boundary.
        w.put(
            &Header {
                capacity_sectors,
                gd_offset: GD_AT_END,
            }
            .encode(),
        )?;
        let mut head = vec![0u8; ((OVERHEAD_SECTORS - 1) * SECTOR) as usize];
        head[..self.descriptor.len()].copy_from_slice(self.descriptor.as_bytes());
        w.put(&head)?;

        let gts = gt_count(capacity_sectors);
        let mut tables = Tables {
            gd: Vec::with_capacity(gts as usize),
            gt: vec![0; GTES_PER_GT as usize],
        };
        let mut block = Vec::new();
        let mut punch =
            StorePuncher::new(&self.store, &self.index, self.consume && !w.is_counting());
        for (&grain, &(at, len)) in &self.index {
            tables.advance_to(grain / GTES_PER_GT, w)?;
            let sector = u32::try_from(w.pos / SECTOR).map_err(|_| VmdkError::TooLarge)?;
            tables.gt[(grain % GTES_PER_GT) as usize] = sector;
            if w.is_counting() {
                w.pos += len as u64;
                continue;
            }
            block.resize(len as usize, 0);
            self.store
                .read_exact_at(&mut block, at)
                .map_err(VmdkError::Store)?;
            w.put(&block)?;
            punch.written(at);
        }
        tables.advance_to(gts, w)?;
        write_tail(w, &tables, gts, capacity_sectors)?;
        let grains = self.index.len() as u64;
        Ok(VmdkSummary {
            capacity: capacity_sectors * SECTOR,
            populated_size: grains * GRAIN_BYTES,
            file_size: w.pos,
            grains,
        })
    }
}

/// Gives back the store's space behind `emit`: the grains go out in disk order, which is
/// nearly the order they were stored in; the store below the first grain not yet written is
/// punched, 32 MiB at a time.
struct StorePuncher<'f> {
    store: Option<&'f File>,
    /// Every grain's offset in the store, ascending, and whether it was written.
    order: Vec<u64>,
    written: Vec<bool>,
    /// `order[low]` is the first grain not yet written; the store is punched below `punched`.
    low: usize,
    punched: u64,
}

impl<'f> StorePuncher<'f> {
    const EVERY: u64 = 32 << 20;

    fn new(store: &'f File, index: &BTreeMap<u64, (u64, u32)>, on: bool) -> StorePuncher<'f> {
        let mut order: Vec<u64> = if on {
            index.values().map(|&(at, _)| at).collect()
        } else {
            Vec::new()
        };
        order.sort_unstable();
        StorePuncher {
            store: on.then_some(store),
            written: vec![false; order.len()],
            order,
            low: 0,
            punched: 0,
        }
    }

    fn written(&mut self, at: u64) {
        let Some(store) = self.store else { return };
        if let Ok(i) = self.order.binary_search(&at) {
            self.written[i] = true;
        }
        while self.written.get(self.low) == Some(&true) {
            self.low += 1;
        }
        // Once all are written the store goes as a whole.
        let below = self.order.get(self.low).copied().unwrap_or(self.punched);
        let upto = below / Self::EVERY * Self::EVERY;
        if upto > self.punched {
            // Only space is at stake: a filesystem that cannot punch keeps the bytes.
            crate::sparse::punch_hole(store, self.punched, upto - self.punched);
            self.punched = upto;
        }
    }
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
    w.flush()
}

/// A writer that counts bytes, so grain table entries know their sector; without `inner` it
/// only counts.
struct Out<'a> {
    inner: Option<&'a mut dyn Write>,
    pos: u64,
}

impl<'a> Out<'a> {
    fn to(inner: &'a mut dyn Write) -> Out<'a> {
        Out {
            inner: Some(inner),
            pos: 0,
        }
    }

    fn counting() -> Out<'a> {
        Out {
            inner: None,
            pos: 0,
        }
    }

    fn is_counting(&self) -> bool {
        self.inner.is_none()
    }

    fn put(&mut self, b: &[u8]) -> Result<(), VmdkError> {
        if let Some(w) = &mut self.inner {
            w.write_all(b).map_err(VmdkError::Write)?;
        }
        self.pos += b.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), VmdkError> {
        match &mut self.inner {
            Some(w) => w.flush().map_err(VmdkError::Write),
            None => Ok(()),
        }
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
