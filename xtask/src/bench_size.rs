//! `cargo xtask bench scale`: `d2v build` to an OVA of synthetic images of 1, 2, 4 and 8 GiB of
//! file data (four gzip data layers with whiteouts; see [`crate::synth`]), and of 1 GiB in one
//! data layer vs in 60: wall time, time per GiB, peak RSS, peak temporary disk, and the
//! outputs checked like the fixtures' (OVA members, .mf, OVF schema, `qemu-img check`; for the
//! 1 GiB images also the disk: `sgdisk -v`, `fsck.fat -n`, `e2fsck -fn`).
//!
//! The images are app images (busybox httpd) built with `--kernel-from` the LinuxKit kernel
//! image, the smallest way to a bootable disk, so the time is that of the data; a `base` image
//! without data layers gives the fixed part. `D2V_BENCH_SIZES=1,2` restricts the sizes.
//!
//! Every round runs every image once, in turn. Each run is [`bench::time_side`] (wall time,
//! `/usr/bin/time -f %M`, sampled anonymous RSS) with `TMPDIR` and the output in one fresh
//! directory whose disk use is sampled every 50 ms: the allocated blocks of every file in it
//! and of every file in it that d2v holds open (its temporaries are unnamed, `O_TMPFILE`).

use crate::bench::{self, argv, Sample, Side};
use crate::boottest::{disk_checks, record};
use crate::synth::{self, Parts, Synth};
use crate::util::{output, step, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use testkit::fixtures::apps::{APP_BUSYBOX, KERNEL_LINUXKIT};

type Checks = Vec<(String, std::result::Result<String, String>)>;

const GIB: f64 = (1u64 << 30) as f64;

/// The sizes measured: `$D2V_BENCH_SIZES` (GiB, comma-separated), else 1, 2, 4 and 8.
fn sizes() -> Result<Vec<u64>> {
    match std::env::var("D2V_BENCH_SIZES") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|e| format!("D2V_BENCH_SIZES={v}: {e}").into())
            })
            .collect(),
        Err(_) => Ok(vec![1, 2, 4, 8]),
    }
}

/// The images of a run of the section, in the order each round runs them.
fn images(sizes: &[u64]) -> Vec<Synth> {
    let mut v = vec![Synth { data: 0, layers: 0 }];
    v.extend(sizes.iter().map(|&g| Synth::gib(g, 4)));
    v.extend([Synth::gib(1, 1), Synth::gib(1, 60)]);
    v
}

/// One image's runs and checks.
struct Measured {
    synth: Synth,
    /// Bytes of the layer blobs (busybox's and the data layers).
    blobs: u64,
    side: Side,
    runs: Vec<(Sample, Disk)>,
    checks: Checks,
    error: Option<String>,
}

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let sizes = sizes()?;
    let (_, apps) = crate::fixtures::ensure_with_apps(&[APP_BUSYBOX, KERNEL_LINUXKIT], false)?;
    let find = |n: &str| {
        apps.iter()
            .find(|a| a.name == n)
            .ok_or(format!("no fixture {n}"))
    };
    let parts = Parts {
        app: find(APP_BUSYBOX)?,
        kernel: find(KERNEL_LINUXKIT)?,
    };
    let dir = work.join("size");
    fs::create_dir_all(&dir)?;
    let mut all = Vec::new();
    for s in images(&sizes) {
        let scratch = dir.join(format!("scratch-{}", s.name()));
        let layout = synth::layout(&dir, &s);
        // Room for the image's blobs (under half its data) and a run.
        let room = disk_room(&dir, run_need(&s) + s.data / 2);
        let blobs = match room {
            Ok(()) => blob_bytes(&synth::ensure(&dir, &s, &parts)?)?,
            Err(_) => 0,
        };
        all.push(Measured {
            synth: s,
            blobs,
            side: build_side(d2v, &layout, &scratch),
            runs: Vec::new(),
            checks: Vec::new(),
            error: room.err(),
        });
    }
    for round in 1..=bench::rounds() {
        step(&format!("bench scale: round {round}"));
        for m in all.iter_mut().filter(|m| m.error.is_none()) {
            let scratch = dir.join(format!("scratch-{}", m.synth.name()));
            if let Err(e) = run_once(m, &scratch, round == 1) {
                println!("  {:<8} FAILED: {e}", m.synth.name());
                m.error = Some(e);
            }
            let _ = fs::remove_dir_all(&scratch);
        }
    }
    Ok(render(&all, load_before))
}

