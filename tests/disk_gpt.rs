//! The partition table d2v writes, checked by gdisk's `sgdisk`.

use std::process::Command;

use d2v::disk::gpt;
use d2v::disk::layout::{write_partition_table, Layout};
use d2v::disk::MIB;
use d2v::ids::uuid_string;

fn sgdisk(args: &[&str]) -> String {
    let tool = testkit::require_tool("sgdisk", "gdisk");
    let out = Command::new(tool).args(args).output().unwrap();
    let text = testkit::output_text(&out);
    assert!(out.status.success(), "sgdisk {args:?} failed:\n{text}");
    text
}

#[test]
fn sgdisk_verifies_and_reads_back_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let file = std::fs::File::create(&path).unwrap();
    let layout = Layout::plan("sha256:0123", 64 * MIB, 20 * MIB);
    write_partition_table(&layout, &file).unwrap();
    drop(file);
    let p = path.to_str().unwrap();

    let v = sgdisk(&["-v", p]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");

    let list = sgdisk(&["-p", p]);
    assert!(
        list.contains(&format!(
            "Disk identifier (GUID): {}",
            uuid_string(&layout.disk_uuid).to_uppercase()
        )),
        "{list}"
    );
    assert!(list.contains("Sector size (logical): 512"), "{list}");

    let parts = [
        (
            1,
            &layout.bios_boot,
            gpt::TYPE_BIOS_BOOT,
            layout.bios_boot_uuid,
            "BIOS boot",
        ),
        (
            2,
            &layout.esp,
            gpt::TYPE_EFI_SYSTEM,
            layout.esp_uuid,
            "EFI System",
        ),
        (
            3,
            &layout.root,
            gpt::TYPE_LINUX_ROOT_X86_64,
            layout.root_uuid,
            "root-x86-64",
        ),
    ];
    for (n, region, ty, uuid, name) in parts {
        let info = sgdisk(&[&format!("-i{n}"), p]);
        let want_type = format!("Partition GUID code: {}", ty.to_uppercase());
        assert!(
            info.contains(&want_type),
            "partition {n}: want {want_type}\n{info}"
        );
        let want_uuid = format!(
            "Partition unique GUID: {}",
            uuid_string(&uuid).to_uppercase()
        );
        assert!(
            info.contains(&want_uuid),
            "partition {n}: want {want_uuid}\n{info}"
        );
        assert!(
            info.contains(&format!("First sector: {} ", region.first_lba())),
            "{info}"
        );
        assert!(
            info.contains(&format!("Last sector: {} ", region.last_lba())),
            "{info}"
        );
        assert!(
            info.contains(&format!("Partition name: '{name}'")),
            "{info}"
        );
    }
}
