//! The FAT32 volume's shape (Microsoft FAT specification, "Boot Sector and BPB", "FAT Data
//! Structure", "FAT32 FSInfo Sector Structure"): where the reserved sectors, the two FATs and
//! the clusters lie in a partition of a given size, and the boot sector and FSInfo bytes.

/// Bytes per sector.
pub(super) const SECTOR: u64 = 512;
/// Reserved sectors before the first FAT (boot sector, FSInfo, their backups at 6 and 7).
const RESERVED: u64 = 32;
const FATS: u64 = 2;
const FSINFO_SECTOR: u64 = 1;
const BACKUP_BOOT_SECTOR: u64 = 6;
/// The root directory's first cluster.
pub(super) const ROOT_CLUSTER: u32 = 2;
/// Fewest clusters of a FAT32 volume (fewer would make it FAT16 by the spec's rule).
pub(super) const MIN_CLUSTERS: u64 = 65_525;
/// FAT entry meaning "end of this cluster chain".
pub(super) const END_OF_CHAIN: u32 = 0x0fff_ffff;
const MEDIA: u8 = 0xf8;

/// Where everything is, in a partition of `sectors` sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) sectors: u32,
    pub(super) sectors_per_cluster: u8,
    pub(super) fat_sectors: u32,
    /// Data clusters, numbered from [`ROOT_CLUSTER`].
    pub(super) clusters: u32,
}

impl Geometry {
    /// The shape for a partition of `size` bytes: the spec's cluster size for the volume size
    /// (512 bytes up to 260 MiB, 4 KiB up to 8 GiB, more beyond), FATs just large enough for
    /// the clusters left beside them. `None`: too small (or large) for FAT32.
    pub(super) fn for_size(size: u64) -> Option<Geometry> {
        let sectors = u32::try_from(size / SECTOR).ok()? as u64;
        let cluster_bytes = match size {
            s if s <= 260 << 20 => 512,
            s if s <= 8 << 30 => 4096,
            s => (s.next_power_of_two() / (2 << 30) * 1024).min(32 << 10),
        };
        let spc = cluster_bytes / SECTOR;
        let data_sectors = sectors.checked_sub(RESERVED)?;
        // The clusters left beside FATs of `fs` sectors each, and whether FATs that size
        // hold an entry for each of them: the smallest such size wins.
        let clusters_with = |fs: u64| data_sectors.saturating_sub(FATS * fs) / spc;
        let holds = |fs: u64| (clusters_with(fs) + 2) * 4 <= fs * SECTOR;
        let (mut lo, mut hi) = (1u64, ((data_sectors / spc + 2) * 4).div_ceil(SECTOR));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if holds(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let fat_sectors = lo;
        let clusters = clusters_with(fat_sectors);
        // Cluster numbers are 28 bits wide; 0x0FFFFFF7 and up are reserved.
        (MIN_CLUSTERS..0x0fff_fff5)
            .contains(&clusters)
            .then_some(Geometry {
                sectors: sectors as u32,
                sectors_per_cluster: spc as u8,
                fat_sectors: fat_sectors as u32,
                clusters: clusters as u32,
            })
    }

    pub(super) fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster as u64 * SECTOR
    }

    /// Byte offset of FAT number `n` (0 or 1).
    pub(super) fn fat_offset(&self, n: u64) -> u64 {
        (RESERVED + n * self.fat_sectors as u64) * SECTOR
    }

    pub(super) fn fat_bytes(&self) -> u64 {
        self.fat_sectors as u64 * SECTOR
    }

    /// Byte offset of data cluster `c` (≥ 2).
    pub(super) fn cluster_offset(&self, c: u32) -> u64 {
        self.fat_offset(FATS) + (c - ROOT_CLUSTER) as u64 * self.cluster_bytes()
    }

    /// The reserved region: boot sector, FSInfo, and their backups at sectors 6 and 7.
    /// `hidden`: sectors before the partition on the disk; `free`: free clusters;
    /// `next_free`: the first free cluster.
    pub(super) fn reserved_region(
        &self,
        volume_id: u32,
        label: [u8; 11],
        hidden: u32,
        free: u32,
        next_free: u32,
    ) -> Vec<u8> {
        let mut r = vec![0u8; (RESERVED * SECTOR) as usize];
        let boot = self.boot_sector(volume_id, label, hidden);
        let info = fsinfo(free, next_free);
        for (at, bytes) in [
            (0, &boot),
            (FSINFO_SECTOR, &info),
            (BACKUP_BOOT_SECTOR, &boot),
            (BACKUP_BOOT_SECTOR + FSINFO_SECTOR, &info),
        ] {
            let at = (at * SECTOR) as usize;
            r[at..at + SECTOR as usize].copy_from_slice(bytes);
        }
        r
    }

