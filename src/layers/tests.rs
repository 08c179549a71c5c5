use super::*;
use crate::tree::testing::from_layers as layers;
use crate::tree::{InodeId, ROOT};
use testkit::tar::{tar, unterminated, Entry};

fn apply(tree: &mut Tree, entries: &[Entry]) -> Result<(), LayerError> {
    apply_layer(tree, &mut &tar(entries)[..], "sha256:test")
        .map(|note| assert_eq!(note, Applied::default()))
}

fn paths(t: &Tree) -> Vec<String> {
    t.walk().skip(1).map(|e| show(&e.path)).collect()
}

fn id(t: &Tree, p: &str) -> InodeId {
    t.lookup(p.as_bytes())
        .unwrap_or_else(|| panic!("{p} missing"))
}

fn read(t: &Tree, p: &str) -> Vec<u8> {
    let Kind::File(fd) = &t.inode(id(t, p)).kind else {
        panic!("{p} is not a file")
    };
    let mut out = Vec::new();
    t.spill().reader(fd).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn whiteout_deletes_lower_entry_and_its_children() {
    let t = layers(&[
        &[
            Entry::file("a/x", "1"),
            Entry::file("a/d/y", "2"),
            Entry::file("keep", "k"),
        ],
        &[
            Entry::whiteout("a/x"),
            Entry::whiteout("a/d"),
            Entry::whiteout("nothere"),
        ],
    ]);
    assert_eq!(paths(&t), ["a", "keep"]);
}

#[test]
fn whiteout_spares_same_layer_entry_wherever_it_sits() {
    // Whiteout after the layer's own entry, and before it.
    let t = layers(&[
        &[Entry::file("f", "old"), Entry::file("g", "old")],
        &[
            Entry::file("f", "new"),
            Entry::whiteout("f"),
            Entry::whiteout("g"),
            Entry::file("g", "new"),
        ],
    ]);
    assert_eq!(read(&t, "f"), b"new");
    assert_eq!(read(&t, "g"), b"new");
}

#[test]
fn whiteout_of_dir_merged_by_same_layer_keeps_only_own_children() {
    let t = layers(&[
        &[Entry::dir("d").mode(0o700), Entry::file("d/lower", "l")],
        &[Entry::file("d/upper", "u"), Entry::whiteout("d")],
    ]);
    assert_eq!(paths(&t), ["d", "d/upper"]);
    // Lower d is gone: d is a fresh implicit parent.
    assert_eq!(t.inode(id(&t, "d")).meta.mode, 0o755);
}

#[test]
fn opaque_hides_lower_children_but_not_own_entries() {
    for opaque_first in [true, false] {
        let mut upper = vec![
            Entry::dir("d").mode(0o750),
            Entry::file("d/new", "n"),
            Entry::file("d/sub/deep", "x"),
        ];
        if opaque_first {
            upper.insert(0, Entry::opaque("d"));
        } else {
            upper.push(Entry::opaque("d"));
        }
        let t = layers(&[
            &[
                Entry::file("d/old", "o"),
                Entry::file("d/sub/lower", "l"),
                Entry::file("other", "z"),
            ],
            &upper,
        ]);
        assert_eq!(
            paths(&t),
            ["d", "d/new", "d/sub", "d/sub/deep", "other"],
            "opaque first: {opaque_first}"
        );
        assert_eq!(t.inode(id(&t, "d")).meta.mode, 0o750);
    }
}

#[test]
fn other_type_replaces_earlier_entry() {
    let t = layers(&[
        &[
            Entry::file("a", "f"),
            Entry::dir("b"),
            Entry::file("b/c", "x"),
            Entry::symlink("s", "/a"),
        ],
        &[
            Entry::dir("a"),
            Entry::symlink("b", "a"),
            Entry::file("s", "now a file"),
        ],
    ]);
    assert!(t.inode(id(&t, "a")).kind.is_dir());
    assert_eq!(
        t.inode(id(&t, "b")).kind,
        Kind::Symlink(b"a".to_vec().into())
    );
    assert_eq!(read(&t, "s"), b"now a file");
    assert_eq!(paths(&t), ["a", "b", "s"]);
}

#[test]
fn missing_parents_are_created() {
    let t = layers(&[&[Entry::file("usr/share/doc/x", "1")]]);
    assert_eq!(
        paths(&t),
        ["usr", "usr/share", "usr/share/doc", "usr/share/doc/x"]
    );
    let m = &t.inode(id(&t, "usr/share")).meta;
    assert_eq!((m.mode, m.uid, m.gid), (0o755, 0, 0));
}

#[test]
fn hardlink_within_layer() {
    let t = layers(&[&[
        Entry::file("bin/a", "data"),
        Entry::hardlink("bin/b", "bin/a"),
    ]]);
    assert_eq!(id(&t, "bin/a"), id(&t, "bin/b"));
    assert_eq!(t.link_counts()[id(&t, "bin/a")], 2);
}

#[test]
fn hardlink_to_lower_layer_file() {
    let t = layers(&[
        &[Entry::file("bin/a", "data")],
        &[Entry::hardlink("bin/b", "./bin/a")],
    ]);
    assert_eq!(id(&t, "bin/a"), id(&t, "bin/b"));
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let t = layers(&[&[Entry::symlink("s", "target"), Entry::hardlink("s2", "s")]]);
    assert_eq!(id(&t, "s"), id(&t, "s2"));
    assert_eq!(
        t.inode(id(&t, "s2")).kind,
        Kind::Symlink(b"target".to_vec().into())
    );
}

#[test]
fn hardlink_survives_deletion_of_original() {
    let t = layers(&[
        &[Entry::file("a", "data"), Entry::hardlink("b", "a")],
        &[Entry::whiteout("a")],
        &[Entry::hardlink("c", "b")],
    ]);
    assert_eq!(paths(&t), ["b", "c"]);
    assert_eq!(read(&t, "c"), b"data");
    assert_eq!(t.link_counts()[id(&t, "b")], 2);
}

#[test]
fn ownership_and_all_mode_bits() {
    let t = layers(&[&[
        Entry::file("suid", "x").mode(0o4755).owner(0, 0),
        Entry::file("sgid", "x").mode(0o2711).owner(1000, 100),
        Entry::dir("tmp").mode(0o1777),
        Entry::file("big", "x").owner(2_000_000, 65534),
    ]]);
    let m = |p| t.inode(id(&t, p)).meta.clone();
    assert_eq!(m("suid").mode, 0o4755);
    assert_eq!(
        (m("sgid").mode, m("sgid").uid, m("sgid").gid),
        (0o2711, 1000, 100)
    );
    assert_eq!(m("tmp").mode, 0o1777);
    assert_eq!(t.inode(id(&t, "tmp")).st_mode(), 0o41777);
    assert_eq!((m("big").uid, m("big").gid), (2_000_000, 65534));
}

#[test]
fn mtimes_with_pax_fractions() {
    let t = layers(&[&[
        Entry::file("plain", "x").mtime(1_600_000_000, None),
        Entry::file("frac", "x").mtime(1_600_000_000, Some(123_456_789)),
    ]]);
    let m = |p| t.inode(id(&t, p)).meta.mtime;
    assert_eq!(
        m("plain"),
        Timestamp {
            sec: 1_600_000_000,
            nsec: 0
        }
    );
    assert_eq!(
        m("frac"),
        Timestamp {
            sec: 1_600_000_000,
            nsec: 123_456_789
        }
    );
}

#[test]
fn pax_time_parsing() {
    let p = |s: &str| parse_pax_time(s.as_bytes());
    assert_eq!(p("12"), Some(Timestamp { sec: 12, nsec: 0 }));
    assert_eq!(
        p("12.5"),
        Some(Timestamp {
            sec: 12,
            nsec: 500_000_000
        })
    );
    assert_eq!(p("12.0000000019"), Some(Timestamp { sec: 12, nsec: 1 }));
    assert_eq!(
        p("-1.25"),
        Some(Timestamp {
            sec: -2,
            nsec: 750_000_000
        })
    );
    assert_eq!(p("-3"), Some(Timestamp { sec: -3, nsec: 0 }));
    assert_eq!(p("1e9"), None);
    assert_eq!(p(""), None);
    assert_eq!(p(".5"), None);
}

#[test]
fn xattrs_from_schily_records() {
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let t = layers(&[&[Entry::file("ping", "x")
        .xattr("security.capability", cap)
        .xattr("user.note", "hello")]]);
    let x = &t.inode(id(&t, "ping")).meta.xattrs;
    assert_eq!(x.get(b"security.capability".as_slice()).unwrap(), cap);
    assert_eq!(x.get(b"user.note".as_slice()).unwrap(), b"hello");
    assert_eq!(x.len(), 2);
}

#[test]
fn xattrs_no_linux_filesystem_stores_are_dropped_with_a_warning() {
    let mut t = Tree::in_temp().unwrap();
    let layer = tar(&[
        Entry::file("a", "x")
            .xattr("com.apple.provenance", "m")
            .xattr("user.keep", "k"),
        Entry::file("b", "y").xattr("system.nfs4_acl", "n"),
        Entry::file("c", "z").xattr("system.posix_acl_access", "\x02\0\0\0"),
    ]);
    let applied = apply_layer(&mut t, &mut &layer[..], "sha256:mac").unwrap();
    let a = &t.inode(id(&t, "a")).meta.xattrs;
    assert_eq!(
        (a.len(), a.get(b"user.keep".as_slice()).map(Vec::as_slice)),
        (1, Some(&b"k"[..]))
    );
    assert!(t.inode(id(&t, "b")).meta.xattrs.is_empty());
    assert_eq!(t.inode(id(&t, "c")).meta.xattrs.len(), 1);
    let warnings = applied.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.contains("sha256:mac") && w.contains("com.apple.provenance") && w.contains("and 1 more"),
        "{w}"
    );
}

