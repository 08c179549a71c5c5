//! Conformance: for every hand-made edge-case image (testkit::edge_cases), the tree d2v builds
//! with `apply_layer` equals what `umoci unpack` (as root) extracts, on paths, types, modes,
//! owners, sizes, contents, link targets, device numbers, xattrs, mtimes of non-directories
//! and hardlink groups (inode identity on disk). A second test extracts `d2v export`'s tar
//! with GNU tar and compares it against the same tree.
//!
//! Layers are read from the OCI layout by testkit's minimal reader (`testkit::oci::read_image`
//! and `open_layer`) until d2v's source module lands.
//!
//! Semantics checked against the OCI image spec (image-spec `layer.md`, "Whiteouts"):
//! whiteouts "MUST only apply to resources in lower/parent layers"; files "present in the same
//! layer as a whiteout file can only be hidden by whiteout files in subsequent layers"; an
//! opaque whiteout hides "all siblings" in the lower layers only. umoci 0.4.7 agrees with d2v
//! on every edge case here, wherever the whiteout sits in the tar. Points found on the way:
//! - umoci 0.4.7 cannot read zstd layers, so it is given a gzip copy (same diff_ids).
//! - An empty-valued `SCHILY.xattr.*` PAX record: POSIX pax says an empty value deletes the
//!   keyword, and umoci sets no xattr for it; d2v follows POSIX too (GNU tar 1.34 does
//!   create an empty xattr).
//! - Symlinks in *parent* components are resolved inside the rootfs by umoci (securejoin), as
//!   by containerd and Docker; d2v does the same inside the tree (`symlink-parents` case), never
//!   leaving the image; an entry's own last component is never followed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use d2v::layers::apply_layer;
use d2v::tree::{InodeId, Kind, Tree};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha256: String,
    link: String,
    rdev: (u32, u32),
    xattrs: BTreeMap<String, String>,
    mtime: Option<(i64, u32)>,
}

#[derive(Debug, Default)]
struct Snap {
    nodes: BTreeMap<Vec<u8>, Node>,
    /// Sets of paths naming one non-directory inode, for inodes with more than one name.
    links: BTreeSet<Vec<Vec<u8>>>,
}

fn esc(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

fn snap_tree(tree: &Tree) -> Snap {
    let mut snap = Snap::default();
    let mut groups: BTreeMap<InodeId, Vec<Vec<u8>>> = BTreeMap::new();
    for e in tree.walk().skip(1) {
        let inode = tree.inode(e.id);
        let m = &inode.meta;
        let mut n = Node {
            kind: "",
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            size: 0,
            sha256: String::new(),
            link: String::new(),
            rdev: (0, 0),
            xattrs: m.xattrs.iter().map(|(k, v)| (esc(k), esc(v))).collect(),
            mtime: Some((m.mtime.sec, m.mtime.nsec)),
        };
        match &inode.kind {
            Kind::Dir(_) => {
                n.kind = "dir";
                n.mtime = None;
            }
            Kind::File(fd) => {
                n.kind = "file";
                n.size = fd.len;
                let mut h = Sha256::new();
                std::io::copy(&mut tree.spill().reader(fd), &mut h).unwrap();
                n.sha256 = hex::encode(h.finalize());
            }
            Kind::Symlink(t) => {
                n.kind = "symlink";
                n.link = esc(t);
            }
            Kind::CharDevice { major, minor } => (n.kind, n.rdev) = ("char", (*major, *minor)),
            Kind::BlockDevice { major, minor } => (n.kind, n.rdev) = ("block", (*major, *minor)),
            Kind::Fifo => n.kind = "fifo",
            Kind::Socket => n.kind = "socket",
        }
        if !inode.kind.is_dir() {
            groups.entry(e.id).or_default().push(e.path.clone());
        }
        snap.nodes.insert(e.path, n);
    }
    snap.links = groups.into_values().filter(|g| g.len() > 1).collect();
    snap
}

fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        let k =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        assert!(k >= 0, "lgetxattr {}", path.display());
        out.insert(esc(name), esc(&val[..k as usize]));
    }
    out
}

