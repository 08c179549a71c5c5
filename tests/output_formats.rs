//! `--format ova|ovf|vmdk|raw` end to end on a real sparse disk, checked with GNU tar,
//! sha256sum, xmllint and qemu-img; reproducibility; and a SIGKILL mid-write leaving nothing.

use d2v::output::{write_outputs, Format, OutputOptions};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::ovf_schema;

fn run(cmd: &str, args: &[&str], cwd: &Path) -> String {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = testkit::output_text(&o);
    assert!(o.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// A 48 MiB + 3 sectors sparse raw disk with some data.
fn make_raw(dir: &Path) -> PathBuf {
    let p = dir.join("disk.raw");
    let f = File::create(&p).unwrap();
    let len = (48 << 20) + 3 * 512;
    f.set_len(len).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i % 97) as u8 ^ (i >> 11) as u8)
        .collect();
    f.write_all_at(&data, 1 << 20).unwrap();
    f.write_all_at(&data[..5000], 40 << 20).unwrap();
    f.write_all_at(b"end", len - 3).unwrap();
    p
}

fn opts() -> OutputOptions {
    let mut o = OutputOptions::default();
    o.vm.name = "test-vm".into();
    o.vm.source_reference = "docker.io/library/debian:12".into();
    o.vm.manifest_digest = "sha256:1111222233334444".into();
    o.vmdk.seed = o.vm.manifest_digest.clone();
    o.os_release = Some("ID=debian\nVERSION_ID=\"12\"\n".into());
    o.mtime = 1_700_000_000;
    o
}

fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn check_ovf_dir(dir: &Path, base: &str, raw: &Path) {
    testkit::require_tool("sha256sum", "coreutils");
    // The manifest verifies with coreutils' sha256sum (BSD-style lines).
    let mf = std::fs::read_to_string(dir.join(format!("{base}.mf"))).unwrap();
    assert_eq!(mf.lines().count(), 2, "{mf}");
    assert!(
        mf.lines()
            .all(|l| l.starts_with("SHA256(") && l.contains(")= ")),
        "{mf}"
    );
    run("sha256sum", &["-c", &format!("{base}.mf")], dir);
    // References carry the exact disk size; the descriptor validates.
    let disk = dir.join(format!("{base}-disk1.vmdk"));
    let ovf = std::fs::read_to_string(dir.join(format!("{base}.ovf"))).unwrap();
    let size = std::fs::metadata(&disk).unwrap().len();
    assert!(
        ovf.contains(&format!(
            "ovf:href=\"{base}-disk1.vmdk\" ovf:id=\"file1\" ovf:size=\"{size}\""
        )),
        "{ovf}"
    );
    // Debian 12 at the default vmx-13: ESXi 6.5 knows Debian up to debian10_64Guest.
    assert!(ovf.contains("vmw:osType=\"debian10_64Guest\""), "{ovf}");
    assert!(ovf.contains("docker.io/library/debian:12") && ovf.contains("sha256:1111222233334444"));
    if let Some(r) = ovf_schema::validate(&ovf) {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    // The disk is what the raw disk was.
    testkit::require_tool("qemu-img", "qemu-utils");
    run(
        "qemu-img",
        &["check", "-f", "vmdk", disk.to_str().unwrap()],
        dir,
    );
    testkit::assert_vmdk_matches_raw(raw, &disk);
}

#[test]
fn ova_has_ovf_mf_disk_in_order_and_verifies() {
    testkit::require_tool("tar", "tar");
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let ova = d.path().join("app.ova");
    let s = write_outputs(&File::open(&raw).unwrap(), Format::Ova, &ova, &opts()).unwrap();
    assert_eq!(s.bytes, std::fs::metadata(&ova).unwrap().len());
    assert_eq!(s.bytes % 512, 0);
    let list = run("tar", &["tf", ova.to_str().unwrap()], d.path());
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["app.ovf", "app.mf", "app-disk1.vmdk"]
    );
    let verbose = run("tar", &["tvf", ova.to_str().unwrap()], d.path());
    assert!(
        verbose
            .lines()
            .all(|l| l.starts_with("-rw-r--r-- root/root")),
        "{verbose}"
    );
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run(
        "tar",
        &["xf", ova.to_str().unwrap(), "-C", x.to_str().unwrap()],
        d.path(),
    );
    check_ovf_dir(&x, "app", &raw);
    // Only the output is left next to the raw disk: no scratch or temporary files.
    assert_eq!(ls(d.path()), ["app.ova", "disk.raw", "x"]);
}