/// Bytes of the layer blobs of the image in `layout`.
fn blob_bytes(layout: &Path) -> Result<u64> {
    let img = testkit::oci::read_image(layout, Some("latest"))?;
    let sizes = img
        .layers
        .iter()
        .map(|(_, p)| fs::metadata(p).map(|m| m.len()));
    Ok(sizes.sum::<std::io::Result<u64>>()?)
}

/// Free disk a run of `s` is given at least: 2 × its file data + 1 GiB (measured at 1 GiB:
/// peak temporary files and output together about 1 × the data), so that a full disk never
/// breaks a run or anything else.
fn run_need(s: &Synth) -> u64 {
    2 * s.data + (1 << 30)
}

/// An error saying so when the disk of `dir` has less than `need` bytes free (`df`).
fn disk_room(dir: &Path, need: u64) -> std::result::Result<(), String> {
    let free = crate::util::free_bytes(dir).map_err(|e| e.to_string())?;
    if free >= need {
        return Ok(());
    }
    Err(format!(
        "not run: {} GB free on the disk of {}, {} GB needed",
        free / 1_000_000_000,
        dir.display(),
        need / 1_000_000_000
    ))
}

/// One timed run of `m`'s build (when the disk has room for it); with `check`, its output
/// checked afterwards.
fn run_once(m: &mut Measured, scratch: &Path, check: bool) -> std::result::Result<(), String> {
    disk_room(scratch.parent().expect("a parent"), run_need(&m.synth))?;
    let (sample, disk) = timed_run(&m.side, scratch)?;
    println!(
        "  {:<8} {:8.2} s {:>8} KiB max RSS, temp disk {} B, output {} B",
        m.synth.name(),
        sample.secs,
        sample.max_rss_kib,
        disk.peak_temp,
        disk.output
    );
    m.runs.push((sample, disk));
    if check {
        let full = m.synth.data <= 1 << 30;
        m.checks = check_outputs(&scratch.join("out.ova"), scratch, full);
    }
    Ok(())
}

/// `env TMPDIR=SCRATCH d2v build oci:LAYOUT:latest --kernel-from oci:LAYOUT:kernel -o
/// SCRATCH/out.ova --cache-dir LAYOUT`: the layout is its own blob cache (same layout of
/// `blobs/sha256/`), so every blob is found there and nothing is copied — a warm cache.
fn build_side(d2v: &Path, layout: &Path, scratch: &Path) -> Side {
    let out = scratch.join("out.ova");
    let image = |tag: &str| format!("oci:{}:{tag}", layout.display());
    Side {
        label: "d2v build".into(),
        cmds: vec![argv(&[
            &"env",
            &format!("TMPDIR={}", scratch.display()),
            &d2v,
            &"build",
            &image("latest"),
            &"--kernel-from",
            &image("kernel"),
            &"-o",
            &out,
            &"--cache-dir",
            &layout,
        ])],
        output: Some(out),
    }
}

/// Disk use of one run in its scratch directory (TMPDIR and the output's directory).
#[derive(Clone, Debug, Default, PartialEq)]
struct Disk {
    /// Largest allocated bytes of everything but the output file, at one sample.
    peak_temp: u64,
    /// The temporary files' allocated bytes at that sample, largest first.
    at_peak: Vec<u64>,
    /// Largest allocated bytes of everything, the output included.
    peak_total: u64,
    /// The output's length in bytes.
    output: u64,
    samples: usize,
}

/// One [`bench::time_side`] run of `side`, its scratch directory's disk use sampled.
fn timed_run(side: &Side, scratch: &Path) -> std::result::Result<(Sample, Disk), String> {
    let done = std::sync::atomic::AtomicBool::new(false);
    let (sample, samples) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut v = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                v.extend(sample_disk(scratch));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            v
        });
        let r = bench::time_side(side, scratch);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, sampler.join().expect("disk sampler"))
    });
    let sample = sample?;
    let out = side.output.as_ref().expect("an output");
    let m = fs::metadata(out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((sample, peaks(&samples, m.ino(), m.len())))
}

/// The peaks of `samples` (each: inode, allocated bytes), `output` being the output's inode.
fn peaks(samples: &[Vec<(u64, u64)>], output: u64, len: u64) -> Disk {
    let sum = |s: &[(u64, u64)], skip: Option<u64>| -> u64 {
        s.iter().filter(|f| Some(f.0) != skip).map(|f| f.1).sum()
    };
    let peak = samples.iter().max_by_key(|s| sum(s, Some(output)));
    let mut at_peak: Vec<u64> = peak
        .into_iter()
        .flatten()
        .filter(|f| f.0 != output)
        .map(|f| f.1)
        .collect();
    at_peak.sort_by(|a, b| b.cmp(a));
    Disk {
        peak_temp: peak.map_or(0, |s| sum(s, Some(output))),
        at_peak,
        peak_total: samples.iter().map(|s| sum(s, None)).max().unwrap_or(0),
        output: len,
        samples: samples.len(),
    }
}