fn snap_dir(root: &Path) -> Snap {
    let mut snap = Snap::default();
    let mut groups: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut todo = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let mut relp = rel.clone();
            if !relp.is_empty() {
                relp.push(b'/');
            }
            relp.extend_from_slice(entry.file_name().as_bytes());
            let md = fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let rdev = md.rdev();
            let mut n = Node {
                kind: "",
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: 0,
                sha256: String::new(),
                link: String::new(),
                rdev: (0, 0),
                xattrs: xattrs(&path),
                mtime: Some((md.mtime(), md.mtime_nsec() as u32)),
            };
            if ft.is_dir() {
                n.kind = "dir";
                n.mtime = None;
                todo.push((path.clone(), relp.clone()));
            } else if ft.is_file() {
                n.kind = "file";
                n.size = md.len();
                let mut h = Sha256::new();
                std::io::copy(&mut fs::File::open(&path).unwrap(), &mut h).unwrap();
                n.sha256 = hex::encode(h.finalize());
            } else if ft.is_symlink() {
                n.kind = "symlink";
                n.link = esc(fs::read_link(&path).unwrap().as_os_str().as_bytes());
                n.mode = 0o777; // symlink permissions are not meaningful on Linux
            } else if ft.is_char_device() {
                (n.kind, n.rdev) = ("char", (libc::major(rdev), libc::minor(rdev)));
            } else if ft.is_block_device() {
                (n.kind, n.rdev) = ("block", (libc::major(rdev), libc::minor(rdev)));
            } else if ft.is_fifo() {
                n.kind = "fifo";
            } else if ft.is_socket() {
                n.kind = "socket";
            }
            if !ft.is_dir() {
                groups
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(relp.clone());
            }
            snap.nodes.insert(relp, n);
        }
    }
    snap.links = groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    snap
}

/// Differences between d2v's tree (`ours`) and an extracted directory (`theirs`).
fn diff(ours: &Snap, theirs: &Snap) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&Vec<u8>> = ours.nodes.keys().chain(theirs.nodes.keys()).collect();
    for k in keys {
        match (ours.nodes.get(k), theirs.nodes.get(k)) {
            (Some(a), Some(b)) => {
                let mut a = a.clone();
                if a.kind == "symlink" {
                    a.mode = 0o777;
                }
                if &a != b {
                    out.push(format!("{}: d2v {a:?}\n      extracted {b:?}", esc(k)));
                }
            }
            (Some(_), None) => out.push(format!("{}: only in d2v's tree", esc(k))),
            (None, Some(_)) => out.push(format!("{}: only in the extracted tree", esc(k))),
            (None, None) => unreachable!(),
        }
    }
    let show_groups = |s: &BTreeSet<Vec<Vec<u8>>>| -> Vec<Vec<String>> {
        s.iter()
            .map(|g| g.iter().map(|p| esc(p)).collect())
            .collect()
    };
    if ours.links != theirs.links {
        out.push(format!(
            "hardlink groups: d2v {:?} extracted {:?}",
            show_groups(&ours.links),
            show_groups(&theirs.links)
        ));
    }
    out
}

