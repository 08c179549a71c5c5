//! d2v's initramfs read back by GNU cpio and by d2v's own initramfs reader, and when
//! the kernel image's initrd will not do.

use super::*;
use crate::inspect::initramfs::scan;
use crate::kernel::bzimage;
use crate::kernel::source::find;
use crate::tree::testing::{add_file, add_symlink};
use crate::tree::{Inode, Metadata};
use std::io::Cursor;
use std::process::Command;

const V: &str = "6.1.0-28-cloud-amd64";
const DEP: &str = "\
kernel/drivers/scsi/vmw_pvscsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/net/vmxnet3/vmxnet3.ko:
";

/// A merged-/usr tree with a kernel and three modules (`builtin` in `modules.builtin`).
fn tree(builtin: &str) -> Tree {
    let mut t = Tree::in_temp().unwrap();
    t.insert(b"usr/lib", Inode::dir(Metadata::default()))
        .unwrap();
    add_symlink(&mut t, "lib", "usr/lib");
    add_file(&mut t, &format!("boot/vmlinuz-{V}"), &bzimage::fake(V));
    let m = format!("usr/lib/modules/{V}");
    add_file(&mut t, &format!("{m}/modules.dep"), DEP.as_bytes());
    add_file(&mut t, &format!("{m}/modules.builtin"), builtin.as_bytes());
    for line in DEP.lines() {
        let path = line.split(':').next().unwrap();
        add_file(
            &mut t,
            &format!("{m}/{path}"),
            format!("ELF {path}").as_bytes(),
        );
    }
    t
}

fn modules(t: &Tree) -> Vec<String> {
    let ix = ModuleIndex::load(t, &format!("usr/lib/modules/{V}")).unwrap();
    let r = ix.resolve(&["vmw_pvscsi", "vmxnet3", "e1000"]);
    assert_eq!(r.missing, ["e1000"]);
    r.paths
}

fn archive(t: &Tree, mods: &[String]) -> Vec<u8> {
    let mut init = Cursor::new(b"\x7fELF d2v init".to_vec());
    write(Vec::new(), t, V, mods, &mut init).unwrap()
}

#[test]
fn same_inputs_same_bytes_and_d2v_reader_sees_the_modules() {
    let t = tree("");
    let mods = modules(&t);
    let a = archive(&t, &mods);
    assert_eq!(a, archive(&t, &mods));
    let Contents::Modules(found) = scan(&a[..]).unwrap() else {
        panic!("unreadable")
    };
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["scsi_common", "scsi_mod", "vmw_pvscsi", "vmxnet3"]);
}

#[test]
fn gnu_cpio_extracts_init_mount_points_list_and_modules() {
    if Command::new("cpio").arg("--version").output().is_err() {
        eprintln!("GNU cpio is not installed: skipping the check by an independent reader");
        return;
    }
    let t = tree("");
    let mods = modules(&t);
    let a = archive(&t, &mods);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("initramfs.cpio");
    std::fs::write(&path, &a).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let list = sh(&format!("cpio -it --quiet < {}", path.display()));
    let m = format!("usr/lib/modules/{V}");
    let mut want: Vec<String> = [
        ".d2v",
        ".d2v/modules",
        "dev",
        "dev/console",
        "init",
        "newroot",
    ]
    .iter()
    .chain(&["proc", "run", "sys", "usr", "usr/lib", "usr/lib/modules"])
    .map(|s| s.to_string())
    .collect();
    for d in ["", "/kernel", "/kernel/drivers", "/kernel/drivers/net"] {
        want.push(format!("{m}{d}"));
    }
    want.push(format!("{m}/kernel/drivers/net/vmxnet3"));
    want.push(format!("{m}/kernel/drivers/net/vmxnet3/vmxnet3.ko"));
    want.push(format!("{m}/kernel/drivers/scsi"));
    for f in ["scsi_common", "scsi_mod", "vmw_pvscsi"] {
        want.push(format!("{m}/kernel/drivers/scsi/{f}.ko"));
    }
    assert_eq!(list.lines().collect::<Vec<_>>(), want);
    sh(&format!("cpio -idm --quiet < {}", path.display()));
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    assert_eq!(read("init"), b"\x7fELF d2v init");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("init"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    let listed = String::from_utf8(read(".d2v/modules")).unwrap();
    assert_eq!(
        listed,
        mods.iter().map(|m| format!("{m}\n")).collect::<String>()
    );
    assert!(listed.starts_with(&format!("/{m}/kernel/drivers/scsi/scsi_common.ko\n")));
    for p in &mods {
        let rel = p.trim_start_matches('/');
        assert_eq!(
            read(rel),
            format!("ELF {}", rel.strip_prefix(&format!("{m}/")).unwrap()).as_bytes()
        );
    }
    let console = sh("stat -c '%F %t %T %a' dev/console");
    assert_eq!(console.trim(), "character special file 5 1 600");
}

#[test]
fn modules_must_be_files_of_this_kernel() {
    let t = tree("");
    let mut init = Cursor::new(Vec::new());
    let other = vec!["/usr/lib/modules/5.10/kernel/x.ko".to_string()];
    let e = write(Vec::new(), &t, V, &other, &mut init).unwrap_err();
    assert!(matches!(e, KernelError::ModuleOutsideDir { .. }), "{e:?}");
    let gone = vec![format!("/lib/modules/{V}/kernel/gone.ko")];
    let e = write(Vec::new(), &t, V, &gone, &mut init).unwrap_err();
    assert!(matches!(e, KernelError::ModuleNotFound { .. }), "{e:?}");
    // Through the /lib link: found.
    let via_lib = vec![format!(
        "/lib/modules/{V}/kernel/drivers/scsi/scsi_common.ko"
    )];
    write(Vec::new(), &t, V, &via_lib, &mut init).unwrap();
}

#[test]
fn own_initramfs_unless_the_initrd_or_kernel_has_the_driver() {
    use testkit::cpio::newc;
    let mut t = tree("");
    let k = find(&t).unwrap();
    assert!(needs_own_initramfs(&t, &k, "vmw_pvscsi"), "no initrd");
    let with = newc(&[("usr/lib/modules/x/kernel/drivers/scsi/vmw_pvscsi.ko", b"")]);
    add_file(&mut t, &format!("boot/initrd.img-{V}"), &with);
    let k = find(&t).unwrap();
    assert!(!needs_own_initramfs(&t, &k, "vmw_pvscsi"));
    assert!(needs_own_initramfs(&t, &k, "mptspi"));
    add_file(
        &mut t,
        &format!("boot/initrd.img-{V}"),
        b"\xfd7zXZ\0xz data",
    );
    let k = find(&t).unwrap();
    assert!(
        needs_own_initramfs(&t, &k, "vmw_pvscsi"),
        "unreadable initrd"
    );
    // Built into the kernel: any initrd does.
    let mut t = tree("kernel/drivers/message/fusion/mptspi.ko\n");
    add_file(&mut t, &format!("boot/initrd.img-{V}"), &with);
    let k = find(&t).unwrap();
    assert!(!needs_own_initramfs(&t, &k, "mptspi"));
}
