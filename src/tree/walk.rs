//! Deterministic depth-first traversal of the staging tree.

use super::{InodeId, Kind, Tree, ROOT};

/// One reachable directory entry.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Path from the root without a leading slash (`etc/passwd`); empty for the root.
    pub path: Vec<u8>,
    /// The inode the entry names.
    pub id: InodeId,
    /// The directory holding this entry (the root's parent is the root).
    pub(crate) parent: InodeId,
    /// Depth below the root (the root is 0).
    pub depth: usize,
}

impl WalkEntry {
    /// The last path component (empty for the root).
    pub(crate) fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }
}

/// Walks lazily: one open iterator per directory on the current path, so memory follows the
/// depth of the tree, not the size of its directories.
pub struct Walk<'t> {
    tree: &'t Tree,
    root_pending: bool,
    stack: Vec<Frame<'t>>,
    /// Path of the entry last returned.
    path: Vec<u8>,
}

struct Frame<'t> {
    id: InodeId,
    entries: super::entries::Iter<'t>,
    /// Length of this directory's path in `Walk::path`.
    path_len: usize,
    depth: usize,
}

impl<'t> Walk<'t> {
    pub(super) fn new(tree: &'t Tree) -> Walk<'t> {
        Walk {
            tree,
            root_pending: true,
            stack: Vec::new(),
            path: Vec::new(),
        }
    }

    fn open(&mut self, id: InodeId, depth: usize) {
        if let Kind::Dir(d) = &self.tree.inode(id).kind {
            self.stack.push(Frame {
                id,
                entries: d.entries.iter(),
                path_len: self.path.len(),
                depth,
            });
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = WalkEntry;

    fn next(&mut self) -> Option<WalkEntry> {
        if self.root_pending {
            self.root_pending = false;
            self.open(ROOT, 0);
            return Some(WalkEntry {
                path: Vec::new(),
                id: ROOT,
                parent: ROOT,
                depth: 0,
            });
        }
        loop {
            let top = self.stack.last_mut()?;
            let Some((name, &child)) = top.entries.next() else {
                self.stack.pop();
                continue;
            };
            let (parent, depth) = (top.id, top.depth + 1);
            self.path.truncate(top.path_len);
            if !self.path.is_empty() {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(name);
            self.open(child, depth);
            return Some(WalkEntry {
                path: self.path.clone(),
                id: child,
                parent,
                depth,
            });
        }
    }
}
