//! The ext4 writer checked with e2fsprogs: `e2fsck -fn` must find nothing to fix, and
//! `debugfs` must read back what the tree holds.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use d2v::disk::ext4::{self, Ext4Options};
use d2v::tree::{Inode, Kind, Metadata, Timestamp, Tree};

fn meta(mode: u32, uid: u32, gid: u32) -> Metadata {
    Metadata {
        mode,
        uid,
        gid,
        mtime: Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        },
        xattrs: BTreeMap::new(),
    }
}

fn add_file(t: &mut Tree, path: &str, data: &[u8], m: Metadata) -> u32 {
    let fd = t.store(&mut &data[..]).unwrap();
    t.insert(
        path.as_bytes(),
        Inode {
            meta: m,
            kind: Kind::File(fd),
        },
    )
    .unwrap()
}

fn opts() -> Ext4Options {
    let mut o = Ext4Options::from_seed("sha256:test");
    o.label = "root".into();
    o.time = 1_700_000_000;
    o
}

struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write_image(t: &Tree, o: &Ext4Options, offset: u64) -> (Image, ext4::Ext4Summary) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let f = File::create(&path).unwrap();
    let size = ext4::plan_size(t, o).unwrap();
    let s = ext4::write(t, &f, offset, o).unwrap();
    assert_eq!(s.size, size);
    drop(f);
    if offset > 0 {
        // e2fsprogs take the filesystem at the start of the file: cut the region out.
        let out = dir.path().join("region.img");
        let st = Command::new("dd")
            .args([
                format!("if={}", path.display()),
                format!("of={}", out.display()),
                "bs=4096".into(),
            ])
            .arg(format!("skip={}", offset / 4096))
            .args(["conv=sparse", "status=none"])
            .status()
            .unwrap();
        assert!(st.success());
        return (
            Image {
                _dir: dir,
                path: out,
            },
            s,
        );
    }
    (Image { _dir: dir, path }, s)
}

fn fsck(img: &Path) {
    let tool = testkit::require_tool("e2fsck", "e2fsprogs");
    let out = Command::new(tool).args(["-fn"]).arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn failed ({:?}):\n{text}",
        out.status.code()
    );
}

fn debugfs(img: &Path, cmd: &str) -> String {
    let tool = testkit::require_tool("debugfs", "e2fsprogs");
    let out = Command::new(tool)
        .arg("-R")
        .arg(cmd)
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs debugfs commands in one batch; returns each command's output.
fn debugfs_batch(img: &Path, cmds: &[String]) -> Vec<String> {
    use std::io::Write;
    let tool = testkit::require_tool("debugfs", "e2fsprogs");
    let mut child = Command::new(tool)
        .arg("-f")
        .arg("-")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = cmds.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let parts: Vec<String> = stdout
        .split("debugfs: ")
        .skip(1)
        .map(|p| p.split_once('\n').map_or("", |x| x.1).to_string())
        .collect();
    assert_eq!(
        parts.len(),
        cmds.len(),
        "debugfs output:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parts
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in\n{text}"))
        + key.len();
    text[at..].split_whitespace().next().unwrap()
}

fn type_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir(_) => "directory",
        Kind::File(_) => "regular",
        Kind::Symlink(_) => "symlink",
        Kind::CharDevice { .. } => "character",
        Kind::BlockDevice { .. } => "block",
        Kind::Fifo => "FIFO",
        Kind::Socket => "socket",
    }
}