fn tree_from_layout(layout: &Path, tag: &str) -> Tree {
    let layers = testkit::oci::read_image(layout, Some(tag)).unwrap().layers;
    let mut tree = Tree::in_temp().unwrap();
    for (media_type, path) in layers {
        let mut r = testkit::oci::open_layer(&media_type, &path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        apply_layer(&mut tree, &mut r, &name).unwrap_or_else(|e| panic!("{tag}: {e}"));
    }
    tree
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("d2v-conformance-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unpacks `tag` of `layout` with umoci into `work` and compares it with d2v's tree built
/// from `ours_layout` (the same image, possibly compressed differently).
fn compare_with_umoci(ours_layout: &Path, layout: &Path, tag: &str, work: &Path) -> Vec<String> {
    let bundle = work.join(format!("bundle-{}", tag.replace('/', "_")));
    let _ = fs::remove_dir_all(&bundle);
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    let ours = snap_tree(&tree_from_layout(ours_layout, tag));
    let theirs = snap_dir(&bundle.join("rootfs"));
    assert!(!ours.nodes.is_empty(), "{tag}: empty tree");
    let _ = fs::remove_dir_all(&bundle);
    diff(&ours, &theirs)
        .into_iter()
        .map(|d| format!("[{tag}] {d}"))
        .collect()
}

/// Extracts `tar` into `dest` with GNU tar, keeping owners, modes and xattrs (as root).
fn extract_with_gnu_tar(tar: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--same-owner",
            "-xpf",
        ])
        .arg(tar)
        .arg("-C")
        .arg(dest));
}

fn require_root_umoci() {
    testkit::require_tool("umoci", "umoci");
    assert!(
        unsafe { libc::geteuid() } == 0,
        "umoci unpack must run as root to keep owners and devices"
    );
}

#[test]
fn edge_cases_match_umoci_unpack() {
    require_root_umoci();
    let work = workdir("umoci");
    let layout = work.join("layout");
    let images = testkit::edge_cases::write_layout(&layout).unwrap();
    // umoci 0.4.7 refuses zstd layers ("blob is not correct mediatype"): it reads a copy with
    // those layers gzip-compressed; the tars (diff_ids) are the same.
    let umoci_layout = work.join("layout-gzip");
    let gz = testkit::oci::Compression::Gzip;
    let umoci_images = testkit::edge_cases::write_layout_with(&umoci_layout, |c| match c {
        testkit::oci::Compression::Zstd => gz,
        c => c,
    })
    .unwrap();
    let mut failures = Vec::new();
    for ((name, ours_img), (_, theirs_img)) in images.iter().zip(&umoci_images) {
        let diff_ids = |i: &testkit::oci::WrittenImage| {
            i.layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(diff_ids(ours_img), diff_ids(theirs_img));
        failures.extend(compare_with_umoci(&layout, &umoci_layout, name, &work));
    }
    let _ = fs::remove_dir_all(&work);
    assert!(
        failures.is_empty(),
        "d2v and umoci differ:\n{}",
        failures.join("\n")
    );
}

/// Every tagged image of every OCI layout under the fixtures directory (built by
/// `cargo xtask test`), or of the layouts named in `$D2V_CONFORMANCE_LAYOUTS` (`:`-separated
/// directories), against umoci. Ignored by default: it needs the fixtures; `cargo xtask test`
/// The OCI layouts to check: `$D2V_CONFORMANCE_LAYOUTS`, else every layout under the fixtures
/// directory (at most three levels down).
fn fixture_layouts() -> Vec<PathBuf> {
    let layouts: Vec<PathBuf> = match std::env::var_os("D2V_CONFORMANCE_LAYOUTS") {
        Some(v) => std::env::split_paths(&v).collect(),
        None => {
            let mut found = Vec::new();
            let mut todo = vec![(testkit::fixtures_dir(), 0)];
            while let Some((dir, depth)) = todo.pop() {
                if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
                    found.push(dir);
                } else if depth < 3 {
                    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            todo.push((e.path(), depth + 1));
                        }
                    }
                }
            }
            found
        }
    };
    assert!(
        !layouts.is_empty(),
        "no OCI layouts under {}: run cargo xtask test",
        testkit::fixtures_dir().display()
    );
    layouts
}

