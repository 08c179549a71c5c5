//! A real kernel and initramfs loaded by d2v's GRUB from the ESP with the generated grub.cfg,
//! under SeaBIOS and OVMF. Needs a kernel: set `D2V_TEST_KERNEL` (a vmlinuz) and
//! `D2V_TEST_INITRD` (an initramfs whose /init prints `d2v-kernel-marker cmdline: ` followed
//! by /proc/cmdline, then powers off), then `cargo test --test boot_kernel -- --ignored`.

use std::path::PathBuf;
use std::time::Duration;

use d2v::disk::layout::{write_disk, DiskOptions};
use d2v::disk::MIB;
use d2v::ids::uuid_string;
use d2v::tree::testing::add_file;
use d2v::tree::Tree;
use testkit::qemu::{Boot, Firmware};

fn input(var: &str) -> Vec<u8> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("set {var} (see this file's header)"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn boot(firmware: Firmware) {
    let mut tree = Tree::in_temp().unwrap();
    for (path, data) in [
        ("boot/vmlinuz-6.1.0-1-test", input("D2V_TEST_KERNEL")),
        ("boot/initrd.img-6.1.0-1-test", input("D2V_TEST_INITRD")),
    ] {
        add_file(&mut tree, path, &data);
    }
    let dir = testkit::scratch_dir("boot-kernel");
    let path = dir.join("disk.raw");
    let out = testkit::create_rw(&path);
    let mut opts = DiskOptions::new("sha256:boot-kernel-test", 8 * MIB);
    opts.esp_size = 64 * MIB;
    opts.grub.kernel_args = vec!["d2v.test=1".into()];
    let summary = write_disk(&mut tree, &out, &opts, |_, _, _, _| Ok(())).unwrap();
    assert!(summary.grub.generated_config);
    let mut b = Boot::new(&path, firmware, "d2v-kernel-marker");
    b.timeout = Duration::from_secs(300);
    let log = b.expect_marker();
    // Let the rest of the line arrive.
    let line = log
        .lines()
        .find(|l| l.contains("d2v-kernel-marker"))
        .unwrap()
        .to_string();
    let want = format!(
        "root=PARTUUID={} ro console=tty0 console=ttyS0,115200 d2v.test=1",
        uuid_string(&summary.layout.root_uuid)
    );
    assert!(
        line.contains(&want) || log.contains(&want),
        "kernel command line lacks {want:?}:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs D2V_TEST_KERNEL and D2V_TEST_INITRD"]
fn kernel_boots_from_the_esp_under_seabios() {
    boot(Firmware::Bios);
}

#[test]
#[ignore = "needs D2V_TEST_KERNEL and D2V_TEST_INITRD"]
fn kernel_boots_from_the_esp_under_ovmf() {
    boot(Firmware::Uefi);
}