/// Compares every entry of the tree with what debugfs reads from the image.
fn round_trip(t: &Tree, img: &Path) {
    let entries: Vec<_> = t.walk().collect();
    let counts = t.link_counts();
    let p = |e: &d2v::tree::WalkEntry| format!("\"/{}\"", String::from_utf8_lossy(&e.path));
    let stats = debugfs_batch(
        img,
        &entries
            .iter()
            .map(|e| format!("stat {}", p(e)))
            .collect::<Vec<_>>(),
    );
    let mut ino_of = BTreeMap::new();
    for (e, st) in entries.iter().zip(&stats) {
        let inode = t.inode(e.id);
        let what = format!("/{}:\n{st}", String::from_utf8_lossy(&e.path));
        assert_eq!(field(st, "Type:"), type_name(&inode.kind), "{what}");
        assert_eq!(
            u32::from_str_radix(field(st, "Mode:"), 8).unwrap(),
            inode.meta.mode,
            "{what}"
        );
        assert_eq!(
            field(st, "User:").parse::<u32>().unwrap(),
            inode.meta.uid,
            "{what}"
        );
        assert_eq!(
            field(st, "Group:").parse::<u32>().unwrap(),
            inode.meta.gid,
            "{what}"
        );
        let mut links = counts[e.id as usize];
        if e.id == d2v::tree::ROOT && t.lookup(b"lost+found").is_none() {
            links += 1;
        }
        assert_eq!(
            field(st, "Links:").parse::<u32>().unwrap(),
            if inode.kind.is_dir() && links > 65000 {
                1
            } else {
                links
            },
            "{what}"
        );
        let mtime = field(st, "mtime:");
        let (sec, extra) = mtime.trim_start_matches("0x").split_once(':').unwrap();
        assert_eq!(
            u32::from_str_radix(sec, 16).unwrap(),
            inode.meta.mtime.sec as u32,
            "{what}"
        );
        assert_eq!(
            u32::from_str_radix(extra, 16).unwrap() >> 2,
            inode.meta.mtime.nsec,
            "{what}"
        );
        let ino: u32 = field(st, "Inode:").parse().unwrap();
        assert_eq!(
            *ino_of.entry(e.id).or_insert(ino),
            ino,
            "hardlinks share the inode: {what}"
        );
        match &inode.kind {
            Kind::File(fd) => {
                assert_eq!(field(st, "Size:").parse::<u64>().unwrap(), fd.len, "{what}")
            }
            Kind::Symlink(target) => assert_eq!(
                field(st, "Size:").parse::<usize>().unwrap(),
                target.len(),
                "{what}"
            ),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                let hex = field(st, "(hex").trim_end_matches(')');
                let (a, b) = hex.split_once(':').unwrap();
                assert_eq!(
                    (
                        u32::from_str_radix(a, 16).unwrap(),
                        u32::from_str_radix(b, 16).unwrap()
                    ),
                    (*major, *minor),
                    "{what}"
                );
            }
            _ => {}
        }
    }
    // Contents and link targets through rdump.
    let out = tempfile::tempdir().unwrap();
    debugfs(img, &format!("rdump / {}", out.path().display()));
    for e in &entries {
        let host = out.path().join(OsStr::from_bytes(&e.path));
        match &t.inode(e.id).kind {
            Kind::File(fd) => {
                let mut want = Vec::new();
                std::io::Read::read_to_end(&mut t.spill().reader(fd), &mut want).unwrap();
                assert!(
                    std::fs::read(&host).unwrap() == want,
                    "contents of {}",
                    host.display()
                );
            }
            Kind::Symlink(target) => assert_eq!(
                std::fs::read_link(&host).unwrap().as_os_str().as_bytes(),
                &target[..]
            ),
            Kind::Dir(_) => assert!(host.is_dir(), "{}", host.display()),
            _ => {}
        }
    }
    // Extended attributes, byte for byte.
    let mut cmds = Vec::new();
    let mut want = Vec::new();
    for e in &entries {
        for (i, (name, value)) in t.inode(e.id).meta.xattrs.iter().enumerate() {
            let f = out.path().join(format!("xattr-{}-{i}", e.id));
            cmds.push(format!(
                "ea_get -f {} {} {}",
                f.display(),
                p(e),
                String::from_utf8_lossy(name)
            ));
            want.push((f, value.clone(), String::from_utf8_lossy(name).into_owned()));
        }
    }
    if !cmds.is_empty() {
        debugfs_batch(img, &cmds);
        for (f, value, name) in want {
            let got = std::fs::read(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.starts_with("system.posix_acl") {
                assert_eq!(acl_ids_zeroed(&got), acl_ids_zeroed(&value), "xattr {name}");
            } else {
                assert_eq!(got, value, "xattr {name}");
            }
        }
    }
}

