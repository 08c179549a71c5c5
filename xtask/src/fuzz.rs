//! `cargo xtask fuzz [TARGET...] [--seconds N]`: coverage-guided fuzzing of d2v's parsers of
//! outside bytes (the `fuzz/` crate, cargo-fuzz on the nightly toolchain, installed when
//! missing). Builds the seed corpora ([`crate::fuzz_seeds`]), runs each target (default: all)
//! for N seconds (default 60) in one libFuzzer process, prints per target the executions,
//! exec/s, coverage (libFuzzer's final `cov:`/`ft:`) and crashes, copies crash inputs to
//! `testdata/fuzz/TARGET/` (replayed on stable by `tests/fuzz_regressions.rs`) and records the
//! run in FUZZING.md, whose totals table sums each target's seconds over all runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{exec, root, step, Result};
use crate::{bail, fuzz_seeds};

/// One run of one target, as FUZZING.md records it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Run {
    date: String,
    target: String,
    seconds: u64,
    execs: u64,
    exec_per_s: u64,
    cov: u64,
    ft: u64,
    crashes: Vec<String>,
}

/// `cargo +nightly …` through rustup's proxy, without the stable toolchain's variables that
/// `cargo xtask` runs under.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    for v in [
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(v);
    }
    // d2v's build script names the commit; a fixed name keeps each commit from rebuilding
    // the fuzz targets.
    c.env("D2V_COMMIT", "fuzzing");
    c
}

