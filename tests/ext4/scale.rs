//! Large and edge-case trees: huge directories, many links, long names, deep trees, big and
//! sparse files, big filesystems.

use crate::support::*;

#[test]
fn dir_with_100000_entries_is_indexed() {
    let mut t = Tree::in_temp().unwrap();
    for i in 0..100_000 {
        add_fifo(&mut t, &format!("d/entry-{i:06}-with-a-longer-name"));
    }
    add_file(&mut t, "d/zzz", b"last", meta(0o644, 0, 0));
    let (img, s) = write_image(&t, &opts(), 0);
    assert!(s.indexed_dirs >= 1);
    fsck(&img.path);
    let st = debugfs(&img.path, "stat /d");
    assert!(field(&st, "Flags:") == "0x81000", "htree + extents: {st}");
    let cmds: Vec<String> = (0..100_000)
        .step_by(997)
        .map(|i| format!("stat /d/entry-{i:06}-with-a-longer-name"))
        .collect();
    for out in debugfs_batch(&img.path, &cmds) {
        assert_eq!(field(&out, "Type:"), "FIFO");
    }
    assert_eq!(debugfs(&img.path, "cat /d/zzz"), "last");
}

#[test]
fn ten_thousand_hardlinks() {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "a/target", b"shared", meta(0o644, 0, 0));
    for i in 0..10_000 {
        t.hardlink(format!("b/link{i}").as_bytes(), b"a/target")
            .unwrap();
    }
    let (img, _) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    let st = debugfs(&img.path, "stat /b/link9999");
    assert_eq!(field(&st, "Links:"), "10001");
    assert_eq!(
        field(&st, "Inode:"),
        field(&debugfs(&img.path, "stat /a/target"), "Inode:")
    );
}

#[test]
fn long_names_and_deep_trees() {
    let mut t = Tree::in_temp().unwrap();
    let name = "n".repeat(255);
    add_file(&mut t, &format!("x/{name}"), b"255", meta(0o644, 0, 0));
    let mut deep = String::new();
    for _ in 0..2000 {
        deep.push_str("d/");
    }
    add_file(&mut t, &format!("{deep}leaf"), b"deep", meta(0o644, 0, 0));
    let (img, _) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    assert_eq!(debugfs(&img.path, &format!("cat /x/{name}")), "255");
    round_trip(&t, &img.path);

    let mut bad = Tree::in_temp().unwrap();
    add_file(&mut bad, &"m".repeat(256), b"", meta(0o644, 0, 0));
    let f = tempfile::tempfile().unwrap();
    let err = ext4::write(&bad, &f, 0, &opts()).unwrap_err();
    assert!(err.to_string().contains("longer than 255"), "{err}");
}

#[test]
fn five_gib_sparse_file() {
    let mut t = Tree::in_temp().unwrap();
    let fd = t
        .store(&mut std::io::Read::take(std::io::repeat(0), 5 << 30))
        .unwrap();
    // Data at the start, in the middle and at the very end of the file.
    for (pos, byte) in [(0u64, 1u8), (2 << 30, 2), ((5 << 30) - 4096, 3)] {
        t.spill()
            .file()
            .write_all_at(&[byte; 4096], fd.offset + pos)
            .unwrap();
    }
    t.insert(
        b"sparse",
        Inode {
            meta: meta(0o644, 0, 0),
            kind: Kind::File(fd),
        },
    )
    .unwrap();
    let (img, s) = write_image(&t, &opts(), 0);
    assert!(s.size < 1 << 30, "holes stay unallocated: {s:?}");
    fsck(&img.path);
    let st = debugfs(&img.path, "stat /sparse");
    assert_eq!(field(&st, "Size:"), (5u64 << 30).to_string());
    assert_eq!(field(&st, "Blockcount:"), "24", "three 4 KiB blocks: {st}");
    for (pos, byte) in [(0u64, 1u8), (2 << 30, 2), ((5 << 30) - 4096, 3)] {
        let blk = debugfs(&img.path, &format!("bmap /sparse {}", pos / 4096));
        let blk: u64 = blk.trim().parse().unwrap();
        let mut buf = [0u8; 4096];
        File::open(&img.path)
            .unwrap()
            .read_exact_at(&mut buf, blk * 4096)
            .unwrap();
        assert!(buf.iter().all(|&b| b == byte), "block at {pos}");
    }
}

