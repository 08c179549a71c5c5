//! Module resolution: dependency order, softdeps (through aliases), `-`/`_`, built-in and
//! missing drivers, cycles, the controllers' must-haves.

use super::*;
use crate::tree::testing::add_file;

const DEP: &str = "\
kernel/drivers/scsi/vmw_pvscsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.zst kernel/fs/mbcache.ko.zst kernel/lib/crc16.ko.zst
kernel/fs/jbd2/jbd2.ko.zst:
kernel/fs/mbcache.ko.zst:
kernel/lib/crc16.ko.zst:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/lib/libcrc32c.ko:
kernel/drivers/net/vmxnet3/vmxnet3.ko:
";
const BUILTIN: &str = "kernel/drivers/acpi/button.ko\nkernel/drivers/input/evdev.ko\n";
const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crc32c
softdep libcrc32c pre: crc32c post: nothing
softdep cifs gcm
";
const ALIAS: &str =
    "alias crc32c crc32c_intel\nalias pci:v000015ADd000007C0sv*sd*bc*sc*i* vmw_pvscsi\n";

fn index() -> ModuleIndex {
    ModuleIndex::parse("/usr/lib/modules/6.1", DEP, BUILTIN, SOFTDEP, ALIAS)
}

fn rel(r: &Resolved) -> Vec<&str> {
    r.paths
        .iter()
        .map(|p| p.strip_prefix("/usr/lib/modules/6.1/kernel/").unwrap())
        .collect()
}

#[test]
fn dependencies_first_each_once() {
    let r = index().resolve(&["vmw_pvscsi", "sd_mod", "vmxnet3"]);
    assert_eq!(
        rel(&r),
        [
            "drivers/scsi/scsi_common.ko",
            "drivers/scsi/scsi_mod.ko",
            "drivers/scsi/vmw_pvscsi.ko",
            "drivers/scsi/sd_mod.ko",
            "drivers/net/vmxnet3/vmxnet3.ko",
        ]
    );
    assert!(r.builtin.is_empty() && r.missing.is_empty());
}

#[test]
fn softdeps_through_aliases_and_transitive_deps() {
    let r = index().resolve(&["ext4"]);
    assert_eq!(
        rel(&r),
        [
            "arch/x86/crypto/crc32c-intel.ko",
            "lib/crc16.ko.zst",
            "fs/mbcache.ko.zst",
            "fs/jbd2/jbd2.ko.zst",
            "fs/ext4/ext4.ko.zst",
        ]
    );
    // The softdep of a dependency too, and `post:` is not loaded.
    let r = index().resolve(&["libcrc32c"]);
    assert_eq!(
        rel(&r),
        ["arch/x86/crypto/crc32c-intel.ko", "lib/libcrc32c.ko"]
    );
}

#[test]
fn dash_and_underscore_builtin_and_missing() {
    let ix = index();
    let r = ix.resolve(&[
        "crc32c-intel",
        "crc32c_intel",
        "button",
        "evdev",
        "e1000",
        "e1000",
    ]);
    assert_eq!(rel(&r), ["arch/x86/crypto/crc32c-intel.ko"]);
    assert_eq!(r.builtin, ["button", "evdev"]);
    assert_eq!(r.missing, ["e1000"]);
    assert!(ix.has("crc32c-intel") && ix.has("crc32c") && !ix.has("mptspi"));
    assert!(ix.missing_for("vmw_pvscsi").is_empty());
    assert_eq!(ix.missing_for("mptspi"), ["mptspi"]);
    assert_eq!(ix.missing_for("virtio_blk"), ["virtio_pci", "virtio_blk"]);
}

#[test]
fn dependency_cycles_end() {
    let ix = ModuleIndex::parse("/lib/modules/x", "a.ko: b.ko\nb.ko: a.ko\n", "", "", "");
    assert_eq!(
        ix.resolve(&["a"]).paths,
        ["/lib/modules/x/b.ko", "/lib/modules/x/a.ko"]
    );
}

#[test]
fn loads_from_a_tree_and_needs_modules_dep() {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "usr/lib/modules/6.1/modules.dep", DEP.as_bytes());
    add_file(
        &mut t,
        "usr/lib/modules/6.1/modules.builtin",
        BUILTIN.as_bytes(),
    );
    let ix = ModuleIndex::load(&t, "/usr/lib/modules/6.1").unwrap();
    assert!(ix.is_builtin("button") && ix.has("vmw_pvscsi"));
    let e = ModuleIndex::load(&t, "lib/modules/6.1").unwrap_err();
    assert!(
        e.to_string()
            .contains("/lib/modules/6.1 has no modules.dep"),
        "{e}"
    );
}
