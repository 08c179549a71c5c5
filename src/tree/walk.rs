//! Deterministic depth-first traversal of the staging tree.

use super::{InodeId, Kind, Tree, ROOT};

/// One reachable directory entry.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// Path from the root without a leading slash (`etc/passwd`); empty for the root.
    pub path: Vec<u8>,
    pub id: InodeId,
    /// The directory holding this entry (the root's parent is the root).
    pub parent: InodeId,
    /// Depth below the root (the root is 0).
    pub depth: usize,
}

impl WalkEntry {
    /// The last path component (empty for the root).
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => &self.path,
        }
    }
}

pub struct Walk<'t> {
    tree: &'t Tree,
    stack: Vec<WalkEntry>,
}

impl<'t> Walk<'t> {
    pub(super) fn new(tree: &'t Tree) -> Walk<'t> {
        Walk {
            tree,
            stack: vec![WalkEntry {
                path: Vec::new(),
                id: ROOT,
                parent: ROOT,
                depth: 0,
            }],
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = WalkEntry;

    fn next(&mut self) -> Option<WalkEntry> {
        let entry = self.stack.pop()?;
        if let Kind::Dir(d) = &self.tree.inode(entry.id).kind {
            for (name, &child) in d.entries.iter().rev() {
                let mut path = entry.path.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                self.stack.push(WalkEntry {
                    path,
                    id: child,
                    parent: entry.id,
                    depth: entry.depth + 1,
                });
            }
        }
        Some(entry)
    }
}