/// (inode, allocated bytes) of the regular files in `dir` and of those under `dir` that a
/// process started by this one holds open; `None` while no such process runs.
fn sample_disk(dir: &Path) -> Option<Vec<(u64, u64)>> {
    let pids = descendants();
    if pids.is_empty() {
        return None;
    }
    let mut files = BTreeMap::new();
    let mut add = |m: fs::Metadata| {
        if m.is_file() {
            files.insert(m.ino(), m.blocks() * 512);
        }
    };
    for pid in pids {
        for fd in fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            // An unnamed temporary reads as `DIR/#INODE (deleted)`.
            if fs::read_link(fd.path()).is_ok_and(|l| l.starts_with(dir)) {
                fs::metadata(fd.path()).map(&mut add).ok();
            }
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => add(m),
                Err(_) => {}
            }
        }
    }
    Some(files.into_iter().collect())
}

/// Every process below this one (children of all its threads, and theirs).
fn descendants() -> Vec<u32> {
    let children = |pid: &str| -> Vec<u32> {
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten();
        tasks
            .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut all = children("self");
    let mut i = 0;
    while i < all.len() {
        let more = children(&all[i].to_string());
        all.extend(more);
        i += 1;
    }
    all
}

/// The checks of an OVA the tests give the fixtures' outputs: members and .mf, OVF schema,
/// `qemu-img check` of its VMDK; with `full`, the disk too (sgdisk, fsck.fat, e2fsck, on a raw
/// copy by `qemu-img convert`). Removes the OVA and what it made in `work`.
fn check_outputs(ova: &Path, work: &Path, full: bool) -> Checks {
    let mut checks = Vec::new();
    let vmdk = work.join("disk.vmdk");
    let members = record(
        &mut checks,
        "OVA members, .mf, OVF",
        ova_checks(ova, &vmdk),
        |s| s.clone(),
    );
    let _ = fs::remove_file(ova);
    if members.is_some() {
        record(&mut checks, "qemu-img check", qemu_img_check(&vmdk), |s| {
            s.clone()
        });
    }
    if members.is_some() && full {
        let raw = work.join("disk.raw");
        let mut convert = Command::new("qemu-img");
        convert
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&vmdk)
            .arg(&raw);
        if record(
            &mut checks,
            "qemu-img convert",
            output(&mut convert),
            |_| "to raw".into(),
        )
        .is_some()
        {
            let _ = fs::remove_file(&vmdk);
            disk_checks(&raw, work, &mut checks);
        }
        let _ = fs::remove_file(&raw);
    }
    let _ = fs::remove_file(&vmdk);
    checks
}

/// `qemu-img check` (no errors) and `qemu-img info` (a streamOptimized VMDK) of `vmdk`.
fn qemu_img_check(vmdk: &Path) -> Result<String> {
    let check = output(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(vmdk),
    )?;
    let info = output(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(vmdk),
    )?;
    let v: serde_json::Value = serde_json::from_str(&info)?;
    let kind = &v["format-specific"]["data"]["create-type"];
    if v["format"] != "vmdk" || kind != "streamOptimized" {
        crate::bail!("not a streamOptimized VMDK: {info}");
    }
    Ok(format!(
        "streamOptimized; {}",
        check.trim().replace('\n', " ")
    ))
}