#[test]
fn fixed_size_64_gib_and_too_small() {
    let t = full_tree();
    let mut o = opts();
    let gib: u64 = std::env::var("D2V_EXT4_BIG_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    o.size = Some(gib << 30);
    let (img, s) = write_image(&t, &o, 0);
    assert_eq!(s.size, gib << 30);
    // Written: bitmaps (8 KiB per 128 MiB group), descriptor tables and the content.
    let allocated = std::fs::metadata(&img.path).unwrap().blocks() * 512;
    assert!(
        allocated < (64 << 20) + (gib << 30) / 4096,
        "sparse output: {allocated} bytes allocated"
    );
    fsck(&img.path);
    round_trip(&t, &img.path);

    o.size = Some(8 << 20);
    let err = ext4::write(&t, &tempfile::tempfile().unwrap(), 0, &o).unwrap_err();
    assert!(err.to_string().contains("root size"), "{err}");
}

#[test]
fn dense_file_across_groups_and_no_free_space() {
    let mut t = Tree::in_temp().unwrap();
    let data: Vec<u8> = (0..150u32 << 20)
        .map(|i| (i / 4096 % 253) as u8 + 1)
        .collect();
    add_file(&mut t, "dense", &data, meta(0o644, 0, 0));
    add_file(&mut t, "after", b"after", meta(0o644, 0, 0));
    let mut o = opts();
    o.free_space = Some(0);
    let (img, s) = write_image(&t, &o, 0);
    assert!(
        s.free_blocks < 1024,
        "auto size with no free space is tight: {s:?}"
    );
    fsck(&img.path);
    let out = Command::new(testkit::require_tool("debugfs", "e2fsprogs"))
        .args(["-R", "cat /dense"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.stdout == data, "contents of /dense");
    assert_eq!(debugfs(&img.path, "cat /after"), "after");
}

/// `dir_nlink`: a directory with more than 64 998 subdirectories has link count 1.
#[test]
fn directory_with_65000_subdirectories() {
    let mut t = Tree::in_temp().unwrap();
    for i in 0..65_000 {
        t.insert(
            format!("many/d{i}").as_bytes(),
            Inode::dir(meta(0o755, 0, 0)),
        )
        .unwrap();
    }
    for i in 0..64_998 {
        t.insert(
            format!("edge/d{i}").as_bytes(),
            Inode::dir(meta(0o755, 0, 0)),
        )
        .unwrap();
    }
    let (img, _) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    assert_eq!(field(&debugfs(&img.path, "stat /many"), "Links:"), "1");
    assert_eq!(field(&debugfs(&img.path, "stat /edge"), "Links:"), "65000");
}

/// Names with the same hash on both sides of a leaf boundary: the second leaf's index entry
/// carries the collision bit, and e2fsck checks the hash ranges.
#[test]
fn hash_collision_across_leaves() {
    let o = opts();
    let hash =
        |n: &str| ext4::dx_hash(n.as_bytes(), ext4::HashVersion::HalfMd4, &o.hash_seed, true);
    let mut seen = std::collections::HashMap::new();
    let mut pair = None;
    for i in 0..4_000_000u32 {
        let n = format!("{i:08x}");
        let h = hash(&n).0;
        if let Some(other) = seen.insert(h, n.clone()) {
            pair = Some((other, n, h));
            break;
        }
    }
    let (a, b, h) = pair.expect("a collision among 4 million names");
    // 8-byte names: 16-byte entries, 255 to a leaf. 254 names hash below the pair.
    let (mut below, mut above) = (Vec::new(), Vec::new());
    for i in 0..4_000_000u32 {
        let n = format!("{:08x}", u32::MAX - i);
        let nh = hash(&n).0;
        if nh < h && below.len() < 254 {
            below.push(n);
        } else if nh > h && above.len() < 300 {
            above.push(n);
        }
        if below.len() == 254 && above.len() == 300 {
            break;
        }
    }
    let mut t = Tree::in_temp().unwrap();
    for n in below.iter().chain(&above).chain([&a, &b]) {
        add_fifo(&mut t, &format!("c/{n}"));
    }
    let (img, _) = write_image(&t, &o, 0);
    let dump = debugfs(&img.path, "htree_dump /c");
    assert!(
        dump.contains(&format!("0x{:08x}", h | 1)),
        "collision bit on the second leaf:\n{dump}"
    );
    fsck(&img.path);
    round_trip(&t, &img.path);
}

/// A sparse file larger than the filesystem: 100 GiB of holes and one block of data fit a
/// 1 GiB filesystem (ext4 keeps the holes), without writing 100 GiB; a file past ext4's
/// 16 TiB is refused naming it, before any of it is read.
#[test]
fn sparse_file_larger_than_the_disk() {
    let mut t = Tree::in_temp().unwrap();
    let huge = |t: &mut Tree, path: &str, len: u64| {
        let offset = t.spill().len().next_multiple_of(4096);
        let fd = d2v::tree::FileData { offset, len };
        let inode = Inode {
            meta: meta(0o644, 0, 0),
            kind: Kind::File(fd),
        };
        t.insert(path.as_bytes(), inode).unwrap();
        offset
    };
    let offset = huge(&mut t, "sparse", 100 << 30);
    let file = t.spill().file();
    file.set_len(offset + (100 << 30)).unwrap();
    file.write_all_at(&[7; 4096], offset + (50 << 30)).unwrap();
    let mut o = opts();
    o.size = Some(1 << 30);
    let (img, s) = write_image(&t, &o, 0);
    assert_eq!(s.size, 1 << 30);
    let allocated = std::fs::metadata(&img.path).unwrap().blocks() * 512;
    assert!(allocated < 64 << 20, "{allocated} bytes written");
    fsck(&img.path);
    let st = debugfs(&img.path, "stat /sparse");
    assert_eq!(field(&st, "Size:"), (100u64 << 30).to_string());
    assert_eq!(field(&st, "Blockcount:"), "8", "one 4 KiB block: {st}");

    huge(&mut t, "too-big", 17 << 40);
    let err = ext4::write(&t, &tempfile::tempfile().unwrap(), 0, &o).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("/too-big") && shown.contains("16 TiB"),
        "{shown}"
    );
}