#[test]
fn same_input_twice_gives_identical_ova() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let mut o2 = opts();
    o2.vmdk.threads = 1; // a different thread count must not matter either
    write_outputs(
        &File::open(&raw).unwrap(),
        Format::Ova,
        &a.join("vm.ova"),
        &opts(),
    )
    .unwrap();
    write_outputs(
        &File::open(&raw).unwrap(),
        Format::Ova,
        &b.join("vm.ova"),
        &o2,
    )
    .unwrap();
    let (x, y) = (
        std::fs::read(a.join("vm.ova")).unwrap(),
        std::fs::read(b.join("vm.ova")).unwrap(),
    );
    assert!(x == y, "two builds of the same input differ");
    // ...and a different seed does change the output (the test can fail).
    let mut o3 = opts();
    o3.vmdk.seed = "sha256:other".into();
    write_outputs(
        &File::open(&raw).unwrap(),
        Format::Ova,
        &b.join("vm.ova"),
        &o3,
    )
    .unwrap();
    assert!(x != std::fs::read(b.join("vm.ova")).unwrap());
}

#[test]
fn ovf_directory_format() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let out = d.path().join("myvm");
    write_outputs(&File::open(&raw).unwrap(), Format::Ovf, &out, &opts()).unwrap();
    assert_eq!(ls(&out), ["myvm-disk1.vmdk", "myvm.mf", "myvm.ovf"]);
    check_ovf_dir(&out, "myvm", &raw);
    // Writing again replaces the directory.
    write_outputs(&File::open(&raw).unwrap(), Format::Ovf, &out, &opts()).unwrap();
    assert_eq!(ls(d.path()), ["disk.raw", "myvm"]);
}

#[test]
fn vmdk_and_raw_formats() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let v = d.path().join("disk.vmdk");
    let s = write_outputs(&File::open(&raw).unwrap(), Format::Vmdk, &v, &opts()).unwrap();
    assert_eq!(
        s.vmdk.unwrap().capacity,
        std::fs::metadata(&raw).unwrap().len()
    );
    testkit::assert_vmdk_matches_raw(&raw, &v);
    let r = d.path().join("copy.img");
    write_outputs(&File::open(&raw).unwrap(), Format::Raw, &r, &opts()).unwrap();
    assert_eq!(std::fs::read(&raw).unwrap(), std::fs::read(&r).unwrap());
    let m = std::fs::metadata(&r).unwrap();
    assert!(
        m.blocks() * 512 < m.len() / 4,
        "raw copy is not sparse: {} blocks",
        m.blocks()
    );
}

#[test]
fn bad_output_directory_is_an_error_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let r = write_outputs(
        &File::open(&raw).unwrap(),
        Format::Ova,
        &d.path().join("nope/vm.ova"),
        &opts(),
    );
    assert!(r.is_err());
    assert_eq!(ls(d.path()), ["disk.raw"]);
}

/// Child half of the kill test: writes an output and holds before commit.
#[test]
#[ignore]
fn kill_test_child() {
    let Some(out) = std::env::var_os("D2V_KILL_TEST_OUT") else {
        return;
    };
    let out = PathBuf::from(out);
    let format = std::env::var("D2V_KILL_TEST_FORMAT")
        .unwrap()
        .parse()
        .unwrap();
    let raw = out.parent().unwrap().join("disk.raw");
    write_outputs(&File::open(raw).unwrap(), format, &out, &opts()).unwrap();
}

#[test]
fn sigkill_before_commit_leaves_no_output() {
    for (format, name) in [
        ("ova", "vm.ova"),
        ("vmdk", "vm.vmdk"),
        ("raw", "vm.img"),
        ("ovf", "vm"),
    ] {
        let d = tempfile::tempdir().unwrap();
        make_raw(d.path());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_test_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("D2V_KILL_TEST_OUT", d.path().join(name))
            .env("D2V_KILL_TEST_FORMAT", format)
            .env("D2V_TEST_HOLD_BEFORE_COMMIT", "60")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let held = lines.any(|l| {
            l.map(|l| l.contains("d2v: holding output before commit"))
                .unwrap_or(false)
        });
        assert!(held, "{format}: the child never reached the commit point");
        child.kill().unwrap(); // SIGKILL: no destructors run
        child.wait().unwrap();
        let left = ls(d.path());
        // The fallback (no O_TMPFILE) leaves a hidden temporary, never the output itself.
        assert!(
            !left.contains(&name.to_string()),
            "{format}: partial output left: {left:?}"
        );
        assert!(
            left.iter().all(|n| n == "disk.raw" || n.starts_with('.')),
            "{format}: {left:?}"
        );
        if format != "ovf" {
            assert_eq!(
                left,
                ["disk.raw"],
                "{format}: O_TMPFILE output should leave nothing"
            );
        }
    }
}

/// Manual timing: `D2V_BENCH_RAW=disk.raw cargo test --release --test output_formats -- --ignored bench`.
#[test]
#[ignore]
fn bench_formats_from_env() {
    let Some(raw) = std::env::var_os("D2V_BENCH_RAW") else {
        return;
    };
    let d = tempfile::tempdir_in(Path::new(&raw).parent().unwrap()).unwrap();
    for (f, name) in [(Format::Vmdk, "b.vmdk"), (Format::Ova, "b.ova")] {
        let t = std::time::Instant::now();
        let s =
            write_outputs(&File::open(&raw).unwrap(), f, &d.path().join(name), &opts()).unwrap();
        eprintln!("{f:?}: {} bytes in {:?}", s.bytes, t.elapsed());
    }
}
