//! `cargo xtask bench pipeline`: end to end, the systemd fixture served by a local registry
//! to a finished OVA — `d2v pull` (blob cache warm; cold too) against the plain-tools
//! pipeline of [`crate::plain_pipeline`] (whose VM is booted once, untimed, before the
//! timing), beside the floor of the work both must do, measured alone: inflating the layers
//! (`libdeflate-gzip -d`), deflating the disk's grains (d2v's own VMDK writer at level 6),
//! SHA-256 of what d2v hashes with a warm cache (`sha256sum` of the uncompressed layers — their
//! diff_ids — and of the VMDK, for the manifest), and d2v's compression levels 1 and 9
//! beside the default 6.
//!
//! Every run is timed by [`bench::time_side`] (wall clock, peak RSS, sampled anonymous RSS,
//! output size); its CPU time is the growth of this process's `RUSAGE_CHILDREN` (user + sys
//! of every process the run started, threads included, once waited for). All rows run
//! alternately, round after round.

use crate::bench::{self, argv, Sample, Side};
use crate::plain_pipeline::{self, Layout, Templates};
use crate::util::{exec, step, Result};
use crate::{fixtures, uncompressed};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::fixtures::{Fixture, SYSTEMD};
use testkit::registry::{Kind, Registry};

/// What a row measures, for the derived figures.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Warm,
    Plain,
    Cold,
    Level(u8),
    Inflate,
    Deflate,
    Hash,
}

struct Row {
    role: Role,
    side: Side,
}

/// One timed run: the harness's sample, CPU seconds, and the OVA's VMDK member size.
struct Run {
    s: Sample,
    cpu: f64,
    vmdk_bytes: Option<u64>,
}

type Runs = std::result::Result<Vec<Run>, String>;

/// A check of the plain-tools pipeline's VM: what, and its outcome.
type Check = (String, std::result::Result<String, String>);

/// Untimed inputs: d2v's raw disk (its layout, and the deflate row's input), the VMDK d2v
/// makes of it and the uncompressed layers (the hash row's input), the script's templates.
struct Inputs {
    cache: PathBuf,
    raw: PathBuf,
    vmdk: PathBuf,
    tars: Vec<PathBuf>,
    layout: Layout,
    templates: Templates,
}

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let fixture = fixtures::ensure(&[SYSTEMD], false)?.remove(0);
    let dir = work.join("pipeline");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let registry = Registry::start_in(Kind::Plain, &dir.join("registry"));
    registry.push(&fixture.oci_ref(), "bench/systemd:latest");
    let image = format!("{}/bench/systemd:latest", registry.host);
    let inputs = prepare(d2v, &fixture, &image, &dir)?;
    let scratch = dir.join("scratch");
    let rows = rows(d2v, &image, &fixture, &inputs, &scratch);
    let checks = check_plain(&rows, &fixture, &scratch, &dir.join("boot"));
    step("bench pipeline: timed rounds");
    let runs = measure(&rows, &scratch);
    drop(registry);
    let _ = fs::remove_dir_all(&scratch);
    Ok(render(&rows, &runs, &checks, &inputs, load_before))
}

/// One untimed run of the plain-tools pipeline, then its disk checked and its VM booted
/// ([`plain_pipeline::check`]); the results printed and returned.
fn check_plain(rows: &[Row], f: &Fixture, scratch: &Path, logs: &Path) -> Vec<Check> {
    step(
        "bench pipeline: the plain-tools pipeline once (untimed), its disk checked, its VM booted",
    );
    let plain = rows.iter().find(|r| r.role == Role::Plain).expect("row");
    let checks = match bench::time_side(&plain.side, scratch) {
        Ok(s) => {
            println!("  untimed run: {:.2} s", s.secs);
            plain_pipeline::check(f, scratch, logs)
        }
        Err(e) => vec![("plain-tools pipeline".into(), Err(e))],
    };
    for (what, r) in &checks {
        let r = r
            .as_ref()
            .map_or_else(|e| format!("FAILED {e}"), |s| format!("ok {s}"));
        println!("  {what:<24} {r}");
    }
    checks
}

