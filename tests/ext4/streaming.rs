//! Writing while others follow. The ext4 writer's reports to a [`Finality`]: a byte it says
//! is final (below the watermark) never changes afterwards, the metadata at the start (the
//! superblock, descriptors, bitmaps, inode tables) included; an
//! observer copies every block as soon as it is reported final, and once the filesystem is
//! written the copies must match it and the image must still be a clean filesystem. And
//! `consume_spill`: the spill's space is given back, the filesystem the same.

use crate::support::*;
use d2v::finality::{Finality, Finisher, Ready};

/// A tree that makes the writer touch every kind of block: file data, an indexed directory,
/// small directories, an xattr block, a hardlink; ~80 MiB so that the watermark moves
/// several times (every 8 MiB).
fn varied_tree() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    let mut x = 0x1234_5678u32;
    for i in 0..40 {
        let data: Vec<u8> = (0..(2 << 20) + i * 977)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        add_file(
            &mut t,
            &format!("data/{}/f{i}", i % 7),
            &data,
            meta(0o644, 0, 0),
        );
    }
    for i in 0..5000 {
        add_fifo(&mut t, &format!("big/entry-{i:05}-with-a-longer-name"));
        if i % 500 == 0 {
            add_file(&mut t, &format!("small{i}/a"), b"a", meta(0o600, 1, 1));
        }
    }
    let mut m = meta(0o644, 0, 0);
    m.xattrs.insert(b"user.big".to_vec(), vec![7u8; 3000]);
    add_file(&mut t, "x/with-xattr", b"x", m);
    t.hardlink(b"x/link", b"data/0/f0").unwrap();
    t
}

#[test]
fn bytes_reported_final_never_change() {
    let t = varied_tree();
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("fs.img"))
        .unwrap();
    let offset = 1 << 20;
    let finality = Finality::new();
    // The writer is held within 8 MiB of what the observer has copied, as the VMDK writer
    // holds it: however late the observer runs, it sees all but the last few reports.
    finality.limit_lead(8 << 20);
    // The observer's copies: (offset, block) of every final block, as first seen.
    let copies = std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let _reading = finality.reading();
            let (mut seen, mut copies) = (offset, Vec::new());
            while let Ready::Below(b) = finality.wait_beyond(seen) {
                for at in (seen..b).step_by(4096) {
                    let mut block = vec![0u8; 4096];
                    f.read_exact_at(&mut block, at).unwrap();
                    copies.push((at, block));
                }
                seen = b;
                finality.consumed(b);
            }
            copies
        });
        let done = Finisher::new(&finality);
        finality.advance(offset);
        ext4::write_reporting(&t, &f, offset, &opts(), &finality).unwrap();
        done.done();
        observer.join().unwrap()
    });
    assert!(
        copies.len() > 10_000,
        "only {} blocks were reported final before the end",
        copies.len()
    );
    // The superblock (at byte 1024 of block 0) was final before the file data after it.
    let (at, first) = &copies[0];
    assert_eq!(*at, offset);
    assert_eq!(
        &first[1024 + 0x38..1024 + 0x3a],
        &[0x53, 0xef],
        "no superblock magic"
    );
    for (at, block) in &copies {
        let mut now = vec![0u8; 4096];
        f.read_exact_at(&mut now, *at).unwrap();
        assert!(
            now == *block,
            "the block at byte {at} changed after it was reported final"
        );
    }
    drop(f);
    let out = Command::new("dd")
        .arg(format!("if={}", dir.path().join("fs.img").display()))
        .arg(format!("of={}", dir.path().join("region.img").display()))
        .args(["bs=1M", "skip=1", "status=none"])
        .status()
        .unwrap();
    assert!(out.success());
    fsck(&dir.path().join("region.img"));
}

#[test]
fn consuming_the_spill_gives_its_space_back_and_writes_the_same_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let allocated = |t: &Tree| t.spill().file().metadata().unwrap().blocks() * 512;
    let kept = varied_tree();
    let (a, _) = write_image(&kept, &opts(), 0);
    assert!(allocated(&kept) > 80 << 20);
    let consumed = varied_tree();
    let mut o = opts();
    o.consume_spill = true;
    let (b, _) = write_image(&consumed, &o, 0);
    assert!(
        allocated(&consumed) < 1 << 20,
        "the spill kept {} bytes",
        allocated(&consumed)
    );
    assert!(
        std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap(),
        "consuming the spill changed the filesystem"
    );
}
