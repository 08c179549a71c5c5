//! What goes on the ESP: the staging tree's `/boot` walked once into directories and files
//! with their FAT names, then clusters handed out (directories first, then file contents, in
//! walk order) so the volume can be written front to back.
//!
//! FAT has no symlinks, owners or modes: a symlink is resolved inside the image root and its
//! target copied, or dropped with a warning; names FAT cannot hold are dropped with a warning.

use std::collections::BTreeSet;

use super::dirent::{self, ShortNames, ENTRY};
use super::geometry::{Geometry, ROOT_CLUSTER};
use super::{FatError, FatSummary};
use crate::tree::{show, FileData, InodeId, Kind, Tree};

/// Deepest directory nesting copied (guards against symlinked directory loops).
const MAX_DEPTH: usize = 32;
/// Most 32-byte entries a FAT directory may hold (the spec's limit).
const MAX_DIR_ENTRIES: u64 = 65_536;

/// One directory or file of the volume.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) kind: NodeKind,
    /// Its path in the tree, for messages.
    pub(super) path: Vec<u8>,
    pub(super) mtime: i64,
    /// First cluster and cluster count (0, 0 for an empty file).
    pub(super) first: u32,
    pub(super) clusters: u32,
}

#[derive(Debug)]
pub(super) enum NodeKind {
    /// Entries in on-disk order; `parent`: the parent's node (`None` for the root).
    Dir {
        entries: Vec<Entry>,
        parent: Option<usize>,
    },
    File(FileData),
}

/// One name in a directory.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) short: [u8; 11],
    pub(super) node: usize,
}

impl Node {
    /// Bytes its clusters hold: a file's length, a directory's entries (with `.` and `..`
    /// below the root, the volume label in the root).
    fn bytes(&self) -> u64 {
        match &self.kind {
            NodeKind::File(data) => data.len,
            NodeKind::Dir { entries, .. } => {
                let own = entries
                    .iter()
                    .map(|e| dirent::lfn_count(&e.name, &e.short) + 1)
                    .sum::<usize>();
                (own + 2) as u64 * ENTRY as u64
            }
        }
    }

    /// The mtime of its directory entry's "modified" field: a file's own; a directory's is
    /// that of its last entry (as writing that entry would have set it), else its own.
    pub(super) fn modified(&self, nodes: &[Node]) -> i64 {
        match &self.kind {
            NodeKind::Dir { entries, .. } => {
                entries.last().map_or(self.mtime, |e| nodes[e.node].mtime)
            }
            NodeKind::File(_) => self.mtime,
        }
    }
}

/// The volume's contents: `nodes[0]` is the root directory.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) nodes: Vec<Node>,
    /// Clusters used, from [`ROOT_CLUSTER`] on.
    pub(super) used: u32,
}

/// Walks `source` (the tree's `/boot`) into a plan and gives every node its clusters.
pub(super) fn plan(
    tree: &Tree,
    source: &[u8],
    geometry: &Geometry,
    summary: &mut FatSummary,
) -> Result<Plan, FatError> {
    let mut walk = Walk {
        tree,
        summary,
        nodes: Vec::new(),
        ancestors: Vec::new(),
        top: source.to_vec(),
    };
    match tree.resolve(source, true) {
        Some(id) if tree.inode(id).kind.is_dir() => {
            walk.dir(id, source, None)?;
        }
        _ => {
            walk.summary.warnings.push(format!(
                "/{} is not a directory in the image: the ESP is empty",
                show(source)
            ));
            walk.nodes.push(Node {
                kind: NodeKind::Dir {
                    entries: Vec::new(),
                    parent: None,
                },
                path: source.to_vec(),
                mtime: 0,
                first: 0,
                clusters: 0,
            });
        }
    }
    let mut nodes = walk.nodes;
    let used = allocate(&mut nodes, geometry)?;
    Ok(Plan { nodes, used })
}

/// Hands out clusters: every directory first (the root at [`ROOT_CLUSTER`]), then every
/// file, each one contiguous run. Returns the clusters used.
fn allocate(nodes: &mut [Node], g: &Geometry) -> Result<u32, FatError> {
    let mut next = ROOT_CLUSTER as u64;
    let end = ROOT_CLUSTER as u64 + g.clusters as u64;
    for dirs in [true, false] {
        for node in nodes.iter_mut() {
            if matches!(node.kind, NodeKind::Dir { .. }) != dirs {
                continue;
            }
            let bytes = node.bytes();
            if dirs && bytes > MAX_DIR_ENTRIES * ENTRY as u64 {
                return Err(FatError::TooManyEntries {
                    path: show(&node.path),
                });
            }
            let n = bytes.div_ceil(g.cluster_bytes()).max(dirs as u64);
            if next + n > end {
                return Err(FatError::NoSpace {
                    path: show(&node.path),
                    esp_mib: (g.sectors as u64 * super::geometry::SECTOR) >> 20,
                });
            }
            node.first = if n == 0 { 0 } else { next as u32 };
            node.clusters = n as u32;
            next += n;
        }
    }
    Ok((next - ROOT_CLUSTER as u64) as u32)
}

