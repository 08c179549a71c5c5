//! Whiteouts that act on the lower layers only.
//!
//! `ours` holds the normalized paths this layer has written so far. A whiteout removes what
//! lower layers left at a path but spares this layer's own entries: an entry of ours is kept
//! (and, if a directory merged with a lower one, its lower children are pruned); a lower
//! directory that only holds entries of ours below it is kept as a fresh implicit directory
//! (0755, root-owned) holding only those. This makes the result independent of where in the
//! tar the whiteout sits, as the OCI image spec requires.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::join;
use crate::tree::{Kind, Metadata, Tree, TreeError};

/// `.wh.NAME`: delete `path` (normalized) from the lower layers.
pub(super) fn whiteout(
    tree: &mut Tree,
    path: &[u8],
    ours: &BTreeSet<Vec<u8>>,
) -> Result<(), TreeError> {
    let Some(id) = tree.lookup(path) else {
        return Ok(());
    };
    if ours.contains(path) {
        if tree.inode(id).kind.is_dir() {
            prune_children(tree, path, ours)?;
        }
    } else if has_ours_below(ours, path) && tree.inode(id).kind.is_dir() {
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
pub(super) fn opaque(
    tree: &mut Tree,
    dir: &[u8],
    ours: &BTreeSet<Vec<u8>>,
) -> Result<(), TreeError> {
    match tree.lookup(dir) {
        Some(id) if tree.inode(id).kind.is_dir() => prune_children(tree, dir, ours),
        _ => Ok(()),
    }
}

fn prune_children(tree: &mut Tree, dir: &[u8], ours: &BTreeSet<Vec<u8>>) -> Result<(), TreeError> {
    let Some(id) = tree.lookup(dir) else {
        return Ok(());
    };
    let names: Vec<Vec<u8>> = match &tree.inode(id).kind {
        Kind::Dir(d) => d.entries.keys().cloned().collect(),
        _ => return Ok(()),
    };
    for name in names {
        whiteout(tree, &join(dir, &name), ours)?;
    }
    Ok(())
}

/// Whether this layer wrote anything strictly below `path`.
fn has_ours_below(ours: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    if path.is_empty() {
        return !ours.is_empty();
    }
    let mut lo = path.to_vec();
    lo.push(b'/');
    let mut hi = path.to_vec();
    hi.push(b'/' + 1);
    ours.range::<Vec<u8>, _>((Bound::Included(&lo), Bound::Excluded(&hi)))
        .next()
        .is_some()
}
