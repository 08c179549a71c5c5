//! SIGINT, SIGTERM and SIGHUP at each stage of `d2v pull`/`build` (download, flatten, ext4,
//! ESP/GRUB, VMDK, OVA): d2v exits promptly with 128 + the signal's number, says so in one
//! line, leaves nothing in TMPDIR or the output directory, and its blob cache holds only what
//! the next run uses (a resumable partial download at most), which the next run proves.
//!
//! The download is caught by a loopback registry that stalls halfway through a layer; the
//! other stages by d2v's test hook `D2V_TEST_PAUSE_AT=STAGE` (`src/interrupt.rs`), which
//! pauses there after the stage's temporaries exist.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::cli::{ls, oci_src, write_tiny, Sandbox};
use testkit::layout_registry::{Blob, LayoutRegistry};
use testkit::oci::Compression;

const D2V: &str = env!("CARGO_BIN_EXE_d2v");
/// Small disks: little free space on the root filesystem.
const SMALL: [&str; 2] = ["--root-free", "64M"];
/// How long d2v may take to exit after the signal. It takes milliseconds; the slack is for a
/// loaded CI machine (the measured time is printed).
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// A sandbox with its own TMPDIR (`tmp`, empty) and the tiny image in an OCI layout.
fn sandbox() -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new(D2V);
    std::fs::create_dir(sb.path("tmp")).unwrap();
    let tmp = sb.path("tmp").display().to_string();
    sb.env.push(("TMPDIR".into(), tmp));
    let dir = sb.path("in/oci");
    write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    (sb, dir)
}

/// What an interrupted run gave.
struct Interrupted {
    status: std::process::ExitStatus,
    /// From the signal to the process's end.
    latency: Duration,
    stderr: String,
}

/// Runs d2v with `args` and `env`, waits until `ready` (given each stderr line, and called
/// with `None` every 50 ms) says the run is where it should be, sends `sig` and waits for the
/// end.
fn interrupt(
    sb: &Sandbox,
    args: &[&str],
    env: &[(&str, &str)],
    mut ready: impl FnMut(Option<&str>) -> bool,
    sig: libc::c_int,
) -> Interrupted {
    let mut cmd = sb.command(args);
    cmd.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let at = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let hit = ready(Some(&line));
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if ready(None) => break true,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    if !at {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?}: never reached the stage:\n{}", seen.join("\n"));
    }
    let sent = Instant::now();
    // SAFETY: kill(2) of our own child's PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{args:?}: still running 60 s after signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let latency = sent.elapsed();
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    Interrupted {
        status,
        latency,
        stderr: seen.join("\n"),
    }
}

/// The checks every interrupted run must pass.
fn assert_clean_exit(sb: &Sandbox, what: &str, got: &Interrupted, sig: libc::c_int, name: &str) {
    println!("{what}: {name} → exit in {:?}", got.latency);
    assert_eq!(
        got.status.code(),
        Some(128 + sig),
        "{what}: {:?}\n{}",
        got.status,
        got.stderr
    );
    assert!(
        got.latency < EXIT_BOUND,
        "{what}: exited {:?} after {name}",
        got.latency
    );
    let line = format!("d2v: interrupted ({name}), removed temporary files");
    assert!(got.stderr.contains(&line), "{what}:\n{}", got.stderr);
    assert!(!got.stderr.contains("panicked"), "{what}:\n{}", got.stderr);
    assert_eq!(ls(&sb.path("tmp")), Vec::<String>::new(), "{what}: TMPDIR");
    assert_eq!(sb.out_listing(), Vec::<String>::new(), "{what}: output dir");
}

/// Only resumable partial downloads may stay in the cache's `tmp`.
fn assert_cache_clean(cache: &Path) {
    let left: Vec<_> = ls(&cache.join("tmp"))
        .into_iter()
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "cache tmp: {left:?}");
}

fn build_args<'a>(src: &'a str, format: &'a str, out: &'a str, cache: &'a str) -> Vec<&'a str> {
    let mut v = vec![
        "build",
        src,
        "--format",
        format,
        "-o",
        out,
        "--cache-dir",
        cache,
    ];
    v.extend(SMALL);
    v
}

