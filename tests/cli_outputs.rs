//! The real `d2v` binary on tiny hand-made images that need no full OS: `inspect --json`,
//! `export` (deterministic, `-o -` equals `-o FILE`), and `build` of an image with a fake
//! kernel into every `--format` (checked with qemu-img, sgdisk, xmllint and the `.mf`
//! checksums), reproducible with `SOURCE_DATE_EPOCH`, and leaving nothing when SIGKILLed
//! before the output is committed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::cli::*;
use testkit::oci::Compression;
use testkit::ovf_schema;

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

const EPOCH: &str = "1700000000";
/// Keep the tiny disks small: little free space on the root filesystem.
const SMALL: [&str; 2] = ["--root-free", "64M"];
/// A VM name that is not a valid hostname.
const VM_NAME: [&str; 2] = ["--name", "My VM"];

fn tiny(sb: &Sandbox) -> (PathBuf, testkit::oci::WrittenImage, String) {
    let dir = sb.path("in/oci");
    let img = write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    let src = oci_src(&dir, "v1");
    (dir, img, src)
}

fn tool_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{shown} failed:\n{text}");
    text
}

#[test]
fn inspect_json_reports_manifest_layers_config_and_bootability() {
    let sb = Sandbox::new(D2V);
    let (_, img, src) = tiny(&sb);
    let r = sb.d2v(["inspect", &src, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", r.stdout_str()));
    assert!(v.is_object(), "{v:#}");
    for s in [img.manifest_digest.as_str(), img.config_digest.as_str()] {
        assert!(json_has_string(&v, s), "{s} missing:\n{v:#}");
    }
    for l in &img.layers {
        assert!(
            json_has_string(&v, &l.digest),
            "layer {} missing:\n{v:#}",
            l.digest
        );
        assert!(json_has_string(&v, &l.media_type), "{v:#}");
    }
    let sizes: Vec<u64> = img.layers.iter().map(|l| l.size).collect();
    let layers = json_find(&v, "layers")
        .and_then(|l| l.as_array())
        .expect("a layers array");
    assert_eq!(layers.len(), 2, "{v:#}");
    for (l, size) in layers.iter().zip(&sizes) {
        assert_eq!(
            json_find(l, "size").and_then(|s| s.as_u64()),
            Some(*size),
            "{l:#}"
        );
    }
    // Config: entrypoint and env.
    assert!(json_has_string(&v, "/usr/bin/hello"), "{v:#}");
    assert!(json_has_string(&v, "D2V_TEST=1"), "{v:#}");
    // Bootability: the fake kernel and initramfs, no container markers.
    let kernels = json_find(&v, "kernels").expect("kernels");
    assert!(
        json_has_string(kernels, &format!("/boot/vmlinuz-{KERNEL_VERSION}")),
        "{v:#}"
    );
    let initramfs = json_find(&v, "initramfs").expect("initramfs");
    assert!(
        json_has_string(initramfs, &format!("/boot/initrd.img-{KERNEL_VERSION}")),
        "{v:#}"
    );
    assert!(json_find(&v, "init").is_some(), "{v:#}");
    assert!(
        json_find(&v, "grub_i386_pc").is_some() || json_find(&v, "grub").is_some(),
        "{v:#}"
    );

    // Text mode names the same things.
    let t = sb.d2v(["inspect", &src]).ok().stdout_str();
    assert!(t.contains(&img.manifest_digest), "{t}");
    assert!(
        t.contains(&format!("/boot/vmlinuz-{KERNEL_VERSION}")),
        "{t}"
    );
}

/// `(path, type flag, mode, content)` of every entry of a tar.
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, (u8, u32, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    let mut m = BTreeMap::new();
    for e in a.entries().expect("a tar") {
        let mut e = e.expect("a tar entry");
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        m.insert(path, (h.entry_type().as_byte(), h.mode().unwrap(), data));
    }
    m
}

#[test]
fn export_is_deterministic_and_stdout_equals_file() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let a = sb.d2v(["export", &src, "-o", "-"]).ok().stdout;
    // Cold cache the second time: the result may not depend on it.
    let cache = sb.fresh_cache();
    let b = sb
        .d2v([
            "export".as_ref(),
            src.as_ref(),
            "-o".as_ref(),
            "-".as_ref(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
        ])
        .ok()
        .stdout;
    assert!(!a.is_empty());
    assert!(
        a == b,
        "two exports differ ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    let file = sb.out_file("rootfs.tar");
    let r = sb
        .d2v([
            "export".as_ref(),
            src.as_ref(),
            "-o".as_ref(),
            file.as_os_str(),
        ])
        .ok();
    assert!(r.stdout.is_empty(), "export -o FILE printed on stdout");
    assert!(
        std::fs::read(&file).unwrap() == a,
        "-o FILE differs from -o -"
    );

    // It is the flattened tree: layer 2's changes applied, whiteouts gone.
    let m = tar_entries(&a);
    let hello = m
        .get("usr/bin/hello")
        .or(m.get("./usr/bin/hello"))
        .expect("usr/bin/hello");
    assert_eq!(hello.2, b"#!/bin/sh\necho hello\n");
    assert_eq!(hello.1 & 0o7777, 0o755);
    assert!(m.keys().all(|k| !k.contains(".wh.")), "{:?}", m.keys());
    assert!(
        !m.contains_key("etc/passwd") && !m.contains_key("./etc/passwd"),
        "whiteout ignored"
    );
    let k = format!("boot/vmlinuz-{KERNEL_VERSION}");
    assert_eq!(
        m.get(&k).or(m.get(&format!("./{k}"))).expect("kernel").2,
        noise(2, 300_000)
    );
    // GNU tar reads it too.
    tool_ok(Command::new("tar").arg("-tf").arg(&file));
}

/// `d2v build SRC --format F -o out` with SOURCE_DATE_EPOCH, asserting success.
fn build(sb: &Sandbox, src: &str, format: &str, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "build".into(),
        src.into(),
        "--format".into(),
        format.into(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let r = sb.d2v_env(&args, &[("SOURCE_DATE_EPOCH", EPOCH)]).ok();
    assert!(out.exists(), "{} not written:\n{}", out.display(), r.stderr);
    r
}

fn qemu_img_check(vmdk: &Path) {
    testkit::require_tool("qemu-img", "qemu-utils");
    tool_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(vmdk),
    );
    let info = tool_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(vmdk),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["format"], "vmdk", "{info}");
    assert_eq!(
        v["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
}

fn same_disk(raw: &Path, vmdk: &Path) {
    tool_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(raw)
            .arg(vmdk),
    );
}

/// Checks every `SHA256(name)= hex` line of an .mf against `files`, and that it covers them.
fn check_mf(mf: &str, files: &BTreeMap<String, Vec<u8>>) {
    let mut seen = Vec::new();
    for line in mf.lines().filter(|l| !l.is_empty()) {
        let (lhs, hex) = line
            .split_once(")= ")
            .unwrap_or_else(|| panic!("bad .mf line {line:?}"));
        let name = lhs
            .strip_prefix("SHA256(")
            .unwrap_or_else(|| panic!("not SHA256: {line:?}"));
        let data = files
            .get(name)
            .unwrap_or_else(|| panic!(".mf names {name}, not in {:?}", files.keys()));
        assert_eq!(format!("sha256:{hex}"), sha256(data), "{name}");
        seen.push(name.to_string());
    }
    let mut want: Vec<String> = files
        .keys()
        .filter(|n| !n.ends_with(".mf"))
        .cloned()
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want, ".mf does not cover every file");
}

fn validate_ovf(xml: &str) {
    if let Some(r) = ovf_schema::validate(xml) {
        r.unwrap_or_else(|e| panic!("OVF schema validation failed:\n{e}\n{xml}"));
    }
}

#[test]
fn build_every_format_gives_valid_outputs() {
    let sb = Sandbox::new(D2V);
    let (_, img, src) = tiny(&sb);

    // raw: a GPT disk with BIOS boot, ESP and root partitions.
    let raw = sb.out_file("vm.img");
    build(&sb, &src, "raw", &raw, &VM_NAME);
    testkit::require_tool("sgdisk", "gdisk");
    let v = tool_ok(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let p = tool_ok(Command::new("sgdisk").arg("-p").arg(&raw));
    for code in ["EF02", "EF00", "8304"] {
        assert!(p.contains(code), "no {code} partition:\n{p}");
    }

    // vmdk: streamOptimized, the same disk.
    let vmdk = sb.out_file("vm.vmdk");
    build(&sb, &src, "vmdk", &vmdk, &VM_NAME);
    qemu_img_check(&vmdk);
    same_disk(&raw, &vmdk);

    // ova: .ovf first, then .mf, then the disk; checksums right; schema-valid; the same disk.
    let ova = sb.out_file("vm.ova");
    let r = build(&sb, &src, "ova", &ova, &[VM_NAME[0], VM_NAME[1], "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("build --json is not JSON ({e}):\n{}", r.stdout_str()));
    assert!(
        json_has_string(&summary, &img.manifest_digest),
        "{summary:#}"
    );
    // The VM name may have spaces; the guest's hostname is derived from it validly.
    assert_eq!(
        json_find(&summary, "hostname"),
        Some(&"my-vm".into()),
        "{summary:#}"
    );
    let bytes = std::fs::read(&ova).unwrap();
    let mut names = Vec::new();
    let mut files = BTreeMap::new();
    let mut mtimes = Vec::new();
    for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut e = e.unwrap();
        assert_eq!(&e.header().as_bytes()[257..263], b"ustar\0", "not ustar");
        mtimes.push(e.header().mtime().unwrap());
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut d = Vec::new();
        e.read_to_end(&mut d).unwrap();
        names.push(name.clone());
        files.insert(name, d);
    }
    assert_eq!(names, ["vm.ovf", "vm.mf", "vm-disk1.vmdk"], "OVA members");
    assert!(
        mtimes.iter().all(|&t| t.to_string() == EPOCH),
        "mtimes {mtimes:?} ≠ SOURCE_DATE_EPOCH"
    );
    check_mf(std::str::from_utf8(&files["vm.mf"]).unwrap(), &files);
    let ovf = String::from_utf8(files["vm.ovf"].clone()).unwrap();
    validate_ovf(&ovf);
    assert!(ovf.contains("My VM"), "the VM name is not in the OVF");
    assert!(
        ovf.contains(&img.manifest_digest),
        "provenance missing from the OVF"
    );
    assert!(
        ovf.contains(&format!("ovf:size=\"{}\"", files["vm-disk1.vmdk"].len())),
        "OVF File size ≠ the VMDK's size"
    );
    let inner = sb.path("in/from-ova.vmdk");
    std::fs::write(&inner, &files["vm-disk1.vmdk"]).unwrap();
    qemu_img_check(&inner);
    same_disk(&raw, &inner);

    // ovf: a directory with the same three files.
    let dir = sb.out_file("vmdir");
    build(&sb, &src, "ovf", &dir, &VM_NAME);
    assert!(dir.is_dir());
    let mut dfiles = BTreeMap::new();
    for n in ls(&dir) {
        dfiles.insert(n.clone(), std::fs::read(dir.join(&n)).unwrap());
    }
    assert_eq!(
        dfiles.keys().cloned().collect::<Vec<_>>(),
        ["vmdir-disk1.vmdk", "vmdir.mf", "vmdir.ovf"]
    );
    check_mf(std::str::from_utf8(&dfiles["vmdir.mf"]).unwrap(), &dfiles);
    validate_ovf(std::str::from_utf8(&dfiles["vmdir.ovf"]).unwrap());
    qemu_img_check(&dir.join("vmdir-disk1.vmdk"));
    same_disk(&raw, &dir.join("vmdir-disk1.vmdk"));

    // Nothing else was left in the output directory (no temporaries).
    assert_eq!(sb.out_listing(), ["vm.img", "vm.ova", "vm.vmdk", "vmdir"]);
}

/// `--property`/`--cloud-init` on an image that reads no OVF environment: the properties are
/// in the schema-valid descriptor, and build warns (stderr and `--json`).
#[test]
fn properties_without_a_reader_are_warned_about() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let extra = ["--cloud-init", "--property", "role=web"];
    let r = build(&sb, &src, "ovf", &sb.out_file("text"), &extra);
    let warning = "warning: OVF properties are set (--property/--cloud-init) but nothing in \
                   the guest reads them";
    assert!(r.stderr.contains(warning), "{}", r.stderr);
    let dir = sb.out_file("vm");
    let r = build(&sb, &src, "ovf", &dir, &[&extra[..], &["--json"]].concat());
    let summary: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(summary["warnings"]
        .to_string()
        .contains("nothing in the guest reads them"));
    assert_eq!(summary["ovf_properties"][1], "hostname");
    assert_eq!(summary["ovf_properties"][6], "role");
    assert_eq!(summary["ovf_environment"]["readers"], serde_json::json!([]));
    let xml = std::fs::read_to_string(dir.join("vm.ovf")).unwrap();
    validate_ovf(&xml);
    assert!(xml.contains(r#"<Property ovf:key="role" ovf:type="string" ovf:userConfigurable="true" ovf:value="web"/>"#));
    assert!(xml.contains(r#"ovf:transport="iso com.vmware.guestInfo""#));
}

#[test]
fn build_is_reproducible() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let mut outs = Vec::new();
    for i in 0..2 {
        let d = sb.out().join(format!("run{i}"));
        std::fs::create_dir(&d).unwrap();
        let ova = d.join("app.ova");
        // The second run with a cold cache, from another working directory and with no
        // program on PATH: d2v runs no host tool (GRUB's images are its own).
        let cache = sb.fresh_cache();
        let empty = sb.path(&format!("empty-path{i}"));
        std::fs::create_dir_all(&empty).unwrap();
        let path = if i == 0 {
            std::env::var("PATH").unwrap()
        } else {
            empty.display().to_string()
        };
        let mut args: Vec<String> = ["build", &src, "-o", &ova.display().to_string()]
            .map(String::from)
            .into();
        args.extend(["--cache-dir".into(), cache.display().to_string()]);
        args.extend(SMALL.iter().map(|s| s.to_string()));
        sb.d2v_env(&args, &[("SOURCE_DATE_EPOCH", EPOCH), ("PATH", &path)])
            .ok();
        outs.push(std::fs::read(&ova).unwrap());
    }
    assert!(
        outs[0] == outs[1],
        "two builds of the same image differ ({} vs {} bytes)",
        outs[0].len(),
        outs[1].len()
    );
    // SOURCE_DATE_EPOCH is what the times come from: another epoch, another OVA.
    let d = sb.out().join("run-epoch");
    std::fs::create_dir(&d).unwrap();
    let ova = d.join("app.ova");
    let mut args: Vec<String> = vec![
        "build".into(),
        src.clone(),
        "-o".into(),
        ova.display().to_string(),
    ];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    sb.d2v_env(&args, &[("SOURCE_DATE_EPOCH", "1600000000")])
        .ok();
    assert!(
        std::fs::read(&ova).unwrap() != outs[0],
        "SOURCE_DATE_EPOCH has no effect"
    );
}

/// The whole build — flattening, ext4, FAT, GPT, GRUB's core.img and BOOTX64.EFI, VMDK,
/// OVA — runs inside d2v: strace sees no program started but d2v itself.
#[test]
fn build_starts_no_other_program() {
    let strace = testkit::require_tool("strace", "strace");
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let ova = sb.out_file("app.ova");
    let log = sb.path("strace.log");
    let mut args: Vec<String> = ["build", &src, "-o", &ova.display().to_string()]
        .map(String::from)
        .into();
    args.extend(SMALL.iter().map(|s| s.to_string()));
    let wrapper = [
        strace.as_os_str(),
        "-f".as_ref(),
        "-qq".as_ref(),
        "-e".as_ref(),
        "trace=execve".as_ref(),
        "-o".as_ref(),
        log.as_os_str(),
    ];
    sb.d2v_wrapped(&wrapper, &args).ok();
    assert!(ova.is_file());
    let log = std::fs::read_to_string(&log).unwrap();
    let execs: Vec<&str> = log.lines().filter(|l| l.contains("execve(")).collect();
    assert_eq!(execs.len(), 1, "programs started:\n{log}");
    assert!(execs[0].contains("d2v"), "{log}");
}

#[test]
fn sigkill_before_commit_leaves_no_output() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    for (format, name) in [
        ("ova", "vm.ova"),
        ("ovf", "vmdir"),
        ("vmdk", "vm.vmdk"),
        ("raw", "vm.img"),
    ] {
        let out = sb.out_file(name);
        kill_at(
            &sb,
            &src,
            format,
            &out,
            "holding output before commit",
            true,
        );
        let left = sb.out_listing();
        assert!(
            !left.contains(&name.to_string()),
            "{format}: partial output left: {left:?}"
        );
        // A hidden temporary may remain only where O_TMPFILE cannot be used (the ovf directory).
        if format != "ovf" {
            assert!(left.is_empty(), "{format}: left {left:?}");
        }
        // The next run completes and sweeps the dead run's temporaries.
        build(&sb, &src, format, &out, &[]);
        assert_eq!(
            sb.out_listing(),
            [name],
            "{format}: leftovers after a complete run"
        );
        if out.is_dir() {
            std::fs::remove_dir_all(&out).unwrap();
        } else {
            std::fs::remove_file(&out).unwrap();
        }
    }
}

/// Starts `d2v build` and SIGKILLs it as soon as a stderr line contains `marker`.
fn kill_at(sb: &Sandbox, src: &str, format: &str, out: &Path, marker: &str, hold: bool) {
    let mut cmd = sb.command([
        "build",
        src,
        "--format",
        format,
        "-o",
        &out.display().to_string(),
    ]);
    cmd.args(SMALL)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if hold {
        cmd.env("D2V_TEST_HOLD_BEFORE_COMMIT", "30");
    }
    let mut child = cmd.spawn().unwrap();
    let mut seen = Vec::new();
    let mut found = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains(marker) {
            found = true;
            break;
        }
        seen.push(line);
    }
    // SIGKILL: no destructors, no cleanup code runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(found, "{format}: no {marker:?} line:\n{}", seen.join("\n"));
    assert!(!status.success());
}

#[test]
fn sigkill_while_writing_the_disk_leaves_no_output() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    for (format, name) in [("ova", "vm.ova"), ("raw", "vm.img"), ("ovf", "vmdir")] {
        let out = sb.out_file(name);
        kill_at(&sb, &src, format, &out, "writing disk", false);
        let left = sb.out_listing();
        // The raw disk and the OVA's scratch VMDK are unnamed temporary files.
        assert!(left.is_empty(), "{format}: left {left:?}");
    }
}

/// The partition `n`'s byte range in a GPT disk, from `sgdisk -i`.
fn partition_range(raw: &Path, n: u32) -> (u64, u64) {
    let info = tool_ok(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(raw));
    let sector = |key: &str| -> u64 {
        let l = info
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{info}"));
        l[key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = sector("First sector:");
    let last = sector("Last sector:");
    (first * 512, (last + 1 - first) * 512)
}

/// Copies `len` bytes at `off` of `raw` into a sparse file.
fn extract(raw: &Path, off: u64, len: u64, to: &Path) {
    tool_ok(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", to.display()))
            .args([
                "bs=1M",
                "iflag=skip_bytes,count_bytes",
                "conv=sparse",
                "status=none",
            ])
            .arg(format!("skip={off}"))
            .arg(format!("count={len}")),
    );
}

#[test]
fn odd_boot_entries_are_dropped_or_copied_with_warnings() {
    use testkit::tar::{tar, Entry};
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let long = format!("boot/{}", "n".repeat(250));
    testkit::oci::write_image(
        &dir,
        &testkit::oci::ImageSpec::new()
            .layer(base_layer("debian", true), Compression::Gzip)
            .layer(
                tar(&[
                    Entry::symlink("boot/loop", "loop"),
                    Entry::symlink("boot/up", "../../../../etc"),
                    Entry::symlink("boot/boot", "."),
                    Entry::symlink("boot/dangling", "/nowhere"),
                    Entry::char_dev("boot/console", 5, 1),
                    Entry::fifo("boot/fifo"),
                    Entry::hardlink("boot/vmlinuz-hl", format!("boot/vmlinuz-{KERNEL_VERSION}")),
                    Entry::file(&long, "long name"),
                    Entry::file(b"boot/bad-\xff\xfe-name", "not UTF-8"),
                    Entry::file("boot/UPPER", "x"),
                    Entry::file("boot/upper", "y"),
                    Entry::file("boot/a:b*c?.txt", "reserved characters"),
                ]),
                Compression::None,
            )
            .tag("v1"),
    )
    .unwrap();
    let raw = sb.out_file("odd.img");
    let r = build(&sb, &oci_src(&dir, "v1"), "raw", &raw, &[]);
    for dropped in [
        "/boot/loop",
        "/boot/dangling",
        "/boot/console",
        "/boot/fifo",
        "a:b*c?.txt",
    ] {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains(dropped) && l.contains("dropped")),
            "no warning for {dropped}:\n{}",
            r.stderr
        );
    }
    // The ESP and the root filesystem are consistent for their own checkers.
    testkit::require_tool("fsck.fat", "dosfstools");
    testkit::require_tool("e2fsck", "e2fsprogs");
    let (off, len) = partition_range(&raw, 2);
    let esp = sb.path("in/esp.img");
    extract(&raw, off, len, &esp);
    tool_ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    let (off, len) = partition_range(&raw, 3);
    let root = sb.path("in/root.img");
    extract(&raw, off, len, &root);
    tool_ok(Command::new("e2fsck").arg("-fn").arg(&root));
    // The kernel's hard link and the long name made it onto the ESP.
    testkit::require_tool("mdir", "mtools");
    let listing = tool_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-b")
            .arg("-i")
            .arg(&esp)
            .arg("::/"),
    );
    assert!(listing.contains("vmlinuz-hl"), "{listing}");
    assert!(listing.contains(&"n".repeat(250)), "{listing}");
}

/// Whether the ELF executable `bytes` asks for a program interpreter (a dynamic loader):
/// a `PT_INTERP` program header.
fn has_interpreter(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// The d2v that `cargo xtask` builds (and ships) is one static, stripped executable: no
/// dynamic loader, no shared libraries, no debug info. `file` and `ldd` agree with the ELF
/// headers.
#[test]
#[ignore = "needs D2V_BIN, the release build (cargo xtask test sets it)"]
fn release_binary_is_static() {
    let bin = PathBuf::from(std::env::var_os("D2V_BIN").expect("D2V_BIN"));
    assert!(
        !has_interpreter(&std::fs::read(&bin).unwrap()),
        "{}",
        bin.display()
    );
    assert!(
        has_interpreter(&std::fs::read("/bin/sh").unwrap()),
        "the check can fail"
    );
    let file = tool_ok(Command::new("file").arg("-L").arg(&bin));
    assert!(file.contains("static"), "{file}");
    // What users download is small: no debug info, no symbol table (profile.release strips;
    // `--profile profiling` keeps them). The README states the size.
    assert!(file.contains(", stripped"), "{file}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size < 12 << 20, "the shipped binary is {size} bytes");
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let text = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(!text.contains("libc.so"), "{text}");
    // And it runs.
    let v = tool_ok(Command::new(&bin).arg("--version"));
    assert!(v.starts_with("d2v "), "{v}");
}

/// An image whose initramfs (a real gzip-compressed `newc` archive) carries `modules`; with
/// `nic`, the kernel's `/lib/modules` holds that network driver module (else it has none).
fn with_initramfs(sb: &Sandbox, tag: &str, modules: &[&str], nic: Option<&str>) -> String {
    let dir = sb.path("in/initramfs");
    let paths: Vec<String> = modules
        .iter()
        .map(|m| format!("usr/lib/modules/{KERNEL_VERSION}/kernel/drivers/{m}.ko"))
        .collect();
    let entries: Vec<(&str, &[u8])> = paths
        .iter()
        .map(|p| (p.as_str(), &b"\x7fELF"[..]))
        .chain([("init", &b"#!/bin/sh\n"[..])])
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &testkit::cpio::newc(&entries)).unwrap();
    let mut entries = vec![testkit::tar::Entry::file(
        format!("boot/initrd.img-{KERNEL_VERSION}"),
        gz.finish().unwrap(),
    )];
    if let Some(nic) = nic {
        entries.push(testkit::tar::Entry::file(
            format!("lib/modules/{KERNEL_VERSION}/kernel/drivers/net/{nic}.ko"),
            "\x7fELF",
        ));
    }
    let initrd = testkit::tar::tar(&entries);
    testkit::oci::write_image(
        &dir,
        &testkit::oci::ImageSpec::new()
            .layer(base_layer("debian", true), Compression::Gzip)
            .layer(initrd, Compression::Gzip)
            .tag(tag),
    )
    .unwrap();
    oci_src(&dir, tag)
}

/// `--json` warnings of a raw build of `src` with `extra` options.
fn build_warnings(sb: &Sandbox, src: &str, extra: &[&str]) -> Vec<String> {
    let out = sb.out_file("w.raw");
    let _ = std::fs::remove_file(&out);
    let mut opts = vec!["--json"];
    opts.extend_from_slice(extra);
    let r = build(sb, src, "raw", &out, &opts);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    v["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array in {v:#}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// An image that configures no network (a container gets one from its runtime): `build` warns
/// and says what to add; `inspect` shows what configures it.
#[test]
fn an_image_without_network_configuration_is_warned_about() {
    let sb = Sandbox::new(D2V);
    let (_, _, with_network) = tiny(&sb);
    let t = sb.d2v(["inspect", &with_network]).ok().stdout_str();
    assert!(
        t.contains("network:    systemd-networkd (/etc/systemd/network/50-dhcp.network)"),
        "{t}"
    );
    assert_eq!(
        build_warnings(&sb, &with_network, &[]),
        Vec::<String>::new()
    );

    let dir = sb.path("in/no-network");
    testkit::oci::write_image(
        &dir,
        &testkit::oci::ImageSpec::new()
            .layer(base_layer("debian", true), Compression::Gzip)
            .layer(
                testkit::tar::tar(&[testkit::tar::Entry::whiteout("etc/systemd/network")]),
                Compression::Gzip,
            )
            .tag("v1"),
    )
    .unwrap();
    let src = oci_src(&dir, "v1");
    let w = build_warnings(&sb, &src, &[]);
    assert!(
        w.len() == 1 && w[0].contains("configures no network") && w[0].contains("DHCP=yes"),
        "{w:?}"
    );
    let t = sb.d2v(["inspect", &src]).ok().stdout_str();
    assert!(t.contains("network:    none found"), "{t}");
}

/// open-vm-tools (vSphere's guest operations) is reported by `inspect` and noted by `build`.
#[test]
fn vmware_tools_are_reported() {
    let sb = Sandbox::new(D2V);
    let (_, _, without) = tiny(&sb);
    let t = sb.d2v(["inspect", &without]).ok().stdout_str();
    assert!(t.contains("vmware tools: none (no open-vm-tools"), "{t}");
    let out = sb.out_file("t.raw");
    let r = build(&sb, &without, "raw", &out, &[]);
    assert!(r.stderr.contains("note: no open-vm-tools"), "{}", r.stderr);

    let dir = sb.path("in/tools");
    testkit::oci::write_image(
        &dir,
        &testkit::oci::ImageSpec::new()
            .layer(base_layer("debian", true), Compression::Gzip)
            .layer(
                testkit::tar::tar(&[
                    testkit::tar::Entry::file("usr/bin/vmtoolsd", "\x7fELF").mode(0o755)
                ]),
                Compression::Gzip,
            )
            .tag("v1"),
    )
    .unwrap();
    let src = oci_src(&dir, "v1");
    let t = sb.d2v(["inspect", &src]).ok().stdout_str();
    assert!(t.contains("vmware tools: /usr/bin/vmtoolsd"), "{t}");
    let v: serde_json::Value =
        serde_json::from_slice(&sb.d2v(["inspect", &src, "--json"]).ok().stdout).unwrap();
    assert_eq!(
        json_find(&v, "vmware_tools").cloned(),
        Some(serde_json::json!("/usr/bin/vmtoolsd")),
        "{v:#}"
    );
    let _ = std::fs::remove_file(&out);
    let r = build(&sb, &src, "raw", &out, &[]);
    assert!(!r.stderr.contains("open-vm-tools"), "{}", r.stderr);
}

/// A host-only initramfs (as `MODULES=dep` or dracut's hostonly make in a container build)
/// cannot reach the disk on the controller the OVF declares: `build` warns, naming the file,
/// the driver and the fix; `inspect` shows what each initramfs has.
#[test]
fn initramfs_without_the_controller_driver_is_reported() {
    let sb = Sandbox::new(D2V);
    let initrd = format!("/boot/initrd.img-{KERNEL_VERSION}");

    let host_only = with_initramfs(&sb, "host-only", &["block/virtio_blk"], None);
    let w = build_warnings(&sb, &host_only, &[]);
    assert_eq!(w.len(), 1, "{w:?}");
    for needle in [
        initrd.as_str(),
        "vmw_pvscsi",
        "MODULES=most",
        "--controller lsilogic",
    ] {
        assert!(w[0].contains(needle), "{needle:?} not in {w:?}");
    }
    let w = build_warnings(&sb, &host_only, &["--controller", "lsilogic"]);
    assert!(w.len() == 1 && w[0].contains("mptspi"), "{w:?}");

    let vmware = with_initramfs(
        &sb,
        "vmware",
        &["scsi/vmw_pvscsi", "block/virtio_blk"],
        None,
    );
    assert_eq!(build_warnings(&sb, &vmware, &[]), Vec::<String>::new());
    let w = build_warnings(&sb, &vmware, &["--controller", "lsilogic"]);
    assert!(w.len() == 1 && w[0].contains("mptspi"), "{w:?}");

    let t = sb.d2v(["inspect", &host_only]).ok().stdout_str();
    assert!(
        t.contains(&format!(
            "{initrd}: vmw_pvscsi (PVSCSI) NO, mptspi (LSI Logic) NO"
        )),
        "{t}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&sb.d2v(["inspect", &vmware, "--json"]).ok().stdout).unwrap();
    let d = json_find(&v, "initramfs_drivers").expect("initramfs_drivers");
    assert_eq!(d[0]["path"], initrd.as_str(), "{v:#}");
    assert_eq!(d[0]["vmw_pvscsi"], true, "{v:#}");
    assert_eq!(d[0]["mptspi"], false, "{v:#}");

    // The kernel's modules: the VMXNET3 NIC driver, or a warning naming it.
    let nic = with_initramfs(&sb, "e1000", &["scsi/vmw_pvscsi"], Some("e1000/e1000"));
    let w = build_warnings(&sb, &nic, &[]);
    assert!(
        w.len() == 1 && w[0].contains("vmxnet3") && w[0].contains(KERNEL_VERSION),
        "{w:?}"
    );
    let nic = with_initramfs(
        &sb,
        "vmxnet3",
        &["scsi/vmw_pvscsi"],
        Some("vmxnet3/vmxnet3"),
    );
    assert_eq!(build_warnings(&sb, &nic, &[]), Vec::<String>::new());

    // The fake initramfs of the other tests is no cpio archive: nothing is claimed about it.
    let (_, _, tiny_src) = tiny(&sb);
    assert_eq!(build_warnings(&sb, &tiny_src, &[]), Vec::<String>::new());
    let t = sb.d2v(["inspect", &tiny_src]).ok().stdout_str();
    assert!(t.contains("SCSI drivers not checked"), "{t}");
}

/// On a terminal (here the pseudo-terminal of util-linux's `script`) the long steps draw
/// progress bars on stderr: each layer applied and the VMDK compressed. Piped, or with
/// `--json`, stderr gets none.
#[test]
fn progress_bars_only_on_a_terminal() {
    testkit::require_tool("script", "bsdutils");
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let out = sb.out_file("tty.ova");
    let line = format!(
        "'{}' build '{src}' -o '{}' --root-free 64M",
        env!("CARGO_BIN_EXE_d2v"),
        out.display()
    );
    let run = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(sb.path(""))
        .env("HOME", sb.path("home"))
        .env("XDG_CACHE_HOME", sb.path("cache"))
        .env("COLUMNS", "120")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    // Without the terminal's escape sequences (bold, cursor moves).
    let raw = String::from_utf8_lossy(&run.stdout);
    let mut tty = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then one final letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            tty.push(c);
        }
    }
    assert!(run.status.success() && out.is_file(), "{tty}");
    for bar in ["apply layer 1/2 [", "apply layer 2/2 [", "VMDK ["] {
        assert!(
            tty.contains(bar),
            "no {bar:?} progress bar on the terminal:\n{tty}"
        );
    }

    let piped = build(&sb, &src, "ova", &sb.out_file("piped.ova"), &[]);
    assert!(
        !piped.stderr.contains("apply layer") && !piped.stderr.contains('\x1b'),
        "{}",
        piped.stderr
    );
}

/// The descriptor records where the image came from without the build host's paths: a local
/// layout `oci:/tmp/…/in/oci:v1` becomes its tag and manifest digest.
#[test]
fn the_descriptor_names_no_host_path() {
    let sb = Sandbox::new(D2V);
    let (dir, img, src) = tiny(&sb);
    let out = sb.out_file("vmdir");
    build(&sb, &src, "ovf", &out, &VM_NAME);
    let ovf = std::fs::read_to_string(out.join("vmdir.ovf")).unwrap();
    let host = dir.display().to_string();
    for leak in [host.as_str(), "/tmp", "in/oci", "oci:"] {
        assert!(!ovf.contains(leak), "{leak:?} in the descriptor:\n{ovf}");
    }
    let full = format!("<FullVersion>v1@{}</FullVersion>", img.manifest_digest);
    assert!(ovf.contains(&full), "no {full}:\n{ovf}");
    validate_ovf(&ovf);
}

/// `--hw-version` picks the guest ID (Debian 12: `debian11_64Guest` at vmx-19, whose ESXi 7.0 U2
/// predates `debian12_64Guest`), `--json` reports both, and an `--os-type` that ESXi may not
/// know is warned about.
#[test]
fn hardware_version_and_guest_id_in_the_descriptor_and_json() {
    let sb = Sandbox::new(D2V);
    let (_, _, src) = tiny(&sb);
    let out = sb.out_file("vmdir");
    let r = build(&sb, &src, "ovf", &out, &["--hw-version", "19", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("--json");
    assert_eq!(v["ovf"]["hw_version"], 19, "{v:#}");
    assert_eq!(v["ovf"]["esxi"], "ESXi 7.0 U2", "{v:#}");
    assert_eq!(v["ovf"]["guest_id"], "debian11_64Guest", "{v:#}");
    assert_eq!(v["ovf"]["cim_os_type"], 96, "{v:#}");
    assert_eq!(v["ovf"]["image_guest_id"], "debian12_64Guest", "{v:#}");
    let ovf = std::fs::read_to_string(out.join("vmdir.ovf")).unwrap();
    assert!(ovf.contains("<vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>"));
    assert!(ovf.contains("vmw:osType=\"debian11_64Guest\""), "{ovf}");
    validate_ovf(&ovf);

    let out = sb.out_file("vm2");
    let r = build(
        &sb,
        &src,
        "ovf",
        &out,
        &["--os-type", "debian12_64Guest", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("--json");
    assert_eq!(v["ovf"]["guest_id"], "debian12_64Guest", "{v:#}");
    let w = v["warnings"].to_string();
    assert!(
        w.contains("--os-type debian12_64Guest") && w.contains("--hw-version 21"),
        "{w}"
    );
}
