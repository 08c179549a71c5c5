//! The whole module against Debian bookworm's cloud kernel (`D2V_TEST_KERNEL_DIR`: an
//! extracted `linux-image-*-cloud-amd64` package, `boot/vmlinuz-VER` and `lib/modules/VER`),
//! and, when asked, a boot of d2v's initramfs by that kernel in QEMU.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::inspect::initramfs::{scan, Contents};
use crate::kernel::graft::{graft, GraftOptions};
use crate::kernel::modules::{ModuleIndex, WANTED};
use crate::kernel::source::{find, Shape};
use crate::kernel::{initramfs, newc};
use crate::tree::testing::{add_file_with, add_symlink, file_meta};
use crate::tree::{show, Inode, Metadata, Tree};

/// The extracted kernel package, or `None` (printed why).
fn kernel_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("D2V_TEST_KERNEL_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!(
            "D2V_TEST_KERNEL_DIR is not set (an extracted linux-image-*-cloud-amd64 package, \
             as `cargo xtask test` provides): skipping the real-kernel test"
        );
    }
    dir
}

/// Loads the host directory `dir` into `t` at `at` (files, directories, symlinks), as dpkg
/// unpacks: through the tree's symlinked directories (`lib` → `usr/lib`).
fn load(t: &mut Tree, dir: &Path, at: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = format!("{at}/{}", e.file_name().to_string_lossy());
        let path = show(&t.resolve_path(path.as_bytes(), false).unwrap().path);
        let ty = e.file_type().unwrap();
        if ty.is_dir() && t.resolve_dir(path.as_bytes()).is_some() {
            load(t, &e.path(), &path);
        } else if ty.is_dir() {
            let meta = Metadata {
                mode: 0o755,
                ..Metadata::default()
            };
            t.insert(path.as_bytes(), Inode::dir(meta)).unwrap();
            load(t, &e.path(), &path);
        } else if ty.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            add_symlink(t, &path, &target.to_string_lossy());
        } else {
            let mut f = std::fs::File::open(e.path()).unwrap();
            let fd = t.store(&mut f).unwrap();
            let inode = Inode {
                meta: file_meta(),
                kind: crate::tree::Kind::File(fd),
            };
            t.insert(path.as_bytes(), inode).unwrap();
        }
    }
}

/// The kernel image as Debian's: the package over a merged-/usr root.
fn debian_kernel_image(dir: &Path) -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    load(&mut t, dir, "");
    t
}

/// The version of the package: its one `lib/modules/VER`.
fn package_version(dir: &Path) -> String {
    let mut entries = std::fs::read_dir(dir.join("lib/modules")).unwrap();
    let e = entries.next().unwrap().unwrap();
    e.file_name().to_string_lossy().into_owned()
}

/// The app with the real kernel grafted, the modules resolved in it, and d2v's initramfs
/// for them with `init` as its `/init`.
fn app_initramfs(dir: &Path, init: &[u8]) -> (Vec<String>, Vec<u8>) {
    let src = debian_kernel_image(dir);
    let k = find(&src).unwrap();
    let mut app = Tree::in_temp().unwrap();
    add_file_with(&mut app, "app/server", b"app", file_meta());
    let r = graft(&src, &k, &mut app, GraftOptions::default()).unwrap();
    let ix = ModuleIndex::load(&app, &r.modules).unwrap();
    let resolved = ix.resolve(&WANTED);
    let cpio = initramfs::write(
        Vec::new(),
        &app,
        &k.version,
        &resolved.paths,
        &mut Cursor::new(init.to_vec()),
    )
    .unwrap();
    (resolved.paths, cpio)
}

