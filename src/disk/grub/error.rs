//! Why GRUB could not be put on the disk: no usable module directory, no kernel to boot, an
//! image the assembler refused ([`MkimageError`]), a boot image or core image that does not
//! fit, or a failed change to the tree's `/boot`.

use std::path::PathBuf;

use super::mkimage::MkimageError;
use crate::tree::TreeError;

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error(
        "the image has no /usr/lib/grub/{platform} and neither has this host: install Debian's \
         {package} (or the image's GRUB package)"
    )]
    NoModules {
        platform: &'static str,
        package: &'static str,
    },
    #[error("the {platform} GRUB modules lack {}", .missing.join(", "))]
    MissingModules {
        platform: &'static str,
        missing: Vec<&'static str>,
    },
    #[error(transparent)]
    Mkimage(#[from] MkimageError),
    #[error(
        "the image has no kernel in /boot (vmlinuz-*) to boot: install one in the image, e.g. \
         linux-image-cloud-amd64 (Debian), linux-image-virtual (Ubuntu) or linux-virt (Alpine)"
    )]
    NoKernel,
    #[error("{}/boot.img: {source}: install Debian's grub-pc-bin", .dir.display())]
    BootImg {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Putting a file (BOOTX64.EFI, grub.cfg, a module) into the tree's `/boot`.
    #[error("/{path}: {source}")]
    Put { path: String, source: TreeError },
    /// Removing the image's grub.cfg before writing the generated one.
    #[error("{0}")]
    RemoveConfig(#[source] TreeError),

    // Installing for BIOS (bios.rs).
    #[error("boot.img is {0} bytes; it must be 512")]
    BootImgSize(usize),
    #[error("core.img is only {0} bytes")]
    CoreTooSmall(usize),
    #[error(
        "core.img is {sectors} sectors; GRUB's BIOS loader takes at most {max}: embed fewer modules"
    )]
    CoreTooManySectors { sectors: u64, max: u64 },
    #[error("core.img's first sector has no blocklist terminator")]
    NoBlocklistTerminator,
    #[error("core.img ({core_kib} KiB) does not fit the {partition_kib} KiB BIOS boot partition")]
    CoreDoesNotFit { core_kib: usize, partition_kib: u64 },
}
