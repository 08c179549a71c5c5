//! Writing a streamOptimized extent strictly sequentially (no seeks), so it may go to a pipe
//! or into a tar entry, as its grains arrive in disk order: header and descriptor, the grains
//! (each grain table after its grains), the grain directory, the footer and the end-of-stream
//! marker.

use super::format::*;
use super::{VmdkError, VmdkSummary};
use std::io::Write;

/// A streamOptimized extent being written: everything up to the last grain given so far.
pub(super) struct Emitter<'a> {
    w: Out<'a>,
    tables: Tables,
    capacity_sectors: u64,
    grains: u64,
}

impl<'a> Emitter<'a> {
    /// Writes the header and the embedded `descriptor`, padded to the first grain boundary.
    pub(super) fn start(
        out: &'a mut dyn Write,
        capacity_sectors: u64,
        descriptor: &str,
    ) -> Result<Emitter<'a>, VmdkError> {
        let mut w = Out { inner: out, pos: 0 };
        w.put(
            &Header {
                capacity_sectors,
                gd_offset: GD_AT_END,
            }
            .encode(),
        )?;
        let mut head = vec![0u8; ((OVERHEAD_SECTORS - 1) * SECTOR) as usize];
        head[..descriptor.len()].copy_from_slice(descriptor.as_bytes());
        w.put(&head)?;
        Ok(Emitter {
            w,
            tables: Tables {
                gd: Vec::with_capacity(gt_count(capacity_sectors) as usize),
                gt: vec![0; GTES_PER_GT as usize],
            },
            capacity_sectors,
            grains: 0,
        })
    }

    /// Writes `block` (grain marker and compressed data, padded to a sector) of `grain`, after
    /// the grain tables of every earlier table. Grains come in ascending order.
    pub(super) fn grain(&mut self, grain: u64, block: &[u8]) -> Result<(), VmdkError> {
        self.tables.advance_to(grain / GTES_PER_GT, &mut self.w)?;
        let sector = u32::try_from(self.w.pos / SECTOR).map_err(|_| VmdkError::TooLarge)?;
        self.tables.gt[(grain % GTES_PER_GT) as usize] = sector;
        self.w.put(block)?;
        self.grains += 1;
        Ok(())
    }

    /// The remaining grain tables, the grain directory, the footer (the header again, now
    /// with the directory's offset) and the end-of-stream marker.
    pub(super) fn finish(mut self) -> Result<VmdkSummary, VmdkError> {
        let (gts, capacity_sectors) = (gt_count(self.capacity_sectors), self.capacity_sectors);
        let w = &mut self.w;
        self.tables.advance_to(gts, w)?;
        let gd_sectors = (gts * 4).div_ceil(SECTOR);
        w.put(&metadata_marker(gd_sectors, MARKER_GD))?;
        let gd_offset = w.pos / SECTOR;
        let mut gd = Vec::with_capacity((gd_sectors * SECTOR) as usize);
        for e in &self.tables.gd {
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
        w.inner.flush().map_err(VmdkError::Write)?;
        Ok(VmdkSummary {
            capacity: capacity_sectors * SECTOR,
            populated_size: self.grains * GRAIN_BYTES,
            file_size: w.pos,
            grains: self.grains,
        })
    }
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
