//! Finding the kernel in a kernel image's tree. Two shapes are accepted:
//!
//! - a distribution image: the newest `/boot/vmlinuz-VER` (GRUB's order, [`find_kernels`]),
//!   its modules in `/lib/modules/VER` or `/usr/lib/modules/VER` (symlinks resolved inside
//!   the tree), its initrd if any, and GRUB's module directories if any; without a kernel in
//!   `/boot`, the newest `/usr/lib/modules/VER/vmlinuz` (Fedora's and Arch's packages);
//! - a LinuxKit kernel image: `/kernel` (a bzImage) and `/kernel.tar` holding
//!   `lib/modules/VER/…`, read into a scratch tree with the layer code.
//!
//! The kernel file must be an x86 bzImage whose version string names VER.

use crate::disk::grub::config::{compare_versions, find_kernels};
use crate::kernel::bzimage::{self, Header};
use crate::kernel::{read_err, tree_err, KernelError};
use crate::tree::{show, Tree};

/// Where the distribution shape's modules may be.
const MODULE_DIRS: [&str; 2] = ["lib/modules", "usr/lib/modules"];
/// GRUB's platforms and their module directories.
pub(crate) const GRUB_DIRS: [(&str, &str); 2] = [
    ("i386-pc", "usr/lib/grub/i386-pc"),
    ("x86_64-efi", "usr/lib/grub/x86_64-efi"),
];

/// Which kind of kernel image the kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `/boot/vmlinuz-VER` and `/lib/modules/VER`.
    Distribution,
    /// `/kernel` and `/kernel.tar`.
    LinuxKit,
}

/// A kernel found in a kernel image. Paths are resolved paths in their tree, without a
/// leading `/`.
pub(crate) struct KernelSource {
    /// The shape of the image.
    pub(crate) shape: Shape,
    /// The release, `uname -r` (`6.1.0-28-cloud-amd64`).
    pub(crate) version: String,
    /// The whole version string of the bzImage header.
    pub(crate) version_string: String,
    /// The kernel file in the image's tree.
    pub(crate) kernel: Vec<u8>,
    /// The initrd in the image's tree, if any.
    pub(crate) initrd: Option<Vec<u8>>,
    /// The modules directory, in [`KernelSource::modules_tree`].
    pub(crate) modules_dir: Vec<u8>,
    /// GRUB's module directories by platform (`i386-pc`), in the image's tree.
    pub(crate) grub: Vec<(&'static str, Vec<u8>)>,
    /// LinuxKit: the tree read from `/kernel.tar`, which holds the modules.
    scratch: Option<Tree>,
}

impl std::fmt::Debug for KernelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSource")
            .field("shape", &self.shape)
            .field("version", &self.version)
            .field("kernel", &show(&self.kernel))
            .field("initrd", &self.initrd.as_deref().map(show))
            .field("modules_dir", &show(&self.modules_dir))
            .finish_non_exhaustive()
    }
}

impl KernelSource {
    /// The tree holding [`KernelSource::modules_dir`]: the image's own (`image`), or for
    /// LinuxKit the one read from its `kernel.tar`.
    pub(crate) fn modules_tree<'a>(&'a self, image: &'a Tree) -> &'a Tree {
        self.scratch.as_ref().unwrap_or(image)
    }
}

/// Finds the kernel of the kernel image `tree`.
pub(crate) fn find(tree: &Tree) -> Result<KernelSource, KernelError> {
    find_in(tree, Tar::Keep)
}

/// [`find`] in a kernel image whose tree is dropped once its kernel is grafted: a LinuxKit
/// `kernel.tar`'s space is given back as its modules are read out of it, so the two are not
/// on disk whole at once (reading `/kernel.tar` again yields zeros).
pub(crate) fn find_to_graft(tree: &Tree) -> Result<KernelSource, KernelError> {
    find_in(tree, Tar::GiveBack)
}