/// The tagged images of an OCI layout.
fn layout_tags(layout: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            m["annotations"][testkit::oci::REF_NAME]
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// runs it with `--include-ignored`.
#[test]
#[ignore = "needs the OCI layout fixtures built by cargo xtask test"]
fn fixtures_match_umoci_unpack() {
    require_root_umoci();
    let layouts = fixture_layouts();
    let work = workdir("fixtures");
    let mut failures = Vec::new();
    let mut checked = 0;
    for layout in &layouts {
        for tag in layout_tags(layout) {
            eprintln!("conformance: {}:{tag}", layout.display());
            failures.extend(compare_with_umoci(layout, layout, &tag, &work));
            checked += 1;
        }
    }
    let _ = fs::remove_dir_all(&work);
    assert!(checked > 0, "no tagged images in {layouts:?}");
    assert!(
        failures.is_empty(),
        "d2v and umoci differ:\n{}",
        failures.join("\n")
    );
}

#[test]
fn export_tar_extracted_by_gnu_tar_matches_the_tree() {
    testkit::require_tool("tar", "tar");
    let work = workdir("gnutar");
    let layout = work.join("layout");
    let images = testkit::edge_cases::write_layout(&layout).unwrap();
    let mut failures = Vec::new();
    for (name, _) in &images {
        let tree = tree_from_layout(&layout, name);
        let tar_path = work.join(format!("{name}.tar"));
        let mut out = std::io::BufWriter::new(fs::File::create(&tar_path).unwrap());
        d2v::export::write_tar(&tree, &mut out).unwrap();
        drop(out);
        let dest = work.join(format!("x-{name}"));
        extract_with_gnu_tar(&tar_path, &dest);
        for d in diff(&snap_tree(&tree), &snap_dir(&dest)) {
            failures.push(format!("[{name}] {d}"));
        }
        // Byte-identical across runs.
        let mut again = Vec::new();
        d2v::export::write_tar(&tree_from_layout(&layout, name), &mut again).unwrap();
        let mut first = Vec::new();
        fs::File::open(&tar_path)
            .unwrap()
            .read_to_end(&mut first)
            .unwrap();
        assert!(first == again, "{name}: export differs between runs");
    }
    let _ = fs::remove_dir_all(&work);
    assert!(
        failures.is_empty(),
        "GNU tar's extraction of d2v export differs from the tree:\n{}",
        failures.join("\n")
    );
}

/// The real `d2v export` of every fixture, extracted by GNU tar, equals `umoci unpack` of the
/// same image: the command users run, checked against an independent flattener.
#[test]
#[ignore = "needs the OCI layout fixtures built by cargo xtask test"]
fn fixtures_export_matches_umoci_unpack() {
    require_root_umoci();
    testkit::require_tool("tar", "tar");
    let layouts = fixture_layouts();
    let work = workdir("fixtures-export");
    let mut failures = Vec::new();
    let mut checked = 0;
    for layout in &layouts {
        for tag in layout_tags(layout) {
            let safe = tag.replace('/', "_");
            let tar_path = work.join(format!("{safe}.tar"));
            let out = Command::new(env!("CARGO_BIN_EXE_d2v"))
                .arg("export")
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg("-o")
                .arg(&tar_path)
                .arg("--cache-dir")
                .arg(work.join("cache"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "d2v export {}:{tag} failed: {}",
                layout.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let dest = work.join(format!("export-{safe}"));
            extract_with_gnu_tar(&tar_path, &dest);
            let bundle = work.join(format!("bundle-{safe}"));
            run(Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:{tag}", layout.display()))
                .arg(&bundle));
            let ours = snap_dir(&dest);
            assert!(!ours.nodes.is_empty(), "{tag}: empty export");
            for d in diff(&ours, &snap_dir(&bundle.join("rootfs"))) {
                failures.push(format!("[{}:{tag}] {d}", layout.display()));
            }
            let _ = fs::remove_dir_all(&dest);
            let _ = fs::remove_dir_all(&bundle);
            let _ = fs::remove_file(&tar_path);
            checked += 1;
        }
    }
    let _ = fs::remove_dir_all(&work);
    assert!(checked > 0, "no tagged images in {layouts:?}");
    assert!(
        failures.is_empty(),
        "d2v export (extracted by GNU tar) and umoci unpack differ:\n{}",
        failures.join("\n")
    );
}
