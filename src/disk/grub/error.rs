//! Why GRUB could not be put on the disk: no usable module directory, no kernel to boot, an
//! image the assembler refused ([`MkimageError`]), a boot image or core image that does not
//! fit, or a failed change to the tree's `/boot`.

use std::path::PathBuf;

use super::mkimage::MkimageError;
use crate::tree::TreeError;

/// Why GRUB could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// Neither the image nor the host has the platform's module directory.
    #[error(
        "the image has no /usr/lib/grub/{platform} and neither has this host: install Debian's \
         {package} (or the image's GRUB package)"
    )]
    NoModules {
        /// The GRUB platform (`i386-pc`, `x86_64-efi`).
        platform: &'static str,
        /// The Debian package that has its modules.
        package: &'static str,
    },
    /// The module directory lacks modules d2v builds in.
    #[error("the {platform} GRUB modules lack {}", .missing.join(", "))]
    MissingModules {
        /// The GRUB platform.
        platform: &'static str,
        /// The modules it lacks.
        missing: Vec<&'static str>,
    },
    /// The assembler refused to build `core.img` or `BOOTX64.EFI`.
    #[error(transparent)]
    Mkimage(#[from] MkimageError),
    /// The image has no kernel (`/boot/vmlinuz-*`).
    #[error(
        "the image has no kernel in /boot (vmlinuz-*) to boot: install one in the image, e.g. \
         linux-image-cloud-amd64 (Debian), linux-image-virtual (Ubuntu) or linux-virt (Alpine)"
    )]
    NoKernel,
    /// `boot.img` could not be read from the `i386-pc` module directory.
    #[error("{}/boot.img: {source}: install Debian's grub-pc-bin", .dir.display())]
    BootImg {
        /// The module directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Putting a file (BOOTX64.EFI, grub.cfg, a module) into the tree's `/boot`.
    #[error("/{path}: {source}")]
    Put {
        /// The path below the root.
        path: String,
        /// The tree's error.
        source: TreeError,
    },
    /// Removing the image's grub.cfg before writing the generated one.
    #[error("{0}")]
    RemoveConfig(#[source] TreeError),

    // Installing for BIOS (bios.rs).
    /// `boot.img` is not one 512-byte sector; its size.
    #[error("boot.img is {0} bytes; it must be 512")]
    BootImgSize(usize),
    /// `core.img` is shorter than two sectors; its size.
    #[error("core.img is only {0} bytes")]
    CoreTooSmall(usize),
    /// `core.img` has more sectors than GRUB's BIOS loader takes.
    #[error(
        "core.img is {sectors} sectors; GRUB's BIOS loader takes at most {max}: embed fewer modules"
    )]
    CoreTooManySectors {
        /// Its sectors.
        sectors: u64,
        /// The most the loader takes.
        max: u64,
    },
    /// `core.img`'s first sector has no blocklist terminator.
    #[error("core.img's first sector has no blocklist terminator")]
    NoBlocklistTerminator,
    /// `core.img` does not fit the BIOS boot partition.
    #[error("core.img ({core_kib} KiB) does not fit the {partition_kib} KiB BIOS boot partition")]
    CoreDoesNotFit {
        /// Its size in KiB.
        core_kib: usize,
        /// The partition's size in KiB.
        partition_kib: u64,
    },
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
