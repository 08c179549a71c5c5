//! Trees built to exhaust d2v, through the real `d2v` binary: a million entries in one
//! directory, a 4 096-level deep tree, a path of 255-byte names longer than `PATH_MAX`,
//! symlink loops in `/boot`, more hardlinks than ext4 allows, an xattr larger than a block.
//! Each is handled (a filesystem `e2fsck -fn` finds clean) or refused with a message naming
//! the file, in bounded time and memory.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::cli::*;
use testkit::oci::{self, Compression, ImageSpec};
use testkit::tar::{tar, Entry};

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// A sandbox with the tiny Debian image plus the layer `extra` as `v1`; its `oci:` source.
fn image(extra: ImageSpec) -> (Sandbox, String) {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let spec = ImageSpec {
        layers: [(
            oci::LayerSource::Bytes(base_layer("debian", true)),
            Compression::Gzip,
        )]
        .into_iter()
        .chain(extra.layers)
        .collect(),
        ..ImageSpec::new().tag("v1")
    };
    oci::write_image(&dir, &spec).unwrap();
    let src = oci_src(&dir, "v1");
    (sb, src)
}

fn with_layer(entries: &[Entry]) -> (Sandbox, String) {
    image(ImageSpec::new().layer(tar(entries), Compression::Gzip))
}

/// `d2v ARGS --cache-dir FRESH`.
fn d2v(sb: &Sandbox, args: &[&str]) -> Run {
    let cache = sb.fresh_cache();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--cache-dir", cache.to_str().unwrap()]);
    sb.d2v(all)
}

/// `d2v debug ext4 SRC -o out/root.ext4` must succeed and `e2fsck -fn` find the result clean.
fn clean_ext4(sb: &Sandbox, src: &str) -> PathBuf {
    let fs = sb.out_file("root.ext4");
    d2v(sb, &["debug", "ext4", src, "-o", fs.to_str().unwrap()]).ok();
    fsck(&fs);
    fs
}

fn fsck(fs: &Path) {
    let e2fsck = testkit::require_tool("e2fsck", "e2fsprogs");
    let out = Command::new(e2fsck).arg("-fn").arg(fs).output().unwrap();
    assert!(out.status.success(), "{}", testkit::output_text(&out));
}

fn debugfs(fs: &Path, cmd: &str) -> String {
    let debugfs = testkit::require_tool("debugfs", "e2fsprogs");
    let out = Command::new(debugfs)
        .args(["-R", cmd])
        .arg(fs)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `d2v build SRC -o out/vm.ova` must fail naming `needles` and leave nothing behind.
fn build_refused(sb: &Sandbox, src: &str, needles: &[&str]) {
    let out = sb.out_file("vm.ova");
    let r = d2v(sb, &["build", src, "-o", out.to_str().unwrap()]);
    assert_clean_failure(&r, needles);
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
}

#[test]
fn a_4096_level_deep_tree() {
    let deep = "d/".repeat(4096) + "leaf";
    let (sb, src) = with_layer(&[Entry::file(&deep, "deep\n")]);
    let fs = clean_ext4(&sb, &src);
    assert_eq!(debugfs(&fs, &format!("cat /{deep}")), "deep\n");
    let tar = sb.out_file("rootfs.tar");
    d2v(&sb, &["export", &src, "-o", tar.to_str().unwrap()]).ok();
}

/// 20 levels of 255-byte names: a path of 5 124 bytes, past Linux's PATH_MAX of 4 096 (d2v
/// never hands such a path to the host).
#[test]
fn a_path_of_255_byte_names_longer_than_path_max() {
    let long: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}", "n".repeat(253)))
        .collect();
    let path = long.join("/") + "/f";
    assert!(path.len() > 4096);
    let (sb, src) = with_layer(&[Entry::file(&path, "far\n")]);
    let fs = clean_ext4(&sb, &src);
    let last = debugfs(&fs, &format!("ls -l /{}", long[..19].join("/")));
    assert!(last.contains(&long[19]), "{last}");
}

