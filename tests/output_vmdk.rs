//! The VMDK writer checked by QEMU's independent implementation: `qemu-img check` and
//! `qemu-img compare` against the raw image.

use d2v::output::vmdk::{write_stream_optimized, VmdkOptions};
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) -> (i32, String) {
    testkit::require_tool("qemu-img", "qemu-utils");
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    let text = testkit::output_text(&o);
    (o.status.code().unwrap_or(-1), text)
}

fn write_vmdk(raw: &Path, vmdk: &Path) {
    let f = File::open(raw).unwrap();
    let mut out = BufWriter::new(File::create(vmdk).unwrap());
    let opts = VmdkOptions {
        seed: "sha256:qemu-test".into(),
        ..Default::default()
    };
    write_stream_optimized(&f, &mut out, &opts).unwrap();
}

fn check_with_qemu(len: u64, writes: &[(u64, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let vmdk = dir.path().join("disk.vmdk");
    let f = File::create(&raw).unwrap();
    f.set_len(len).unwrap();
    for (off, data) in writes {
        f.write_all_at(data, *off).unwrap();
    }
    drop(f);
    write_vmdk(&raw, &vmdk);
    let (code, text) = qemu_img(&["check", "-f", "vmdk", vmdk.to_str().unwrap()]);
    assert_eq!(code, 0, "qemu-img check: {text}");
    let (code, text) = qemu_img(&[
        "info",
        "-f",
        "vmdk",
        "--output=json",
        vmdk.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("\"create-type\": \"streamOptimized\""),
        "{text}"
    );
    assert!(text.contains("\"compressed\": true"), "{text}");
    assert!(
        text.contains(&format!("\"virtual-size\": {}", len.div_ceil(512) * 512)),
        "{text}"
    );
    testkit::assert_vmdk_matches_raw(&raw, &vmdk);
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 31 + seed as usize) % 251) as u8 ^ (i / 7000) as u8)
        .collect()
}

#[test]
fn qemu_accepts_and_matches_sparse_disk() {
    // 40 MiB + a partial grain: two grain tables, holes, explicit zeros, last byte set.
    let len = (40 << 20) + 12345 * 512;
    check_with_qemu(
        len,
        &[
            (0, pattern(512, 1)),
            (1 << 20, pattern(300_000, 2)),
            (33 << 20, vec![0; 1 << 20]),
            ((34 << 20) + 3, pattern(70_000, 3)),
            (len - 1000, pattern(1000, 4)),
        ],
    );
}

#[test]
fn qemu_accepts_all_zero_and_tiny_disks() {
    check_with_qemu(64 << 20, &[]);
    check_with_qemu(512, &[(0, pattern(512, 9))]);
    check_with_qemu(3 * 65536 + 512, &[(65536, pattern(65536 * 2 + 512, 5))]);
}

/// Manual benchmark: `D2V_BENCH_RAW=disk.raw cargo test --release --test output_vmdk -- --ignored`.
#[test]
#[ignore]
fn bench_raw_from_env() {
    let Some(raw) = std::env::var_os("D2V_BENCH_RAW") else {
        return;
    };
    let out = std::env::temp_dir().join("d2v-bench.vmdk");
    let level = std::env::var("D2V_BENCH_LEVEL")
        .map(|l| l.parse().unwrap())
        .unwrap_or(6);
    let f = File::open(&raw).unwrap();
    let mut w = BufWriter::new(File::create(&out).unwrap());
    let opts = VmdkOptions {
        compression_level: level,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    write_stream_optimized(&f, &mut w, &opts).unwrap();
    eprintln!(
        "wrote {} bytes in {:?}",
        std::fs::metadata(&out).unwrap().len(),
        t.elapsed()
    );
}

#[test]
fn real_ext4_image_roundtrips_through_qemu() {
    testkit::require_tool("mke2fs", "e2fsprogs");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..40u32 {
        let body: Vec<u8> = (0..(i * 3001 + 17))
            .map(|j| (j.wrapping_mul(i + 7) >> 3) as u8)
            .collect();
        std::fs::write(src.join(format!("f{i}")), body).unwrap();
    }
    let raw = dir.path().join("fs.raw");
    File::create(&raw).unwrap().set_len(64 << 20).unwrap();
    let o = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard", "-d"])
        .arg(&src)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vmdk = dir.path().join("fs.vmdk");
    write_vmdk(&raw, &vmdk);
    let (code, text) = qemu_img(&["check", "-f", "vmdk", vmdk.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    testkit::assert_vmdk_matches_raw(&raw, &vmdk);
    // And back: QEMU's conversion of our VMDK is a clean filesystem.
    let back = dir.path().join("back.raw");
    let (code, text) = qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        vmdk.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    testkit::require_tool("e2fsck", "e2fsprogs");
    let o = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A 16-bit boot sector that prints `D2V-VMDK-BOOT-OK` on COM1 and halts:
/// `xor ax,ax; mov ds,ax; cld; mov dx,0x3f8; mov si,msg; l: lodsb; test al,al; jz h;
/// out dx,al; jmp l; h: hlt; jmp h; msg: db ...`.
fn boot_sector() -> Vec<u8> {
    let mut b = vec![
        0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xba, 0xf8, 0x03, 0xbe, 0x16, 0x7c, 0xac, 0x84, 0xc0, 0x74,
        0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd,
    ];
    b.extend_from_slice(b"D2V-VMDK-BOOT-OK\r\n\0");
    b.resize(510, 0);
    b.extend_from_slice(&[0x55, 0xaa]);
    b
}

#[test]
fn qemu_boots_from_the_vmdk() {
    testkit::require_tool("qemu-system-x86_64", "qemu-system-x86");
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("boot.raw");
    let f = File::create(&raw).unwrap();
    f.set_len((8 << 20) + 512).unwrap();
    f.write_all_at(&boot_sector(), 0).unwrap();
    f.write_all_at(&pattern(100_000, 7), 3 << 20).unwrap();
    drop(f);
    let vmdk = dir.path().join("boot.vmdk");
    write_vmdk(&raw, &vmdk);
    let log = dir.path().join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "64",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=vmdk,snapshot=on,if=ide",
            vmdk.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut ok = false;
    while start.elapsed() < std::time::Duration::from_secs(120) {
        if std::fs::read_to_string(&log).is_ok_and(|s| s.contains("D2V-VMDK-BOOT-OK")) {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(
        ok,
        "no boot marker on the serial console: {:?}",
        std::fs::read_to_string(&log)
    );
}