/// The untimed first runs: `d2v pull --format raw` fills the warm cache and gives the raw disk.
fn prepare(d2v: &Path, f: &Fixture, image: &str, dir: &Path) -> Result<Inputs> {
    step(
        "bench pipeline: inputs (untimed): d2v's cache and raw disk, its VMDK, uncompressed layers",
    );
    let (cache, raw, vmdk) = (dir.join("cache"), dir.join("d2v.raw"), dir.join("d2v.vmdk"));
    exec(
        Command::new(d2v)
            .args(["pull", image, "--format", "raw", "-o"])
            .arg(&raw)
            .arg("--cache-dir")
            .arg(&cache),
    )?;
    exec(
        Command::new(d2v)
            .args(["debug", "vmdk"])
            .arg(&raw)
            .arg("-o")
            .arg(&vmdk),
    )?;
    let layout = dir.join("uncompressed");
    uncompressed::copy(&f.oci_layout, &f.tag, &layout)?;
    let tars = testkit::oci::read_image(&layout, Some(&f.tag))?
        .layers
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let l = Layout::of(&raw)?;
    Ok(Inputs {
        templates: Templates::write(&dir.join("templates"), f, &l)?,
        layout: l,
        cache,
        raw,
        vmdk,
        tars,
    })
}

impl Row {
    fn new(role: Role, label: &str, cmd: Vec<String>, output: Option<PathBuf>) -> Row {
        let side = Side {
            label: label.into(),
            cmds: vec![cmd],
            output,
        };
        Row { role, side }
    }
}

/// The measured rows, in the order they run each round: d2v warm, the plain tools, d2v cold,
/// levels 1 and 9, the floor.
fn rows(d2v: &Path, image: &str, f: &Fixture, i: &Inputs, scratch: &Path) -> Vec<Row> {
    let ova = scratch.join("d2v.ova");
    let pull = |role, label: &str, cache: &Path, extra: &[&str]| {
        let mut a = argv(&[&d2v, &"pull", &image, &"-o", &ova, &"--cache-dir", &cache]);
        a.extend(extra.iter().map(|s| s.to_string()));
        Row::new(role, label, a, Some(ova.clone()))
    };
    let level = |n: u8| {
        let label = format!("d2v pull --compression-level {n}");
        let arg = n.to_string();
        pull(
            Role::Level(n),
            &label,
            &i.cache,
            &["--compression-level", &arg],
        )
    };
    let mut rows = vec![
        pull(Role::Warm, "d2v pull (warm cache)", &i.cache, &[]),
        Row {
            role: Role::Plain,
            side: plain_pipeline::side(image, &i.templates, &i.layout, scratch),
        },
        pull(
            Role::Cold,
            "d2v pull (cold cache)",
            &scratch.join("cache"),
            &[],
        ),
        level(1),
        level(9),
    ];
    rows.extend(floor_rows(d2v, f, i, scratch));
    rows
}

/// The floor's rows: inflating the fixture's layer blobs, d2v's VMDK writer on its raw disk,
/// SHA-256 of the uncompressed layers and the VMDK.
fn floor_rows(d2v: &Path, f: &Fixture, i: &Inputs, scratch: &Path) -> Vec<Row> {
    let paths = |ps: &mut dyn Iterator<Item = PathBuf>| -> Vec<String> {
        ps.map(|p| p.display().to_string()).collect()
    };
    let mut inflate = argv(&[&"libdeflate-gzip", &"-d", &"-c"]);
    inflate.extend(paths(&mut f.layers.iter().map(|l| {
        let hex = l.digest.trim_start_matches("sha256:");
        f.oci_layout.join("blobs/sha256").join(hex)
    })));
    let mut hash = vec!["sha256sum".to_string()];
    hash.extend(paths(&mut i.tars.iter().chain([&i.vmdk]).cloned()));
    let disk = scratch.join("disk.vmdk");
    let deflate = argv(&[&d2v, &"debug", &"vmdk", &i.raw, &"-o", &disk]);
    vec![
        Row::new(Role::Inflate, "inflate: libdeflate-gzip -d", inflate, None),
        Row::new(
            Role::Deflate,
            "deflate: d2v debug vmdk",
            deflate,
            Some(disk),
        ),
        Row::new(Role::Hash, "hash: sha256sum", hash, None),
    ]
}

/// Every row once a round, for `bench::rounds()` rounds; a row that fails is not run again.
fn measure(rows: &[Row], scratch: &Path) -> Vec<Runs> {
    let mut all: Vec<Runs> = rows.iter().map(|_| Ok(Vec::new())).collect();
    for round in 1..=bench::rounds() {
        for (row, acc) in rows.iter().zip(&mut all) {
            let Ok(runs) = acc else { continue };
            let cpu_before = children_cpu();
            match bench::time_side(&row.side, scratch) {
                Ok(s) => {
                    let cpu = children_cpu() - cpu_before;
                    let vmdk_bytes = row.side.output.as_deref().and_then(vmdk_member);
                    println!(
                        "  round {round}: {:<34} {:7.2} s wall {:7.2} s CPU {:>8} KiB max RSS",
                        row.side.label, s.secs, cpu, s.max_rss_kib
                    );
                    runs.push(Run { s, cpu, vmdk_bytes });
                }
                Err(e) => {
                    println!("  round {round}: {:<34} FAILED: {e}", row.side.label);
                    *acc = Err(e);
                }
            }
        }
    }
    all
}

