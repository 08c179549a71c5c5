//! Every entry kind, options, feature flags, hashes and xattrs, checked with e2fsprogs.

use crate::support::*;

#[test]
fn every_kind_round_trips_and_fsck_is_clean() {
    let t = full_tree();
    let (img, s) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    round_trip(&t, &img.path);
    // Inodes 1-11 are reserved (root 2, journal 8, lost+found 11); hardlinks share one.
    let distinct: std::collections::BTreeSet<_> = t.walk().skip(1).map(|e| e.id).collect();
    assert_eq!(s.free_inodes, s.inodes - 11 - distinct.len() as u64);
}

#[test]
fn same_bytes_when_file_data_cannot_be_copied_by_the_kernel() {
    // The spill file on /dev/shm (tmpfs), the image in $TMPDIR: another filesystem, so
    // copy_file_range fails (EXDEV) and the writer copies file data through its own buffer.
    use std::os::unix::fs::MetadataExt;
    let shm = std::path::Path::new("/dev/shm");
    let tmp = tempfile::tempdir().unwrap();
    assert_ne!(
        std::fs::metadata(shm).unwrap().dev(),
        std::fs::metadata(tmp.path()).unwrap().dev(),
        "/dev/shm and $TMPDIR must be different filesystems for this test"
    );
    let buffered = full_tree_in(Tree::new(d2v::tree::Spill::temp_in(shm).unwrap()));
    let (a, _) = write_image(&buffered, &opts(), 0);
    fsck(&a.path);
    round_trip(&buffered, &a.path);
    let (b, _) = write_image(&full_tree(), &opts(), 0);
    assert!(std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap());
}

#[test]
fn same_bytes_from_a_packed_spill() {
    // Every file packed (compressed frame by frame) instead of stored verbatim: the same
    // filesystem, holes included, and the files' space given back as they are written.
    let packed = full_tree_in(Tree::new(d2v::tree::Spill::packing_after(
        tempfile::tempfile().unwrap(),
        0,
    )));
    let (a, _) = write_image(&packed, &opts(), 0);
    fsck(&a.path);
    round_trip(&packed, &a.path);
    let (b, _) = write_image(&full_tree(), &opts(), 0);
    assert!(std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap());
    let mut consumed = opts();
    consumed.consume_spill = true;
    let (c, _) = write_image(&packed, &consumed, 0);
    assert!(std::fs::read(&c.path).unwrap() == std::fs::read(&b.path).unwrap());
}

#[test]
fn region_at_an_offset_and_hole_outside() {
    let t = full_tree();
    let (img, _) = write_image(&t, &opts(), 1 << 20);
    fsck(&img.path);
    round_trip(&t, &img.path);
}

