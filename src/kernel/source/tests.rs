//! Finding kernels: both shapes of kernel image and every error, on synthetic trees.

use super::*;
use crate::kernel::bzimage;
use crate::tree::testing::{add_file, add_symlink};
use crate::tree::{Inode, Metadata};
use testkit::tar::{tar, Entry};

const V: &str = "6.1.0-28-cloud-amd64";

fn kernel(t: &mut Tree, path: &str, version: &str) {
    add_file(t, path, &bzimage::fake(&format!("{version} (x@y) #1 SMP")));
}

/// Debian's shape: `/lib → usr/lib`, a kernel, its modules and initrd, GRUB's modules.
pub(crate) fn debian() -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    kernel(&mut t, &format!("boot/vmlinuz-{V}"), V);
    kernel(
        &mut t,
        "boot/vmlinuz-6.1.0-9-cloud-amd64",
        "6.1.0-9-cloud-amd64",
    );
    add_file(&mut t, &format!("boot/initrd.img-{V}"), b"initrd");
    add_file(&mut t, &format!("usr/lib/modules/{V}/modules.dep"), b"");
    add_file(&mut t, "usr/lib/grub/i386-pc/kernel.img", b"k");
    add_file(&mut t, "usr/lib/grub/i386-pc/moddep.lst", b"m");
    t
}

#[test]
fn distribution_newest_kernel_modules_through_the_lib_link() {
    let k = find(&debian()).unwrap();
    assert_eq!(k.shape, Shape::Distribution);
    assert_eq!(k.version, V);
    assert!(k.version_string.starts_with(&format!("{V} (x@y)")));
    assert_eq!(k.kernel, format!("boot/vmlinuz-{V}").as_bytes());
    assert_eq!(
        k.initrd.as_deref(),
        Some(format!("boot/initrd.img-{V}").as_bytes())
    );
    assert_eq!(k.modules_dir, format!("usr/lib/modules/{V}").as_bytes());
    assert_eq!(k.grub, vec![("i386-pc", b"usr/lib/grub/i386-pc".to_vec())]);
}

#[test]
fn distribution_plain_lib_and_initramfs_name() {
    let mut t = Tree::in_temp().unwrap();
    kernel(
        &mut t,
        "boot/vmlinuz-5.14.0-1.el9.x86_64",
        "5.14.0-1.el9.x86_64",
    );
    add_file(&mut t, "boot/initramfs-5.14.0-1.el9.x86_64.img", b"i");
    add_file(&mut t, "lib/modules/5.14.0-1.el9.x86_64/modules.dep", b"");
    let k = find(&t).unwrap();
    assert_eq!(k.modules_dir, b"lib/modules/5.14.0-1.el9.x86_64");
    assert_eq!(
        k.initrd.as_deref(),
        Some(&b"boot/initramfs-5.14.0-1.el9.x86_64.img"[..])
    );
    assert!(k.grub.is_empty());
}

#[test]
fn linuxkit_kernel_and_kernel_tar() {
    let mut t = Tree::in_temp().unwrap();
    let lk = "6.6.13-linuxkit";
    kernel(&mut t, "kernel", lk);
    let modules = tar(&[
        Entry::dir("lib/modules/6.6.13-linuxkit"),
        Entry::file("lib/modules/6.6.13-linuxkit/modules.dep", "kernel/a.ko:\n"),
        Entry::file("lib/modules/6.6.13-linuxkit/kernel/a.ko", "A"),
    ]);
    add_file(&mut t, "kernel.tar", &modules);
    let k = find(&t).unwrap();
    assert_eq!((k.shape, k.version.as_str()), (Shape::LinuxKit, lk));
    assert_eq!(k.kernel, b"kernel");
    assert_eq!(k.initrd, None);
    let mt = k.modules_tree(&t);
    assert!(mt
        .resolve_file(b"lib/modules/6.6.13-linuxkit/kernel/a.ko")
        .is_some());
    assert!(t
        .resolve_file(b"lib/modules/6.6.13-linuxkit/kernel/a.ko")
        .is_none());
}

fn err(t: &Tree) -> String {
    find(t).unwrap_err().to_string()
}

