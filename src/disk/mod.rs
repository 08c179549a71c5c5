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
/// Errors from writing the disk; each names the part of the disk and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk file: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition table: {0}")]
    Gpt(String),
    #[error("EFI System Partition (FAT32): {0}")]
    Fat(String),
    #[error("GRUB: {0}")]
    Grub(String),
    #[error("root filesystem: {0}")]
    Root(String),
}
pub type Result<T, E = DiskError> = std::result::Result<T, E>;
/// Bytes per logical sector; d2v writes 512-byte-sector disks (what VMDK and GRUB's
/// i386-pc boot code assume).
pub const SECTOR: u64 = 512;
/// Partition alignment.
pub const MIB: u64 = 1024 * 1024;
pub use layout::{write_disk, DiskOptions, DiskSummary, Layout};