#[test]
fn dumpe2fs_shows_the_feature_set() {
    let (img, s) = write_image(&full_tree(), &opts(), 0);
    let tool = testkit::require_tool("dumpe2fs", "e2fsprogs");
    let out = Command::new(tool)
        .arg("-h")
        .arg(&img.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap();
    let have: Vec<&str> = features.split_whitespace().skip(2).collect();
    for f in [
        "has_journal",
        "ext_attr",
        "dir_index",
        "filetype",
        "extent",
        "64bit",
        "flex_bg",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
        "metadata_csum",
    ] {
        assert!(have.contains(&f), "{f} missing: {features}");
    }
    assert!(text.contains("Filesystem volume name:   root"), "{text}");
    assert!(
        text.contains(&format!(
            "Filesystem UUID:          {}",
            d2v::ids::uuid_string(&opts().uuid)
        )),
        "{text}"
    );
    assert!(text.contains("Inode size:\t          256"), "{text}");
    assert!(text.contains("Block size:               4096"), "{text}");
    assert!(
        text.contains(&format!("Block count:              {}", s.blocks)),
        "{text}"
    );
    assert!(
        text.contains(&format!("Free blocks:              {}", s.free_blocks)),
        "{text}"
    );
    assert!(text.contains("Journal inode:            8"), "{text}");
    assert!(
        text.contains(&format!("Total journal blocks:     {}", s.journal_blocks)),
        "{text}"
    );
    assert!(text.contains("Journal start:            0"), "{text}");
}

#[test]
fn empty_tree() {
    let t = Tree::in_temp().unwrap();
    // Defaults: no label, times at the epoch unless SOURCE_DATE_EPOCH says otherwise.
    let (img, s) = write_image(&t, &Ext4Options::from_seed("sha256:empty"), 0);
    fsck(&img.path);
    round_trip(&t, &img.path);
    // Auto size: metadata and journal plus the default 256 MiB of free space.
    assert!(s.free_blocks * 4096 >= 256 << 20, "{s:?}");
}

#[test]
fn xattr_size_classes() {
    let mut t = Tree::in_temp().unwrap();
    let mut inline = meta(0o644, 0, 0);
    inline.xattrs.insert(b"user.a".to_vec(), vec![1; 40]);
    add_file(&mut t, "inline", b"", inline);
    let mut block = meta(0o644, 0, 0);
    block.xattrs.insert(b"user.b".to_vec(), vec![2; 3000]);
    block.xattrs.insert(
        b"security.selinux".to_vec(),
        b"system_u:object_r:bin_t:s0\0".to_vec(),
    );
    add_file(&mut t, "block", b"", block);
    // 1500 files with the same big xattr: shared blocks (at most 1024 inodes each).
    let mut shared = meta(0o644, 0, 0);
    shared.xattrs.insert(b"user.shared".to_vec(), vec![5; 500]);
    for i in 0..1500 {
        add_file(&mut t, &format!("shared/f{i:04}"), b"", shared.clone());
    }
    let (img, _) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    round_trip(&t, &img.path);
    let acl = |p: &str| field(&debugfs(&img.path, &format!("stat {p}")), "File ACL:").to_string();
    assert_eq!(acl("/shared/f0000"), acl("/shared/f1023"));
    assert_ne!(acl("/shared/f0000"), acl("/shared/f1024"));
    assert_eq!(field(&debugfs(&img.path, "stat /inline"), "File ACL:"), "0");
    assert_ne!(field(&debugfs(&img.path, "stat /block"), "File ACL:"), "0");

    let mut huge = meta(0o644, 0, 0);
    huge.xattrs.insert(b"user.huge".to_vec(), vec![3; 5000]);
    add_file(&mut t, "huge", b"", huge);
    let err = ext4::write(&t, &tempfile::tempfile().unwrap(), 0, &opts()).unwrap_err();
    assert!(
        err.to_string().contains("/huge") && err.to_string().contains("xattr block"),
        "{err}"
    );
}

#[test]
fn dx_hash_matches_debugfs() {
    let seed = opts().hash_seed;
    let uuid = d2v::ids::uuid_string(&seed);
    let (img, _) = write_image(&Tree::in_temp().unwrap(), &opts(), 0);
    let names = [
        "a",
        "hello",
        "lost+found",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef!",
        &"z".repeat(255),
        "caf\u{e9}-\u{fc}ber",
    ];
    for (alg, v) in [
        ("half_md4", ext4::HashVersion::HalfMd4),
        ("tea", ext4::HashVersion::Tea),
    ] {
        let cmds: Vec<String> = names
            .iter()
            .map(|n| format!("dx_hash -h {alg} -s {uuid} \"{n}\""))
            .collect();
        for (n, out) in names.iter().zip(debugfs_batch(&img.path, &cmds)) {
            let (h, m) = ext4::dx_hash(n.as_bytes(), v, &seed, true);
            let want = format!("Hash of {n} is {h:#x} (minor {m:#x})");
            assert_eq!(out.trim(), want, "{alg}");
        }
    }
}

/// libext2fs (debugfs -w) modifies the image like a kernel would: new files and directories,
/// including in a hashed directory, unlinks; the result must still be clean.
#[test]
fn writable_by_libext2fs_after_writing() {
    let mut t = full_tree();
    for i in 0..3000 {
        add_fifo(&mut t, &format!("big/entry-{i:05}"));
    }
    let (img, _) = write_image(&t, &opts(), 0);
    let host = img.path.with_file_name("host.txt");
    std::fs::write(&host, vec![b'h'; 50_000]).unwrap();
    let tool = testkit::require_tool("debugfs", "e2fsprogs");
    let cmds = format!(
        "mkdir /big/newdir\nwrite {} /big/newfile\nmkdir /etc/sub\nrm /usr/bin/su2\nrm /big/entry-00007\nln /etc/hostname /etc/third\nsif /etc/hostname links_count 3\nrm /usr/lib/islands\n",
        host.display()
    );
    let mut child = Command::new(tool)
        .arg("-w")
        .arg("-f")
        .arg("-")
        .arg(&img.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), cmds.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    fsck(&img.path);
    assert_eq!(debugfs(&img.path, "cat /big/newfile").len(), 50_000);
    assert_eq!(
        field(&debugfs(&img.path, "stat /big/newdir"), "Type:"),
        "directory"
    );
}

#[test]
fn output_is_deterministic_and_options_apply() {
    let t = full_tree();
    let mut o = opts();
    o.reserved_percent = 5;
    o.label = "deterministic".into();
    let (a, sa) = write_image(&t, &o, 0);
    let (b, sb) = write_image(&t, &o, 0);
    assert_eq!(sa, sb);
    assert!(
        std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap(),
        "same tree, same bytes"
    );
    fsck(&a.path);
    let text = String::from_utf8(
        Command::new(testkit::require_tool("dumpe2fs", "e2fsprogs"))
            .arg("-h")
            .arg(&a.path)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains(&format!(
            "Reserved block count:     {}",
            sa.blocks * 5 / 100
        )),
        "{text}"
    );
    assert!(
        text.contains("Filesystem volume name:   deterministic"),
        "{text}"
    );
    o.label = "x".repeat(17);
    assert!(ext4::write(&t, &tempfile::tempfile().unwrap(), 0, &o).is_err());
}

#[test]
fn lost_and_found_from_the_tree_is_kept() {
    let mut t = full_tree();
    t.insert(b"lost+found", Inode::dir(meta(0o700, 0, 0)))
        .unwrap();
    add_file(&mut t, "lost+found/#1234", b"orphan", meta(0o600, 0, 0));
    let (img, _) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    round_trip(&t, &img.path);
    assert_eq!(
        field(&debugfs(&img.path, "stat /lost+found"), "Inode:"),
        "11"
    );
}
