//! Installing GRUB for BIOS without `grub-bios-setup`: `boot.img` goes into the MBR and
//! `core.img` into the BIOS boot partition, patched the way GRUB's setup patches them for an
//! embedded core image (offsets from GRUB's `include/grub/i386/pc/boot.h`, `boot/i386/pc/
//! boot.S` and `diskboot.S`).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::GrubError;
use crate::disk::Region;
use crate::disk::{Result, SECTOR};

/// boot.img: end of the jump + BPB area that is kept from the existing sector.
const BPB_START: usize = 0x03;
const BPB_END: usize = 0x5a;
/// boot.img: LBA (u64 LE) of core.img's first sector.
const KERNEL_SECTOR: usize = 0x5c;
/// boot.img: boot drive; 0xff means "use the drive the BIOS passed in DL".
const BOOT_DRIVE: usize = 0x64;
/// boot.img: a 2-byte jump that skips forcing DL to 0x80; NOPed for hard disks (works around
/// BIOSes that pass a wrong drive number).
const DRIVE_CHECK: usize = 0x66;
/// boot.img: disk signature + partition table + 0x55AA: kept from the existing sector.
const NT_MAGIC: usize = 0x1b8;
const PART_END: usize = 0x1fe;

/// diskboot.img (core.img's first sector): blocklist entries of 12 bytes
/// (start LBA u64, sector count u16, load segment u16) growing down from the sector's end.
const BLOCKLIST_ENTRY: usize = 12;
/// Where core.img's second sector is loaded (GRUB_BOOT_I386_PC_KERNEL_SEG 0x800 + 512 bytes).
const FIRST_SEGMENT: u16 = 0x800 + (SECTOR as u16 >> 4);
/// core.img is loaded at 0x8000 and may not reach 0x78000 (GRUB's setup limit).
const MAX_CORE_SECTORS: u64 = (0x78000 - 0x8200) / SECTOR;

/// The new MBR: `boot_img`'s code around the existing sector's BPB area and partition table,
/// told to load core.img from `core_lba`.
pub(crate) fn patch_boot_img(
    boot_img: &[u8],
    existing_mbr: &[u8],
    core_lba: u64,
) -> Result<[u8; 512]> {
    if boot_img.len() != 512 || existing_mbr.len() != 512 {
        return Err(GrubError::BootImgSize(boot_img.len()).into());
    }
    let mut m = [0u8; 512];
    m.copy_from_slice(boot_img);
    m[BPB_START..BPB_END].copy_from_slice(&existing_mbr[BPB_START..BPB_END]);
    m[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    m[BOOT_DRIVE] = 0xff;
    m[DRIVE_CHECK] = 0x90;
    m[DRIVE_CHECK + 1] = 0x90;
    m[NT_MAGIC..PART_END].copy_from_slice(&existing_mbr[NT_MAGIC..PART_END]);
    m[510] = 0x55;
    m[511] = 0xaa;
    Ok(m)
}

/// core.img padded to whole sectors, its first blocklist naming the sectors after the first
/// (which boot.img loads itself) at `core_lba + 1`.
pub(crate) fn patch_core_img(core_img: &[u8], core_lba: u64) -> Result<Vec<u8>> {
    let sectors = (core_img.len() as u64).div_ceil(SECTOR);
    if sectors < 2 {
        return Err(GrubError::CoreTooSmall(core_img.len()).into());
    }
    if sectors > MAX_CORE_SECTORS {
        return Err(GrubError::CoreTooManySectors {
            sectors,
            max: MAX_CORE_SECTORS,
        }
        .into());
    }
    let mut core = core_img.to_vec();
    core.resize((sectors * SECTOR) as usize, 0);
    // Clear the existing blocklists (a zero length ends the list) ...
    let mut at = SECTOR as usize - BLOCKLIST_ENTRY;
    while u16::from_le_bytes([core[at + 8], core[at + 9]]) != 0 {
        core[at..at + BLOCKLIST_ENTRY].fill(0);
        at = at
            .checked_sub(BLOCKLIST_ENTRY)
            .filter(|&a| a > 0)
            .ok_or(GrubError::NoBlocklistTerminator)?;
    }
    // ... then one entry for the contiguous rest, followed by a terminator.
    let first = SECTOR as usize - BLOCKLIST_ENTRY;
    core[first..first + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[first + 8..first + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    core[first + 10..first + 12].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
    core[first - BLOCKLIST_ENTRY..first].fill(0);
    Ok(core)
}

/// Writes boot.img into sector 0 of `out` (keeping its partition table) and core.img at the
/// start of the BIOS boot partition.
pub(crate) fn install(
    out: &File,
    bios_boot: Region,
    boot_img: &[u8],
    core_img: &[u8],
) -> Result<()> {
    let core_lba = bios_boot.first_lba();
    let core = patch_core_img(core_img, core_lba)?;
    if core.len() as u64 > bios_boot.size {
        return Err(GrubError::CoreDoesNotFit {
            core_kib: core.len() >> 10,
            partition_kib: bios_boot.size >> 10,
        }
        .into());
    }
    let mut mbr = [0u8; 512];
    out.read_exact_at(&mut mbr, 0)?;
    let mbr = patch_boot_img(boot_img, &mbr, core_lba)?;
    out.write_all_at(&core, bios_boot.offset)?;
    out.write_all_at(&mbr, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_img_keeps_the_partition_table_and_points_at_core() {
        let boot: Vec<u8> = (0..512).map(|i| (i % 200) as u8 + 1).collect();
        let mut mbr = [0u8; 512];
        mbr[0x1b8..0x1bc].copy_from_slice(&[1, 2, 3, 4]);
        mbr[0x1be + 4] = 0xee;
        let m = patch_boot_img(&boot, &mbr, 2048).unwrap();
        assert_eq!(&m[0..3], &boot[0..3]);
        assert!(
            m[0x03..0x5a].iter().all(|&b| b == 0),
            "BPB area comes from the old sector"
        );
        assert_eq!(u64::from_le_bytes(m[0x5c..0x64].try_into().unwrap()), 2048);
        assert_eq!(m[0x64], 0xff);
        assert_eq!(&m[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&m[0x68..0x1b8], &boot[0x68..0x1b8]);
        assert_eq!(&m[0x1b8..0x1fe], &mbr[0x1b8..0x1fe]);
        assert_eq!(&m[0x1fe..], &[0x55, 0xaa]);
    }

    #[test]
    fn core_blocklist_names_the_rest_of_core() {
        let mut core = vec![0xccu8; 5 * 512 + 100];
        // A stale entry and the terminator GRUB ships.
        core[0x1f4..0x200].fill(0);
        core[0x1fc] = 7;
        core[0x1e8..0x1f4].fill(0);
        let p = patch_core_img(&core, 2048).unwrap();
        assert_eq!(p.len(), 6 * 512);
        assert_eq!(
            u64::from_le_bytes(p[0x1f4..0x1fc].try_into().unwrap()),
            2049
        );
        assert_eq!(u16::from_le_bytes([p[0x1fc], p[0x1fd]]), 5);
        assert_eq!(u16::from_le_bytes([p[0x1fe], p[0x1ff]]), 0x820);
        assert!(p[0x1e8..0x1f4].iter().all(|&b| b == 0));
        assert_eq!(&p[512..5 * 512 + 100], &core[512..]);
        assert!(p[5 * 512 + 100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn oversized_core_is_refused() {
        assert!(patch_core_img(&vec![0u8; 1000 * 512], 2048).is_err());
    }
}
