//! Grafting: merged-/usr and plain apps, LinuxKit modules, the app's kernels replaced,
//! GRUB copied only when missing, metadata, symlinks and hardlinks kept.

use super::*;
use crate::kernel::bzimage;
use crate::kernel::source::find;
use crate::tree::testing::{add_file, add_file_with, add_symlink};
use crate::tree::{Metadata, Timestamp, ROOT};
use std::io::Read;

const V: &str = "6.1.0-28-cloud-amd64";

fn read(t: &Tree, path: &str) -> Vec<u8> {
    let mut v = Vec::new();
    let fd = t
        .resolve_file(path.as_bytes())
        .unwrap_or_else(|| panic!("{path}"));
    t.spill().reader(fd).read_to_end(&mut v).unwrap();
    v
}

/// A Debian-shaped kernel image with modules (a symlink and a hardlink among them),
/// an initrd, GRUB's modules and other files that must not reach the app.
fn kernel_image() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    let mut meta = Metadata {
        mode: 0o600,
        uid: 7,
        gid: 8,
        mtime: Timestamp { sec: 123, nsec: 4 },
        ..Metadata::default()
    };
    meta.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
    let kernel = bzimage::fake(&format!("{V} #1"));
    add_file_with(&mut t, &format!("boot/vmlinuz-{V}"), &kernel, meta);
    add_file(&mut t, &format!("boot/initrd.img-{V}"), b"initrd");
    add_file(&mut t, &format!("boot/System.map-{V}"), b"map");
    let m = format!("usr/lib/modules/{V}");
    add_file(&mut t, &format!("{m}/modules.dep"), b"kernel/a.ko:\n");
    add_file(&mut t, &format!("{m}/kernel/a.ko"), b"module a");
    t.hardlink(
        format!("{m}/kernel/b.ko").as_bytes(),
        format!("{m}/kernel/a.ko").as_bytes(),
    )
    .unwrap();
    add_symlink(&mut t, &format!("{m}/build"), "/usr/src/linux-headers");
    add_file(&mut t, "usr/lib/grub/i386-pc/kernel.img", b"k");
    add_file(&mut t, "usr/lib/grub/i386-pc/moddep.lst", b"m");
    add_file(&mut t, "usr/lib/grub/x86_64-efi/kernel.img", b"ke");
    add_file(&mut t, "usr/lib/grub/x86_64-efi/moddep.lst", b"me");
    add_file(&mut t, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    add_file(&mut t, "usr/bin/apt", b"apt");
    t
}

/// A merged-/usr app with its own kernel and a usable BIOS GRUB.
fn merged_app() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    for f in [
        "vmlinuz-5.10",
        "initrd.img-5.10",
        "System.map-5.10",
        "config-5.10",
    ] {
        add_file(&mut t, &format!("boot/{f}"), b"old");
    }
    add_file(&mut t, "boot/grub/grub.cfg", b"keep");
    add_file(&mut t, "usr/lib/grub/i386-pc/kernel.img", b"app k");
    add_file(&mut t, "usr/lib/grub/i386-pc/moddep.lst", b"app m");
    add_file(&mut t, "app/server", b"app");
    t
}

