//! The ESP d2v writes, checked by dosfstools' `fsck.fat` and read back with mtools.

use std::os::unix::fs::FileExt;
use std::process::Command;

use d2v::disk::fat::{self, FatOptions};
use d2v::disk::layout::{write_partition_table, Layout};
use d2v::disk::MIB;
use d2v::tree::testing::{add_file, add_symlink};
use d2v::tree::Tree;

fn run(tool: &str, pkg: &str, args: &[&str]) -> (bool, String) {
    let exe = testkit::require_tool(tool, pkg);
    let out = Command::new(exe)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let text = testkit::output_text(&out);
    (out.status.success(), text)
}

#[test]
fn fsck_fat_is_clean_and_mtools_reads_files_back() {
    let mut t = Tree::in_temp().unwrap();
    let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    add_file(&mut t, "boot/vmlinuz-6.1.0-13-cloud-amd64", &kernel);
    add_file(&mut t, "boot/grub/grub.cfg", b"echo hello\n");
    add_file(
        &mut t,
        "boot/A Very Long File Name With Spaces.txt",
        b"long",
    );
    add_symlink(&mut t, "boot/vmlinuz", "vmlinuz-6.1.0-13-cloud-amd64");

    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let file = testkit::create_rw(&disk);
    let layout = Layout::plan("sha256:fat", 64 * MIB, 2 * MIB);
    write_partition_table(&layout, &file).unwrap();
    let opts = FatOptions {
        volume_id: layout.esp_volume_id,
        label: "ESP".into(),
        source: b"boot".to_vec(),
    };
    let summary = fat::write(&t, &file, layout.esp.offset, layout.esp.size, &opts).unwrap();
    assert_eq!(summary.files, 4, "{summary:?}");

    // fsck.fat has no offset option: check a copy of the partition.
    let part = dir.path().join("esp.img");
    let mut buf = vec![0u8; layout.esp.size as usize];
    file.read_exact_at(&mut buf, layout.esp.offset).unwrap();
    std::fs::write(&part, &buf).unwrap();
    let (ok, text) = run(
        "fsck.fat",
        "dosfstools",
        &["-n", "-V", part.to_str().unwrap()],
    );
    assert!(ok, "fsck.fat -n:\n{text}");
    assert!(!text.to_lowercase().contains("dirty"), "{text}");
    let (ok, text) = run(
        "fsck.fat",
        "dosfstools",
        &["-n", "-v", part.to_str().unwrap()],
    );
    assert!(ok && text.contains("32 bit entries"), "{text}");

    let img = format!("{}@@{}", disk.display(), layout.esp.offset);
    let (ok, info) = run("minfo", "mtools", &["-i", &img, "::"]);
    let serial = format!("serial number: {:08X}", layout.esp_volume_id);
    assert!(ok && info.contains(&serial), "want {serial}:\n{info}");
    assert!(
        info.contains(&format!("hidden sectors: {}", layout.esp.offset / 512)),
        "{info}"
    );
    let (ok, listing) = run("mdir", "mtools", &["-i", &img, "-/", "-b", "::/"]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains("A Very Long File Name With Spaces.txt"),
        "{listing}"
    );
    assert!(listing.contains("grub/grub.cfg"), "{listing}");
    for (inside, want) in [
        ("::/vmlinuz-6.1.0-13-cloud-amd64", &kernel[..]),
        ("::/vmlinuz", &kernel[..]),
        ("::/grub/grub.cfg", b"echo hello\n"),
    ] {
        let out = dir.path().join("out");
        let _ = std::fs::remove_file(&out);
        let (ok, text) = run(
            "mcopy",
            "mtools",
            &["-i", &img, inside, out.to_str().unwrap()],
        );
        assert!(ok, "mcopy {inside}: {text}");
        assert!(std::fs::read(&out).unwrap() == want, "{inside} differs");
    }
}
