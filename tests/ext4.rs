//! The ext4 writer checked with e2fsprogs: `e2fsck -fn` must find nothing to fix, and
//! `debugfs` must read back what the tree holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn small_tree_is_clean() {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "etc/hostname", b"d2v\n", meta(0o644, 0, 0));
    add_file(&mut t, "bin/sh", &vec![0x7fu8; 100_000], meta(0o755, 0, 0));
    t.insert(
        b"lnk",
        Inode {
            meta: meta(0o777, 0, 0),
            kind: Kind::Symlink(b"etc/hostname".to_vec()),
        },
    )
    .unwrap();
    let (img, s) = write_image(&t, &opts(), 0);
    eprintln!("{s:?}");
    fsck(&img.path);
    eprintln!("{}", debugfs(&img.path, "ls -l /"));
}
