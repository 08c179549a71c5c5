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

use std::fs::File;

use super::fat::{self, FatOptions, FatSummary};
use super::gpt::{self, Gpt, Partition};
use super::grub::{self, GrubOptions, Prepared};
use super::{DiskError, Region, Result, MIB, SECTOR};
use crate::finality::Finality;
use crate::ids;
use crate::tree::{Inode, Metadata, Tree};

/// Default size of the EFI System Partition (`--boot-size`).
pub(crate) const DEFAULT_ESP_SIZE: u64 = 256 * MIB;
/// Smallest ESP d2v writes: FAT32 needs 65525 clusters, 33 MiB with 512-byte clusters.
pub(crate) const MIN_ESP_SIZE: u64 = 40 * MIB;

/// Positions and identifiers of every part of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Size of the disk file in bytes.
    pub disk_size: u64,
    /// The BIOS boot partition, where `core.img` goes.
    pub bios_boot: Region,
    /// The EFI System Partition (FAT32, mounted at `/boot`).
    pub esp: Region,
    /// The ext4 root partition.
    pub root: Region,
    /// The GPT disk GUID.
    pub disk_uuid: [u8; 16],
    /// The BIOS boot partition's unique GUID.
    pub bios_boot_uuid: [u8; 16],
    /// The ESP's unique GUID.
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
    pub(crate) fn gpt(&self) -> Gpt {
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

/// The ESP's FAT serial as fstab writes it (`XXXX-XXXX`), known before the disk is planned:
/// it depends only on the seed.
pub(crate) fn esp_serial(seed: &str) -> String {
    Layout::plan(seed, MIN_ESP_SIZE, MIB).esp_volume_id_string()
}

/// Writes just the partition table of `layout` into `out`, sizing the (sparse) file.
pub fn write_partition_table(layout: &Layout, out: &std::fs::File) -> Result<()> {
    out.set_len(layout.disk_size)?;
    layout.gpt().write(out)
}

/// What [`write_disk`] needs besides the tree.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Seed of every identifier (the image manifest digest).
    pub(crate) seed: String,
    /// ESP size in bytes (`--boot-size`), normally 256 MiB.
    pub esp_size: u64,
    /// Root filesystem size in bytes (from the ext4 writer's `plan_size` or `--disk-size`).
    pub(crate) root_size: u64,
    /// GRUB: its config mode and kernel arguments.
    pub grub: GrubOptions,
}

impl DiskOptions {
    /// Options for a root of `root_size` bytes with identifiers derived from `seed` (the image
    /// manifest digest), the default ESP size (256 MiB) and default GRUB options.
    pub fn new(seed: &str, root_size: u64) -> DiskOptions {
        DiskOptions {
            seed: seed.into(),
            esp_size: DEFAULT_ESP_SIZE,
            root_size,
            grub: GrubOptions::default(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct DiskSummary {
    /// Where each part of the disk went, and its identifiers.
    pub layout: Layout,
    /// What was written to the ESP.
    pub esp: FatSummary,
    /// What GRUB was built from and installed.
    pub grub: Prepared,
}

impl DiskSummary {
    /// One line per thing worth telling the user.
    pub(crate) fn report(&self) -> Vec<String> {
        let l = &self.layout;
        let mut out = vec![format!(
            "disk {} MiB: BIOS boot 1 MiB, ESP {} MiB (FAT32 {}), root {} MiB (PARTUUID {})",
            l.disk_size / MIB,
            l.esp.size / MIB,
            l.esp_volume_id_string(),
            l.root.size / MIB,
            ids::uuid_string(&l.root_uuid)
        )];
        out.extend(self.grub.notes.iter().cloned());
        out.extend(self.esp.warnings.iter().map(|w| format!("ESP: {w}")));
        out
    }
}

/// Writes the whole disk into `out` (a fresh, empty, read-write file; it stays sparse):
/// builds GRUB and puts BOOTX64.EFI, grub.cfg and modules into the tree's `/boot`; writes the
/// GPT, the ESP from `/boot`, GRUB's BIOS boot code; then empties `/boot` in the tree (it is
/// the ESP's mount point in the guest) and calls `write_root(tree, out, offset, size)` to write
/// the root filesystem into the root partition.
pub fn write_disk(
    tree: &mut Tree,
    out: &File,
    opts: &DiskOptions,
    write_root: impl FnOnce(&Tree, &File, u64, u64) -> Result<()>,
) -> Result<DiskSummary> {
    write_disk_reporting(tree, out, opts, None, &Finality::new(), write_root)
}

/// [`write_disk`], telling `finality` what is final before the root: the partition table and
/// GRUB's BIOS code (everything before the ESP), then the ESP as it is written. None of this
/// waits for the reader: the root's writer plans and writes its metadata meanwhile.
/// `grub_images`: GRUB's images if built already (see [`grub::Images::build`]).
pub fn write_disk_reporting(
    tree: &mut Tree,
    out: &File,
    opts: &DiskOptions,
    grub_images: Option<grub::Images>,
    finality: &Finality,
    write_root: impl FnOnce(&Tree, &File, u64, u64) -> Result<()>,
) -> Result<DiskSummary> {
    let layout = Layout::plan(&opts.seed, opts.esp_size, opts.root_size);
    let partuuid = ids::uuid_string(&layout.root_uuid);
    let esp_serial = layout.esp_volume_id_string();
    let prepared = grub::prepare(tree, grub_images, &esp_serial, &partuuid, &opts.grub)?;
    write_partition_table(&layout, out)?;
    grub::bios::install(
        out,
        layout.bios_boot,
        &prepared.boot_img,
        &prepared.core_img,
    )?;
    finality.advance_now(layout.esp.offset);
    let fat_opts = FatOptions {
        volume_id: layout.esp_volume_id,
        label: "ESP".into(),
        source: b"boot".to_vec(),
    };
    let (esp_at, esp_size) = (layout.esp.offset, layout.esp.size);
    let esp = fat::write_reporting(tree, out, esp_at, esp_size, &fat_opts, finality)?;
    finality.advance_now(layout.root.offset);
    empty_boot(tree)?;
    write_root(tree, out, layout.root.offset, layout.root.size)?;
    Ok(DiskSummary {
        layout,
        esp,
        grub: prepared,
    })
}

/// Leaves `/boot` an empty directory (mode 0755), the ESP's mount point.
fn empty_boot(tree: &mut Tree) -> Result<()> {
    let err = DiskError::EmptyBoot;
    let is_dir = tree
        .lookup(b"boot")
        .is_some_and(|id| tree.inode(id).kind.is_dir());
    if is_dir {
        tree.clear_dir(b"boot").map_err(err)?;
    } else {
        tree.remove(b"boot").map_err(err)?;
        tree.insert(
            b"boot",
            Inode::dir(Metadata {
                mode: 0o755,
                ..Metadata::default()
            }),
        )
        .map_err(err)?;
    }
    Ok(())
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