/// Reads the OVA once: the members must be NAME.ovf, NAME.mf, a VMDK, in that order; every
/// .mf line's SHA-256 must match; the OVF must be valid for the DMTF schema (when the schema
/// folder is there) and give the VMDK's size. The VMDK is written to `vmdk`.
fn ova_checks(ova: &Path, vmdk: &Path) -> Result<String> {
    let mut archive = tar::Archive::new(std::io::BufReader::new(fs::File::open(ova)?));
    let (mut names, mut sums, mut texts) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
    let mut vmdk_len = 0;
    for e in archive.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let mut hash = Sha256::new();
        let mut out = name
            .ends_with(".vmdk")
            .then(|| fs::File::create(vmdk))
            .transpose()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut text = Vec::new();
        loop {
            let n = e.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            match &mut out {
                Some(f) => f.write_all(&buf[..n])?,
                None => text.extend_from_slice(&buf[..n]),
            }
        }
        if out.is_some() {
            vmdk_len = e.size();
        }
        sums.insert(name.clone(), crate::util::hex(&hash.finalize()));
        texts.insert(name.clone(), String::from_utf8_lossy(&text).into_owned());
        names.push(name);
    }
    let ext: Vec<&str> = names
        .iter()
        .map(|n| n.rsplit('.').next().unwrap_or(""))
        .collect();
    if ext != ["ovf", "mf", "vmdk"] {
        crate::bail!("OVA members {names:?}, not .ovf, .mf, .vmdk");
    }
    for line in texts[&names[1]].lines().filter(|l| !l.is_empty()) {
        let ok = line
            .strip_prefix("SHA256(")
            .and_then(|l| l.split_once(")= "))
            .is_some_and(|(n, hex)| sums.get(n).is_some_and(|s| s == hex));
        if !ok {
            crate::bail!(".mf line {line:?} does not match the member");
        }
    }
    let ovf = &texts[&names[0]];
    let schema = match testkit::ovf_schema::validate(ovf) {
        Some(Ok(())) => "OVF schema-valid",
        Some(Err(e)) => crate::bail!("OVF schema validation failed: {e}"),
        None => "OVF schema not found (not validated)",
    };
    if !ovf.contains(&format!("ovf:size=\"{vmdk_len}\"")) {
        crate::bail!("the OVF does not give the VMDK's size {vmdk_len}");
    }
    Ok(format!(
        "{names:?}, .mf SHA-256 match, {schema}, VMDK {vmdk_len} bytes"
    ))
}

/// Median of `f` over the runs.
fn med(m: &Measured, f: impl Fn(&(Sample, Disk)) -> f64) -> f64 {
    bench::median(&m.runs.iter().map(f).collect::<Vec<_>>())
}

/// Seconds per GiB of file data in the layers (`None` for the base image).
fn per_gib(m: &Measured, minus: f64) -> Option<f64> {
    let gib = m.synth.in_layers().bytes as f64 / GIB;
    (gib > 0.0).then(|| (med(m, |r| r.0.secs) - minus) / gib)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1 << 20) as f64)
}

fn render(all: &[Measured], load_before: &str) -> String {
    let ok: Vec<&Measured> = all.iter().filter(|m| good(m)).collect();
    let base = ok
        .iter()
        .find(|m| m.synth.layers == 0)
        .map(|m| med(m, |r| r.0.secs));
    let mut s = String::from(
        "## scale\n\n`d2v build` to an OVA of synthetic images of 1 to 8 GiB of file data, and \
         of 1 GiB in 1 vs 60 data layers\n\n",
    );
    s.push_str(
        "| image | data layers | data files (flattened) | file bytes in layers | layer blobs \
         (gzip) | median time | runs (s) | s per GiB | s per GiB beyond base | median peak \
         RSS | median peak anon RSS | peak temp disk (max) | temp files at that peak | peak \
         temp + output (max) | output bytes | temp / output |\n",
    );
    s.push_str(&format!("|{}\n", " --- |".repeat(16)));
    for m in all {
        s.push_str(&row(m, base));
    }
    s.push_str(&targets(all, &ok));
    s.push_str("\nOutput checks (the first run's output of each image):\n\n");
    for m in all {
        for (what, r) in &m.checks {
            let r = match r {
                Ok(x) => format!("ok {x}"),
                Err(e) => format!("**FAILED** {}", e.lines().next().unwrap_or("")),
            };
            s.push_str(&format!("- {}: {what}: {r}\n", m.synth.name()));
        }
    }
    s.push_str(&notes());
    s.push_str("\nCommand lines (every round runs each image once, in this order):\n\n```\n");
    for m in all {
        s.push_str(&format!("{}\n", bench::command_line(&m.side.cmds[0])));
    }
    s.push_str(&format!("```\n\n{}", bench::machine_line(load_before)));
    bench::relative_paths(&s)
}

/// Whether all of `m`'s runs went through.
fn good(m: &Measured) -> bool {
    m.error.is_none() && !m.runs.is_empty()
}