#[test]
fn debian_cloud_kernel() {
    let Some(dir) = kernel_dir() else { return };
    let version = package_version(&dir);
    let src = debian_kernel_image(&dir);
    let k = find(&src).unwrap();
    assert_eq!(
        (k.shape, k.version.as_str()),
        (Shape::Distribution, version.as_str())
    );
    assert!(
        k.version_string.starts_with(&format!("{version} ")),
        "{}",
        k.version_string
    );
    assert_eq!(show(&k.modules_dir), format!("usr/lib/modules/{version}"));
    let ix = ModuleIndex::load(&src, &show(&k.modules_dir)).unwrap();
    let r = ix.resolve(&WANTED);
    let names: Vec<String> = r
        .paths
        .iter()
        .filter_map(|p| crate::inspect::initramfs::module_name(p.as_bytes()))
        .collect();
    eprintln!(
        "modules: {names:?}\nbuilt in: {:?}\nmissing: {:?}",
        r.builtin, r.missing
    );
    let at = |m: &str| {
        names
            .iter()
            .position(|n| n == m)
            .unwrap_or_else(|| panic!("{m}"))
    };
    assert!(at("scsi_common") < at("scsi_mod") && at("scsi_mod") < at("vmw_pvscsi"));
    for m in ["vmxnet3", "button", "evdev", "sd_mod"] {
        at(m);
    }
    assert!(r.builtin.contains(&"ext4".to_string()), "{:?}", r.builtin);
    assert!(ix.missing_for("vmw_pvscsi").is_empty());
    assert!(r
        .paths
        .iter()
        .all(|p| p.starts_with(&format!("/usr/lib/modules/{version}/"))));
    // Grafted into an app and packed: d2v's reader sees the modules in the archive.
    let (paths, cpio) = app_initramfs(&dir, b"init");
    assert_eq!(paths.len(), r.paths.len());
    let Contents::Modules(found) = scan(&cpio[..]).unwrap() else {
        panic!("unreadable")
    };
    assert!(
        found.contains("vmw_pvscsi") && found.contains("vmxnet3"),
        "{found:?}"
    );
    let (_, again) = app_initramfs(&dir, b"init");
    assert_eq!(cpio, again, "same inputs, same bytes");
}

/// The kernel unpacks d2v's archive and runs its `/init` (here a BusyBox script, BusyBox in a
/// second archive appended), which loads every listed module in order.
#[test]
#[ignore = "boots QEMU (TCG): needs D2V_TEST_KERNEL_DIR, qemu-system-x86_64, a static busybox"]
fn qemu_boots_the_initramfs_and_loads_the_modules() {
    let Some(dir) = kernel_dir() else { return };
    let version = package_version(&dir);
    let script = b"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
n=0
for m in $(/bin/busybox cat /.d2v/modules); do
  /bin/busybox insmod $m || echo D2V-INSMOD-FAILED $m
  n=$((n+1))
done
echo D2V-LOADED $n
/bin/busybox grep -q '^vmw_pvscsi ' /proc/modules && echo D2V-HAS-PVSCSI
/bin/busybox poweroff -f
";
    let (paths, mut cpio) = app_initramfs(&dir, script);
    let mut busybox = Vec::new();
    std::fs::File::open("/bin/busybox")
        .unwrap()
        .read_to_end(&mut busybox)
        .unwrap();
    let mut w = newc::Writer::new(Vec::new(), 0);
    w.dir("bin", 0o755).unwrap();
    let len = busybox.len() as u64;
    w.file("bin/busybox", 0o755, len, &mut &busybox[..])
        .unwrap();
    cpio.extend(w.finish().unwrap());
    let work = tempfile::tempdir().unwrap();
    let initrd = work.path().join("initrd.cpio");
    std::fs::write(&initrd, &cpio).unwrap();
    let kernel = dir.join(format!("boot/vmlinuz-{version}"));
    let out = Command::new("timeout")
        .arg("600")
        .arg("qemu-system-x86_64")
        .args(["-machine", "pc", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    for line in log
        .lines()
        .filter(|l| l.contains("D2V-") || l.contains("Run /init"))
    {
        eprintln!("guest: {line}");
    }
    assert!(
        log.contains(&format!("D2V-LOADED {}", paths.len())),
        "{log}"
    );
    assert!(!log.contains("D2V-INSMOD-FAILED"), "{log}");
    assert!(log.contains("D2V-HAS-PVSCSI"), "{log}");
}