/// What becomes of a LinuxKit image's `kernel.tar` once read.
#[derive(Clone, Copy)]
enum Tar {
    Keep,
    GiveBack,
}

fn find_in(tree: &Tree, tar: Tar) -> Result<KernelSource, KernelError> {
    if let Some(entry) = find_kernels(tree).into_iter().next() {
        let kernel = format!("boot/{}", entry.kernel);
        let initrd = entry.initrd.map(|i| format!("boot/{i}"));
        return distribution(tree, &entry.version, &kernel, initrd.as_deref());
    }
    if let Some((version, kernel)) = modules_vmlinuz(tree) {
        let initrd = [
            format!("boot/initramfs-{version}.img"),
            format!("boot/initrd.img-{version}"),
        ]
        .into_iter()
        .find(|i| tree.resolve_file(i.as_bytes()).is_some());
        return distribution(tree, &version, &kernel, initrd.as_deref());
    }
    if tree.resolve_file(b"kernel").is_some() {
        return linuxkit(tree, tar);
    }
    Err(KernelError::NoKernel {
        searched: vec![
            "/boot/vmlinuz-*".into(),
            "/usr/lib/modules/*/vmlinuz".into(),
            "/kernel (LinuxKit, with /kernel.tar)".into(),
        ],
    })
}