#[test]
fn no_kernel_says_where_it_looked_and_what_works() {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "etc/os-release", b"ID=alpine\n");
    let e = find(&t).unwrap_err();
    assert!(matches!(e, KernelError::NoKernel { .. }), "{e:?}");
    let e = e.to_string();
    for want in [
        "/boot/vmlinuz-*",
        "/kernel",
        "linux-image-cloud-amd64",
        "LinuxKit",
    ] {
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn an_arm64_image_is_not_an_x86_kernel() {
    let mut t = Tree::in_temp().unwrap();
    let mut image = vec![0u8; 0x1000];
    image[0x38..0x3C].copy_from_slice(b"ARM\x64");
    add_file(&mut t, "boot/vmlinuz-6.1.0-28-arm64", &image);
    let e = err(&t);
    assert!(
        e.contains("/boot/vmlinuz-6.1.0-28-arm64") && e.contains("arm64 kernel Image"),
        "{e}"
    );
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "kernel", b"not a kernel at all");
    let e = err(&t);
    assert!(e.contains("/kernel is not an x86 kernel"), "{e}");
}

#[test]
fn modules_of_another_version_are_named() {
    let mut t = Tree::in_temp().unwrap();
    kernel(&mut t, "boot/vmlinuz-6.1.0-28", "6.1.0-28");
    add_file(&mut t, "lib/modules/6.1.0-27/modules.dep", b"");
    let e = find(&t).unwrap_err();
    assert!(matches!(e, KernelError::ModulesMismatch { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("/boot/vmlinuz-6.1.0-28") && e.contains("/lib/modules/6.1.0-27"),
        "{e}"
    );
}

#[test]
fn no_modules_at_all() {
    let mut t = Tree::in_temp().unwrap();
    kernel(&mut t, "boot/vmlinuz-6.1.0-28", "6.1.0-28");
    let e = err(&t);
    assert!(
        e.contains("/lib/modules/6.1.0-28") && e.contains("/usr/lib/modules/6.1.0-28"),
        "{e}"
    );
    // LinuxKit without kernel.tar, and with modules of another version.
    let mut t = Tree::in_temp().unwrap();
    kernel(&mut t, "kernel", "6.6.13-linuxkit");
    assert!(err(&t).contains("/kernel.tar"), "{}", err(&t));
    let modules = tar(&[Entry::file("lib/modules/6.6.1-linuxkit/modules.dep", "")]);
    add_file(&mut t, "kernel.tar", &modules);
    let e = err(&t);
    assert!(
        e.contains("/lib/modules/6.6.1-linuxkit in /kernel.tar"),
        "{e}"
    );
}

#[test]
fn header_version_must_match_the_file_name() {
    let mut t = Tree::in_temp().unwrap();
    kernel(&mut t, "boot/vmlinuz-6.1.0-28", "6.1.0-27");
    add_file(&mut t, "lib/modules/6.1.0-28/modules.dep", b"");
    let e = find(&t).unwrap_err();
    assert!(matches!(e, KernelError::VersionMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("\"6.1.0-27\""), "{e}");
}

#[test]
fn fedora_and_arch_keep_the_kernel_in_the_modules_directory() {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    for v in ["6.11.4-301.fc41.x86_64", "6.9.1-200.fc41.x86_64"] {
        kernel(&mut t, &format!("usr/lib/modules/{v}/vmlinuz"), v);
        add_file(&mut t, &format!("usr/lib/modules/{v}/modules.dep"), b"");
    }
    add_file(&mut t, "boot/initramfs-6.11.4-301.fc41.x86_64.img", b"i");
    let k = find(&t).unwrap();
    assert_eq!(k.version, "6.11.4-301.fc41.x86_64");
    assert_eq!(k.kernel, b"usr/lib/modules/6.11.4-301.fc41.x86_64/vmlinuz");
    assert_eq!(k.modules_dir, b"usr/lib/modules/6.11.4-301.fc41.x86_64");
    assert_eq!(
        k.initrd.as_deref(),
        Some(&b"boot/initramfs-6.11.4-301.fc41.x86_64.img"[..])
    );
}

#[test]
fn a_linuxkit_kernel_for_arm64_is_refused() {
    let mut t = Tree::in_temp().unwrap();
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    add_file(&mut t, "kernel", &elf);
    let e = find(&t).unwrap_err();
    assert!(matches!(e, KernelError::NotX86 { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("/kernel is not an x86 kernel (bzImage): an ELF file for arm64 (aarch64)"),
        "{e}"
    );
}
