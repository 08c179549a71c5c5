//! Whiteouts that act on the lower layers only.
//!
//! [`Ours`] knows the normalized paths this layer has written so far. A whiteout removes what
//! lower layers left at a path but spares this layer's own entries: an entry of ours is kept
//! (and, if a directory merged with a lower one, its lower children are pruned); a lower
//! directory that only holds entries of ours below it is kept as a fresh implicit directory
//! (0755, root-owned) holding only those. This makes the result independent of where in the
//! tar the whiteout sits, as the OCI image spec requires.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::join;
use crate::tree::{Kind, Metadata, Tree, TreeError};

/// The paths one layer has written, kept as 128-bit hashes (a base layer writes every path
/// of the image; hashes keep that set to ~20 bytes an entry). Whiteouts only ask whether this
/// layer wrote a path, or anything below it.
#[derive(Default)]
pub(super) struct Ours {
    written: HashSet<u128>,
    /// Every proper ancestor directory of a written path.
    above: HashSet<u128>,
    /// The layer goes onto an empty tree (a base layer): there is nothing below it for a
    /// whiteout to hide (everything in the tree is its own, or a default directory above its
    /// own), so whiteouts are no-ops and nothing is tracked.
    nothing_below: bool,
}

fn key(path: &[u8]) -> u128 {
    let d = Sha256::digest(path);
    u128::from_le_bytes(d[..16].try_into().expect("16 bytes"))
}

impl Ours {
    pub fn for_layer_onto(tree: &Tree) -> Ours {
        Ours {
            nothing_below: tree.is_empty(),
            ..Ours::default()
        }
    }

    pub fn insert(&mut self, path: &[u8]) {
        if self.nothing_below || !self.written.insert(key(path)) {
            return;
        }
        // Ancestors from the nearest up: once one is known, so are all above it.
        let mut p = path;
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if !self.above.insert(key(p)) {
                break;
            }
        }
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        self.written.contains(&key(path))
    }

    /// Whether this layer wrote anything strictly below `path` (`""`: the root).
    pub fn has_below(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return !self.written.is_empty();
        }
        self.above.contains(&key(path))
    }
}

/// `.wh.NAME`: delete `path` (normalized) from the lower layers.
pub(super) fn whiteout(tree: &mut Tree, path: &[u8], ours: &Ours) -> Result<(), TreeError> {
    if ours.nothing_below {
        return Ok(());
    }
    let Some(id) = tree.lookup(path) else {
        return Ok(());
    };
    if ours.contains(path) {
        if tree.inode(id).kind.is_dir() {
            prune_children(tree, path, ours)?;
        }
    } else if ours.has_below(path) && tree.inode(id).kind.is_dir() {
        tree.inode_mut(id).meta = Metadata {
            mode: 0o755,
            ..Metadata::default()
        };
        prune_children(tree, path, ours)?;
    } else {
        tree.remove(path)?;
    }
    Ok(())
}

/// `.wh..wh..opq` in `dir`: hide the lower layers' children of `dir`.
pub(super) fn opaque(tree: &mut Tree, dir: &[u8], ours: &Ours) -> Result<(), TreeError> {
    if ours.nothing_below {
        return Ok(());
    }
    match tree.lookup(dir) {
        Some(id) if tree.inode(id).kind.is_dir() => prune_children(tree, dir, ours),
        _ => Ok(()),
    }
}

fn prune_children(tree: &mut Tree, dir: &[u8], ours: &Ours) -> Result<(), TreeError> {
    let Some(id) = tree.lookup(dir) else {
        return Ok(());
    };
    let names: Vec<Vec<u8>> = match &tree.inode(id).kind {
        Kind::Dir(d) => d.entries.keys().map(|n| n.to_vec()).collect(),
        _ => return Ok(()),
    };
    for name in names {
        whiteout(tree, &join(dir, &name), ours)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Ours;

    #[test]
    fn ours_answers_written_and_below() {
        let mut o = Ours::default();
        assert!(!o.has_below(b""));
        o.insert(b"usr/lib/x");
        o.insert(b"etc");
        assert!(o.contains(b"usr/lib/x") && o.contains(b"etc"));
        assert!(!o.contains(b"usr/lib") && !o.contains(b"usr"));
        assert!(o.has_below(b"") && o.has_below(b"usr") && o.has_below(b"usr/lib"));
        assert!(!o.has_below(b"usr/lib/x") && !o.has_below(b"etc") && !o.has_below(b"us"));
        o.insert(b"usr/share/y");
        assert!(o.has_below(b"usr/share") && o.has_below(b"usr"));
    }
}