/// User + system CPU seconds of this process's children that have been waited for (and of
/// their waited-for descendants).
fn children_cpu() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given; on failure it stays zeroed.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr());
        ru.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// The size of the `.vmdk` member of an OVA (`None` for other files).
fn vmdk_member(ova: &Path) -> Option<u64> {
    if ova.extension()? != "ova" {
        return None;
    }
    let mut a = tar::Archive::new(fs::File::open(ova).ok()?);
    let mut entries = a.entries().ok()?;
    entries.find_map(|e| {
        let e = e.ok()?;
        let vmdk = e.path().ok()?.extension().is_some_and(|x| x == "vmdk");
        vmdk.then(|| e.size())
    })
}

/// Medians of a row's runs: wall, CPU.
fn medians(runs: &[Run]) -> (f64, f64) {
    let wall = bench::median(&runs.iter().map(|r| r.s.secs).collect::<Vec<_>>());
    let cpu = bench::median(&runs.iter().map(|r| r.cpu).collect::<Vec<_>>());
    (wall, cpu)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

fn bytes_cell(b: Option<u64>) -> String {
    b.map_or("–".into(), |b| b.to_string())
}

fn table(rows: &[Row], runs: &[Runs]) -> String {
    let mut s = format!(
        "| run | median wall | runs (s) | median CPU (user+sys) | CPU / {} cores | median peak RSS \
         | median peak anon RSS (sampled) | output bytes | VMDK bytes |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        cores()
    );
    for (row, r) in rows.iter().zip(runs) {
        let label = &row.side.label;
        let Ok(v) = r else {
            let e = r
                .as_ref()
                .err()
                .map_or("", |e| e.lines().next().unwrap_or(""));
            s.push_str(&format!(
                "| {label} | failed | {} | | | | | | |\n",
                e.replace('|', "\\|")
            ));
            continue;
        };
        let (wall, cpu) = medians(v);
        let samples: Vec<Sample> = v.iter().map(|r| r.s).collect();
        let list = |f: fn(&Run) -> f64| {
            v.iter()
                .map(|r| format!("{:.2}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "| {label} | {wall:.2} s | {} | {cpu:.2} s (runs {}) | {:.2} s | {:.1} MiB | {} | {} | {} |\n",
            list(|r| r.s.secs),
            list(|r| r.cpu),
            cpu / cores(),
            bench::median_of(&samples, |s| s.max_rss_kib as f64) / 1024.0,
            bench::anon_cell(&samples),
            bytes_cell(v[0].s.output_bytes),
            bytes_cell(v[0].vmdk_bytes),
        ));
    }
    s
}

/// The runs of the row with `role`, if it ran without failing.
fn runs_of<'a>(rows: &[Row], runs: &'a [Runs], role: Role) -> Option<&'a [Run]> {
    let i = rows.iter().position(|r| r.role == role)?;
    runs[i].as_deref().ok()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

fn rss(v: &[Run]) -> f64 {
    bench::median(&v.iter().map(|r| r.s.max_rss_kib as f64).collect::<Vec<_>>())
}

/// The issue's targets, from the medians.
fn findings(rows: &[Row], runs: &[Runs]) -> String {
    let get = |role| runs_of(rows, runs, role);
    let mut out = Vec::new();
    if let (Some(d), Some(p)) = (get(Role::Warm), get(Role::Plain)) {
        let ((dw, dc), (pw, pc)) = (medians(d), medians(p));
        let size = |v: &[Run]| v[0].s.output_bytes.unwrap_or(0) as f64;
        out.push(format!(
            "- d2v pull (warm cache) / plain tools: wall {:.3} (target ≤ 0.12: {}), CPU {:.3}, \
             peak RSS {:.2}, OVA size {:.4}",
            dw / pw,
            verdict(dw / pw <= 0.12),
            dc / pc,
            rss(d) / rss(p),
            size(d) / size(p)
        ));
        if let (Some(a), Some(b)) = (d[0].vmdk_bytes, p[0].vmdk_bytes) {
            let r = a as f64 / b as f64;
            out.push(format!(
                "- VMDK: d2v's {a} bytes / qemu-img's {b} bytes = {r:.4} (target ≤ 1.02: {})",
                verdict(r <= 1.02)
            ));
        }
        if let Some(c) = get(Role::Cold) {
            let (cw, _) = medians(c);
            out.push(format!(
                "- cold cache (empty `--cache-dir`): wall {cw:.2} s, {:.3}× the plain tools, \
                 {:+.2} s over the warm cache",
                cw / pw,
                cw - dw
            ));
        }
        let each = overlap(d);
        let shown: Vec<String> = each.iter().map(|r| format!("{r:.3}")).collect();
        let per_run = bench::median(&each);
        out.push(format!(
            "- d2v's wall against its own CPU / cores, run by run: {} (median **{per_run:.3}**, \
             target ≤ 1.1: {}); the medians' ratio, wall and CPU of different runs: {dw:.2} s vs \
             {dc:.2} s / {} = {:.2} s, {:.3}×",
            shown.join(", "),
            verdict(per_run <= 1.1),
            cores(),
            dc / cores(),
            dw / (dc / cores())
        ));
    }
    out.push(floor(rows, runs));
    out.join("\n") + "\n"
}

/// Each run's wall time over its CPU time spread on every core: 1 when no core ever waits.
fn overlap(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(|r| r.s.secs / (r.cpu / cores())).collect()
}

/// The floor: the CPU work of inflate + deflate + hashing measured alone, over the cores.
fn floor(rows: &[Row], runs: &[Runs]) -> String {
    let get = |role| runs_of(rows, runs, role).map(|v| medians(v).1);
    let (Some(i), Some(z), Some(h), Some(d)) = (
        get(Role::Inflate),
        get(Role::Deflate),
        get(Role::Hash),
        runs_of(rows, runs, Role::Warm),
    ) else {
        return "- floor: not measured (a row failed)".into();
    };
    let (sum, (dw, dc)) = (i + z + h, medians(d));
    let floor = sum / cores();
    format!(
        "- floor: inflate {i:.2} s + deflate {z:.2} s + hash {h:.2} s = {sum:.2} s of CPU, / {} \
         cores = **{floor:.2} s**. d2v (warm cache) takes {dw:.2} s: {:.2} s above the floor \
         ({:.2}× it); its CPU time {dc:.2} s is {:.2}× that work measured alone (target ≤ 1.15: \
         {})",
        cores(),
        dw - floor,
        dw / floor,
        dc / sum,
        verdict(dc <= 1.15 * sum)
    )
}

/// d2v's compression levels side by side (6, the default, is the warm-cache row).
fn levels(rows: &[Row], runs: &[Runs]) -> String {
    let mut s = "| `--compression-level` | median wall | median CPU | OVA bytes | VMDK bytes | OVA / level 6 |\n\
                 | --- | --- | --- | --- | --- | --- |\n"
        .to_string();
    let six = runs_of(rows, runs, Role::Warm).and_then(|v| v[0].s.output_bytes);
    for (n, role) in [(1, Role::Level(1)), (6, Role::Warm), (9, Role::Level(9))] {
        let Some(v) = runs_of(rows, runs, role) else {
            s.push_str(&format!("| {n} | failed | | | | |\n"));
            continue;
        };
        let (wall, cpu) = medians(v);
        let ova = v[0].s.output_bytes;
        let rel = match (ova, six) {
            (Some(a), Some(b)) => format!("{:.4}", a as f64 / b as f64),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {n} | {wall:.2} s | {cpu:.2} s | {} | {} | {rel} |\n",
            bytes_cell(ova),
            bytes_cell(v[0].vmdk_bytes)
        ));
    }
    s
}

