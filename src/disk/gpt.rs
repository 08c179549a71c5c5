//! GUID Partition Table (UEFI 2.10 §5.3) with a protective MBR (§5.2.3).
//!
//! Layout on a disk of N sectors: LBA 0 protective MBR, LBA 1 primary header, LBA 2..34
//! primary entry array (128 entries × 128 bytes), partitions, LBA N-33..N-2 backup entry
//! array, LBA N-1 backup header.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Result, SECTOR};

/// Type GUIDs in their text (big-endian) byte order; use `ids::guid_bytes` for disk order.
pub const TYPE_BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
/// The EFI System Partition.
pub const TYPE_EFI_SYSTEM: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Discoverable Partitions Specification: root partition, x86-64.
pub const TYPE_LINUX_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by one partition entry array.
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
const HEADER_SIZE: u32 = 92;

/// Parses `xxxxxxxx-xxxx-...` into 16 bytes in text order.
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    hex::decode(hex).ok()?.try_into().ok()
}

/// A partition table that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// More partitions than the entry array holds.
    #[error("{count} partitions, at most {max}")]
    TooManyPartitions {
        /// Partitions asked for.
        count: usize,
        /// Entries the array holds.
        max: u64,
    },
    /// The disk (in sectors) cannot hold the GPT headers and entry arrays.
    #[error("disk of {0} sectors is too small")]
    DiskTooSmall(u64),
    /// A partition overlaps another or lies outside the usable sectors.
    #[error(
        "partition {name:?} ({first}..={last}) overlaps another or lies outside the usable \
         sectors {}..={}",
        .usable.0,
        .usable.1
    )]
    Overlap {
        /// The partition's name.
        name: String,
        /// Its first sector (LBA).
        first: u64,
        /// Its last sector (LBA).
        last: u64,
        /// The first and last sector a partition may use.
        usable: (u64, u64),
    },
    /// A partition name longer than GPT's 36 UTF-16 code units.
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    NameTooLong(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    /// Partition type, text byte order.
    pub(crate) type_uuid: [u8; 16],
    /// Unique partition GUID, text byte order (what `PARTUUID=` shows).
    pub(crate) uuid: [u8; 16],
    pub(crate) name: String,
    /// First and last sector, inclusive.
    pub(crate) first_lba: u64,
    pub(crate) last_lba: u64,
    pub(crate) attributes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gpt {
    /// Disk GUID, text byte order.
    pub(crate) disk_uuid: [u8; 16],
    /// MBR disk signature (offset 440), kept by GRUB's boot sector.
    pub(crate) mbr_signature: u32,
    /// Disk size in sectors.
    pub(crate) sectors: u64,
    pub(crate) partitions: Vec<Partition>,
}

impl Gpt {
    /// First sector a partition may use.
    pub(crate) fn first_usable(&self) -> u64 {
        2 + ARRAY_SECTORS
    }

    /// Last sector a partition may use.
    pub(crate) fn last_usable(&self) -> u64 {
        self.sectors - 2 - ARRAY_SECTORS
    }

    fn check(&self) -> Result<()> {
        if self.partitions.len() as u64 > ENTRIES {
            return Err(GptError::TooManyPartitions {
                count: self.partitions.len(),
                max: ENTRIES,
            }
            .into());
        }
        if self.sectors < 2 * (2 + ARRAY_SECTORS) + 1 {
            return Err(GptError::DiskTooSmall(self.sectors).into());
        }
        let mut prev_end = self.first_usable();
        for p in &self.partitions {
            if p.first_lba < prev_end || p.last_lba < p.first_lba || p.last_lba > self.last_usable()
            {
                return Err(GptError::Overlap {
                    name: p.name.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable: (self.first_usable(), self.last_usable()),
                }
                .into());
            }
            if p.name.encode_utf16().count() > 36 {
                return Err(GptError::NameTooLong(p.name.clone()).into());
            }
            prev_end = p.last_lba + 1;
        }
        Ok(())
    }

    /// The partition entry array (both copies are identical).
    fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&crate::ids::guid_bytes(&p.type_uuid));
            e[16..32].copy_from_slice(&crate::ids::guid_bytes(&p.uuid));
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        a
    }

    /// One header sector: `my_lba`, `alternate_lba` and where its entry array lives.
    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC (computed with the field zero), 20..24 reserved
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&crate::ids::guid_bytes(&self.disk_uuid));
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR: one partition of type 0xEE covering the disk from LBA 1.
    pub(crate) fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        let mut m = [0u8; SECTOR as usize];
        m[440..444].copy_from_slice(&self.mbr_signature.to_le_bytes());
        let e = &mut m[446..462];
        e[0] = 0x00; // not bootable
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xee;
        e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = (self.sectors - 1).min(u32::MAX as u64) as u32;
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xaa;
        m
    }

    /// Writes the protective MBR and both GPT copies into `out` (which must already be, or
    /// will be extended to, `sectors * 512` bytes).
    pub(crate) fn write(&self, out: &File) -> Result<()> {
        self.check()?;
        let size = self.sectors * SECTOR;
        if out.metadata()?.len() < size {
            out.set_len(size)?;
        }
        let array = self.entry_array();
        let crc = crc32fast::hash(&array);
        let last = self.sectors - 1;
        let backup_array = last - ARRAY_SECTORS;
        out.write_all_at(&self.protective_mbr(), 0)?;
        out.write_all_at(&self.header(1, last, 2, crc), SECTOR)?;
        out.write_all_at(&array, 2 * SECTOR)?;
        out.write_all_at(&array, backup_array * SECTOR)?;
        out.write_all_at(&self.header(last, 1, backup_array, crc), last * SECTOR)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskError;

    fn sample() -> Gpt {
        Gpt {
            disk_uuid: crate::ids::derive_uuid("seed", "gpt-disk"),
            mbr_signature: 0x1234_5678,
            sectors: 8 * 2048,
            partitions: vec![Partition {
                type_uuid: parse_uuid(TYPE_EFI_SYSTEM).unwrap(),
                uuid: crate::ids::derive_uuid("seed", "p1"),
                name: "EFI".into(),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0,
            }],
        }
    }

    #[test]
    fn headers_and_entries_follow_the_spec() {
        let g = sample();
        let f = tempfile::tempfile().unwrap();
        g.write(&f).unwrap();
        let mut d = vec![0u8; (g.sectors * SECTOR) as usize];
        f.read_exact_at(&mut d, 0).unwrap();
        assert_eq!(&d[510..512], &[0x55, 0xaa]);
        assert_eq!(d[446 + 4], 0xee);
        let h = &d[512..1024];
        assert_eq!(&h[0..8], b"EFI PART");
        // Header CRC over 92 bytes with the CRC field zeroed.
        let mut hz = h[..92].to_vec();
        hz[16..20].fill(0);
        assert_eq!(crc32fast::hash(&hz).to_le_bytes(), h[16..20]);
        let array = &d[1024..1024 + 16384];
        assert_eq!(crc32fast::hash(array).to_le_bytes(), h[88..92]);
        // The ESP type GUID in mixed-endian disk order.
        assert_eq!(
            hex::encode(&array[0..16]),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
        assert_eq!(&array[56..62], &[b'E', 0, b'F', 0, b'I', 0]);
        // Backup header points back at the primary and at its own array.
        let last = (g.sectors - 1) as usize;
        let b = &d[last * 512..last * 512 + 512];
        assert_eq!(&b[0..8], b"EFI PART");
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            g.sectors - 1
        );
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 1);
        let ba = u64::from_le_bytes(b[72..80].try_into().unwrap()) as usize;
        assert_eq!(&d[ba * 512..ba * 512 + 16384], array);
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let mut g = sample();
        let mut p = g.partitions[0].clone();
        p.first_lba = 4000;
        p.last_lba = 5000;
        g.partitions.push(p);
        let e = g.write(&tempfile::tempfile().unwrap()).unwrap_err();
        assert!(matches!(e, DiskError::Gpt(GptError::Overlap { .. })), "{e}");
        let (first, last) = (g.first_usable(), g.last_usable());
        assert_eq!(
            e.to_string(),
            format!(
                "partition table: partition {:?} (4000..=5000) overlaps another or lies outside \
                 the usable sectors {first}..={last}",
                g.partitions[0].name
            )
        );
    }
}
