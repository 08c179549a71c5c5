//! d2v's own initramfs: an uncompressed `newc` archive with d2v's static executable as
//! `/init`, the mount points it uses (`/dev` with `/dev/console`, `/proc`, `/sys`, `/run`,
//! `/newroot`), the list of modules to load at [`MODULES_PATH`] and the module files at the
//! same absolute paths as in the guest's root (the contract of [`crate::init::config`]).
//! Entries are written in path order, parents first, so the same inputs give the same bytes.
//!
//! [`needs_own_initramfs`] tells when the kernel image's initrd cannot be used instead.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

use crate::init::config::MODULES_PATH;
use crate::inspect::initramfs::{scan_for, Contents};
use crate::kernel::modules::ModuleIndex;
use crate::kernel::newc::{default_mtime, Writer};
use crate::kernel::source::KernelSource;
use crate::kernel::KernelError;
use crate::tree::{components, show, FileData, Kind, Tree};

/// Directories every d2v initramfs has.
const DIRS: [&str; 6] = ["dev", "proc", "sys", "run", "newroot", ".d2v"];

/// One entry of the archive, by path.
enum Entry {
    Dir,
    Console,
    Init,
    ModuleList,
    Module(FileData, u32),
}

/// Writes d2v's initramfs to `out`: `/init` read from `init` (d2v's static executable),
/// and the `modules` of kernel `version` (absolute guest paths from
/// [`ModuleIndex::resolve`], in load order) read from `tree`.
pub(crate) fn write<W: Write>(
    out: W,
    tree: &Tree,
    version: &str,
    modules: &[String],
    init: &mut (impl Read + Seek),
) -> Result<W, KernelError> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for d in DIRS {
        entries.insert(d.to_string(), Entry::Dir);
    }
    entries.insert("dev/console".into(), Entry::Console);
    entries.insert("init".into(), Entry::Init);
    entries.insert(
        MODULES_PATH.trim_start_matches('/').into(),
        Entry::ModuleList,
    );
    for path in modules {
        let (name, entry) = module_entry(tree, version, path)?;
        let mut parent = name.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            entries.insert(p.to_string(), Entry::Dir);
            parent = p;
        }
        entries.insert(name, entry);
    }
    let list: String = modules.iter().map(|m| format!("{m}\n")).collect();
    let seek_err = |source| KernelError::Write {
        what: "init".into(),
        source,
    };
    let init_len = init.seek(SeekFrom::End(0)).map_err(seek_err)?;
    init.seek(SeekFrom::Start(0)).map_err(seek_err)?;
    let mut w = Writer::new(out, default_mtime());
    for (name, entry) in &entries {
        match entry {
            Entry::Dir => w.dir(name, 0o755)?,
            Entry::Console => w.char_device(name, 0o600, 5, 1)?,
            Entry::Init => w.file(name, 0o755, init_len, init)?,
            Entry::ModuleList => w.file(name, 0o644, list.len() as u64, &mut list.as_bytes())?,
            Entry::Module(fd, mode) => w.file(name, *mode, fd.len, &mut tree.spill().reader(fd))?,
        }
    }
    w.finish()
}

/// The archive name (no leading `/`) and entry of the module at guest path `path`.
fn module_entry(tree: &Tree, version: &str, path: &str) -> Result<(String, Entry), KernelError> {
    let outside = || KernelError::ModuleOutsideDir {
        path: path.to_string(),
        version: version.to_string(),
    };
    let comps = components(path.as_bytes()).map_err(|_| outside())?;
    let name = show(&comps.join(&b'/'));
    let inside = [
        format!("lib/modules/{version}/"),
        format!("usr/lib/modules/{version}/"),
    ];
    if !inside.iter().any(|d| name.starts_with(d.as_str())) {
        return Err(outside());
    }
    let id = tree.resolve(name.as_bytes(), true);
    match id.map(|id| tree.inode(id)) {
        Some(inode) => match &inode.kind {
            Kind::File(fd) => Ok((name, Entry::Module(*fd, inode.meta.mode))),
            _ => Err(KernelError::ModuleNotFound { path: path.into() }),
        },
        None => Err(KernelError::ModuleNotFound { path: path.into() }),
    }
}

/// Whether d2v must write its own initramfs for kernel `k` of the kernel image `image`:
/// when the image has no initrd, or its initrd lacks `controller_driver` (`vmw_pvscsi`,
/// `mptspi`) and the kernel does not have it built in. An initrd d2v cannot read counts as
/// lacking it.
pub(crate) fn needs_own_initramfs(image: &Tree, k: &KernelSource, controller_driver: &str) -> bool {
    let Some(fd) = k.initrd.as_deref().and_then(|i| image.resolve_file(i)) else {
        return true;
    };
    let dir = show(&k.modules_dir);
    let builtin = ModuleIndex::load(k.modules_tree(image), &dir)
        .is_ok_and(|ix| ix.is_builtin(controller_driver));
    if builtin {
        return false;
    }
    let driver = controller_driver.replace('-', "_");
    match scan_for(image.spill().reader(fd), &[&driver]) {
        Ok(Contents::Modules(m)) => !m.contains(&driver),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
