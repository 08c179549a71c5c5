//! `cargo xtask test`: packages → fixtures → release d2v → its container image →
//! `cargo test --workspace` → summary.

use crate::bail;
use crate::util::{exec, root, step, Result, Timer};
use crate::{boottest, debian, fixtures, image};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds d2v as it ships, one static executable (the C library linked in:
/// `-C target-feature=+crt-static`, with an explicit `--target` so that build scripts and proc
/// macros stay ordinary host builds); the heavy tests, the demo and the benchmarks run it.
/// Returns its path, `target/TRIPLE/release/d2v`.
pub fn release_d2v() -> Result<std::path::PathBuf> {
    step("release build of d2v, static (heavy tests, demo and bench use it via D2V_BIN)");
    let triple = host_triple()?;
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" -C target-feature=+crt-static");
    exec(
        cargo()
            .current_dir(root())
            .env("RUSTFLAGS", flags.trim())
            .args([
                "build",
                "--release",
                "-p",
                "d2v",
                "--bin",
                "d2v",
                "--target",
            ])
            .arg(&triple),
    )?;
    Ok(root().join(format!("target/{triple}/release/d2v")))
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = crate::util::output(Command::new(rustc).arg("-vV"))?;
    match out.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(t) => Ok(t.trim().to_string()),
        None => bail!("`rustc -vV` printed no host triple:\n{out}"),
    }
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries: u64,
}

/// Adds one libtest `test result:` line to the counts.
fn parse_result(line: &str, c: &mut Counts) -> bool {
    let Some(rest) = line.strip_prefix("test result: ") else {
        return false;
    };
    c.binaries += 1;
    for part in rest.split(['.', ';']) {
        let mut w = part.split_whitespace();
        if let (Some(n), Some(what)) = (w.next(), w.next()) {
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => c.passed += n,
                "failed" => c.failed += n,
                "ignored" => c.ignored += n,
                _ => {}
            }
        }
    }
    true
}

/// The disk space a full run takes from a clean clone, at its peak: the fixtures and the
/// kernel images (≈ 6.5 GB under `target/fixtures`), the debug and release builds (≈ 8 GB),
/// and the tests' own files (registries, VM disks, OVAs; in TMPDIR and `target/`). Measured
/// with `df` every 5 s over a clean clone's run (2026-12-06): 17.6 GB at the peak. (A run on a
/// disk with ≈ 14 GB free failed with ENOSPC in dozens of tests.)
const FULL_RUN_DISK: u64 = 20_000_000_000;

/// Refuses to start a full run on a disk with less than [`FULL_RUN_DISK`] free (counting what
/// `target/` already holds): dozens of tests would fail late with ENOSPC, far from the cause.
/// A filtered run (test names given) is not checked.
fn disk_room(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Ok(());
    }
    let target = root().join("target");
    let held = crate::util::output(Command::new("du").args(["-sxb"]).arg(&target))
        .ok()
        .and_then(|o| o.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    std::fs::create_dir_all(&target)?;
    let free = crate::util::free_bytes(&target)?;
    let tmp = std::env::temp_dir();
    let tmp_free = crate::util::free_bytes(&tmp)?;
    let gb = |b: u64| b as f64 / 1e9;
    println!(
        "disk: {:.1} GB free for {} (it holds {:.1} GB), {:.1} GB for {}; a full run needs {:.0} GB",
        gb(free),
        target.display(),
        gb(held),
        gb(tmp_free),
        tmp.display(),
        gb(FULL_RUN_DISK)
    );
    if free + held < FULL_RUN_DISK {
        bail!(
            "not enough disk space for the full suite: {:.1} GB free on the disk of {} (plus \
             {:.1} GB it already holds), {:.0} GB needed; free some space (or run some tests: \
             `cargo xtask test NAME`)",
            gb(free),
            target.display(),
            gb(held),
            gb(FULL_RUN_DISK)
        );
    }
    Ok(())
}

