use super::*;
use crate::tree::testing::from_tars as tree_of;
use crate::tree::{show, Metadata, Timestamp};
use std::collections::BTreeMap;
use std::io::Read;
use testkit::tar::{tar, Entry};

fn rich_layers() -> Vec<Vec<u8>> {
    let long = "l/".to_string() + &"n".repeat(120);
    vec![
        tar(&[
            Entry::dir("./").mode(0o755),
            Entry::dir("etc"),
            Entry::file("etc/hosts", "127.0.0.1 localhost\n").mtime(1_600_000_000, Some(5)),
            Entry::file("bin/ping", vec![0x7fu8; 3000])
                .mode(0o4755)
                .xattr("security.capability", b"\x01\x00\x00\x02"),
            Entry::hardlink("bin/ping2", "bin/ping"),
            Entry::file("gone", "x"),
            Entry::dir("tmp").mode(0o1777).owner(1, 2),
            Entry::char_dev("dev/null", 1, 3).mode(0o666),
            Entry::block_dev("dev/sda", 8, 0),
            Entry::fifo("run/fifo"),
            Entry::symlink("lnk", format!("/{long}/target")),
            Entry::file(format!("{long}/target"), "deep").xattr("user.k", "v"),
            Entry::file(b"caf\xe9", "latin1"),
            Entry::file("ünï", "u").owner(3_000_000, 4_000_000).gnu(),
        ]),
        tar(&[
            Entry::whiteout("gone"),
            Entry::hardlink("a_first", "bin/ping"),
            Entry::hardlink(format!("{long}/h"), "lnk"),
        ]),
    ]
}

fn export(t: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(t, &mut out).unwrap();
    out
}

/// Everything a filesystem would show, with hardlink groups as the first path naming the inode.
fn snapshot(t: &Tree) -> BTreeMap<String, (u32, Metadata, String, String)> {
    let mut first: BTreeMap<InodeId, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for e in t.walk() {
        let inode = t.inode(e.id);
        let group = first.entry(e.id).or_insert_with(|| show(&e.path)).clone();
        let what = match &inode.kind {
            Kind::File(fd) => {
                let mut d = Vec::new();
                t.spill().reader(fd).read_to_end(&mut d).unwrap();
                format!("{d:?}")
            }
            Kind::Symlink(l) => show(l),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                format!("{major}:{minor}")
            }
            _ => String::new(),
        };
        out.insert(
            show(&e.path),
            (inode.st_mode(), inode.meta.clone(), what, group),
        );
    }
    out
}

#[test]
fn round_trips_through_apply_layer() {
    let t = tree_of(&rich_layers());
    let back = tree_of(&[export(&t)]);
    let (a, b) = (snapshot(&t), snapshot(&back));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{k}");
    }
    assert!(a.len() > 15);
}

#[test]
fn byte_identical_across_runs() {
    let a = export(&tree_of(&rich_layers()));
    let b = export(&tree_of(&rich_layers()));
    assert_eq!(a, b);
    assert_eq!(a.len() % 512, 0);
    assert!(a.ends_with(&[0u8; 1024]));
}

#[test]
fn hardlinks_point_at_the_first_path_in_walk_order() {
    let data = export(&tree_of(&rich_layers()));
    let mut ar = tar::Archive::new(&data[..]);
    let mut links = BTreeMap::new();
    let mut order = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        order.push(show(&e.path_bytes()));
        if e.header().entry_type() == tar::EntryType::Link {
            links.insert(show(&e.path_bytes()), show(&e.link_name_bytes().unwrap()));
        }
    }
    assert_eq!(order[0], "./");
    assert_eq!(links["bin/ping"], "a_first");
    assert_eq!(links["bin/ping2"], "a_first");
    let long = "l/".to_string() + &"n".repeat(120);
    // "l/…" sorts before "lnk": the symlink is first named by the long path.
    assert_eq!(links["lnk"], format!("{long}/h"));
    assert_eq!(links.len(), 3);
}

#[test]
fn pax_records_carry_nanoseconds_xattrs_and_large_ids() {
    let data = export(&tree_of(&rich_layers()));
    let mut ar = tar::Archive::new(&data[..]);
    let mut seen = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = show(&e.path_bytes());
        let uid = e.header().uid().unwrap();
        let mut recs = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                recs.push((show(x.key_bytes()), x.value_bytes().to_vec()));
            }
        }
        seen.insert(path, (uid, recs));
    }
    assert!(seen["etc/hosts"]
        .1
        .contains(&("mtime".into(), b"1600000000.000000005".to_vec())));
    assert!(seen["bin/ping"].1.contains(&(
        "SCHILY.xattr.security.capability".into(),
        b"\x01\x00\x00\x02".to_vec()
    )));
    assert_eq!(seen["ünï"].0, 3_000_000);
    assert!(seen["ünï"].1.contains(&("gid".into(), b"4000000".to_vec())));
    assert!(
        seen["etc/"].1.is_empty(),
        "no PAX header when none is needed"
    );
}

#[test]
fn device_numbers_beyond_the_octal_fields_round_trip() {
    let mut t = Tree::in_temp().unwrap();
    let meta = Metadata {
        mode: 0o600,
        ..Default::default()
    };
    let big = Kind::BlockDevice {
        major: 4095,
        minor: 0xfffff,
    };
    let huge = Kind::CharDevice {
        major: 3_000_000,
        minor: 1 << 30,
    };
    for (p, k) in [
        (b"big".as_slice(), big.clone()),
        (b"huge".as_slice(), huge.clone()),
    ] {
        t.insert(
            p,
            crate::tree::Inode {
                meta: meta.clone(),
                kind: k,
            },
        )
        .unwrap();
    }
    let back = tree_of(&[export(&t)]);
    assert_eq!(back.inode(back.lookup(b"big").unwrap()).kind, big);
    assert_eq!(back.inode(back.lookup(b"huge").unwrap()).kind, huge);
}

#[test]
fn negative_and_fractional_times() {
    assert_eq!(pax_time(5, 0), "5");
    assert_eq!(pax_time(5, 250_000_000), "5.250000000");
    assert_eq!(pax_time(-1, 250_000_000), "-0.750000000");
    assert_eq!(pax_time(-2, 0), "-2");
    let mut t = Tree::in_temp().unwrap();
    let meta = Metadata {
        mode: 0o644,
        mtime: Timestamp {
            sec: -2,
            nsec: 500_000_000,
        },
        ..Default::default()
    };
    t.insert(b"old", crate::tree::Inode::dir(meta)).unwrap();
    let back = tree_of(&[export(&t)]);
    assert_eq!(
        back.inode(back.lookup(b"old").unwrap()).meta.mtime,
        Timestamp {
            sec: -2,
            nsec: 500_000_000
        }
    );
}