#[test]
fn merged_usr_app_gets_the_kernel_modules_and_missing_grub() {
    let src = kernel_image();
    let k = find(&src).unwrap();
    let kernel = read(&src, &format!("boot/vmlinuz-{V}"));
    let mut dst = merged_app();
    let r = graft(&src, &k, &mut dst, GraftOptions::default()).unwrap();
    assert_eq!(r.kernel, format!("/boot/vmlinuz-{V}"));
    assert_eq!(r.initrd, None);
    assert_eq!(r.modules, format!("/usr/lib/modules/{V}"));
    assert_eq!(r.grub, ["/usr/lib/grub/x86_64-efi"]);
    assert_eq!(
        r.replaced,
        [
            "/boot/System.map-5.10",
            "/boot/config-5.10",
            "/boot/initrd.img-5.10",
            "/boot/vmlinuz-5.10"
        ]
    );
    // The kernel with its bytes and metadata.
    let id = dst.lookup(&r.kernel.as_bytes()[1..]).unwrap();
    assert_eq!(read(&dst, &r.kernel), kernel);
    let meta = &dst.inode(id).meta;
    assert_eq!(
        (meta.mode, meta.uid, meta.gid, meta.mtime.sec),
        (0o600, 7, 8, 123)
    );
    assert_eq!(meta.xattrs.get(b"user.k"), Some(&b"v".to_vec()));
    // Modules: hardlink kept, symlink kept, reachable through /lib too.
    let m = format!("usr/lib/modules/{V}/kernel");
    let a = dst.lookup(format!("{m}/a.ko").as_bytes()).unwrap();
    assert_eq!(dst.lookup(format!("{m}/b.ko").as_bytes()), Some(a));
    assert_eq!(
        read(&dst, &format!("lib/modules/{V}/kernel/a.ko")),
        b"module a"
    );
    let build = dst
        .lookup(format!("usr/lib/modules/{V}/build").as_bytes())
        .unwrap();
    assert_eq!(
        dst.inode(build).kind,
        Kind::Symlink((*b"/usr/src/linux-headers").into())
    );
    // The app's own GRUB and files stay; nothing else of the kernel image comes along.
    assert_eq!(read(&dst, "usr/lib/grub/i386-pc/kernel.img"), b"app k");
    assert_eq!(read(&dst, "usr/lib/grub/x86_64-efi/kernel.img"), b"ke");
    assert_eq!(read(&dst, "boot/grub/grub.cfg"), b"keep");
    assert_eq!(read(&dst, "app/server"), b"app");
    for gone in ["etc/passwd", "usr/bin/apt", &format!("boot/System.map-{V}")] {
        assert!(dst.lookup(gone.as_bytes()).is_none(), "{gone}");
    }
    let kernels = crate::disk::grub::find_kernels(&dst);
    assert_eq!(kernels.len(), 1);
    assert_eq!(kernels[0].version, V);
}

#[test]
fn plain_app_gets_lib_modules_and_the_initrd_when_asked() {
    let src = kernel_image();
    let k = find(&src).unwrap();
    let mut dst = Tree::in_temp().unwrap();
    add_file(&mut dst, "bin/app", b"app");
    let opts = GraftOptions { keep_initrd: true };
    let r = graft(&src, &k, &mut dst, opts).unwrap();
    assert_eq!(r.modules, format!("/lib/modules/{V}"));
    assert_eq!(r.initrd.as_deref(), Some(&*format!("/boot/initrd.img-{V}")));
    assert_eq!(read(&dst, &format!("boot/initrd.img-{V}")), b"initrd");
    assert_eq!(
        read(&dst, &format!("lib/modules/{V}/kernel/b.ko")),
        b"module a"
    );
    assert!(dst.lookup(b"usr/lib/modules").is_none());
    assert_eq!(
        r.grub,
        ["/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"]
    );
    assert!(r.replaced.is_empty());
    // Created parents: root-owned 0755.
    let lib = dst.lookup(b"lib/modules").unwrap();
    assert_eq!(
        dst.inode(lib).meta,
        Metadata {
            mode: 0o755,
            ..Metadata::default()
        }
    );
    assert!(dst.inode(ROOT).kind.is_dir());
}

#[test]
fn linuxkit_modules_come_from_kernel_tar() {
    use testkit::tar::{tar, Entry};
    let mut src = Tree::in_temp().unwrap();
    let lk = "6.6.13-linuxkit";
    add_file(&mut src, "kernel", &bzimage::fake(lk));
    let t = tar(&[
        Entry::file(format!("lib/modules/{lk}/modules.dep"), "kernel/x.ko:\n"),
        Entry::file(format!("lib/modules/{lk}/kernel/x.ko"), "X").mode(0o644),
    ]);
    add_file(&mut src, "kernel.tar", &t);
    let k = find(&src).unwrap();
    let kernel = read(&src, "kernel");
    let mut dst = merged_app();
    let r = graft(&src, &k, &mut dst, GraftOptions { keep_initrd: true }).unwrap();
    assert_eq!(
        read(&dst, &format!("usr/lib/modules/{lk}/kernel/x.ko")),
        b"X"
    );
    assert_eq!(read(&dst, &format!("boot/vmlinuz-{lk}")), kernel);
    assert_eq!((r.initrd, r.grub.len()), (None, 0));
    assert!(dst.lookup(b"kernel.tar").is_none() && dst.lookup(b"kernel").is_none());
}

