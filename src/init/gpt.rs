//! A GUID Partition Table reader (UEFI 2.10 §5.3): finds the partition whose unique
//! partition GUID is `root=PARTUUID=…` on the disks the kernel sees. d2v's writer is
//! [`crate::disk::gpt`]; the GUID text/bytes conversion is shared with it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// A disk whose partition table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GptReadError {
    /// Reading the disk failed.
    #[error("read: {0}")]
    Io(#[from] io::Error),
    /// No `EFI PART` signature at LBA 1.
    #[error("no GPT header")]
    NoHeader,
    /// The header's entry count or size is out of range.
    #[error("GPT header with {count} entries of {size} bytes")]
    BadEntries {
        /// Number of partition entries.
        count: u32,
        /// Size of one entry.
        size: u32,
    },
    /// The header's partition entry array starts beyond any disk (its byte offset does not fit
    /// in 64 bits).
    #[error("GPT header with its partition entries at LBA {0}, beyond the end of any disk")]
    EntriesBeyondDisk(u64),
}

/// The 1-based number of the partition whose unique GUID is `want` (text byte order) in the
/// GPT of a disk with `sector`-byte logical blocks; `read_at(buf, offset)` reads the disk.
pub fn find_partition(
    read_at: impl Fn(&mut [u8], u64) -> io::Result<()>,
    sector: u64,
    want: &[u8; 16],
) -> Result<Option<u32>, GptReadError> {
    let mut h = [0u8; 92];
    read_at(&mut h, sector)?;
    if &h[0..8] != b"EFI PART" {
        return Err(GptReadError::NoHeader);
    }
    let le32 = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap_or_default());
    let (count, size) = (le32(80), le32(84));
    if !(1..=1024).contains(&count) || !(128..=4096).contains(&size) || size % 8 != 0 {
        return Err(GptReadError::BadEntries { count, size });
    }
    let at = entries_lba
        .checked_mul(sector)
        .ok_or(GptReadError::EntriesBeyondDisk(entries_lba))?;
    let mut array = vec![0u8; (count * size) as usize];
    read_at(&mut array, at)?;
    let disk_order = crate::ids::guid_bytes(want);
    Ok(array
        .chunks(size as usize)
        .position(|e| e[0..16] != [0; 16] && e[16..32] == disk_order)
        .map(|i| i as u32 + 1))
}

/// The whole disks the kernel lists in `/sys/block`.
pub fn block_devices() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The device node of the partition with unique GUID `want` on any disk, if it is there.
pub fn find_root(want: &[u8; 16]) -> Option<PathBuf> {
    for disk in block_devices() {
        if disk.starts_with("loop") || disk.starts_with("ram") {
            continue;
        }
        let Ok(f) = File::open(format!("/dev/{disk}")) else {
            continue;
        };
        let sector = std::fs::read_to_string(format!("/sys/block/{disk}/queue/logical_block_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512);
        let read_at = |buf: &mut [u8], off| f.read_exact_at(buf, off);
        if let Ok(Some(n)) = find_partition(read_at, sector, want) {
            return partition_node(&disk, n);
        }
    }
    None
}

/// `/dev/NAME` of partition `number` of `disk`, from `/sys/block/DISK/*/partition`.
fn partition_node(disk: &str, number: u32) -> Option<PathBuf> {
    for e in std::fs::read_dir(format!("/sys/block/{disk}"))
        .ok()?
        .flatten()
    {
        let n = std::fs::read_to_string(e.path().join("partition")).unwrap_or_default();
        if n.trim().parse() == Ok(number) {
            let node = PathBuf::from("/dev").join(e.file_name());
            return node.exists().then_some(node);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt::{parse_uuid, Gpt, Partition, TYPE_EFI_SYSTEM, TYPE_LINUX_ROOT_X86_64};

    /// A disk written by d2v's own GPT writer: ESP first, root second.
    fn disk() -> (File, [u8; 16]) {
        let root = parse_uuid("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        let part = |t: &str, uuid, name: &str, first, last| Partition {
            type_uuid: parse_uuid(t).unwrap(),
            uuid,
            name: name.into(),
            first_lba: first,
            last_lba: last,
            attributes: 0,
        };
        let g = Gpt {
            disk_uuid: [7; 16],
            mbr_signature: 1,
            sectors: 8 * 2048,
            partitions: vec![
                part(TYPE_EFI_SYSTEM, [1; 16], "EFI", 2048, 4095),
                part(TYPE_LINUX_ROOT_X86_64, root, "root", 4096, 8191),
            ],
        };
        let f = tempfile::tempfile().unwrap();
        g.write(&f).unwrap();
        (f, root)
    }

    #[test]
    fn the_partition_with_the_guid_is_found_by_number() {
        let (f, root) = disk();
        let read_at = |buf: &mut [u8], off| f.read_exact_at(buf, off);
        assert_eq!(find_partition(read_at, 512, &root).unwrap(), Some(2));
        assert_eq!(find_partition(read_at, 512, &[1; 16]).unwrap(), Some(1));
        assert_eq!(find_partition(read_at, 512, &[9; 16]).unwrap(), None);
    }

    #[test]
    fn the_guid_is_compared_in_mixed_endian_disk_order() {
        let (f, root) = disk();
        let mut entry = [0u8; 128];
        f.read_exact_at(&mut entry, 2 * 512 + 128).unwrap();
        // UEFI §Appendix A: the first three fields little-endian, the rest as written.
        assert_eq!(
            hex::encode(&entry[16..32]),
            "af3dc60f838472478e793d69d8477de4"
        );
        // A GUID with the text bytes on disk (no swap) is another GUID.
        let mut swapped = root;
        swapped[0..4].reverse();
        let read_at = |buf: &mut [u8], off| f.read_exact_at(buf, off);
        assert_eq!(find_partition(read_at, 512, &swapped).unwrap(), None);
    }

    #[test]
    fn entries_beyond_any_disk_are_an_error() {
        // Found by fuzzing (testdata/fuzz/gpt/): the entries' LBA times the sector size
        // overflowed.
        let mut d = vec![0u8; 1024];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let read_at = |buf: &mut [u8], off: u64| {
            let src = d.get(off as usize..).and_then(|s| s.get(..buf.len()));
            buf.copy_from_slice(src.ok_or(io::ErrorKind::UnexpectedEof)?);
            Ok(())
        };
        assert!(matches!(
            find_partition(read_at, 512, &[1; 16]),
            Err(GptReadError::EntriesBeyondDisk(l)) if l == u64::MAX / 2
        ));
    }

    #[test]
    fn a_disk_without_gpt_is_an_error() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 * 1024).unwrap();
        let read_at = |buf: &mut [u8], off| f.read_exact_at(buf, off);
        assert!(matches!(
            find_partition(read_at, 512, &[1; 16]),
            Err(GptReadError::NoHeader)
        ));
    }
}