fn render(rows: &[Row], runs: &[Runs], checks: &[Check], i: &Inputs, load_before: &str) -> String {
    let mut s = "## pipeline\n\nEnd to end, the systemd fixture from a local registry to a finished OVA: \
                 `d2v pull` against the plain-tools pipeline, and the floor of the work measured alone\n\n"
        .to_string();
    s.push_str(&table(rows, runs));
    s.push_str("\nTargets (issue 16), from the medians:\n\n");
    s.push_str(&findings(rows, runs));
    s.push_str("\nd2v's compression levels (warm cache):\n\n");
    s.push_str(&levels(rows, runs));
    s.push_str(
        "\nThe plain-tools pipeline's VM, from one untimed run before the timed ones (its disk \
         checked as `cargo xtask boot` checks d2v's; its VMDK booted in QEMU, TCG, IDE disk, to \
         the fixture's self-check):\n\n",
    );
    for (what, r) in checks {
        match r {
            Ok(m) => s.push_str(&format!("- {what}: ok {m}\n")),
            Err(e) => s.push_str(&format!(
                "- {what}: **FAILED** {}\n",
                e.lines().next().unwrap_or("")
            )),
        }
    }
    s.push_str(&notes(i));
    s.push_str(
        "\nCommand lines (rows run alternately, each command under `/usr/bin/time -f %M` for the \
         peak RSS, outputs removed between runs; the anonymous RSS is sampled from /proc every \
         2 ms; CPU is the growth of xtask's `getrusage(RUSAGE_CHILDREN)` over the run):\n\n```\n",
    );
    for row in rows {
        s.push_str(&format!("# {}\n", row.side.label));
        for cmd in &row.side.cmds {
            s.push_str(&format!("{}\n", bench::command_line(cmd)));
        }
    }
    s.push_str(&format!("```\n\n{}", bench::machine_line(load_before)));
    bench::relative_paths(&s)
}

