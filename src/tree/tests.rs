use super::*;

fn file(tree: &mut Tree, data: &[u8]) -> Inode {
    let fd = tree.store(&mut &data[..]).unwrap();
    Inode {
        meta: Metadata {
            mode: 0o644,
            ..Metadata::default()
        },
        kind: Kind::File(fd),
    }
}

fn read(tree: &Tree, path: &str) -> Vec<u8> {
    let id = tree.lookup(path.as_bytes()).unwrap();
    let Kind::File(fd) = &tree.inode(id).kind else {
        panic!("{path} is not a file")
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut tree.spill().reader(fd), &mut out).unwrap();
    out
}

fn paths(tree: &Tree) -> Vec<String> {
    tree.walk().map(|e| show(&e.path)).collect()
}

#[test]
fn insert_creates_parents_and_walk_is_sorted() {
    let mut t = Tree::in_temp().unwrap();
    let f = file(&mut t, b"x");
    t.insert(b"./usr/bin/b", f.clone()).unwrap();
    t.insert(b"usr/bin/a", f).unwrap();
    t.insert(
        b"etc/",
        Inode::dir(Metadata {
            mode: 0o755,
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(
        paths(&t),
        ["", "etc", "usr", "usr/bin", "usr/bin/a", "usr/bin/b"]
    );
}

#[test]
fn dotdot_is_refused() {
    let mut t = Tree::in_temp().unwrap();
    let f = file(&mut t, b"x");
    assert!(matches!(
        t.insert(b"a/../../etc/passwd", f),
        Err(TreeError::UnsafePath(_))
    ));
}

#[test]
fn other_type_replaces_and_dir_keeps_children() {
    let mut t = Tree::in_temp().unwrap();
    let f = file(&mut t, b"hello");
    t.insert(b"a/b", f.clone()).unwrap();
    t.insert(
        b"a",
        Inode::dir(Metadata {
            mode: 0o700,
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(paths(&t), ["", "a", "a/b"]);
    assert_eq!(t.inode(t.lookup(b"a").unwrap()).meta.mode, 0o700);
    t.insert(
        b"a",
        Inode {
            meta: Metadata::default(),
            kind: Kind::Symlink(b"/x".to_vec().into()),
        },
    )
    .unwrap();
    assert_eq!(paths(&t), ["", "a"]);
    t.insert(b"a/c", f).unwrap();
    assert!(t.inode(t.lookup(b"a").unwrap()).kind.is_dir());
}

#[test]
fn hardlinks_share_an_inode_and_survive_removal() {
    let mut t = Tree::in_temp().unwrap();
    let f = file(&mut t, b"data");
    let id = t.insert(b"bin/a", f).unwrap();
    assert_eq!(t.hardlink(b"bin/b", b"bin/a").unwrap(), id);
    assert_eq!(t.link_counts()[id], 2);
    assert!(t.remove(b"bin/a").unwrap());
    assert_eq!(read(&t, "bin/b"), b"data");
    assert_eq!(t.link_counts()[id], 1);
    assert!(matches!(
        t.hardlink(b"x", b"nope"),
        Err(TreeError::MissingLinkTarget { .. })
    ));
}

#[test]
fn directory_link_counts() {
    let mut t = Tree::in_temp().unwrap();
    let d = Inode::dir(Metadata::default());
    t.insert(b"a/b", d.clone()).unwrap();
    t.insert(b"a/c", d).unwrap();
    let c = t.link_counts();
    assert_eq!(c[ROOT], 3);
    assert_eq!(c[t.lookup(b"a").unwrap()], 4);
    assert_eq!(c[t.lookup(b"a/b").unwrap()], 2);
}

#[test]
fn spill_keeps_zeros_as_holes_and_reads_back() {
    let mut t = Tree::in_temp().unwrap();
    let mut data = vec![0u8; 300 * 1024];
    data[200 * 1024] = 7;
    let f = file(&mut t, &data);
    t.insert(b"sparse", f).unwrap();
    assert_eq!(read(&t, "sparse"), data);
    let small = file(&mut t, b"tail");
    t.insert(b"small", small).unwrap();
    assert_eq!(read(&t, "small"), b"tail");
    assert_eq!(read(&t, "sparse"), data);
}

#[test]
fn non_utf8_names() {
    let mut t = Tree::in_temp().unwrap();
    let f = file(&mut t, b"");
    t.insert(b"dir/\xff\xfe", f).unwrap();
    assert!(t.lookup(b"dir/\xff\xfe").is_some());
}

#[test]
fn inodes_stay_small() {
    // One per entry of the image: its size is most of the staging tree's memory per entry.
    assert_eq!(std::mem::size_of::<Timestamp>(), 12);
    assert!(
        std::mem::size_of::<Inode>() <= 56,
        "{}",
        std::mem::size_of::<Inode>()
    );
}
