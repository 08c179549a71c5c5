//! A tree whose files are left in their layers (a deferring spill, as `d2v build` flattens):
//! the filesystem is the one written from a tree holding every file, byte for byte, the
//! layers are read again front to back, and only the kept paths are in the spill.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;
use d2v::layers::{apply_layer, apply_layer_deferring, Deferral};
use d2v::tree::{LayerStreams, Spill};
use testkit::tar::{tar, Entry};

/// Layer tars from memory, counting how often each is opened.
struct Tars {
    layers: Vec<Vec<u8>>,
    opened: Vec<AtomicUsize>,
}

impl LayerStreams for Tars {
    fn open(&self, index: usize) -> io::Result<Box<dyn Read + Send>> {
        self.opened[index].fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(io::Cursor::new(self.layers[index].clone())))
    }
}

/// Noise (does not compress, has no zeros) of `len` bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8 | 1
        })
        .collect()
}

fn layers() -> Vec<Vec<u8>> {
    // Pieces of 64 KiB of zeros: holes; a file larger than the writer's buffer.
    let mut holey = noise(5 << 20, 3);
    holey[64 << 10..192 << 10].fill(0);
    holey[(5 << 20) - (64 << 10)..].fill(0);
    let base = vec![
        Entry::dir("etc"),
        Entry::file("etc/hostname", "base\n"),
        Entry::file("usr/bin/tool", noise(300_000, 1)),
        Entry::file("usr/share/doc/a", noise(10_000, 2)),
        Entry::file("usr/share/doc/gone", noise(5000, 4)),
        Entry::file("usr/share/empty", ""),
        Entry::file("var/lib/holey.img", &holey),
        Entry::file("usr/share/replaced", noise(70_000, 5)).xattr("user.k", "v"),
        Entry::file("opt/zeros", vec![0u8; 200_000]),
    ];
    let top = vec![
        Entry::file("usr/share/replaced", noise(90_000, 6)),
        Entry::whiteout("usr/share/doc/gone"),
        Entry::hardlink("usr/bin/tool-link", "usr/bin/tool"),
        Entry::file("boot/vmlinuz", noise(100_000, 7)),
        Entry::file("srv/big", noise(9 << 20, 8)),
    ];
    vec![tar(&base), tar(&top)]
}

fn keep(path: &[u8]) -> bool {
    path.starts_with(b"etc/") || path.starts_with(b"boot/")
}

#[test]
fn same_filesystem_with_files_left_in_their_layers() {
    let tars = layers();
    let streams = Arc::new(Tars {
        layers: tars.clone(),
        opened: tars.iter().map(|_| AtomicUsize::new(0)).collect(),
    });
    let spill = Spill::deferring(tempfile::tempfile().unwrap(), streams.clone());
    let mut deferring = Tree::new(spill);
    let mut whole = Tree::in_temp().unwrap();
    for (i, l) in tars.iter().enumerate() {
        let d = Deferral {
            index: i,
            keep: &keep,
        };
        apply_layer_deferring(&mut deferring, &mut &l[..], "l", Some(&d)).unwrap();
        apply_layer(&mut whole, &mut &l[..], "l").unwrap();
    }
    // Only the kept files are stored: about 100 kB of the 15 MB.
    let stored = deferring.spill().file().metadata().unwrap().blocks() * 512;
    assert!(stored < 200_000, "{stored} bytes in the spill");
    let (a, _) = write_image(&deferring, &opts(), 0);
    assert_eq!(deferring.spill().early_reads(), 0);
    let opened: Vec<usize> = streams
        .opened
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    assert_eq!(opened, [1, 1], "each layer read again once, front to back");
    let (b, _) = write_image(&whole, &opts(), 0);
    assert!(
        std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap(),
        "the same filesystem"
    );
    fsck(&a.path);
    // Reading the tree's files back (as the build's checks may): from the layers, kept.
    round_trip(&deferring, &a.path);
    assert!(deferring.spill().early_reads() > 0);
}

#[test]
fn a_layer_that_reads_back_short_is_an_error() {
    // Layer 0 cut before its first deferred file (the read-ahead to it fails), layer 1 in
    // the middle (the data pass's own read fails).
    for (cut_layer, keep_bytes) in [(0, 1024), (1, usize::MAX)] {
        let tars = layers();
        let mut cut = tars.clone();
        let at = keep_bytes.min(cut[cut_layer].len() / 2);
        cut[cut_layer].truncate(at);
        let streams = Arc::new(Tars {
            layers: cut,
            opened: tars.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        let mut t = Tree::new(Spill::deferring(tempfile::tempfile().unwrap(), streams));
        for (i, l) in tars.iter().enumerate() {
            let d = Deferral {
                index: i,
                keep: &keep,
            };
            apply_layer_deferring(&mut t, &mut &l[..], "l", Some(&d)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("fs.img")).unwrap();
        let e = ext4::write(&t, &f, 0, &opts()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("reading a layer again"), "{text}");
        assert!(text.contains(&format!("layer {cut_layer}")), "{text}");
    }
}
