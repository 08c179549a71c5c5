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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskError;

    /// The messages read as they did when they were built with `format!`.
    #[test]
    fn messages_name_what_to_do() {
        let cases: [(DiskError, &str); 5] = [
            (
                GrubError::NoModules {
                    platform: "i386-pc",
                    package: "grub-pc-bin",
                }
                .into(),
                "GRUB: the image has no /usr/lib/grub/i386-pc and neither has this host: install \
                 Debian's grub-pc-bin (or the image's GRUB package)",
            ),
            (
                GrubError::MissingModules {
                    platform: "x86_64-efi",
                    missing: vec!["fat", "linux"],
                }
                .into(),
                "GRUB: the x86_64-efi GRUB modules lack fat, linux",
            ),
            (
                MkimageError::Kernel {
                    dir: "/m".into(),
                    source: Box::new(MkimageError::SectionHeader {
                        index: 2,
                        source: Box::new(MkimageError::Truncated { len: 64, at: 0x40 }),
                    }),
                }
                .into(),
                "GRUB: /m/kernel.img: section header 2: truncated: 64 bytes at 0x40 are past the end",
            ),
            (
                MkimageError::CoreImg {
                    dir: "/m".into(),
                    source: Box::new(MkimageError::CoreTooBig {
                        end: 0x80000,
                        max: 0x78000,
                        kernel_end: 0x69000,
                    }),
                }
                .into(),
                "GRUB: /m core.img: core image is too big (0x80000 > 0x78000, kernel and .bss end \
                 at 0x69000): fewer or smaller GRUB modules",
            ),
            (
                GrubError::CoreTooManySectors {
                    sectors: 900,
                    max: 879,
                }
                .into(),
                "GRUB: core.img is 900 sectors; GRUB's BIOS loader takes at most 879: embed fewer \
                 modules",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        let e = MkimageError::NotElf("no \\x7fELF magic");
        assert_eq!(e.to_string(), r"not an ELF file (no \x7fELF magic)");
    }
}