/// The newest `MODULE_DIRS/VER/vmlinuz` (where Fedora's and Arch's kernel packages put the
/// kernel; their scripts copy it to `/boot`, which a container build may not run): its
/// version and path.
fn modules_vmlinuz(tree: &Tree) -> Option<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for d in MODULE_DIRS {
        let Some(dir) = tree.resolve_dir(d.as_bytes()) else {
            continue;
        };
        for name in dir.entries.keys() {
            let Ok(version) = std::str::from_utf8(name) else {
                continue;
            };
            let path = format!("{d}/{version}/vmlinuz");
            if tree.resolve_file(path.as_bytes()).is_some() {
                found.push((version.to_string(), path));
            }
        }
    }
    found.sort_by(|a, b| compare_versions(&b.0, &a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().next()
}

/// The resolved path of `path` in `tree`, all symlinks followed.
fn resolved(tree: &Tree, path: &str) -> Vec<u8> {
    tree.resolve_path(path.as_bytes(), true)
        .map(|r| r.path)
        .unwrap_or_else(|_| path.as_bytes().to_vec())
}

/// The kernel file `path` of version `version`, its modules, initrd (`initrd`, a path) and
/// GRUB directories.
fn distribution(
    tree: &Tree,
    version: &str,
    path: &str,
    initrd: Option<&str>,
) -> Result<KernelSource, KernelError> {
    let kernel = resolved(tree, path);
    let version_string = check_kernel(tree, &kernel, version)?;
    let Some(dir) = MODULE_DIRS
        .iter()
        .map(|d| format!("{d}/{version}"))
        .find(|d| tree.resolve_dir(d.as_bytes()).is_some())
    else {
        return Err(no_modules(tree, &format!("/{path}"), version, ""));
    };
    let grub = GRUB_DIRS
        .iter()
        .filter(|(_, d)| tree.resolve_dir(d.as_bytes()).is_some())
        .map(|(p, d)| (*p, resolved(tree, d)))
        .collect();
    Ok(KernelSource {
        shape: Shape::Distribution,
        version: version.to_string(),
        version_string,
        kernel,
        initrd: initrd.map(|i| resolved(tree, i)),
        modules_dir: resolved(tree, &dir),
        grub,
        scratch: None,
    })
}

/// The error for a kernel without `MODULE_DIRS/version`: other versions found, or none.
/// `inside` follows each directory named (` in /kernel.tar`).
fn no_modules(tree: &Tree, kernel: &str, version: &str, inside: &str) -> KernelError {
    let mut found: Vec<String> = Vec::new();
    for d in MODULE_DIRS {
        let Some(dir) = tree.resolve_dir(d.as_bytes()) else {
            continue;
        };
        for name in dir.entries.keys() {
            let path = format!("{d}/{}", show(name));
            let real = format!("/{}{inside}", show(&resolved(tree, &path)));
            if tree.resolve_dir(path.as_bytes()).is_some() && !found.contains(&real) {
                found.push(real);
            }
        }
    }
    if found.is_empty() {
        KernelError::NoModules {
            kernel: kernel.to_string(),
            searched: MODULE_DIRS
                .iter()
                .map(|d| format!("/{d}/{version}{inside}"))
                .collect(),
        }
    } else {
        KernelError::ModulesMismatch {
            kernel: kernel.to_string(),
            found,
        }
    }
}

/// Reads the bzImage header of the kernel file `path`; it must be x86 and of release
/// `version`. Returns the whole version string.
fn check_kernel(tree: &Tree, path: &[u8], version: &str) -> Result<String, KernelError> {
    let header = read_header(tree, path)?;
    let release = Header::release(&header);
    if release != version {
        return Err(KernelError::VersionMismatch {
            path: format!("/{}", show(path)),
            header: release.to_string(),
            version: version.to_string(),
        });
    }
    Ok(header)
}

/// The version string of the x86 bzImage `path`.
fn read_header(tree: &Tree, path: &[u8]) -> Result<String, KernelError> {
    let fd = tree
        .resolve_file(path)
        .ok_or_else(|| KernelError::NoKernel {
            searched: vec![format!("/{}", show(path))],
        })?;
    match bzimage::read(tree.spill().reader(fd)).map_err(read_err(path))? {
        Header::X86 { version } => Ok(version),
        Header::Other(found) => Err(KernelError::NotX86 {
            path: format!("/{}", show(path)),
            found,
        }),
    }
}

/// LinuxKit: `/kernel` and the modules of its version in `/kernel.tar`.
fn linuxkit(tree: &Tree, tar: Tar) -> Result<KernelSource, KernelError> {
    let header = read_header(tree, b"kernel")?;
    let version = Header::release(&header).to_string();
    let scratch = read_kernel_tar(tree, tar)?;
    let dir = format!("lib/modules/{version}");
    if scratch.resolve_dir(dir.as_bytes()).is_none() {
        return Err(no_modules(&scratch, "/kernel", &version, " in /kernel.tar"));
    }
    Ok(KernelSource {
        shape: Shape::LinuxKit,
        version,
        version_string: header,
        kernel: resolved(tree, "kernel"),
        initrd: None,
        modules_dir: resolved(&scratch, &dir),
        grub: Vec::new(),
        scratch: Some(scratch),
    })
}

/// `/kernel.tar` applied to a scratch tree (spilled to `$TMPDIR`).
fn read_kernel_tar(tree: &Tree, how: Tar) -> Result<Tree, KernelError> {
    let Some(tar) = tree.resolve_file(b"kernel.tar") else {
        return Err(KernelError::NoModules {
            kernel: "/kernel".into(),
            searched: vec!["/kernel.tar".into()],
        });
    };
    let mut scratch = Tree::in_temp().map_err(tree_err(b"kernel.tar"))?;
    // A kernel.tar without its end-of-archive blocks is read as Go reads it, without a word:
    // LinuxKit's tools (Go) read it so.
    let mut apply = |data: &mut dyn std::io::Read| {
        crate::layers::apply_layer(&mut scratch, data, "kernel.tar").map_err(KernelError::KernelTar)
    };
    let _applied = match how {
        Tar::Keep => apply(&mut tree.spill().reader(tar))?,
        Tar::GiveBack => {
            let mut data = tree.spill().consuming_reader(tar);
            let applied = apply(&mut data);
            // The tar reader stops at the end-of-archive blocks: what follows goes too.
            data.finish();
            applied?
        }
    };
    Ok(scratch)
}

#[cfg(test)]
mod tests;