/// `cargo fuzz build|run TARGET` in `fuzz/`, sharing `target/fuzz`.
fn cargo_fuzz(what: &str, target: &str) -> Command {
    let mut c = nightly_cargo();
    c.current_dir(root().join("fuzz"))
        .args(["fuzz", what, "--target-dir"])
        .arg(root().join("target/fuzz"))
        .arg(target);
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        step("installing cargo-fuzz");
        exec(nightly_cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// The fuzz targets, from `fuzz/fuzz_targets/*.rs`.
fn all_targets() -> Result<Vec<String>> {
    let mut t: Vec<String> = fs::read_dir(root().join("fuzz/fuzz_targets"))?
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_string))
        .collect();
    t.sort();
    Ok(t)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let n = it.next().ok_or("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .map_err(|_| format!("--seconds {n:?}: not a number"))?;
            }
            t if t.starts_with('-') => {
                bail!("unknown option {t:?}; usage: cargo xtask fuzz [TARGET...] [--seconds N]")
            }
            t => targets.push(t.to_string()),
        }
    }
    let known = all_targets()?;
    if let Some(t) = targets.iter().find(|t| !known.contains(t)) {
        bail!("no fuzz target {t:?}; targets: {}", known.join(", "));
    }
    if targets.is_empty() {
        targets = known;
    }
    ensure_cargo_fuzz()?;
    step("seed corpora (target/fuzz-corpus)");
    let (corpus, counts) = fuzz_seeds::build(&testkit::fixtures_dir())?;
    for (t, n) in &counts {
        println!("  {t}: {n} inputs");
    }
    let mut runs = Vec::new();
    for t in &targets {
        let r = run_target(t, &corpus.join(t), seconds)?;
        println!(
            "  {t}: {} s, {} executions ({} exec/s), cov {} ft {}, {} crash(es){}",
            r.seconds,
            r.execs,
            r.exec_per_s,
            r.cov,
            r.ft,
            r.crashes.len(),
            if r.crashes.is_empty() {
                String::new()
            } else {
                format!(": {}", r.crashes.join(", "))
            }
        );
        record(&r)?;
        runs.push(r);
    }
    let crashed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.crashes.is_empty())
        .map(|r| r.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: inputs copied to testdata/fuzz/, see FUZZING.md",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// Builds one target, then runs it for `seconds` (one process, `-jobs` 1) on `corpus`, its
/// log in `target/fuzz-logs/TARGET.log`.
fn run_target(target: &str, corpus: &Path, seconds: u64) -> Result<Run> {
    step(&format!("fuzz {target} for {seconds} s"));
    fs::create_dir_all(corpus)?;
    let artifacts = root().join(format!("target/fuzz-artifacts/{target}/"));
    fs::create_dir_all(&artifacts)?;
    let logs = root().join("target/fuzz-logs");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{target}.log"));
    exec(&mut cargo_fuzz("build", target))?;
    let started = std::time::Instant::now();
    let status = cargo_fuzz("run", target)
        .arg(corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}", artifacts.display()))
        .args(["-rss_limit_mb=2048", "-timeout=30", "-print_final_stats=1"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .status()?;
    let text = fs::read_to_string(&log)?;
    let mut r = parse_log(&text);
    r.target = target.to_string();
    r.date = crate::fuzz_md::today();
    if r.seconds == 0 {
        r.seconds = started.elapsed().as_secs();
    }
    if !status.success() && r.crashes.is_empty() && r.execs == 0 {
        bail!(
            "cargo fuzz run {target} failed ({status}); see {}",
            log.display()
        );
    }
    r.crashes = keep_crashes(target, &r.crashes)?;
    Ok(r)
}

/// Copies crash inputs to `testdata/fuzz/TARGET/`; returns their new paths.
fn keep_crashes(target: &str, found: &[String]) -> Result<Vec<String>> {
    let dir = root().join("testdata/fuzz").join(target);
    let mut kept = Vec::new();
    for f in found {
        let from = PathBuf::from(f);
        let Some(name) = from.file_name() else {
            continue;
        };
        fs::create_dir_all(&dir)?;
        let to = dir.join(name);
        fs::copy(&from, &to)?;
        kept.push(to.strip_prefix(root()).unwrap_or(&to).display().to_string());
    }
    Ok(kept)
}

/// The last status line's numbers, `Done N runs in S second(s)`, and the crash inputs
/// libFuzzer wrote (`Test unit written to PATH`).
fn parse_log(text: &str) -> Run {
    let mut r = Run::default();
    let num = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line[at..].split_whitespace().next()?.parse().ok()
    };
    for line in text.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            r.execs = line[1..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(r.execs);
            r.cov = num(line, " cov: ").unwrap_or(r.cov);
            r.ft = num(line, " ft: ").unwrap_or(r.ft);
            r.exec_per_s = num(line, " exec/s: ").unwrap_or(r.exec_per_s);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            let mut w = rest.split_whitespace();
            r.execs = w.next().and_then(|n| n.parse().ok()).unwrap_or(r.execs);
            r.seconds = w.nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(at) = line.find("Test unit written to ") {
            r.crashes.push(line[at + 21..].trim().to_string());
        }
    }
    if r.seconds > 0 && r.execs > 0 {
        r.exec_per_s = r.execs / r.seconds;
    }
    r
}

/// Adds `r` to FUZZING.md's runs and recomputes its totals.
fn record(r: &Run) -> Result<()> {
    let path = root().join("FUZZING.md");
    let text = fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (it holds the fuzzing record)", path.display()))?;
    let row = crate::fuzz_md::Row {
        date: r.date.clone(),
        target: r.target.clone(),
        seconds: r.seconds,
        execs: r.execs,
        cov: r.cov,
        ft: r.ft,
        findings: if r.crashes.is_empty() {
            "none".into()
        } else {
            r.crashes.join(" ")
        },
    };
    fs::write(&path, crate::fuzz_md::add_run(&text, &row)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_final_lines_are_read() {
        let log = "INFO: Seed: 1\n\
            #2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
            #4096\tpulse  cov: 100 ft: 200 corp: 5/50b lim: 4 exec/s: 2048 rss: 40Mb\n\
            #9000\tDONE   cov: 120 ft: 250 corp: 6/60b lim: 4 exec/s: 4500 rss: 40Mb\n\
            Done 9000 runs in 2 second(s)\n";
        let r = parse_log(log);
        assert_eq!(
            (r.execs, r.seconds, r.cov, r.ft, r.exec_per_s),
            (9000, 2, 120, 250, 4500)
        );
        assert!(r.crashes.is_empty());
        let crash = "#5\tNEW cov: 3 ft: 3 corp: 2/2b exec/s: 0 rss: 30Mb\n\
            ==1== ERROR: libFuzzer: deadly signal\n\
            artifact_prefix='/t/'; Test unit written to /t/crash-abc\n";
        let r = parse_log(crash);
        assert_eq!(r.crashes, vec!["/t/crash-abc".to_string()]);
        assert_eq!(r.execs, 5);
    }
}
