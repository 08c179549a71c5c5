//! Helpers for tests that build small trees by hand: d2v's unit tests (`cfg(test)`) and its
//! integration tests (through the `testing` feature, which the dev-dependency on d2v itself
//! turns on). Not part of the product.

use super::{Inode, InodeId, Kind, Metadata, Tree};

/// Metadata of a plain file: mode 0644, owned by root, mtime 0, no xattrs.
pub fn file_meta() -> Metadata {
    Metadata {
        mode: 0o644,
        ..Metadata::default()
    }
}

/// Stores `data` and puts a regular file with `meta` at `path` (parents created).
pub fn add_file_with(t: &mut Tree, path: &str, data: &[u8], meta: Metadata) -> InodeId {
    let fd = t.store(&mut &data[..]).unwrap();
    let inode = Inode {
        meta,
        kind: Kind::File(fd),
    };
    t.insert(path.as_bytes(), inode).unwrap()
}

/// A regular file with [`file_meta`] at `path`.
pub fn add_file(t: &mut Tree, path: &str, data: &[u8]) -> InodeId {
    add_file_with(t, path, data, file_meta())
}

/// A symlink to `target` at `path`, with default metadata.
pub fn add_symlink(t: &mut Tree, path: &str, target: &str) -> InodeId {
    let inode = Inode {
        meta: Metadata::default(),
        kind: Kind::Symlink(target.as_bytes().into()),
    };
    t.insert(path.as_bytes(), inode).unwrap()
}

/// A tree made by applying the layer tars `layers` in turn (named `layer0`, `layer1`, ...).
#[cfg(test)]
pub fn from_tars(layers: &[Vec<u8>]) -> Tree {
    let mut t = Tree::in_temp().unwrap();
    for (i, l) in layers.iter().enumerate() {
        crate::layers::apply_layer(&mut t, &mut &l[..], &format!("layer{i}")).unwrap();
    }
    t
}

/// A tree made by applying `layers`, each a list of tar entries, in turn.
#[cfg(test)]
pub fn from_layers(layers: &[&[testkit::tar::Entry]]) -> Tree {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| testkit::tar::tar(l)).collect();
    from_tars(&tars)
}
