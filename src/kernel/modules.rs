//! Which module files to load, in which order, for a list of driver names: what `modprobe`
//! works out from a kernel's `modules.dep` (each module's dependencies), `modules.softdep`
//! (`pre:` modules loaded before it), `modules.builtin` (drivers in the kernel itself) and
//! the plain names of `modules.alias` (`crc32c` → `crc32c_intel`, as softdeps name
//! algorithms). d2v's initramfs has no modprobe: its init loads the files in this order.
//!
//! Names compare with `-` and `_` as one (`crc32c-intel` is `crc32c_intel`), as in the kernel.

use std::collections::{BTreeMap, BTreeSet};

use crate::inspect::initramfs::module_name;
use crate::kernel::KernelError;
use crate::tree::Tree;

/// The drivers the build asks for: disk controllers, the root filesystem, NICs, the ACPI
/// power button. Those a kernel lacks are left out, unless [`must_haves`] names them.
pub(crate) const WANTED: [&str; 15] = [
    "vmw_pvscsi",
    "mptspi",
    "sd_mod",
    "virtio_scsi",
    "virtio_blk",
    "virtio_pci",
    "ata_piix",
    "ahci",
    "crc32c_generic",
    "ext4",
    "vmxnet3",
    "virtio_net",
    "e1000",
    "button",
    "evdev",
];

/// Largest index file read (Debian's `modules.alias` is ~1.5 MB).
const MAX_INDEX: u64 = 64 << 20;

/// The drivers without which the root disk behind `controller_driver` (`vmw_pvscsi`,
/// `mptspi`, `virtio_scsi`, `virtio_blk`, `ata_piix`, `ahci`) cannot be mounted.
pub(crate) fn must_haves(controller_driver: &str) -> Vec<&str> {
    match controller_driver {
        "virtio_blk" => vec!["virtio_pci", "virtio_blk", "ext4"],
        "virtio_scsi" => vec!["virtio_pci", "virtio_scsi", "sd_mod", "ext4"],
        other => vec![other, "sd_mod", "ext4"],
    }
}

/// `-` as `_`, as module names compare.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// One module of `modules.dep`.
#[derive(Debug, Clone)]
struct Module {
    /// Its file, relative to the modules directory.
    path: String,
    /// The modules it needs, by name, as `modules.dep` lists them.
    deps: Vec<String>,
}

/// A kernel's module indexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModuleIndex {
    /// The modules directory as an absolute guest path (`/usr/lib/modules/VER`).
    dir: String,
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
    softdeps: BTreeMap<String, Vec<String>>,
    aliases: BTreeMap<String, Vec<String>>,
}

/// What [`ModuleIndex::resolve`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Module files to load, absolute guest paths, dependencies first, each once.
    pub(crate) paths: Vec<String>,
    /// Asked-for drivers built into the kernel.
    pub(crate) builtin: Vec<String>,
    /// Asked-for drivers the kernel has neither built in nor as a module.
    pub(crate) missing: Vec<String>,
}

/// How a name is provided.
enum Found<'a> {
    Builtin,
    Module(&'a str),
    Nowhere,
}

impl ModuleIndex {
    /// Reads the indexes of the modules directory `dir` (a path in `tree`, e.g.
    /// `usr/lib/modules/6.1.0-28-cloud-amd64`); `modules.dep` must be there.
    pub(crate) fn load(tree: &Tree, dir: &str) -> Result<ModuleIndex, KernelError> {
        let dir = dir.trim_matches('/');
        let read = |name: &str| tree.read_text(format!("{dir}/{name}").as_bytes(), MAX_INDEX);
        let dep = read("modules.dep").ok_or_else(|| KernelError::NoModulesDep {
            dir: format!("/{dir}"),
        })?;
        let text = |name: &str| read(name).unwrap_or_default();
        Ok(ModuleIndex::parse(
            &format!("/{dir}"),
            &dep,
            &text("modules.builtin"),
            &text("modules.softdep"),
            &text("modules.alias"),
        ))
    }