/// ext4 stores no id for the owner, group, mask and other ACL entries; debugfs reads them
/// back as 0 where the kernel says -1.
fn acl_ids_zeroed(v: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    for e in v[4..].chunks_mut(8) {
        if [1, 4, 0x10, 0x20].contains(&u16::from_le_bytes([e[0], e[1]])) {
            e[4..8].fill(0);
        }
    }
    v
}

fn full_tree() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"", Inode::dir(meta(0o755, 0, 0))).unwrap();
    add_file(&mut t, "etc/hostname", b"d2v\n", meta(0o644, 0, 0));
    add_file(&mut t, "etc/empty", b"", meta(0o600, 1000, 1000));
    let mut big = vec![0u8; 3 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    big[1 << 20..2 << 20].fill(0); // a hole in the middle
    add_file(&mut t, "usr/lib/big.bin", &big, meta(0o644, 0, 0));
    // Many data islands: more than four extents, so an extent block.
    let mut islands = vec![0u8; 64 * 1024 * 2 * 40];
    for k in 0..40 {
        islands[k * 128 * 1024..k * 128 * 1024 + 64 * 1024].fill(k as u8 + 1);
    }
    add_file(&mut t, "usr/lib/islands", &islands, meta(0o644, 0, 0));
    let mut cap = meta(0o755, 0, 0);
    cap.xattrs.insert(
        b"security.capability".to_vec(),
        vec![
            1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    add_file(&mut t, "usr/bin/ping", b"\x7fELF", cap);
    let mut setuid = meta(0o4755, 0, 0);
    setuid.xattrs.insert(b"user.big".to_vec(), vec![b'x'; 1000]);
    setuid
        .xattrs
        .insert(b"trusted.small".to_vec(), b"v".to_vec());
    setuid.xattrs.insert(b"user.empty".to_vec(), Vec::new());
    add_file(&mut t, "usr/bin/su", b"su", setuid);
    add_file(&mut t, "home/u/file", b"mine", meta(0o640, 70000, 80000));
    t.insert(b"home/u", Inode::dir(meta(0o1777, 70000, 80000)))
        .unwrap();
    t.hardlink(b"usr/bin/su2", b"usr/bin/su").unwrap();
    t.hardlink(b"etc/hostname.link", b"etc/hostname").unwrap();
    t.insert(
        b"lib",
        Inode {
            meta: meta(0o777, 0, 0),
            kind: Kind::Symlink(b"usr/lib".to_vec()),
        },
    )
    .unwrap();
    let long = vec![b'l'; 200];
    t.insert(
        b"longlink",
        Inode {
            meta: meta(0o777, 0, 0),
            kind: Kind::Symlink(long),
        },
    )
    .unwrap();
    t.hardlink(b"lib2", b"lib").unwrap();
    t.insert(
        b"dev/null",
        Inode {
            meta: meta(0o666, 0, 0),
            kind: Kind::CharDevice { major: 1, minor: 3 },
        },
    )
    .unwrap();
    t.insert(
        b"dev/sda",
        Inode {
            meta: meta(0o660, 0, 6),
            kind: Kind::BlockDevice { major: 8, minor: 0 },
        },
    )
    .unwrap();
    t.insert(
        b"dev/odd",
        Inode {
            meta: meta(0o600, 0, 0),
            kind: Kind::CharDevice {
                major: 300,
                minor: 70000,
            },
        },
    )
    .unwrap();
    t.insert(
        b"run/fifo",
        Inode {
            meta: meta(0o644, 0, 0),
            kind: Kind::Fifo,
        },
    )
    .unwrap();
    t.insert(
        b"run/sock",
        Inode {
            meta: meta(0o755, 0, 0),
            kind: Kind::Socket,
        },
    )
    .unwrap();
    let mut acl = meta(0o750, 0, 0);
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1000),
        (4, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    acl.xattrs.insert(b"system.posix_acl_access".to_vec(), v);
    t.insert(b"srv", Inode::dir(acl)).unwrap();
    let mut old = meta(0o644, 0, 0);
    old.mtime = Timestamp {
        sec: 4_200_000_000,
        nsec: 999_999_999,
    }; // past 2038
    add_file(&mut t, "srv/future", b"f", old);
    t
}

#[test]
fn every_kind_round_trips_and_fsck_is_clean() {
    let t = full_tree();
    let (img, s) = write_image(&t, &opts(), 0);
    fsck(&img.path);
    round_trip(&t, &img.path);
    // Inodes 1-11 are reserved (root 2, journal 8, lost+found 11); hardlinks share one.
    let distinct: std::collections::BTreeSet<u32> = t.walk().skip(1).map(|e| e.id).collect();
    assert_eq!(s.free_inodes, s.inodes - 11 - distinct.len() as u64);
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
fn dir_with_100000_entries_is_indexed() {
    let mut t = Tree::in_temp().unwrap();
    for i in 0..100_000 {
        t.insert(
            format!("d/entry-{i:06}-with-a-longer-name").as_bytes(),
            Inode {
                meta: meta(0o644, 0, 0),
                kind: Kind::Fifo,
            },
        )
        .unwrap();
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

/// Loads a host directory into a tree (regular files, directories, symlinks; owner and mode).
fn load_host_dir(t: &mut Tree, root: &Path, rel: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let md = e.metadata().unwrap();
        let path = rel.join(e.file_name());
        let m = Metadata {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: Timestamp {
                sec: md.mtime(),
                nsec: md.mtime_nsec() as u32,
            },
            xattrs: BTreeMap::new(),
        };
        let key = path.as_os_str().as_bytes();
        if md.is_dir() {
            t.insert(key, Inode::dir(m)).unwrap();
            load_host_dir(t, root, &path);
        } else if md.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            t.insert(
                key,
                Inode {
                    meta: m,
                    kind: Kind::Symlink(target.as_os_str().as_bytes().to_vec()),
                },
            )
            .unwrap();
        } else if md.is_file() {
            let fd = t.store(&mut File::open(e.path()).unwrap()).unwrap();
            t.insert(
                key,
                Inode {
                    meta: m,
                    kind: Kind::File(fd),
                },
            )
            .unwrap();
        }
    }
}

/// `D2V_BENCH_DIR=/usr/share cargo test --release --test ext4 bench -- --ignored --nocapture`:
/// d2v's writer against `mke2fs -d` on the same directory, both into a sparse file.
#[test]
#[ignore]
fn bench_against_mke2fs() {
    let dir = PathBuf::from(std::env::var_os("D2V_BENCH_DIR").expect("set D2V_BENCH_DIR"));
    let mut t = Tree::in_temp().unwrap();
    load_host_dir(&mut t, &dir, Path::new(""));
    let tmp = tempfile::tempdir().unwrap();
    let o = opts();
    let size = ext4::plan_size(&t, &o).unwrap();
    let start = std::time::Instant::now();
    let f = File::create(tmp.path().join("d2v.img")).unwrap();
    let s = ext4::write(&t, &f, 0, &o).unwrap();
    f.sync_all().unwrap();
    let ours = start.elapsed();
    fsck(&tmp.path().join("d2v.img"));
    let img = tmp.path().join("mke2fs.img");
    File::create(&img).unwrap().set_len(size).unwrap();
    let start = std::time::Instant::now();
    let st = Command::new(testkit::require_tool("mke2fs", "e2fsprogs"))
        .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard", "-d"])
        .arg(&dir)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    File::open(&img).unwrap().sync_all().unwrap();
    let theirs = start.elapsed();
    eprintln!(
        "size {} MiB, {} inodes used: d2v {ours:?}, mke2fs -d {theirs:?}",
        size >> 20,
        s.inodes - s.free_inodes
    );
}

/// libext2fs (debugfs -w) modifies the image like a kernel would: new files and directories,
/// including in a hashed directory, unlinks; the result must still be clean.
#[test]
fn writable_by_libext2fs_after_writing() {
    let mut t = full_tree();
    for i in 0..3000 {
        t.insert(
            format!("big/entry-{i:05}").as_bytes(),
            Inode {
                meta: meta(0o644, 0, 0),
                kind: Kind::Fifo,
            },
        )
        .unwrap();
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

/// A real kernel mounts the image read-write, reads and changes it, unmounts; then e2fsck must
/// still find it clean. Needs an extracted Debian kernel package (`dpkg-deb -x
/// linux-image-*-cloud-amd64*.deb DIR`) in `D2V_TEST_KERNEL_DIR`, a static busybox, cpio and
/// QEMU: `D2V_TEST_KERNEL_DIR=DIR cargo test --test ext4 kernel -- --ignored`.
#[test]
#[ignore]
fn kernel_mounts_read_write() {
    let kdir =
        PathBuf::from(std::env::var_os("D2V_TEST_KERNEL_DIR").expect("set D2V_TEST_KERNEL_DIR"));
    let find = |dir: &Path, prefix: &str| -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap()
    };
    let vmlinuz = find(&kdir.join("boot"), "vmlinuz-");
    let moddir = find(&kdir.join("lib/modules"), "");
    let busybox = testkit::require_tool("busybox", "busybox-static");
    let cpio = testkit::require_tool("cpio", "cpio");
    let qemu = testkit::require_tool("qemu-system-x86_64", "qemu-system-x86");

    let mut t = full_tree();
    for i in 0..3000 {
        t.insert(
            format!("big/entry-{i:05}").as_bytes(),
            Inode {
                meta: meta(0o644, 0, 0),
                kind: Kind::Fifo,
            },
        )
        .unwrap();
    }
    // Two-level hashed index: more than 507 leaf blocks.
    for i in 0..50_000 {
        let name = format!("huge/a-rather-long-name-to-fill-leaves-{i:06}");
        let fifo = Inode {
            meta: meta(0o644, 0, 0),
            kind: Kind::Fifo,
        };
        t.insert(name.as_bytes(), fifo).unwrap();
    }
    let (img, _) = write_image(&t, &opts(), 0);
    assert!(debugfs(&img.path, "htree_dump /huge").contains("Indirect levels: 1"));
    // The disk grows by 3 GiB (a VM disk expanded): the guest resizes online.
    let fs_size = std::fs::metadata(&img.path).unwrap().len();
    File::options()
        .write(true)
        .open(&img.path)
        .unwrap()
        .set_len(fs_size + (3 << 30))
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("initrd");
    for d in ["bin", "m", "proc", "sys", "dev", "mnt"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    // resize2fs and its libraries, as the host has them.
    let resize2fs = testkit::require_tool("resize2fs", "e2fsprogs");
    let ldd = Command::new("ldd").arg(&resize2fs).output().unwrap();
    let mut files = vec![resize2fs.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    let mods = [
        "virtio",
        "virtio_ring",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "virtio_blk",
    ];
    for m in mods {
        let found = Command::new("find")
            .arg(&moddir)
            .args(["-name", &format!("{m}.ko")])
            .output()
            .unwrap();
        let p = String::from_utf8(found.stdout).unwrap();
        std::fs::copy(
            p.lines().next().unwrap_or_else(|| panic!("module {m}")),
            root.join(format!("m/{m}.ko")),
        )
        .unwrap();
    }
    let script = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in {mods}; do insmod /m/$m.ko; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 1; done
mount -t ext4 -o rw,errors=remount-ro /dev/vda /mnt && echo D2V-MOUNT-OK
cat /mnt/etc/hostname.link
echo "BIG $(md5sum /mnt/usr/lib/big.bin | cut -d' ' -f1)"
echo "COUNT $(ls /mnt/big | wc -l)"
echo "OWNER $(stat -c '%a %u %g' /mnt/home/u/file)"
echo "DEV $(stat -c '%t %T' /mnt/dev/sda)"
readlink /mnt/longlink | wc -c
echo new > /mnt/new.txt && mkdir /mnt/big/newdir && for i in $(seq 1 2000); do touch /mnt/big/x$i; done
rm /mnt/big/entry-00001 && mv /mnt/big/entry-00002 /mnt/moved && rm -r /mnt/usr/lib/islands
echo "HUGE $(ls /mnt/huge | wc -l) $(stat -c %F /mnt/huge/a-rather-long-name-to-fill-leaves-031337)"
touch /mnt/huge/new && rm /mnt/huge/a-rather-long-name-to-fill-leaves-000042 && rm /mnt/usr/bin/su /mnt/usr/bin/su2
dd if=/dev/urandom of=/mnt/random bs=1M count=20 2>/dev/null && sync
echo "AFTER $(ls /mnt/big | wc -l)"
BEFORE=$(df -k /mnt | tail -1 | awk '{{print $2}}')
/usr/sbin/resize2fs /dev/vda >/dev/null 2>&1 || echo RESIZE-FAILED
AFTER=$(df -k /mnt | tail -1 | awk '{{print $2}}')
[ $((AFTER - BEFORE)) -gt 3000000 ] && echo D2V-GREW-ONLINE
umount /mnt && echo D2V-UMOUNT-OK
dmesg | grep -i -E 'ext4|jbd2' | grep -v 'mounted filesystem\|unmounting'
echo D2V-DONE
poweroff -f
"#,
        mods = mods.join(" ")
    );
    std::fs::write(root.join("init"), script).unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = work.path().join("initrd.cpio");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | {} -o -H newc --quiet > {}",
            root.display(),
            cpio.display(),
            initrd.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("timeout")
        .arg("300")
        .arg(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-drive"])
        .arg(format!("file={},format=raw,if=virtio", img.path.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("D2V-MOUNT-OK") && log.contains("D2V-UMOUNT-OK") && log.contains("D2V-DONE"),
        "{log}"
    );
    let mut want = Vec::new();
    std::io::Read::read_to_end(
        &mut t
            .spill()
            .reader(match &t.inode(t.lookup(b"usr/lib/big.bin").unwrap()).kind {
                Kind::File(fd) => fd,
                _ => unreachable!(),
            }),
        &mut want,
    )
    .unwrap();
    let md5 = Command::new("sh")
        .arg("-c")
        .arg("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut md5.stdin.as_ref().unwrap(), &want).unwrap();
    let sum = String::from_utf8(md5.wait_with_output().unwrap().stdout).unwrap();
    for line in [
        "d2v",
        &format!("BIG {}", sum.split_whitespace().next().unwrap()),
        "COUNT 3000",
        "OWNER 640 70000 80000",
        "DEV 8 0",
        "201",
        "AFTER 4999",
        "HUGE 50000 fifo",
        "D2V-GREW-ONLINE",
    ] {
        assert!(
            log.lines().any(|l| l.trim() == line),
            "missing {line:?} in\n{log}"
        );
    }
    assert!(
        !log.contains("EXT4-fs error") && !log.contains("EXT4-fs warning"),
        "{log}"
    );
    fsck(&img.path);
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
        t.insert(
            format!("c/{n}").as_bytes(),
            Inode {
                meta: meta(0o644, 0, 0),
                kind: Kind::Fifo,
            },
        )
        .unwrap();
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