struct Walk<'t, 's> {
    tree: &'t Tree,
    summary: &'s mut FatSummary,
    nodes: Vec<Node>,
    /// Directories on the current path (loop detection for symlinked directories).
    ancestors: Vec<InodeId>,
    top: Vec<u8>,
}

impl Walk<'_, '_> {
    /// Adds the directory `id` at `path` and everything below it; returns its node.
    fn dir(&mut self, id: InodeId, path: &[u8], parent: Option<usize>) -> Result<usize, FatError> {
        let tree = self.tree;
        let me = self.nodes.len();
        self.nodes.push(Node {
            kind: NodeKind::Dir {
                entries: Vec::new(),
                parent,
            },
            path: path.to_vec(),
            mtime: tree.inode(id).meta.mtime.sec,
            first: 0,
            clusters: 0,
        });
        let Kind::Dir(d) = &tree.inode(id).kind else {
            return Ok(me);
        };
        self.ancestors.push(id);
        let mut taken = BTreeSet::new();
        let mut kept = Vec::new();
        for (name, &child) in &d.entries {
            let child_path = [path, b"/", name].concat();
            let Some(fat_name) = self.fat_name_for(path, name, &child_path, &mut taken) else {
                continue;
            };
            let Some(target) = self.follow(child, &child_path) else {
                continue;
            };
            kept.push((fat_name, target, child_path));
        }
        let mut shorts = ShortNames::default();
        for (name, _, _) in &kept {
            shorts.reserve_exact(name);
        }
        let mut entries = Vec::new();
        for (name, target, child_path) in kept {
            let inode = tree.inode(target);
            let node = match &inode.kind {
                Kind::Dir(_) => {
                    if self.ancestors.contains(&target) || self.ancestors.len() >= MAX_DEPTH {
                        self.warn(&child_path, "directory loop or nesting too deep; dropped");
                        continue;
                    }
                    self.summary.dirs += 1;
                    self.dir(target, &child_path, Some(me))?
                }
                Kind::File(data) => {
                    if data.len > u32::MAX as u64 {
                        return Err(FatError::TooLarge {
                            path: show(&child_path),
                            len: data.len,
                        });
                    }
                    self.summary.files += 1;
                    self.summary.bytes += data.len;
                    self.nodes.push(Node {
                        kind: NodeKind::File(*data),
                        path: child_path,
                        mtime: inode.meta.mtime.sec,
                        first: 0,
                        clusters: 0,
                    });
                    self.nodes.len() - 1
                }
                _ => {
                    self.warn(&child_path, "special file cannot be stored on FAT; dropped");
                    continue;
                }
            };
            let short = shorts.assign(&name);
            entries.push(Entry { name, short, node });
        }
        self.ancestors.pop();
        if let NodeKind::Dir { entries: e, .. } = &mut self.nodes[me].kind {
            *e = entries;
        }
        Ok(me)
    }

    /// The FAT name for `name` (in the directory at `path`), or `None` (with a warning) for an
    /// entry FAT cannot or should not hold: `/boot/boot`, a name FAT cannot store, a name that
    /// differs from one in `taken` only in case.
    fn fat_name_for(
        &mut self,
        path: &[u8],
        name: &[u8],
        child_path: &[u8],
        taken: &mut BTreeSet<String>,
    ) -> Option<String> {
        if path == self.top.as_slice() && name == b"boot" {
            self.warn(
                child_path,
                "skipped (a /boot/boot link is meaningless when /boot is its own filesystem)",
            );
            return None;
        }
        let Some(fat_name) = fat_name(name) else {
            self.warn(child_path, "name cannot be stored on FAT; dropped");
            return None;
        };
        if !taken.insert(fat_name.to_lowercase()) {
            self.warn(
                child_path,
                "differs only in case from another name; FAT is case-insensitive; dropped",
            );
            return None;
        }
        Some(fat_name)
    }

    /// What to copy for `child`: itself, or for a symlink (FAT has none) the file or
    /// directory it resolves to inside the image; `None` (with a warning) when it does not.
    fn follow(&mut self, child: InodeId, child_path: &[u8]) -> Option<InodeId> {
        let Kind::Symlink(to) = &self.tree.inode(child).kind else {
            return Some(child);
        };
        match self.tree.resolve(child_path, true) {
            Some(t) if matches!(self.tree.inode(t).kind, Kind::Dir(_) | Kind::File(_)) => {
                self.summary.warnings.push(format!(
                    "/{}: symlink to {:?}; FAT has no symlinks, copied its target",
                    show(child_path),
                    show(to)
                ));
                Some(t)
            }
            _ => {
                let why = format!(
                    "symlink to {:?} does not resolve inside the image; dropped",
                    show(to)
                );
                self.warn(child_path, &why);
                None
            }
        }
    }

    fn warn(&mut self, path: &[u8], why: &str) {
        self.summary
            .warnings
            .push(format!("/{}: {why}", show(path)));
    }
}

/// The name as FAT long-name text, or `None` when FAT cannot hold it.
pub(crate) fn fat_name(name: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(name).ok()?;
    let bad = |c: char| c < ' ' || "\"*/:<>?\\|".contains(c);
    if s.is_empty()
        || s.encode_utf16().count() > 255
        || s.chars().any(bad)
        || s.ends_with(['.', ' '])
    {
        return None;
    }
    Some(s.to_string())
}
