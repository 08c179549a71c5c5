//! Grafting a kernel into the app's tree: the kernel to `/boot/vmlinuz-VER`, optionally the
//! initrd to `/boot/initrd.img-VER`, the modules directory to the app's modules directory
//! (`/usr/lib/modules/VER` when the app's `/lib` links into `usr/lib`, else
//! `/lib/modules/VER`), and GRUB's module directories when the app has no usable ones. The
//! app's own kernels in `/boot` are removed, so GRUB boots only this one. Nothing else of the
//! kernel image enters the app's tree.
//!
//! File data moves from the kernel image's spill file into the app's: each file's space in
//! the kernel image's is given back once copied (that tree is dropped after the graft), so
//! the kernel and its modules are not on disk twice. Metadata (mode, owner, mtime, xattrs) is
//! kept; symlinks and hardlinks too, a file met twice (a hardlink between two of the copied
//! paths) becoming a hardlink to its first copy.

use std::collections::HashMap;

use crate::kernel::source::KernelSource;
use crate::kernel::{tree_err, KernelError};
use crate::layers::join;
use crate::tree::{show, Inode, InodeId, Kind, Tree};

/// Names in `/boot` that belong to a kernel: removed from the app before the graft.
const BOOT_KERNEL_PREFIXES: [&str; 6] = [
    "vmlinuz-",
    "vmlinux-",
    "initrd.img-",
    "initramfs-",
    "System.map-",
    "config-",
];

/// What to graft besides the kernel and its modules.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GraftOptions {
    /// Copy the kernel image's initrd too (when it has one).
    pub(crate) keep_initrd: bool,
}

/// What the graft put where (absolute paths in the app's tree).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GraftReport {
    /// `/boot/vmlinuz-VER`.
    pub(crate) kernel: String,
    /// `/boot/initrd.img-VER`, when copied.
    pub(crate) initrd: Option<String>,
    /// The modules directory (`/usr/lib/modules/VER` or `/lib/modules/VER`).
    pub(crate) modules: String,
    /// GRUB module directories copied (`/usr/lib/grub/i386-pc`).
    pub(crate) grub: Vec<String>,
    /// The app's own kernel files removed from `/boot`.
    pub(crate) replaced: Vec<String>,
}

/// Moves kernel `k` of the kernel image `src` into the app's tree `dst`: the files copied
/// read as zeros in `src` afterwards (see the module's doc).
pub(crate) fn graft(
    src: &Tree,
    k: &KernelSource,
    dst: &mut Tree,
    opts: GraftOptions,
) -> Result<GraftReport, KernelError> {
    let replaced = remove_boot_kernels(dst)?;
    let mut moved = Moved::default();
    let kernel = dest(dst, &format!("boot/vmlinuz-{}", k.version));
    moved.copy(src, &k.kernel, dst, &kernel)?;
    let initrd = match (&k.initrd, opts.keep_initrd) {
        (Some(from), true) => {
            let to = dest(dst, &format!("boot/initrd.img-{}", k.version));
            moved.copy(src, from, dst, &to)?;
            Some(to)
        }
        _ => None,
    };
    let modules = dest(dst, &modules_dir(dst, &k.version));
    dst.remove(&modules).map_err(tree_err(&modules))?;
    moved.copy(k.modules_tree(src), &k.modules_dir, dst, &modules)?;
    let mut grub = Vec::new();
    for (platform, from) in &k.grub {
        let to = dest(dst, &format!("usr/lib/grub/{platform}"));
        if usable_grub(dst, &to) || !usable_grub(src, from) {
            continue;
        }
        dst.remove(&to).map_err(tree_err(&to))?;
        moved.copy(src, from, dst, &to)?;
        grub.push(to);
    }
    let abs = |p: &[u8]| format!("/{}", show(p));
    Ok(GraftReport {
        kernel: abs(&kernel),
        initrd: initrd.as_deref().map(abs),
        modules: abs(&modules),
        grub: grub.iter().map(|g| abs(g)).collect(),
        replaced,
    })
}

