//! A kernel from another image: `d2v pull APP --kernel-from KIMAGE` turns an app image (no
//! kernel, no init) into a VM whose kernel, modules and (when needed) GRUB modules come from a
//! kernel image, and whose initramfs d2v writes itself.
//!
//! - [`source`]: finds the kernel in the kernel image's tree (a distribution image with
//!   `/boot/vmlinuz-VER` and `/lib/modules/VER`, or a LinuxKit kernel image with `/kernel`
//!   and `/kernel.tar`) and checks it is an x86 bzImage of that version;
//! - [`graft`]: copies the kernel, its modules (and optionally its initrd and GRUB modules)
//!   into the app's tree, replacing the app's own kernels;
//! - [`modules`]: which module files to load, in order, for a list of driver names
//!   (`modules.dep`, `modules.softdep`, `modules.builtin`, `modules.alias`);
//! - [`newc`]: a deterministic `newc` cpio writer;
//! - [`initramfs`]: d2v's own initramfs (its init, the modules, the list of them).

// The build pipeline, the CLI and `inspect` call this module in a later change; until then
// only its tests do.

pub(crate) mod bzimage;
pub(crate) mod graft;
pub(crate) mod initramfs;
pub(crate) mod modules;
pub(crate) mod newc;
pub(crate) mod source;

use std::io;

use crate::layers::LayerError;
use crate::tree::TreeError;

/// Why a kernel could not be found, grafted or packed; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The kernel image has no kernel in any of the places searched.
    #[error(
        "the kernel image has no kernel: searched {}; use an image with a kernel package \
         (e.g. Debian with linux-image-cloud-amd64) or a LinuxKit kernel image \
         (/kernel and /kernel.tar)",
        searched.join(", ")
    )]
    NoKernel {
        /// The paths and patterns looked at.
        searched: Vec<String>,
    },
    /// The kernel file is not an x86 bzImage.
    #[error(
        "{path} is not an x86 kernel (bzImage): {found}; d2v builds x86-64 VMs, use an \
         amd64 kernel image"
    )]
    NotX86 {
        /// The kernel file in the kernel image.
        path: String,
        /// What the file is instead.
        found: String,
    },
    /// The kernel's version string does not name the version its file name (or modules) say.
    #[error(
        "{path} says it is Linux {header:?}, but its name and modules say {version:?}; \
         the kernel image mixes kernels: use one whose kernel and modules match"
    )]
    VersionMismatch {
        /// The kernel file.
        path: String,
        /// The release in the bzImage header (first word of its version string).
        header: String,
        /// The version expected from the file name or the modules directory.
        version: String,
    },
    /// No modules directory for the kernel, and none of another version either.
    #[error(
        "{kernel} has no modules: none of {} exists; install the kernel's modules in the \
         kernel image (Debian's linux-image package has them)",
        searched.join(", ")
    )]
    NoModules {
        /// The kernel file.
        kernel: String,
        /// The directories looked at.
        searched: Vec<String>,
    },
    /// Modules exist, but for other kernel versions.
    #[error(
        "{kernel} has no modules of its version: the kernel image has {} instead; \
         install the matching modules (or kernel) in the kernel image",
        found.join(", ")
    )]
    ModulesMismatch {
        /// The kernel file.
        kernel: String,
        /// The modules directories of other versions found.
        found: Vec<String>,
    },
    /// The modules directory lacks `modules.dep`.
    #[error("{dir} has no modules.dep: run depmod for this kernel in the kernel image")]
    NoModulesDep {
        /// The modules directory.
        dir: String,
    },
    /// A module named in the list to pack into the initramfs is not a file in the tree.
    #[error("module {path} is not a file in the image (the module list and the tree disagree)")]
    ModuleNotFound {
        /// The module's absolute guest path.
        path: String,
    },
    /// A module path outside the kernel's modules directory.
    #[error(
        "module {path} is not below /lib/modules/{version} or /usr/lib/modules/{version} \
         (the module list is not of this kernel)"
    )]
    ModuleOutsideDir {
        /// The module's path.
        path: String,
        /// The kernel version.
        version: String,
    },
    /// A file is too large for the `newc` format (4 GiB - 1).
    #[error("{path}: {len} bytes do not fit a cpio newc entry (at most 4 GiB - 1)")]
    TooLarge {
        /// The file's path in the archive.
        path: String,
        /// Its size.
        len: u64,
    },
    /// A path of a [`source::KernelSource`] is not in the tree given to the graft.
    #[error("{path} is not in the kernel image: graft from the tree the kernel was found in")]
    NotInImage {
        /// The path.
        path: String,
    },
    /// The LinuxKit `kernel.tar` could not be read.
    #[error("reading the LinuxKit kernel.tar: {0}")]
    KernelTar(#[source] LayerError),
    /// The staging tree refused a change.
    #[error("{path}: {source}")]
    Tree {
        /// The path being written.
        path: String,
        /// The tree's error.
        source: TreeError,
    },
    /// Reading a file of the kernel image failed.
    #[error("reading {path} from the kernel image: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the initramfs failed.
    #[error("writing the initramfs ({what}): {source}")]
    Write {
        /// What was being written.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// `.map_err(tree_err(path))`: a [`TreeError`] on `path`.
pub(crate) fn tree_err(path: &[u8]) -> impl FnOnce(TreeError) -> KernelError + '_ {
    move |source| KernelError::Tree {
        path: format!("/{}", crate::tree::show(path)),
        source,
    }
}

/// `.map_err(read_err(path))`: an I/O error reading `path` of the kernel image.
pub(crate) fn read_err(path: &[u8]) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |source| KernelError::Read {
        path: format!("/{}", crate::tree::show(path)),
        source,
    }
}

#[cfg(test)]
mod tests;
