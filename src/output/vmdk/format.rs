//! On-disk structures of a streamOptimized sparse extent, per VMware's *Virtual Disk Format 5.0*
//! ("Hosted Sparse Extent Header" and "Stream-Optimized Compressed"). All little-endian.

/// Bytes per sector: every structure and every marker starts on a sector boundary.
pub(crate) const SECTOR: u64 = 512;
/// Sectors per grain (64 KiB grains).
pub(crate) const GRAIN_SECTORS: u64 = 128;
/// Bytes per grain.
pub(crate) const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table (one GT covers 32 MiB).
pub(crate) const GTES_PER_GT: u64 = 512;
/// Sectors one grain table occupies (512 × 4 bytes).
pub(crate) const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;

/// `'V' 'M' 'D' 'K'` read as a little-endian u32 (`KDMV` on disk).
pub(crate) const MAGIC: u32 = 0x564d_444b;
/// Version 3: the version VMware's open-vmdk and ESXi use for streamOptimized extents.
pub(crate) const VERSION: u32 = 3;
/// bit 0: valid newline detection; bit 16: compressed grains; bit 17: markers with embedded LBA.
pub(crate) const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// `COMPRESSION_DEFLATE`.
pub(crate) const COMPRESS_DEFLATE: u16 = 1;
/// `gdOffset` in the header at the start of a stream: the real value is in the footer.
pub(crate) const GD_AT_END: u64 = u64::MAX;

/// Marker types (`u.type` when `size == 0`).
pub(crate) const MARKER_EOS: u32 = 0;
pub(crate) const MARKER_GT: u32 = 1;
pub(crate) const MARKER_GD: u32 = 2;
pub(crate) const MARKER_FOOTER: u32 = 3;

/// Sector where the embedded descriptor starts, and the sectors reserved for it
/// (20, as VMware's open-vmdk and QEMU reserve).
pub(crate) const DESCRIPTOR_OFFSET: u64 = 1;
pub(crate) const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain: header + descriptor, padded to a grain boundary as QEMU and
/// VMware tools do.
pub(crate) const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;

/// The fields of `SparseExtentHeader` that vary between files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) capacity_sectors: u64,
    pub(crate) gd_offset: u64,
}

impl Header {
    /// The 512-byte packed `SparseExtentHeader`.
    pub(crate) fn encode(&self) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&FLAGS.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        b[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        b[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        b[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        b[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        b[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: no redundant GD (flag bit 1 clear)
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
        b[72] = 0; // uncleanShutdown
        b[73] = b'\n';
        b[74] = b' ';
        b[75] = b'\r';
        b[76] = b'\n';
        b[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
        b
    }
}

/// A metadata marker sector (GT, GD, footer, end-of-stream): `numSectors`, `size = 0`, `type`.
pub(crate) fn metadata_marker(num_sectors: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut b = [0u8; SECTOR as usize];
    b[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// Bytes of a grain marker before the compressed data: `lba` (u64) + `size` (u32).
pub(crate) const GRAIN_MARKER_LEN: usize = 12;

/// Number of grains covering `capacity_sectors` (the last one may be partial).
pub(crate) fn grain_count(capacity_sectors: u64) -> u64 {
    capacity_sectors.div_ceil(GRAIN_SECTORS)
}

/// Number of grain tables (= grain directory entries) for `capacity_sectors`.
pub(crate) fn gt_count(capacity_sectors: u64) -> u64 {
    grain_count(capacity_sectors).div_ceil(GTES_PER_GT)
}

/// BIOS geometry VMware uses for SCSI disks: 255 heads, 63 sectors, cylinders capped at 65535.
pub(crate) fn geometry(capacity_sectors: u64) -> (u64, u32, u32) {
    let cylinders = capacity_sectors.div_ceil(255 * 63).min(65535);
    (cylinders, 255, 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_spec_offsets() {
        let h = Header {
            capacity_sectors: 0x1234,
            gd_offset: GD_AT_END,
        }
        .encode();
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            0x0003_0001
        );
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 0x1234);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap()), 128);
        assert_eq!(u32::from_le_bytes(h[44..48].try_into().unwrap()), 512);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
        assert!(h[79..].iter().all(|&b| b == 0));
    }

    #[test]
    fn counts_round_up() {
        assert_eq!(grain_count(1), 1);
        assert_eq!(grain_count(128), 1);
        assert_eq!(grain_count(129), 2);
        assert_eq!(gt_count(128 * 512), 1);
        assert_eq!(gt_count(128 * 512 + 1), 2);
        assert_eq!(geometry(4 << 21).0, (4u64 << 21).div_ceil(255 * 63));
        assert_eq!(geometry(u64::MAX / 2).0, 65535);
    }
}