/// Each stage reached through the pause hook, with the format whose output exists then.
#[test]
fn signal_at_each_local_stage_removes_temporaries_and_exits_128_plus_signo() {
    let (sb, dir) = sandbox();
    let src = oci_src(&dir, "v1");
    let cache = sb.path("cache/c").display().to_string();
    let cases = [
        ("flatten", "ova", "vm.ova", libc::SIGINT, "SIGINT"),
        ("ext4", "ova", "vm.ova", libc::SIGTERM, "SIGTERM"),
        // GRUB's scratch directory is in TMPDIR.
        ("esp_grub", "raw", "vm.img", libc::SIGINT, "SIGINT"),
        // The ovf directory is built under a hidden name beside its target.
        ("vmdk", "ovf", "vmdir", libc::SIGTERM, "SIGTERM"),
        ("vmdk", "vmdk", "vm.vmdk", libc::SIGHUP, "SIGHUP"),
        ("ova", "ova", "vm.ova", libc::SIGINT, "SIGINT"),
    ];
    for (stage, format, name, sig, sig_name) in cases {
        let out = sb.out_file(name).display().to_string();
        let marker = format!("d2v: test pause at {stage}");
        let got = interrupt(
            &sb,
            &build_args(&src, format, &out, &cache),
            &[("D2V_TEST_PAUSE_AT", stage)],
            |line| line.is_some_and(|l| l.contains(&marker)),
            sig,
        );
        assert_clean_exit(&sb, &format!("{stage} ({format})"), &got, sig, sig_name);
        assert_cache_clean(Path::new(&cache));
    }
    // The same cache and output directory serve a whole run.
    let out = sb.out_file("vmdir").display().to_string();
    sb.d2v(build_args(&src, "ovf", &out, &cache)).ok();
    assert_eq!(sb.out_listing(), ["vmdir"]);
    assert_eq!(ls(&sb.path("tmp")), Vec::<String>::new());
}

#[test]
fn signal_during_a_download_keeps_the_cache_resumable() {
    let (sb, dir) = sandbox();
    let (_, manifest) = testkit::cli::manifest_of(&dir, "v1");
    let slow = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reg = LayoutRegistry::start(&dir, "v1");
    reg.set(&slow, Blob::Stall);
    let src = format!("{}/app:v1", reg.host);
    let cache = sb.path("cache/c");
    let out = sb.out_file("vm.ova").display().to_string();
    let cache_s = cache.display().to_string();
    let mut args = vec!["pull", &src, "-o", &out, "--cache-dir", &cache_s];
    args.extend(SMALL);
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        reg.stalled.store(false, Ordering::SeqCst);
        let stalled = reg.stalled.clone();
        let got = interrupt(&sb, &args, &[], |_| stalled.load(Ordering::SeqCst), sig);
        assert_clean_exit(&sb, "download", &got, sig, name);
        assert_cache_clean(&cache);
        // The blob being downloaded is not in the cache (only its partial file may be).
        let blob = cache
            .join("blobs/sha256")
            .join(slow.trim_start_matches("sha256:"));
        assert!(!blob.exists(), "half a blob committed to the cache");
    }
    // The next run completes from the same cache.
    reg.set(&slow, Blob::Serve);
    sb.d2v(&args).ok();
    assert_eq!(sb.out_listing(), ["vm.ova"]);
    assert_eq!(ls(&sb.path("tmp")), Vec::<String>::new());
    assert_cache_clean(&cache);
}

/// The Debian `systemd` fixture, or `None` (after a notice) when it is not built and not
/// required (`D2V_REQUIRE_FIXTURES=1` or `D2V_FIXTURES` set).
fn systemd_fixture() -> Option<testkit::fixtures::Fixture> {
    let required = std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some();
    match testkit::fixtures::try_load("systemd") {
        Some(f) => Some(f),
        None if required => Some(testkit::fixtures::load("systemd")),
        None => {
            eprintln!("NOTICE: skipped: the systemd fixture is not built (cargo xtask test)");
            None
        }
    }
}

/// Signals in the middle of real work, no pause: a Debian image being flattened, its disk
/// being written, its VMDK being compressed (as an OVF directory and as an OVA), each found by
/// the `-v` line that starts the stage.
#[test]
#[ignore = "heavy: the systemd fixture (cargo xtask test)"]
fn signal_mid_work_on_a_debian_image() {
    let Some(fixture) = systemd_fixture() else {
        return;
    };
    let (sb, _) = sandbox();
    let src = fixture.oci_ref();
    let cache = sb.path("cache/c").display().to_string();
    let cases = [
        ("time: pull", "ova", "vm.ova", libc::SIGINT, "SIGINT"),
        ("writing disk:", "ova", "vm.ova", libc::SIGTERM, "SIGTERM"),
        ("writing /", "ovf", "vmdir", libc::SIGINT, "SIGINT"),
        ("writing /", "ova", "vm.ova", libc::SIGTERM, "SIGTERM"),
    ];
    for (marker, format, name, sig, sig_name) in cases {
        let out = sb.out_file(name).display().to_string();
        let mut args = build_args(&src, format, &out, &cache);
        args.push("-v");
        let mut since: Option<Instant> = None;
        let got = interrupt(
            &sb,
            &args,
            &[],
            |line| {
                if line.is_some_and(|l| l.starts_with(marker)) {
                    since = Some(Instant::now());
                }
                // Well into the stage.
                since.is_some_and(|t| t.elapsed() > Duration::from_millis(300))
            },
            sig,
        );
        assert!(
            !got.stderr.contains("done:"),
            "finished first:\n{}",
            got.stderr
        );
        assert_clean_exit(&sb, &format!("{marker} ({format})"), &got, sig, sig_name);
        assert_cache_clean(Path::new(&cache));
    }
}