#[test]
fn empty_pax_values_delete_the_record() {
    let t = layers(&[&[Entry::file("f", "x")
        .mtime(5, Some(7))
        .xattr("user.a", "1")
        .xattr("user.a", "")
        .xattr("user.b", "")]]);
    assert!(t.inode(id(&t, "f")).meta.xattrs.is_empty());
    let mut raw = testkit::tar::pax_record(b"mtime", b"");
    raw.extend(testkit::tar::pax_record(b"SCHILY.xattr.user.c", b"v"));
    let mut data = Vec::new();
    data.extend(tar(&[Entry::file("PaxHeader", raw)])); // an 'x' header built by hand below
    let flag = 156;
    data[flag] = b'x';
    let sum: u32 = data[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    data[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    data.truncate(data.len() - 1024);
    data.extend(tar(&[Entry::file("g", "y").mtime(42, None)]));
    let mut t = Tree::in_temp().unwrap();
    apply_layer(&mut t, &mut &data[..], "l").unwrap();
    let m = &t.inode(id(&t, "g")).meta;
    assert_eq!(m.mtime, Timestamp { sec: 42, nsec: 0 });
    assert_eq!(
        m.xattrs.get(b"user.c".as_slice()).map(Vec::as_slice),
        Some(b"v".as_slice())
    );
}

#[test]
fn devices_and_fifos() {
    let t = layers(&[&[
        Entry::char_dev("dev/null", 1, 3).mode(0o666),
        Entry::block_dev("dev/sda", 8, 0),
        Entry::fifo("run/p"),
    ]]);
    assert_eq!(
        t.inode(id(&t, "dev/null")).kind,
        Kind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!(t.inode(id(&t, "dev/null")).meta.mode, 0o666);
    assert_eq!(
        t.inode(id(&t, "dev/sda")).kind,
        Kind::BlockDevice { major: 8, minor: 0 }
    );
    assert_eq!(t.inode(id(&t, "run/p")).kind, Kind::Fifo);
}

#[test]
fn long_names_and_link_names_pax_and_gnu() {
    let long_dir = "d/".to_string() + &"x".repeat(150);
    for gnu in [false, true] {
        let e = |e: Entry| if gnu { e.gnu() } else { e };
        let t = layers(&[&[
            e(Entry::file(format!("{long_dir}/file"), "data")),
            e(Entry::symlink("s", format!("/{long_dir}/file"))),
            e(Entry::hardlink(
                format!("{long_dir}/link"),
                format!("{long_dir}/file"),
            )),
        ]]);
        assert_eq!(read(&t, &format!("{long_dir}/file")), b"data");
        assert_eq!(
            t.inode(id(&t, "s")).kind,
            Kind::Symlink(format!("/{long_dir}/file").into_bytes().into())
        );
        assert_eq!(
            id(&t, &format!("{long_dir}/link")),
            id(&t, &format!("{long_dir}/file")),
            "gnu: {gnu}"
        );
    }
}

#[test]
fn non_utf8_and_unicode_names() {
    let t = layers(&[&[
        Entry::file(b"caf\xe9", "latin1"),
        Entry::file("日本/ünï.txt", "u"),
    ]]);
    assert_eq!(t.walk().nth(1).unwrap().path, b"caf\xe9");
    assert!(t.lookup(b"caf\xe9").is_some());
    assert_eq!(read(&t, "日本/ünï.txt"), b"u");
}

#[test]
fn dot_slash_prefixes_and_root_entry() {
    let t = layers(&[&[
        Entry::dir("./").mode(0o700),
        Entry::dir("./etc/"),
        Entry::file("./etc/hosts", "h"),
        Entry::file("/abs", "a"),
    ]]);
    assert_eq!(paths(&t), ["abs", "etc", "etc/hosts"]);
    assert_eq!(t.inode(ROOT).meta.mode, 0o700);
}

#[test]
fn dotdot_is_refused_naming_layer_and_path() {
    for bad in [
        Entry::file("a/../../etc/passwd", "x"),
        Entry::hardlink("ok", "../outside"),
        Entry::file("d/.wh...", ""),
    ] {
        let mut t = Tree::in_temp().unwrap();
        let err = apply(&mut t, std::slice::from_ref(&bad)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LayerError::UnsafePath { .. }), "{msg}");
        assert!(msg.contains("sha256:test"), "{msg}");
        assert!(
            msg.contains(&show(&bad.path)) || msg.contains("outside"),
            "{msg}"
        );
    }
}

#[test]
fn symlinked_parents_resolve_inside_the_tree() {
    // usr-merge: lib -> usr/lib, abs -> /usr/lib, esc -> ../../../usr (clamped at the root).
    let mut t = layers(&[&[
        Entry::file("usr/lib/ld.so", "ld"),
        Entry::file("usr/lib/gone", "g"),
        Entry::symlink("lib", "usr/lib"),
        Entry::symlink("abs", "/usr/lib"),
        Entry::symlink("esc", "../../../usr"),
    ]]);
    apply(
        &mut t,
        &[
            Entry::file("lib/new", "1"),
            Entry::file("abs/new-abs", "2"),
            Entry::file("esc/lib/new-esc", "3"),
            Entry::whiteout("lib/gone"),
            Entry::hardlink("hl", "lib/ld.so"),
        ],
    )
    .unwrap();
    assert_eq!(
        paths(&t),
        [
            "abs",
            "esc",
            "hl",
            "lib",
            "usr",
            "usr/lib",
            "usr/lib/ld.so",
            "usr/lib/new",
            "usr/lib/new-abs",
            "usr/lib/new-esc"
        ]
    );
    assert_eq!(id(&t, "hl"), id(&t, "usr/lib/ld.so"));
    assert_eq!(
        t.resolve_path(b"esc/lib/x", false).unwrap().path,
        b"usr/lib/x"
    );
}

#[test]
fn an_entrys_own_name_is_never_followed() {
    // The last component is data: a file or directory entry replaces the symlink itself, a
    // whiteout removes the symlink, a hardlink to a symlink links the symlink.
    let t = layers(&[
        &[
            Entry::file("real/f", "f"),
            Entry::symlink("s1", "real/f"),
            Entry::symlink("s2", "real"),
            Entry::symlink("s3", "real"),
        ],
        &[
            Entry::file("s1", "replaced"),
            Entry::dir("s2"),
            Entry::whiteout("s3"),
            Entry::hardlink("h", "s1"),
        ],
    ]);
    assert_eq!(read(&t, "real/f"), b"f");
    assert_eq!(read(&t, "s1"), b"replaced");
    assert!(t.inode(id(&t, "s2")).kind.is_dir());
    assert!(t.lookup(b"s3").is_none() && t.lookup(b"real").is_some());
}

#[test]
fn symlink_loops_are_an_error() {
    let mut t = layers(&[&[Entry::symlink("a", "b"), Entry::symlink("b", "a")]]);
    let err = apply(&mut t, &[Entry::file("a/x", "x")]).unwrap_err();
    assert!(matches!(err, LayerError::SymlinkLoop { .. }), "{err}");
    assert!(
        err.to_string().contains("a/x") && err.to_string().contains("sha256:test"),
        "{err}"
    );
}

#[test]
fn reads_the_stream_to_its_end_and_reports_corruption() {
    let mut data = tar(&[Entry::file("a", "x")]);
    data.extend_from_slice(&[0u8; 4096]); // padding after the end blocks
    let mut r = &data[..];
    apply_layer(&mut Tree::in_temp().unwrap(), &mut r, "l").unwrap();
    assert!(r.is_empty());

    let mut bad = tar(&[Entry::file("a", "x")]);
    bad[148] ^= 1; // checksum
    let err = apply_layer(&mut Tree::in_temp().unwrap(), &mut &bad[..], "sha256:bad").unwrap_err();
    assert!(
        matches!(err, LayerError::Read { .. }) && err.to_string().contains("sha256:bad"),
        "{err}"
    );

    let truncated = &tar(&[Entry::file("a", vec![7u8; 2000])])[..1024];
    let err = apply_layer(&mut Tree::in_temp().unwrap(), &mut &truncated[..], "l").unwrap_err();
    assert!(matches!(err, LayerError::Truncated { .. }), "{err}");
}

#[test]
fn damaged_tars_give_errors_not_panics() {
    let long = "d/".to_string() + &"x".repeat(150);
    let good = tar(&[
        Entry::file(format!("{long}/f"), "data")
            .xattr("user.a", "b")
            .mtime(1, Some(5)),
        Entry::hardlink("h", format!("{long}/f")).gnu(),
        Entry::char_dev("c", 1, 2),
        Entry::whiteout("gone"),
        Entry::opaque("d"),
    ]);
    // Truncations anywhere, and single corrupted bytes in every header field region.
    for cut in (0..good.len()).step_by(97) {
        let _ = apply_layer(&mut Tree::in_temp().unwrap(), &mut &good[..cut], "t");
    }
    for pos in (0..good.len()).step_by(13) {
        for byte in [0u8, b'/', b'.', 0xff, b'9'] {
            let mut bad = good.clone();
            bad[pos] = byte;
            let _ = apply_layer(&mut Tree::in_temp().unwrap(), &mut &bad[..], "t");
            // The same with the block's checksum fixed, to get past the checksum test.
            let b = pos / 512 * 512;
            bad[b + 148..b + 156].fill(b' ');
            let sum: u32 = bad[b..b + 512].iter().map(|&x| x as u32).sum();
            bad[b + 148..b + 155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            let _ = apply_layer(&mut Tree::in_temp().unwrap(), &mut &bad[..], "t");
        }
    }
}

#[test]
fn base_layer_whiteouts_change_nothing() {
    // A base layer's whiteouts have no lower layer to hide: applied onto an empty tree they are
    // skipped (nothing is tracked); applied above an unrelated lower layer they must give the
    // same tree, by the tracking rules.
    let layer = [
        Entry::file("d/f", "1"),
        Entry::whiteout("d"),
        Entry::file("e/sub/g", "2"),
        Entry::opaque("e"),
        Entry::whiteout("e/sub/g"),
        Entry::whiteout("missing"),
    ];
    let base = layers(&[&layer]);
    let above = layers(&[&[Entry::file("zz", "lower")], &layer]);
    let without_lower: Vec<String> = paths(&above).into_iter().filter(|p| p != "zz").collect();
    assert_eq!(paths(&base), without_lower);
    assert_eq!(paths(&base), ["d", "d/f", "e", "e/sub", "e/sub/g"]);
    for p in ["d", "e", "e/sub"] {
        assert_eq!(
            base.inode(id(&base, p)).meta,
            above.inode(id(&above, p)).meta,
            "{p}"
        );
    }
}

#[test]
fn a_read_error_keeps_its_cause_printable() {
    use std::error::Error;
    let raw = io::Error::new(io::ErrorKind::InvalidData, "numeric field \u{1}\u{ff}x");
    let e = super::read_error("l", raw);
    let cause = e.source().unwrap().downcast_ref::<io::Error>().unwrap();
    assert_eq!(cause.kind(), io::ErrorKind::InvalidData);
    assert_eq!(cause.to_string(), "numeric field ??x");
    assert!(e.to_string().contains("numeric field ??x"), "{e}");
    // A printable cause is kept as it is, with what it carries.
    #[derive(Debug, thiserror::Error)]
    #[error("carried")]
    struct Carried;
    let e = super::read_error("l", io::Error::other(Carried));
    let cause = e.source().unwrap().downcast_ref::<io::Error>().unwrap();
    assert!(cause.get_ref().unwrap().is::<Carried>());
}

#[test]
fn all_nul_owner_fields_read_as_root() {
    // Some writers leave uid/gid all NUL; Go's archive/tar (umoci, containerd) reads them as
    // 0, so such layers and LinuxKit kernel.tar files exist.
    let mut h = tar::Header::new_ustar();
    h.set_path("lib/x").unwrap();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.as_old_mut().uid = [0; 8];
    h.as_old_mut().gid = [0; 8];
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[b'x'; 512][..]);
    tar.extend_from_slice(&[0; 1024]);
    let mut t = Tree::in_temp().unwrap();
    apply_layer(&mut t, &mut &tar[..], "l").unwrap();
    let id = t.lookup(b"lib/x").unwrap();
    assert_eq!((t.inode(id).meta.uid, t.inode(id).meta.gid), (0, 0));
}

#[test]
fn a_tar_ending_after_the_last_files_data_is_read_whole_with_a_warning() {
    let entries = [
        Entry::dir("etc"),
        Entry::file("etc/a", vec![7u8; 700]),
        Entry::file("etc/b", "hello world"),
    ];
    let short = unterminated(&entries);
    assert_eq!(short.len() % 512, 11);
    let mut t = Tree::in_temp().unwrap();
    let note = apply_layer(&mut t, &mut &short[..], "sha256:short")
        .unwrap()
        .unterminated
        .expect("a warning");
    assert_eq!(read(&t, "etc/b"), b"hello world");
    assert_eq!(read(&t, "etc/a"), vec![7u8; 700]);
    let note = note.to_string();
    assert!(
        note.contains("sha256:short") && note.contains("etc/b") && note.contains("padding"),
        "{note}"
    );
    // Part of the padding, or all of it but no end-of-archive blocks: read the same way.
    let full = tar(&entries);
    for end in [short.len() + 100, short.len() + 501] {
        let mut t = Tree::in_temp().unwrap();
        let note = apply_layer(&mut t, &mut &full[..end], "l").unwrap();
        assert!(note.unterminated.is_some(), "cut at {end}");
        assert_eq!(read(&t, "etc/b"), b"hello world");
    }
    let mut t = Tree::in_temp().unwrap();
    let note = apply_layer(&mut t, &mut &full[..full.len() - 1024], "l")
        .unwrap()
        .unterminated
        .expect("a warning")
        .to_string();
    assert!(
        note.contains("end-of-archive") && !note.contains("padding"),
        "{note}"
    );
    // A whole tar, and one that has only the first end-of-archive block: no warning.
    for end in [full.len(), full.len() - 512] {
        let note = apply_layer(&mut Tree::in_temp().unwrap(), &mut &full[..end], "l").unwrap();
        assert!(note.unterminated.is_none(), "{end}: {note:?}");
    }
    // A last entry without data (a directory, a symlink) needs no padding.
    let full = tar(&[Entry::file("f", "x"), Entry::symlink("s", "f")]);
    let t = &mut Tree::in_temp().unwrap();
    let note = apply_layer(t, &mut &full[..full.len() - 1024], "l").unwrap();
    assert!(note.unterminated.unwrap().to_string().contains("\"s\""));
}

#[test]
fn a_tar_cut_inside_a_header_or_data_is_an_error_naming_the_entry() {
    let entries = [
        Entry::file("etc/a", vec![7u8; 700]),
        Entry::file("etc/b", vec![8u8; 2000]),
    ];
    let full = tar(&entries);
    let b_header = 512 + 1024;
    let b_data = b_header + 512;
    let cases = [
        (b_data + 1999, "etc/b", "data"),
        (b_data + 1000, "etc/b", "data"),
        (b_data, "etc/b", "data"),
        (b_header + 100, "etc/a", "header"),
        (512 + 699, "etc/a", "data"),
        (300, "first", "header"),
    ];
    for (cut, entry, what) in cases {
        let err = apply_layer(
            &mut Tree::in_temp().unwrap(),
            &mut &full[..cut],
            "sha256:cut",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, LayerError::Truncated { .. })
                && text.contains("sha256:cut")
                && text.contains(entry)
                && text.contains(what),
            "cut at {cut}: {text}"
        );
    }
    // A cut inside a PAX header's records (before the entry it describes).
    let pax = tar(&[
        Entry::file("etc/a", "x"),
        Entry::file("etc/long", "y").xattr("user.k", "v".repeat(300)),
    ]);
    let err = apply_layer(
        &mut Tree::in_temp().unwrap(),
        &mut &pax[..1024 + 512 + 200],
        "l",
    )
    .unwrap_err();
    assert!(
        matches!(err, LayerError::Truncated { .. }) && err.to_string().contains("etc/a"),
        "{err}"
    );
}