/// Where `path` lands in `tree`: symlinks in its parents resolved inside the tree (the
/// last component is the entry to write, never followed).
fn dest(tree: &Tree, path: &str) -> Vec<u8> {
    tree.resolve_path(path.as_bytes(), false)
        .map(|r| r.path)
        .unwrap_or_else(|_| path.as_bytes().to_vec())
}

/// The app's modules directory for `version`: under `usr/lib` when its `/lib` is a symlink
/// into `usr/lib` (merged /usr), else under `lib`.
pub(crate) fn modules_dir(tree: &Tree, version: &str) -> String {
    let lib_is_link = tree
        .lookup(b"lib")
        .is_some_and(|id| matches!(tree.inode(id).kind, Kind::Symlink(_)));
    let merged = lib_is_link
        && tree
            .resolve_path(b"lib", true)
            .is_ok_and(|r| r.path == b"usr/lib");
    let base = if merged { "usr/lib" } else { "lib" };
    format!("{base}/modules/{version}")
}

/// Whether `dir` is a GRUB module directory d2v can install from.
fn usable_grub(tree: &Tree, dir: &[u8]) -> bool {
    ["kernel.img", "moddep.lst"]
        .iter()
        .all(|f| tree.resolve_file(&join(dir, f.as_bytes())).is_some())
}

/// Removes the kernels, initrds, `System.map`s and configs in the app's `/boot`; returns
/// their paths.
fn remove_boot_kernels(dst: &mut Tree) -> Result<Vec<String>, KernelError> {
    let boot = match dst.resolve_path(b"boot", true) {
        Ok(r) => r.path,
        Err(_) => return Ok(Vec::new()),
    };
    let Some(dir) = dst.resolve_dir(&boot) else {
        return Ok(Vec::new());
    };
    let names: Vec<Vec<u8>> = dir
        .entries
        .keys()
        .filter(|n| {
            BOOT_KERNEL_PREFIXES
                .iter()
                .any(|p| n.starts_with(p.as_bytes()))
        })
        .map(|n| n.to_vec())
        .collect();
    let mut replaced = Vec::new();
    for name in names {
        let path = join(&boot, &name);
        dst.remove(&path).map_err(tree_err(&path))?;
        replaced.push(format!("/{}", show(&path)));
    }
    Ok(replaced)
}

/// The inodes moved so far, by their tree (its address: the kernel image's, or the tree read
/// from its `kernel.tar`) and number: where each went in the app's tree.
#[derive(Default)]
struct Moved(HashMap<(*const Tree, InodeId), Vec<u8>>);

impl Moved {
    /// Moves what `from` names in `src` (symlinks followed) to `to` in `dst`, a directory
    /// with everything below it. Hardlinks stay hardlinks, also to what an earlier call moved.
    fn copy(
        &mut self,
        src: &Tree,
        from: &[u8],
        dst: &mut Tree,
        to: &[u8],
    ) -> Result<(), KernelError> {
        let root = src
            .resolve(from, true)
            .ok_or_else(|| KernelError::NotInImage {
                path: format!("/{}", show(from)),
            })?;
        let mut stack = vec![(root, to.to_vec())];
        while let Some((id, path)) = stack.pop() {
            let inode = src.inode(id);
            if !inode.kind.is_dir() {
                let key = (std::ptr::from_ref(src), id);
                if let Some(first) = self.0.get(&key) {
                    dst.hardlink(&path, first).map_err(tree_err(&path))?;
                    continue;
                }
                self.0.insert(key, path.clone());
            }
            let kind = match &inode.kind {
                Kind::File(fd) => {
                    let copy = dst.store(&mut src.spill().reader(fd));
                    src.spill().release(fd);
                    Kind::File(copy.map_err(tree_err(&path))?)
                }
                Kind::Dir(d) => {
                    for (name, &child) in d.entries.iter().rev() {
                        stack.push((child, join(&path, name)));
                    }
                    Kind::Dir(Default::default())
                }
                other => other.clone(),
            };
            let meta = inode.meta.clone();
            dst.insert(&path, Inode { meta, kind })
                .map_err(tree_err(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