/// Symlinks in `/boot` that loop (to themselves, to each other, to `/boot` itself, a kernel
/// name that is a loop): kernel discovery, inspect and build finish, promptly.
#[test]
fn symlink_loops_in_boot_do_not_hang() {
    let (sb, src) = with_layer(&[
        Entry::symlink("boot/self", "self"),
        Entry::symlink("boot/a", "b"),
        Entry::symlink("boot/b", "a"),
        Entry::symlink("boot/up", "/boot"),
        Entry::symlink("boot/dot", "."),
        Entry::symlink("boot/vmlinuz-9.9.9", "vmlinuz-9.9.9"),
        Entry::symlink("boot/initrd.img-9.9.9", "b"),
        Entry::symlink("boot/grub", "up/grub"),
    ]);
    let t0 = Instant::now();
    d2v(&sb, &["inspect", &src]).ok();
    let out = sb.out_file("vm.ova");
    let r = d2v(&sb, &["build", &src, "-o", out.to_str().unwrap()]);
    eprintln!("build: {:?}\n{}", r.status, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    if !r.status.success() {
        assert_clean_failure(&r, &[]);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "{:?}",
        t0.elapsed()
    );
}

/// 70 000 names for one file: ext4's link count is 16 bits and e2fsck accepts at most 65 000
/// for a file, so the build is refused naming the file.
#[test]
fn seventy_thousand_hardlinks_are_refused_naming_the_file() {
    let mut e = vec![Entry::file("many/target", "shared\n")];
    e.extend((1..70_000).map(|i| Entry::hardlink(format!("many/l{i}"), "many/target")));
    let (sb, src) = with_layer(&e);
    build_refused(
        &sb,
        &src,
        &["/many/", "70000 hardlinks to this file", "at most 65000"],
    );
}

/// An xattr whose value is larger than the one xattr block an inode may have.
#[test]
fn an_xattr_larger_than_a_block_is_refused_naming_file_and_xattr() {
    let (sb, src) =
        with_layer(&[Entry::file("etc/big-xattr", "x\n").xattr("user.big", vec![b'v'; 8000])]);
    build_refused(
        &sb,
        &src,
        &["/etc/big-xattr", "user.big", "remove the attribute"],
    );
}

/// Writes a layer tar of `n` empty files in `dir/` to `path`, streaming.
fn write_many_files(path: &Path, dir: &str, n: usize) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let mut h = ::tar::Header::new_ustar();
        h.set_path(format!("{dir}/entry-{i:07}")).unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        w.write_all(h.as_bytes()).unwrap();
    }
    w.write_all(&[0; 1024]).unwrap();
    w.flush().unwrap();
}

/// A million empty files in one directory: a clean filesystem (a hashed directory), in
/// bounded memory.
#[test]
#[ignore = "70 s in a debug build (d2v 56 s, 245 MB peak RSS); cargo xtask test runs it"]
fn a_million_entries_in_one_directory() {
    let scratch = testkit::scratch_dir("million");
    let tar_path = scratch.join("layer.tar");
    write_many_files(&tar_path, "big", 1_000_000);
    let (sb, src) = image(ImageSpec::new().layer_file(&tar_path, Compression::Zstd));
    std::fs::remove_file(&tar_path).unwrap();
    let fs = sb.out_file("root.ext4");
    let cache = sb.fresh_cache();
    let args = ["debug", "ext4", &src, "-o", fs.to_str().unwrap()];
    let args = [&args[..], &["--cache-dir", cache.to_str().unwrap()]].concat();
    let (r, rss, took) = sb.d2v_measured(args);
    assert!(r.status.success(), "{}", r.stderr);
    eprintln!("1 000 000 entries: debug ext4 in {took:?}, peak RSS {rss} KiB");
    fsck(&fs);
    assert!(debugfs(&fs, "stat /big").contains("Flags: 0x81000"));
    assert!(rss < 1 << 20, "peak RSS {rss} KiB");
}