/// `m`'s row of the table; `base` is the median time of the image without data layers.
fn row(m: &Measured, base: Option<f64>) -> String {
    let n = m.synth.name();
    if !good(m) {
        let e = m.error.as_deref().unwrap_or("no runs");
        let e = e.lines().next().unwrap_or("").replace('|', "\\|");
        let (t, l) = (m.synth.in_tree(), m.synth.in_layers());
        let rest = " |".repeat(10);
        return format!(
            "| {n} | {} | {} | {} | | {e} |{rest}\n",
            m.synth.layers, t.files, l.bytes
        );
    }
    let secs = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.2} s"));
    let samples: Vec<Sample> = m.runs.iter().map(|r| r.0).collect();
    let peak = m
        .runs
        .iter()
        .map(|r| &r.1)
        .max_by_key(|d| d.peak_temp)
        .unwrap();
    let files: Vec<String> = peak.at_peak.iter().map(|&b| mib(b as f64)).collect();
    let total = m.runs.iter().map(|r| r.1.peak_total).max().unwrap_or(0);
    let runs: Vec<String> = m.runs.iter().map(|r| format!("{:.2}", r.0.secs)).collect();
    let cells = [
        m.synth.layers.to_string(),
        m.synth.in_tree().files.to_string(),
        m.synth.in_layers().bytes.to_string(),
        m.blobs.to_string(),
        format!("{:.2} s", med(m, |r| r.0.secs)),
        runs.join(", "),
        secs(per_gib(m, 0.0)),
        secs(base.and_then(|b| per_gib(m, b))),
        mib(med(m, |r| r.0.max_rss_kib as f64) * 1024.0),
        bench::anon_cell(&samples),
        mib(peak.peak_temp as f64),
        files.join(" + "),
        mib(total as f64),
        peak.output.to_string(),
        format!("{:.2}", peak.peak_temp as f64 / peak.output as f64),
    ];
    format!("| {n} | {} |\n", cells.join(" | "))
}

/// The issue's targets against the medians: linear time, RSS, temporary disk, many layers.
fn targets(all: &[Measured], ok: &[&Measured]) -> String {
    let four: Vec<&&Measured> = ok.iter().filter(|m| m.synth.layers == 4).collect();
    let verdict = |met: bool| if met { "**met**" } else { "**not met**" };
    let mut s = String::from("\nTargets:\n\n");
    let (first, last) = (four.first(), four.last());
    if let (Some(a), Some(b)) = (first, last) {
        let (pa, pb) = (
            per_gib(a, 0.0).unwrap_or(f64::NAN),
            per_gib(b, 0.0).unwrap_or(f64::NAN),
        );
        s.push_str(&format!(
            "- time per GiB at {}{} within 15 % of {}'s: {pb:.2} vs {pa:.2} s/GiB, ratio {:.2}: \
             {}\n",
            b.synth.name(),
            if b.synth.data < 8 << 30 {
                " (the largest size measured; the target is at 8 GiB)"
            } else {
                ""
            },
            a.synth.name(),
            pb / pa,
            verdict(pb / pa <= 1.15)
        ));
    }
    for m in all.iter().filter(|m| !good(m)) {
        let e = m.error.as_deref().unwrap_or("no runs");
        s.push_str(&format!("- not measured: {} ({e})\n", m.synth.name()));
    }
    let rss = ok
        .iter()
        .map(|m| med(m, |r| r.0.max_rss_kib as f64))
        .fold(0.0, f64::max);
    s.push_str(&format!(
        "- peak RSS under 64 MiB: largest median {}: {}\n",
        mib(rss * 1024.0),
        verdict(rss < 64.0 * 1024.0)
    ));
    let over: Vec<String> = ok
        .iter()
        .filter(|m| m.synth.layers > 0)
        .filter(|m| m.runs.iter().any(|r| r.1.peak_temp > r.1.output))
        .map(|m| m.synth.name())
        .collect();
    s.push_str(&format!(
        "- temporary disk at most the output's size: {}{}\n",
        verdict(over.is_empty()),
        if over.is_empty() {
            String::new()
        } else {
            format!(" (over in {})", over.join(", "))
        }
    ));
    let by = |l: u64| {
        ok.iter()
            .find(|m| m.synth.layers == l && m.synth.data == 1 << 30)
    };
    if let (Some(one), Some(many)) = (by(1), by(60)) {
        let (a, b) = (med(one, |r| r.0.secs), med(many, |r| r.0.secs));
        s.push_str(&format!(
            "- 60 data layers within 15 % of 1 (1 GiB): {b:.2} vs {a:.2} s, ratio {:.2}: {}\n",
            b / a,
            verdict(b / a <= 1.15)
        ));
    }
    let failed = ok
        .iter()
        .flat_map(|m| &m.checks)
        .filter(|c| c.1.is_err())
        .count();
    s.push_str(&format!(
        "- outputs pass the checks below: {}\n",
        verdict(failed == 0)
    ));
    s
}

