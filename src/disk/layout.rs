//! Where everything goes on the disk, and [`write_disk`], which writes it all.
//!
//! ```text
//! LBA 0            protective MBR (GRUB boot.img code for BIOS)
//! LBA 1..33        primary GPT
//! 1 MiB  (p1)      BIOS boot partition, 1 MiB: GRUB core.img
//! 2 MiB  (p2)      EFI System Partition, FAT32, the guest's /boot (default 256 MiB)
//! next MiB (p3)    Linux root (x86-64), written by the caller (ext4)
//! last MiB         backup GPT
//! ```

use super::gpt::{self, Gpt, Partition};
use super::{Result, MIB, SECTOR};
use crate::ids;

/// Default size of the EFI System Partition (`--boot-size`).
pub const DEFAULT_ESP_SIZE: u64 = 256 * MIB;
/// Smallest ESP d2v writes: FAT32 needs 65525 clusters, 33 MiB with 512-byte clusters.
pub const MIN_ESP_SIZE: u64 = 40 * MIB;

/// A byte range of the disk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub size: u64,
}

impl Region {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// Positions and identifiers of every part of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub bios_boot: Region,
    pub esp: Region,
    pub root: Region,
    pub disk_uuid: [u8; 16],
    pub bios_boot_uuid: [u8; 16],
    pub esp_uuid: [u8; 16],
    /// The root partition's unique GUID: the kernel's `root=PARTUUID=`.
    pub root_uuid: [u8; 16],
    /// FAT volume serial of the ESP (`UUID=XXXX-XXXX` in fstab, GRUB's `search --fs-uuid`).
    pub esp_volume_id: u32,
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Layout {
    /// Places an ESP of `esp_size` and a root of `root_size` bytes (both rounded up to whole
    /// MiB), with identifiers derived from `seed` (the image manifest digest).
    pub fn plan(seed: &str, esp_size: u64, root_size: u64) -> Layout {
        let bios_boot = Region {
            offset: MIB,
            size: MIB,
        };
        let esp = Region {
            offset: 2 * MIB,
            size: round_up(esp_size.max(MIN_ESP_SIZE), MIB),
        };
        let root = Region {
            offset: esp.offset + esp.size,
            size: round_up(root_size.max(MIB), MIB),
        };
        let vid = ids::derive_bytes(seed, "esp-volume-id");
        Layout {
            disk_size: root.offset + root.size + MIB,
            bios_boot,
            esp,
            root,
            disk_uuid: ids::derive_uuid(seed, "gpt-disk"),
            bios_boot_uuid: ids::derive_uuid(seed, "gpt-bios-boot"),
            esp_uuid: ids::derive_uuid(seed, "gpt-esp"),
            root_uuid: ids::derive_uuid(seed, "gpt-root"),
            esp_volume_id: u32::from_le_bytes(vid[..4].try_into().unwrap()),
        }
    }

    /// `XXXX-XXXX`, as blkid and fstab show a FAT volume serial.
    pub fn esp_volume_id_string(&self) -> String {
        format!(
            "{:04X}-{:04X}",
            self.esp_volume_id >> 16,
            self.esp_volume_id & 0xffff
        )
    }

    /// The partition table for this layout.
    pub fn gpt(&self) -> Gpt {
        let part = |t: &str, uuid: [u8; 16], name: &str, r: Region| Partition {
            type_uuid: gpt::parse_uuid(t).expect("constant type GUID"),
            uuid,
            name: name.into(),
            first_lba: r.first_lba(),
            last_lba: r.last_lba(),
            attributes: 0,
        };
        Gpt {
            disk_uuid: self.disk_uuid,
            mbr_signature: u32::from_le_bytes(self.disk_uuid[..4].try_into().unwrap()),
            sectors: self.disk_size / SECTOR,
            partitions: vec![
                part(
                    gpt::TYPE_BIOS_BOOT,
                    self.bios_boot_uuid,
                    "BIOS boot",
                    self.bios_boot,
                ),
                part(gpt::TYPE_EFI_SYSTEM, self.esp_uuid, "EFI System", self.esp),
                part(
                    gpt::TYPE_LINUX_ROOT_X86_64,
                    self.root_uuid,
                    "root-x86-64",
                    self.root,
                ),
            ],
        }
    }
}

/// Writes just the partition table of `layout` into `out`, sizing the (sparse) file.
pub fn write_partition_table(layout: &Layout, out: &std::fs::File) -> Result<()> {
    out.set_len(layout.disk_size)?;
    layout.gpt().write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_mib_aligned_and_ordered() {
        let l = Layout::plan("sha256:x", 100 * MIB + 1, 3 * MIB + 5);
        for r in [l.bios_boot, l.esp, l.root] {
            assert_eq!(r.offset % MIB, 0);
            assert_eq!(r.size % MIB, 0);
        }
        assert_eq!(l.esp.size, 101 * MIB);
        assert_eq!(l.root.offset, l.esp.offset + l.esp.size);
        assert_eq!(l.root.size, 4 * MIB);
        assert!(l.disk_size >= l.root.offset + l.root.size + 33 * SECTOR);
        assert_ne!(l.root_uuid, l.esp_uuid);
        assert_eq!(l, Layout::plan("sha256:x", 100 * MIB + 1, 3 * MIB + 5));
    }
}