#[test]
fn the_graft_moves_the_data_a_file_met_twice_is_linked() {
    use std::os::unix::fs::MetadataExt;
    use testkit::tar::{tar, Entry};
    let mut src = Tree::in_temp().unwrap();
    let lk = "6.6.13-linuxkit";
    let big = |b: u8| vec![b; 3 << 20];
    add_file(&mut src, "kernel", &[bzimage::fake(lk), big(1)].concat());
    let t = tar(&[
        Entry::file(format!("lib/modules/{lk}/modules.dep"), "kernel/x.ko:\n"),
        Entry::file(format!("lib/modules/{lk}/kernel/x.ko"), big(2)),
    ]);
    add_file(&mut src, "kernel.tar", &t);
    let allocated = |t: &Tree| t.spill().file().metadata().unwrap().blocks() * 512;
    let k = crate::kernel::source::find_to_graft(&src).unwrap();
    // kernel.tar is given back as its modules are read out of it: the kernel stays.
    assert!(allocated(&src) < 4 << 20, "{} bytes", allocated(&src));
    let mut dst = merged_app();
    graft(&src, &k, &mut dst, GraftOptions::default()).unwrap();
    assert_eq!(
        read(&dst, &format!("usr/lib/modules/{lk}/kernel/x.ko")),
        big(2)
    );
    assert!(read(&dst, &format!("boot/vmlinuz-{lk}")).ends_with(&big(1)));
    // Both trees given back what moved (a block or so each for the small files).
    assert!(allocated(&src) < 64 << 10, "{} bytes", allocated(&src));
    let scratch = k.modules_tree(&src);
    assert!(
        allocated(scratch) < 64 << 10,
        "{} bytes",
        allocated(scratch)
    );

    // A hardlink between the kernel and the modules directory: linked in the app too.
    let mut src = kernel_image();
    let m = format!("usr/lib/modules/{V}");
    src.hardlink(
        format!("{m}/vmlinuz").as_bytes(),
        format!("boot/vmlinuz-{V}").as_bytes(),
    )
    .unwrap();
    let kernel = read(&src, &format!("boot/vmlinuz-{V}"));
    let k = find(&src).unwrap();
    let mut dst = merged_app();
    graft(&src, &k, &mut dst, GraftOptions::default()).unwrap();
    assert_eq!(read(&dst, &format!("{m}/vmlinuz")), kernel);
    assert_eq!(
        dst.resolve(format!("{m}/vmlinuz").as_bytes(), false),
        dst.resolve(format!("boot/vmlinuz-{V}").as_bytes(), false)
    );
}

#[test]
fn grafting_from_another_tree_is_an_error() {
    let src = kernel_image();
    let k = find(&src).unwrap();
    let other = Tree::in_temp().unwrap();
    let e = graft(&other, &k, &mut merged_app(), GraftOptions::default()).unwrap_err();
    assert!(matches!(e, KernelError::NotInImage { .. }), "{e:?}");
}

#[test]
fn modules_go_where_the_app_keeps_them() {
    let v = "6.1";
    let mut t = Tree::in_temp().unwrap();
    assert_eq!(modules_dir(&t, v), "lib/modules/6.1");
    t.insert(b"lib", Inode::dir(Metadata::default())).unwrap();
    assert_eq!(modules_dir(&t, v), "lib/modules/6.1");
    for target in ["usr/lib", "/usr/lib", "./usr/lib/"] {
        let mut t = Tree::in_temp().unwrap();
        add_symlink(&mut t, "lib", target);
        assert_eq!(modules_dir(&t, v), "usr/lib/modules/6.1", "{target}");
    }
    let mut t = Tree::in_temp().unwrap();
    add_symlink(&mut t, "lib", "lib64");
    assert_eq!(modules_dir(&t, v), "lib/modules/6.1");
}