fn notes() -> String {
    "\nThe images (generated once by `cargo xtask bench scale` into `target/bench/size/`, \
     deterministic, not timed): the app-busybox fixture's layer (busybox httpd, its \
     entrypoint), then gzip data layers (level 6) holding the file bytes given: in each layer a \
     third pseudo-random (xorshift64, incompressible), a third text from a 32-word vocabulary \
     (deflates to about a third), a third zeros; three big files (1/16 of the layer each), \
     small files of 32 KiB − 7 and 64 KiB + 7 bytes alternately, 100 per directory; every \
     layer but the first deletes every 64th small file of the one below (file whiteouts), a \
     directory (`.wh.cache`) and the contents of another (opaque, `.wh..wh..opq`, one new \
     file). `base` is the busybox image alone (no data layers): the fixed part of every run; \
     \"s per GiB beyond base\" subtracts its median. The kernel comes from the \
     kernel-linuxkit fixture (`--kernel-from`, copied into each layout as tag `kernel`): d2v \
     grafts it and its modules, writes its own initramfs and installs its own init, then \
     writes the disk (GPT, ESP, ext4 root) and the OVA. `--cache-dir` is the layout itself \
     (its `blobs/sha256/` is the cache's layout), so every blob is found in place: the \
     warm-cache figure, nothing copied.\n\n\
     Each run has `TMPDIR` and the output (`-o`) in one fresh directory, sampled every 50 ms \
     while d2v runs: the allocated bytes (`st_blocks`) of the files in it and of the files in \
     it d2v holds open (its spill file and raw disk are unnamed `O_TMPFILE`s), each inode \
     once. The temporary files are d2v's spill file of the staging tree (the file data, holes \
     for zeros, packed with zstd past its first 512 MiB; in TMPDIR) and the raw disk (in the output's directory); the OVA is written \
     while the disk is, and both temporaries are given back (holes punched) behind their \
     readers, so the peak is mostly the spill just before the root filesystem is written. \"peak temp \
     disk\" leaves the output file (its inode) out, \"peak temp + output\" \
     counts it; both the largest over the runs. Peak RSS is `/usr/bin/time -f %M`; anon RSS \
     sampled from /proc every 2 ms. Checks: the OVA read once (members .ovf, .mf, .vmdk in \
     order, every .mf SHA-256, the OVF against the DMTF 1.1.1 schema with xmllint and its \
     `ovf:size` of the VMDK), `qemu-img check` and `qemu-img info` (streamOptimized) of the \
     VMDK; for the images of at most 1 GiB also `qemu-img convert` to raw, `sgdisk -v`, \
     `fsck.fat -n` of the ESP and `e2fsck -fn` of the root partition (the checks of \
     `cargo xtask boot`). An image is not generated or run when the disk has less free space \
     than 2 × its file data + 1 GiB (+ half its data to generate it): its row says so.\n"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_leave_the_output_out_of_the_temporary_disk() {
        // Inode 9 is the output: it grows while the temporary 5 is read back, then 5 goes.
        let samples = vec![vec![(5, 100)], vec![(5, 100), (9, 40)], vec![(9, 60)]];
        let d = peaks(&samples, 9, 58);
        assert_eq!(
            d,
            Disk {
                peak_temp: 100,
                at_peak: vec![100],
                peak_total: 140,
                output: 58,
                samples: 3
            }
        );
        assert_eq!(peaks(&[], 9, 1).peak_total, 0);
    }

    #[test]
    fn sampling_sees_unnamed_temporary_files_of_a_child() {
        let dir = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("named"), vec![1u8; 8192]).unwrap();
        // A child holding a 1 MiB O_TMPFILE (no name in the directory) for a moment.
        let script = "import os, sys, time\n\
                      fd = os.open(sys.argv[1], os.O_TMPFILE | os.O_WRONLY)\n\
                      os.write(fd, b'x' * (1 << 20)); os.fsync(fd)\n\
                      print('ready', flush=True); time.sleep(5)";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 6];
        child.stdout.take().unwrap().read_exact(&mut line).unwrap();
        let got = sample_disk(&dir).expect("a child runs");
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let mut sizes: Vec<u64> = got.iter().map(|f| f.1).collect();
        sizes.sort();
        assert_eq!(sizes, [8192, 1 << 20], "{got:?}");
    }
}