    fn boot_sector(&self, volume_id: u32, label: [u8; 11], hidden: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..3].copy_from_slice(&[0xeb, 0x58, 0x90]); // jump over the BPB
        b[3..11].copy_from_slice(b"MSWIN4.1");
        b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
        b[13] = self.sectors_per_cluster;
        b[14..16].copy_from_slice(&(RESERVED as u16).to_le_bytes());
        b[16] = FATS as u8;
        // Root entries, 16-bit total and FAT size stay 0 on FAT32.
        b[21] = MEDIA;
        b[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track
        b[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads
        b[28..32].copy_from_slice(&hidden.to_le_bytes());
        b[32..36].copy_from_slice(&self.sectors.to_le_bytes());
        b[36..40].copy_from_slice(&self.fat_sectors.to_le_bytes());
        // Flags 0: both FATs mirrored; version 0.0.
        b[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
        b[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
        b[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
        b[64] = 0x80; // drive number: a hard disk
        b[66] = 0x29; // extended boot signature: the next three fields are present
        b[67..71].copy_from_slice(&volume_id.to_le_bytes());
        b[71..82].copy_from_slice(&label);
        b[82..90].copy_from_slice(b"FAT32   ");
        b[510..].copy_from_slice(&[0x55, 0xaa]);
        b
    }

    /// FAT entries 0 and 1: the media byte, and "end of chain" (clean, no I/O error).
    pub(super) fn fat_head() -> [u32; 2] {
        [0x0fff_ff00 | MEDIA as u32, END_OF_CHAIN]
    }
}

fn fsinfo(free: u32, next_free: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    b[488..492].copy_from_slice(&free.to_le_bytes());
    b[492..496].copy_from_slice(&next_free.to_le_bytes());
    b[508..].copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FATs hold an entry for every cluster (and the two reserved ones), with less than
    /// a sector to spare, and everything fits the partition.
    #[test]
    fn fats_fit_their_clusters() {
        for mib in [33u64, 40, 256, 260, 261, 1024, 9 * 1024, 1 << 20] {
            let g = Geometry::for_size(mib << 20).unwrap();
            let entries = g.fat_bytes() / 4;
            assert!(entries >= g.clusters as u64 + 2, "{mib} MiB");
            assert!(
                entries < g.clusters as u64 + 2 + SECTOR / 4 * 2,
                "{mib} MiB"
            );
            let end = g.cluster_offset(ROOT_CLUSTER + g.clusters);
            assert!(end <= mib << 20, "{mib} MiB");
            assert!(
                end + g.cluster_bytes() > mib << 20,
                "{mib} MiB: a cluster left out"
            );
        }
        assert_eq!(
            Geometry::for_size(256 << 20).unwrap().sectors_per_cluster,
            1
        );
        assert_eq!(Geometry::for_size(1 << 30).unwrap().sectors_per_cluster, 8);
        // 256 MiB as mkfs.fat -F 32 -s 1 -R 32 lays it out.
        assert_eq!(Geometry::for_size(256 << 20).unwrap().clusters, 516_190);
    }

    #[test]
    fn too_small_for_fat32_is_none() {
        assert!(Geometry::for_size(32 << 20).is_none());
        assert!(Geometry::for_size(2 << 40).is_none());
        assert!(Geometry::for_size(0).is_none());
    }

    #[test]
    fn boot_sector_fields_sit_at_their_spec_offsets() {
        let g = Geometry::for_size(256 << 20).unwrap();
        let r = g.reserved_region(0xabcd_1234, *b"ESP        ", 2048, 7, 9);
        let u32_at = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
        assert_eq!(&r[82..90], b"FAT32   ");
        assert_eq!(u32_at(28), 2048);
        assert_eq!(u32_at(32), g.sectors);
        assert_eq!(u32_at(36), g.fat_sectors);
        assert_eq!(u32_at(44), ROOT_CLUSTER);
        assert_eq!(u32_at(67), 0xabcd_1234);
        assert_eq!(&r[510..512], &[0x55, 0xaa]);
        assert_eq!(r[..512], r[3072..3584], "backup boot sector");
        assert_eq!(u32_at(512), 0x4161_5252);
        assert_eq!(u32_at(512 + 484), 0x6141_7272);
        assert_eq!((u32_at(512 + 488), u32_at(512 + 492)), (7, 9));
        assert_eq!(r[512..1024], r[3584..4096], "backup FSInfo");
    }
}
