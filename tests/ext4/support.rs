//! Helpers: building trees, writing images, running e2fsck and debugfs, comparing.

pub use std::collections::BTreeMap;
pub use std::ffi::OsStr;
pub use std::fs::File;
pub use std::os::unix::ffi::OsStrExt;
pub use std::os::unix::fs::{FileExt, MetadataExt};
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Stdio};

pub use d2v::disk::ext4::{self, Ext4Options};
pub use d2v::tree::testing::add_file_with as add_file;
pub use d2v::tree::{Inode, Kind, Metadata, Timestamp, Tree};

pub fn meta(mode: u32, uid: u32, gid: u32) -> Metadata {
    Metadata {
        mode,
        uid,
        gid,
        mtime: Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        },
        xattrs: Default::default(),
    }
}

/// A FIFO at `path` (mode 0644, root): the cheapest entry that fills a directory.
pub fn add_fifo(t: &mut Tree, path: &str) {
    let inode = Inode {
        meta: meta(0o644, 0, 0),
        kind: Kind::Fifo,
    };
    t.insert(path.as_bytes(), inode).unwrap();
}

pub fn opts() -> Ext4Options {
    let mut o = Ext4Options::from_seed("sha256:test");
    o.label = "root".into();
    o.time = 1_700_000_000;
    o
}

pub struct Image {
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn write_image(t: &Tree, o: &Ext4Options, offset: u64) -> (Image, ext4::Ext4Summary) {
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

pub fn fsck(img: &Path) {
    let tool = testkit::require_tool("e2fsck", "e2fsprogs");
    let out = Command::new(tool).args(["-fn"]).arg(img).output().unwrap();
    let text = testkit::output_text(&out);
    assert!(
        out.status.success(),
        "e2fsck -fn failed ({:?}):\n{text}",
        out.status.code()
    );
}

pub fn debugfs(img: &Path, cmd: &str) -> String {
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
pub fn debugfs_batch(img: &Path, cmds: &[String]) -> Vec<String> {
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

pub fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in\n{text}"))
        + key.len();
    text[at..].split_whitespace().next().unwrap()
}

pub fn type_name(k: &Kind) -> &'static str {
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
pub fn round_trip(t: &Tree, img: &Path) {
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
        let mut links = counts[e.id];
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
            let f = out.path().join(format!("xattr-{}-{i}", e.id.index()));
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
pub fn acl_ids_zeroed(v: &[u8]) -> Vec<u8> {
    let mut v = v.to_vec();
    for e in v[4..].chunks_mut(8) {
        if [1, 4, 0x10, 0x20].contains(&u16::from_le_bytes([e[0], e[1]])) {
            e[4..8].fill(0);
        }
    }
    v
}

pub fn full_tree() -> Tree {
    full_tree_in(Tree::in_temp().unwrap())
}

/// [`full_tree`] built into `t` (an empty tree, e.g. with its spill file elsewhere).
pub fn full_tree_in(mut t: Tree) -> Tree {
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
            kind: Kind::Symlink(b"usr/lib".to_vec().into()),
        },
    )
    .unwrap();
    let long = vec![b'l'; 200];
    t.insert(
        b"longlink",
        Inode {
            meta: meta(0o777, 0, 0),
            kind: Kind::Symlink(long.into()),
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
