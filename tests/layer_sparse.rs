//! Sparse files in layers, as GNU tar writes them (`tar --sparse`): the old GNU format (type
//! `S` with its sparse map in the header) is read whole, holes as zeros; the PAX formats
//! (`GNU.sparse.*` records, whose map and data only GNU tar reassembles) are refused by name
//! rather than applied as a file holding the map.

use d2v::layers::{apply_layer, LayerError};
use d2v::tree::{Kind, Tree};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// A 3 MiB sparse file: data at the start, across a MiB boundary and at the end.
fn sparse_file(dir: &Path) -> Vec<u8> {
    let mut want = vec![0u8; 3 << 20];
    want[..5000].fill(b'a');
    want[(1 << 20) - 7..(1 << 20) + 9000].fill(b'b');
    let end = want.len();
    want[end - 100..].fill(b'c');
    let f = std::fs::File::create(dir.join("sparse.bin")).unwrap();
    f.set_len(want.len() as u64).unwrap();
    for (a, b) in [
        (0, 5000),
        ((1 << 20) - 7, (1 << 20) + 9000),
        (end - 100, end),
    ] {
        f.write_all_at(&want[a..b], a as u64).unwrap();
    }
    want
}

/// A layer of `sparse.bin` by GNU tar in `format` with `--sparse`.
fn gnu_tar(dir: &Path, format: &str) -> Vec<u8> {
    let tar = testkit::require_tool("tar", "tar");
    let out = dir.join(format!("{format}.tar"));
    let st = Command::new(tar)
        .args(["--sparse", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--format={format}"))
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&out)
        .arg("sparse.bin")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}

#[test]
fn an_old_gnu_sparse_file_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let want = sparse_file(dir.path());
    let layer = gnu_tar(dir.path(), "gnu");
    assert_eq!(layer[156], b'S', "GNU tar wrote no sparse entry");
    let mut tree = Tree::in_temp().unwrap();
    apply_layer(&mut tree, &mut &layer[..], "sha256:sparse").unwrap();
    let id = tree.lookup(b"sparse.bin").expect("sparse.bin in the tree");
    let Kind::File(fd) = &tree.inode(id).kind else {
        panic!("sparse.bin is not a regular file")
    };
    let mut got = Vec::new();
    tree.spill().reader(fd).read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the sparse file's bytes differ");
}

#[test]
fn a_pax_sparse_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    sparse_file(dir.path());
    let layer = gnu_tar(dir.path(), "posix");
    let mut tree = Tree::in_temp().unwrap();
    let e = apply_layer(&mut tree, &mut &layer[..], "sha256:sparse").unwrap_err();
    let LayerError::PaxSparse { path, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        path, "sparse.bin",
        "the file's own name, not GNU tar's stand-in"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("sha256:sparse") && msg.contains("--format=gnu"),
        "{msg}"
    );
}