fn notes(i: &Inputs) -> String {
    let l = &i.layout;
    format!(
        "\nBoth sides pull from a local docker-registry (plain HTTP on 127.0.0.1); the \
         registry's own CPU is in neither side's figure. \"warm cache\": d2v's `--cache-dir` \
         filled by an untimed first run (only manifests are fetched); \"cold cache\": an empty \
         one each run. The plain-tools pipeline (xtask/src/plain_pipeline.rs) writes d2v's \
         disk layout, read from d2v's own raw disk ({} bytes; BIOS boot at sector {}, ESP {} \
         sectors at {}, root {} sectors at {}): no root, no loop device or mount — rootless \
         umoci (files owned by the user running it), GRUB's boot sectors put in place with `dd` \
         and the two sector numbers grub-bios-setup would patch, written beforehand with GRUB's \
         configurations, fstab and the OVF template (untimed). Its OVA is fsynced at the end, \
         as d2v's is. Output bytes: the OVA (the `deflate` row: the VMDK).\n\n\
         Floor rows, each measured alone on the same inputs: `inflate` decompresses the \
         fixture's layer blobs with libdeflate (faster than the zlib-rs d2v uses); `deflate` is \
         d2v's own VMDK writer on the raw disk d2v writes (level 6, grains compressed on every \
         core: its CPU time is the figure, and it includes reading the sparse raw file); `hash` \
         is SHA-256 of what d2v hashes with a warm cache: the uncompressed layers (their \
         diff_ids; made once by `cargo xtask bench`'s uncompressed copy) and the VMDK (for the \
         manifest). The floor is their CPU time over the cores: what a pipeline that overlaps \
         everything perfectly would take.\n",
        l.bytes, l.bios.start, l.esp.size, l.esp.start, l.root.size, l.root.start
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that burns CPU for a moment: its time shows up once it has been waited for.
    #[test]
    fn children_cpu_counts_waited_for_children() {
        let before = children_cpu();
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let used = children_cpu() - before;
        assert!(used > 0.05 && used < 60.0, "{used} s");
    }

    #[test]
    fn overlap_pairs_each_runs_wall_with_its_own_cpu() {
        let run = |secs, cpu| Run {
            s: Sample {
                secs,
                max_rss_kib: 0,
                anon_kib: None,
                output_bytes: None,
                flatten_secs: None,
                write_secs: None,
            },
            cpu,
            vmdk_bytes: None,
        };
        let n = cores();
        // A run whose cores never wait, and one whose wall is twice that.
        let r = overlap(&[run(1.0, n), run(2.0, n)]);
        assert_eq!(r.len(), 2);
        assert!(
            (r[0] - 1.0).abs() < 1e-9 && (r[1] - 2.0).abs() < 1e-9,
            "{r:?}"
        );
    }

    #[test]
    fn vmdk_member_size_of_an_ova() {
        let dir = std::env::temp_dir().join(format!("xtask-ova-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ova = dir.join("x.ova");
        let mut b = tar::Builder::new(fs::File::create(&ova).unwrap());
        for (name, len) in [("x.ovf", 10), ("x.mf", 20), ("x-disk1.vmdk", 1234)] {
            let mut h = tar::Header::new_ustar();
            h.set_size(len);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![7u8; len as usize][..])
                .unwrap();
        }
        b.finish().unwrap();
        drop(b);
        assert_eq!(vmdk_member(&ova), Some(1234));
        assert_eq!(vmdk_member(&dir.join("x.vmdk")), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
