//! The bootable disk: GPT with a protective MBR, a FAT32 EFI System Partition that is the
//! guest's `/boot`, GRUB for BIOS and UEFI, and the root filesystem region.
//!
//! Everything is written into a plain (sparse) file with positioned writes: no loop devices,
//! no mounts, no root.

pub mod ext4;
pub mod fat;
pub mod gpt;
pub mod grub;
pub mod layout;
pub mod secureboot;
/// Errors from writing the disk; each names the part of the disk and keeps the part's own
/// error (and through it the `io::Error`, if one is behind it) as its source.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Writing the disk file failed.
    #[error("disk file: {0}")]
    Io(#[from] std::io::Error),
    /// The GPT could not be written.
    #[error("partition table: {0}")]
    Gpt(#[from] gpt::GptError),
    /// The ESP could not be written.
    #[error("EFI System Partition (FAT32): {0}")]
    Fat(#[from] fat::FatError),
    /// GRUB could not be built or installed.
    #[error("GRUB: {0}")]
    Grub(#[from] grub::GrubError),
    /// The image's signed boot chain could not be installed.
    #[error("Secure Boot: {0}")]
    SecureBoot(#[from] secureboot::SecureBootError),
    /// The ext4 root filesystem could not be written.
    #[error("root filesystem: {0}")]
    Root(#[from] ext4::Ext4Error),
    /// Emptying the tree's `/boot` (the ESP's mount point) before the root is written.
    #[error("root filesystem: /boot: {0}")]
    EmptyBoot(#[source] crate::tree::TreeError),
}
/// The assembler's errors reach the disk's through GRUB's.
impl From<grub::mkimage::MkimageError> for DiskError {
    fn from(e: grub::mkimage::MkimageError) -> DiskError {
        DiskError::Grub(e.into())
    }
}

pub(crate) type Result<T, E = DiskError> = std::result::Result<T, E>;
/// Bytes per logical sector; d2v writes 512-byte-sector disks (what VMDK and GRUB's
/// i386-pc boot code assume).
pub(crate) const SECTOR: u64 = 512;
/// Partition alignment.
pub const MIB: u64 = 1024 * 1024;

/// A byte range of the disk file (a partition, the BIOS boot area): what the disk's parts are
/// written into, below both the layout that places them and the writers that fill them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte, from the start of the disk file.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// The region's first sector (LBA, 512-byte sectors).
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    /// The region's last sector (LBA), inclusive.
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}
