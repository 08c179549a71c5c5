//! The GRUB that d2v installs boots under SeaBIOS (boot.img → core.img in the BIOS boot
//! partition, patched by d2v) and under OVMF (\EFI\BOOT\BOOTX64.EFI), finds the ESP by its
//! FAT serial and runs its grub.cfg. No kernel and an empty root partition: this proves the
//! boot path up to GRUB's configuration.

use std::time::Duration;

use d2v::disk::layout::{write_disk, DiskOptions};
use d2v::disk::MIB;
use d2v::tree::testing::add_file;
use d2v::tree::Tree;
use testkit::qemu::{Boot, Firmware};

const GRUB_CFG: &str = "serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set word=GRUB-OK
echo \"d2v-marker-$word root=$root\"
halt
";

/// The disk (in a scratch directory that lives as long as the returned guard) and the ESP's
/// serial.
fn build_disk() -> (testkit::Scratch, std::path::PathBuf, String) {
    testkit::require_grub_modules();
    let mut tree = Tree::in_temp().unwrap();
    add_file(&mut tree, "boot/grub/grub.cfg", GRUB_CFG.as_bytes());
    let dir = testkit::scratch_dir("boot-grub");
    let path = dir.join("disk.raw");
    let out = testkit::create_rw(&path);
    let mut opts = DiskOptions::new("sha256:boot-grub-test", 8 * MIB);
    opts.esp_size = 64 * MIB;
    let mut root_called = None;
    let summary = write_disk(&mut tree, &out, &opts, |t, _, off, size| {
        root_called = Some((off, size, t.lookup(b"boot/grub/grub.cfg").is_some()));
        Ok(())
    })
    .unwrap();
    let (off, size, boot_still_full) = root_called.expect("write_root was called");
    assert_eq!(
        (off, size),
        (summary.layout.root.offset, summary.layout.root.size)
    );
    assert!(
        !boot_still_full,
        "the root sees an empty /boot (the ESP mount point)"
    );
    assert!(
        !summary.grub.generated_config,
        "the image's grub.cfg is kept"
    );
    // GRUB's boot code in the MBR leaves the protective MBR and both GPTs valid.
    let sgdisk = testkit::require_tool("sgdisk", "gdisk");
    let v = std::process::Command::new(sgdisk)
        .arg("-v")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );
    (dir, path, summary.layout.esp_volume_id_string())
}

fn boot(firmware: Firmware) {
    let (_dir, disk, _serial) = build_disk();
    let mut b = Boot::new(&disk, firmware, "d2v-marker-GRUB-OK root=hd0,gpt2");
    b.timeout = Duration::from_secs(180);
    b.expect_marker();
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn grub_boots_under_seabios() {
    boot(Firmware::Bios);
}

#[test]
fn grub_boots_under_ovmf() {
    boot(Firmware::Uefi);
}

/// The same disk as a streamOptimized VMDK (what goes into an OVA), booted by QEMU's vmdk driver.
#[test]
fn grub_boots_from_a_stream_optimized_vmdk() {
    let (_dir, disk, _) = build_disk();
    let vmdk = disk.with_extension("vmdk");
    let qemu_img = testkit::require_tool("qemu-img", "qemu-utils");
    let st = std::process::Command::new(qemu_img)
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(&disk)
        .arg(&vmdk)
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = Boot::new(&vmdk, Firmware::Uefi, "d2v-marker-GRUB-OK root=hd0,gpt2");
    b.timeout = Duration::from_secs(180);
    b.expect_marker();
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

/// The harness itself: a disk without boot code never shows the marker.
#[test]
fn an_unbootable_disk_does_not_show_the_marker() {
    let dir = testkit::scratch_dir("unbootable");
    let disk = dir.join("zero.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let mut b = Boot::new(&disk, Firmware::Bios, "d2v-marker-GRUB-OK");
    b.timeout = Duration::from_secs(5);
    let out = b.run();
    assert!(!out.found, "{}", out.log);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(out.log_path.parent().unwrap());
}