    /// The indexes from their texts; `dir` is the modules directory's absolute guest path.
    pub(crate) fn parse(
        dir: &str,
        dep: &str,
        builtin: &str,
        softdep: &str,
        alias: &str,
    ) -> ModuleIndex {
        let mut ix = ModuleIndex {
            dir: dir.trim_end_matches('/').to_string(),
            ..ModuleIndex::default()
        };
        for line in dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let Some(name) = module_name(path.trim().as_bytes()) else {
                continue;
            };
            let deps = deps
                .split_whitespace()
                .filter_map(|d| module_name(d.as_bytes()))
                .collect();
            let path = path.trim().to_string();
            ix.modules.insert(name, Module { path, deps });
        }
        ix.builtin = builtin
            .lines()
            .filter_map(|l| module_name(l.trim().as_bytes()))
            .collect();
        for line in softdep.lines() {
            ix.parse_softdep(line);
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) = (w.next(), w.next(), w.next()) {
                if !pattern.contains(['*', '?', '[']) {
                    let targets = ix.aliases.entry(normalize(pattern)).or_default();
                    targets.push(normalize(module));
                }
            }
        }
        ix
    }

    /// `softdep MODULE pre: A B post: C`: the `pre:` names, in order (`post:` ones are
    /// not needed to use the module).
    fn parse_softdep(&mut self, line: &str) {
        let mut w = line.split_whitespace();
        let (Some("softdep"), Some(module)) = (w.next(), w.next()) else {
            return;
        };
        let mut pre = false;
        for word in w {
            match word {
                "pre:" => pre = true,
                "post:" => pre = false,
                name if pre => {
                    let list = self.softdeps.entry(normalize(module)).or_default();
                    list.push(normalize(name));
                }
                _ => {}
            }
        }
    }

    /// How `name` (normalized) is provided: built in, as a module, or through an alias.
    fn lookup(&self, name: &str) -> Found<'_> {
        if self.builtin.contains(name) {
            return Found::Builtin;
        }
        if let Some((n, _)) = self.modules.get_key_value(name) {
            return Found::Module(n);
        }
        let targets = self.aliases.get(name).map_or(&[][..], |t| &t[..]);
        for t in targets {
            match self.lookup_direct(t) {
                Found::Nowhere => continue,
                found => return found,
            }
        }
        Found::Nowhere
    }

    /// [`ModuleIndex::lookup`] without aliases.
    fn lookup_direct(&self, name: &str) -> Found<'_> {
        if self.builtin.contains(name) {
            Found::Builtin
        } else if let Some((n, _)) = self.modules.get_key_value(name) {
            Found::Module(n)
        } else {
            Found::Nowhere
        }
    }

    /// Whether the kernel has `name`, built in or as a module.
    pub(crate) fn has(&self, name: &str) -> bool {
        !matches!(self.lookup(&normalize(name)), Found::Nowhere)
    }

    /// Whether `name` is built into the kernel (aliases not followed).
    pub(crate) fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The [`must_haves`] of `controller_driver` this kernel lacks; empty: it can mount its
    /// root disk.
    pub(crate) fn missing_for(&self, controller_driver: &str) -> Vec<String> {
        must_haves(controller_driver)
            .into_iter()
            .filter(|m| !self.has(m))
            .map(str::to_string)
            .collect()
    }

    /// The module files for `names`, dependencies first, each once; the names built in and
    /// the names not found.
    pub(crate) fn resolve(&self, names: &[&str]) -> Resolved {
        let mut out = Resolved::default();
        let mut seen = BTreeSet::new();
        for name in names.iter().map(|n| normalize(n)) {
            match self.lookup(&name) {
                Found::Builtin if !out.builtin.contains(&name) => out.builtin.push(name),
                Found::Builtin => {}
                Found::Module(m) => self.visit(m, &mut seen, &mut out.paths),
                Found::Nowhere if !out.missing.contains(&name) => out.missing.push(name),
                Found::Nowhere => {}
            }
        }
        out
    }

    /// Appends `name`'s file to `paths` after its `pre:` softdeps and dependencies (depth
    /// first, iteratively: a long chain cannot exhaust the stack). `seen` ends cycles.
    fn visit<'a>(&'a self, name: &'a str, seen: &mut BTreeSet<&'a str>, paths: &mut Vec<String>) {
        let mut stack: Vec<(&str, bool)> = vec![(name, false)];
        while let Some((n, expanded)) = stack.pop() {
            let Some(module) = self.modules.get(n) else {
                continue;
            };
            if expanded {
                paths.push(format!("{}/{}", self.dir, module.path));
                continue;
            }
            if !seen.insert(n) {
                continue;
            }
            stack.push((n, true));
            // Processed in this order: softdeps, then dependencies last-listed first (as
            // modprobe loads them); pushed in reverse.
            let soft = self.softdeps.get(n).into_iter().flatten();
            let soft = soft.filter_map(|s| match self.lookup(s) {
                Found::Module(m) => Some(m),
                _ => None,
            });
            let deps = module.deps.iter().rev().map(String::as_str);
            let children: Vec<&str> = soft.chain(deps).collect();
            for c in children.into_iter().rev() {
                if !seen.contains(c) {
                    stack.push((c, false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
