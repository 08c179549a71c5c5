//! The hidden `d2v debug` stages used by `cargo xtask bench`: `debug ext4` writes a clean
//! filesystem holding the image's files (e2fsck, debugfs), `debug vmdk` a VMDK that qemu-img
//! reads back as the raw disk it came from.

use std::process::Command;
use testkit::cli::*;
use testkit::oci::Compression;

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

fn tool(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let text = testkit::output_text(&o);
    assert!(o.status.success(), "{shown} failed:\n{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn debug_ext4_writes_a_clean_filesystem_of_the_image() {
    let e2fsck = testkit::require_tool("e2fsck", "e2fsprogs");
    let debugfs = testkit::require_tool("debugfs", "e2fsprogs");
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    let fs = sb.out_file("root.ext4");
    let cache = sb.fresh_cache();
    sb.d2v([
        "debug".as_ref(),
        "ext4".as_ref(),
        oci_src(&dir, "v1").as_ref(),
        "-o".as_ref(),
        fs.as_os_str(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
    ])
    .ok();
    tool(Command::new(e2fsck).arg("-fn").arg(&fs));
    let cat = tool(
        Command::new(debugfs)
            .args(["-R", "cat /etc/os-release"])
            .arg(&fs),
    );
    assert_eq!(cat, os_release("debian"));
}

#[test]
fn debug_vmdk_reads_back_as_the_raw_disk() {
    let sb = Sandbox::new(D2V);
    // A sparse raw disk: data at the start, in the middle (not grain-aligned) and at the end.
    let raw = sb.path("in/disk.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = testkit::create_rw(&raw);
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&noise(1, 300_000), 0).unwrap();
        f.write_all_at(&noise(2, 70_000), (20 << 20) + 12_345)
            .unwrap();
        f.write_all_at(&[7u8; 4096], (64 << 20) - 4096).unwrap();
    }
    let vmdk = sb.out_file("disk.vmdk");
    sb.d2v([
        "debug".as_ref(),
        "vmdk".as_ref(),
        raw.as_os_str(),
        "-o".as_ref(),
        vmdk.as_os_str(),
        "--compression-level".as_ref(),
        "1".as_ref(),
    ])
    .ok();
    testkit::assert_vmdk_matches_raw(&raw, &vmdk);
}