pub fn run(args: &[String]) -> Result<()> {
    let total = Timer::start();
    disk_room(args)?;
    let mut times = Vec::new();
    let t = Timer::start();
    debian::ensure(debian::PACKAGES)?;
    times.push(("debian packages", t.secs()));
    let t = Timer::start();
    // The app and kernel-image fixtures too (tests find them through testkit).
    let (fx, apps) = fixtures::ensure_with_apps(&[], false)?;
    fixtures::boot_check_once(&fx)?;
    fixtures::run_check_once(&apps)?;
    let kernel = fixtures::kernel_fixture()?;
    times.push(("fixtures", t.secs()));
    let t = Timer::start();
    let d2v = release_d2v()?;
    times.push(("release d2v", t.secs()));
    let t = Timer::start();
    image::build(&d2v, None)?;
    times.push(("d2v image", t.secs()));

    step("cargo test --workspace");
    let t = Timer::start();
    // xtask test [CARGO-TEST-OPTIONS] [-- TEST-BINARY-ARGS]; ignored tests (those needing
    // fixtures, QEMU, root) run too: this is the full suite.
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let mut cmd = cargo();
    cmd.current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&args[..split])
        .args(["--", "--include-ignored"])
        .args(args.get(split + 1..).unwrap_or(&[]))
        .env("D2V_FIXTURES", testkit::fixtures_dir())
        .env("D2V_REQUIRE_FIXTURES", "1")
        .env("D2V_BIN", &d2v)
        .env("D2V_IMAGE", image::out_dir())
        .env("D2V_TEST_KERNEL", &kernel.kernel)
        .env("D2V_TEST_INITRD", &kernel.initrd)
        .env("D2V_TEST_KERNEL_DIR", &kernel.package_dir)
        .stdout(Stdio::piped());
    // tests/ext4.rs's ignored benchmark wants a host directory to copy.
    if std::env::var_os("D2V_BENCH_DIR").is_none() {
        cmd.env("D2V_BENCH_DIR", "/usr/share/doc");
    }
    println!(
        "$ {} (D2V_FIXTURES, D2V_REQUIRE_FIXTURES, D2V_BIN, D2V_IMAGE, D2V_TEST_KERNEL{{,_DIR}}, D2V_TEST_INITRD, D2V_BENCH_DIR set)",
        crate::util::show(&cmd)
    );
    let mut child = cmd.spawn()?;
    let mut counts = Counts::default();
    let mut failed = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if !parse_result(&line, &mut counts) {
            if let Some(name) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                failed.push(name.to_string());
            }
        }
    }
    let status = child.wait()?;
    times.push(("cargo test", t.secs()));

    // End-to-end boot tests: need `d2v build`; skipped (loudly) only while it does not exist.
    let t = Timer::start();
    let has_build = Command::new(&d2v)
        .args(["build", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // tests/e2e_boot.rs (cargo test) boots the same fixtures; then this phase would only
    // repeat it, unless asked for with D2V_XTASK_BOOT=1.
    let e2e_in_tests = root().join("tests/e2e_boot.rs").is_file();
    let forced = std::env::var("D2V_XTASK_BOOT").is_ok_and(|v| v == "1");
    let boots = if has_build && (forced || !e2e_in_tests) {
        Some(boottest::run_all(&d2v, &fx)?)
    } else {
        None
    };
    times.push(("boot tests", t.secs()));

    step("summary");
    for f in &fx {
        println!(
            "fixture {:8} {} ({} layers, kernel {})",
            f.name,
            f.oci_ref(),
            f.layers.len(),
            f.kernel
        );
    }
    for (what, s) in &times {
        println!("{what:>16}: {s:6.0} s");
    }
    println!(
        "tests: {} passed, {} failed, {} ignored in {} test binaries ({:.0} s total)",
        counts.passed,
        counts.failed,
        counts.ignored,
        counts.binaries,
        total.secs()
    );
    for f in &failed {
        println!("FAILED: {f}");
    }
    match &boots {
        Some(b) => boottest::print_summary(b),
        None if !has_build => {
            println!("boot tests: SKIPPED — this d2v has no `build` command yet")
        }
        None => println!(
            "xtask boot phase: not run — tests/e2e_boot.rs booted the fixtures inside cargo test \
             (D2V_XTASK_BOOT=1 runs it too; `cargo xtask boot` runs it alone)"
        ),
    }
    let boots_ok = boots
        .as_ref()
        .is_none_or(|b| b.iter().all(boottest::Outcome::ok));
    if !status.success() {
        bail!(
            "cargo test failed ({status}){}",
            if failed.is_empty() {
                " — build error?"
            } else {
                ""
            }
        );
    }
    if !boots_ok {
        bail!(
            "boot tests failed (logs in {})",
            boottest::work_dir().display()
        );
    }
    println!("OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_lines_are_counted() {
        let mut c = Counts::default();
        assert!(parse_result(
            "test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            &mut c
        ));
        assert!(parse_result(
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured",
            &mut c
        ));
        assert!(!parse_result("test foo ... ok", &mut c));
        assert_eq!(
            c,
            Counts {
                passed: 7,
                failed: 1,
                ignored: 2,
                binaries: 2
            }
        );
    }
}
