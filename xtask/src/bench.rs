//! `cargo xtask bench [export|ext4|ext4-tar|vmdk|ext4-scale|grub|app|local|pipeline|scale]…`: d2v against the
//! reference tools on the systemd fixture (`ext4-tar`: the same image with its layers stored
//! uncompressed, see [`crate::uncompressed`]; `ext4-scale`: on synthetic images, see
//! [`crate::bench_scale`]; `grub`: GRUB's images from the host's modules, see
//! [`crate::bench_grub`]; `app`: an app image with `--kernel-from` beside the systemd fixture,
//! both by d2v, see [`crate::bench_app`]; `local`: builds from an OCI layout and a docker
//! archive read in place against a warm cache, see [`crate::bench_local`]; `pipeline`: `d2v
//! pull` end to end against the plain-tools baseline of [`crate::plain_pipeline`], see
//! [`crate::bench_pipeline`]; `scale`: synthetic 1–8 GiB and 60-layer images, see
//! [`crate::bench_size`]). Each
//! comparison runs the two sides alternately (A B A B …, ≥ 3 rounds, outputs removed between
//! runs outside the timing) and reports medians; results and the exact command lines go into
//! a marked section of BENCHMARKS.md (other sections are kept).
//!
//! Every command runs under `/usr/bin/time -f %M`, so the peak memory (max RSS) of each side
//! is recorded too (the largest over a side's commands); for comparisons with one output
//! file, its size is recorded as well.
//!
//! The d2v command lines are in [`d2v_side`]; a side that fails is reported as such (e.g. a
//! d2v subcommand not wired yet) while the reference side is still measured.

use crate::bail;
use crate::util::{exec, root, show, step, Result, Timer};
use crate::{fixtures, testcmd};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::registry::{Kind, Registry};

/// Rounds per comparison: `$D2V_BENCH_RUNS`, at least 3.
pub(crate) fn rounds() -> usize {
    std::env::var("D2V_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(3)
}

const ALL: &[&str] = &[
    "export",
    "ext4",
    "ext4-tar",
    "vmdk",
    "ext4-scale",
    "grub",
    "app",
    "local",
    "pipeline",
    "scale",
];

/// One side of a comparison: commands run in sequence, timed together.
pub(crate) struct Side {
    pub(crate) label: String,
    pub(crate) cmds: Vec<Vec<String>>,
    /// The output file whose size is reported, if any.
    pub(crate) output: Option<PathBuf>,
}

pub(crate) struct Comparison<'a> {
    pub(crate) name: &'a str,
    pub(crate) title: &'static str,
    pub(crate) a: Side,
    pub(crate) b: Side,
    /// Emptied before every run (outputs of the previous run).
    pub(crate) scratch: PathBuf,
    /// What is (not) timed, how the inputs were made.
    pub(crate) notes: Vec<String>,
}

/// One timed run of a side.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) secs: f64,
    /// Peak resident memory in KiB (max over the side's commands).
    pub(crate) max_rss_kib: u64,
    /// Largest anonymous (heap, stacks) resident memory seen, in KiB, sampled from
    /// `/proc/PID/status` every few milliseconds: the working memory without the program's
    /// code and shared libraries (file-backed pages, which `max_rss_kib` includes).
    pub(crate) anon_kib: Option<u64>,
    /// Size of the side's output file in bytes.
    pub(crate) output_bytes: Option<u64>,
    /// The `flatten N s` stage time d2v reports on stderr (`d2v debug ext4`).
    pub(crate) flatten_secs: Option<f64>,
    /// The `ext4 write N s` stage time d2v reports on stderr (`d2v debug ext4`).
    pub(crate) write_secs: Option<f64>,
}

pub(crate) type Runs = std::result::Result<Vec<Sample>, String>;

pub(crate) struct Outcome {
    pub(crate) a: Runs,
    pub(crate) b: Runs,
}

pub(crate) fn argv(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.as_ref().to_string_lossy().into_owned())
        .collect()
}

pub fn run(args: &[String]) -> Result<()> {
    let names: Vec<&str> = if args.is_empty() {
        ALL.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    if let Some(bad) = names.iter().find(|n| !ALL.contains(n)) {
        bail!("unknown benchmark {bad:?} (known: {})", ALL.join(", "));
    }
    if !Path::new(TIME).is_file() {
        bail!("{TIME} is missing (it measures peak memory): apt-get install time");
    }
    let d2v = testcmd::release_d2v()?;
    let work = root().join("target/bench");
    fs::create_dir_all(&work)?;
    let load_before = uptime();
    // Everything but ext4-scale runs on the systemd fixture (built only when needed).
    let on_fixture: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !["ext4-scale", "grub", "app", "local", "pipeline", "scale"].contains(n))
        .collect();
    let mut sections = Vec::new();
    if !on_fixture.is_empty() {
        sections.extend(fixture_sections(&on_fixture, &d2v, &work, &load_before)?);
    }
    if names.contains(&"ext4-scale") {
        let text = crate::bench_scale::run(&d2v, &work, &load_before)?;
        sections.push(("ext4-scale", text));
    }
    if names.contains(&"grub") {
        let text = crate::bench_grub::run(&d2v, &work, &load_before)?;
        sections.push(("grub", text));
    }
    if names.contains(&"app") {
        let text = crate::bench_app::run(&d2v, &work, &load_before)?;
        sections.push(("app", text));
    }
    if names.contains(&"local") {
        let text = crate::bench_local::run(&d2v, &work, &load_before)?;
        sections.push(("local", text));
    }
    if names.contains(&"pipeline") {
        let text = crate::bench_pipeline::run(&d2v, &work, &load_before)?;
        sections.push(("pipeline", text));
    }
    if names.contains(&"scale") {
        let text = crate::bench_size::run(&d2v, &work, &load_before)?;
        sections.push(("scale", text));
    }
    let path = root().join("BENCHMARKS.md");
    let mut doc = fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `cargo xtask bench`; medians of alternating runs.\n".into()
    });
    for (name, text) in sections {
        println!("{text}");
        doc = replace_section(&doc, name, &text);
    }
    fs::write(&path, doc)?;
    println!("results in {}", path.display());
    Ok(())
}

/// The comparisons on the systemd fixture: one BENCHMARKS.md section per name.
fn fixture_sections<'a>(
    names: &[&'a str],
    d2v: &Path,
    work: &Path,
    load_before: &str,
) -> Result<Vec<(&'a str, String)>> {
    let fixture = fixtures::ensure(&[testkit::fixtures::SYSTEMD], false)?.remove(0);
    let rootfs = work.join("bundle/rootfs");
    let ext4 = names.contains(&"ext4") || names.contains(&"ext4-tar");
    if ext4 && !rootfs.is_dir() {
        step("bench input: umoci unpack of the systemd fixture (the tree mke2fs -d reads)");
        let _ = fs::remove_dir_all(work.join("bundle"));
        exec(
            Command::new("umoci")
                .args(crate::util::umoci_unpack())
                .arg(format!("{}:{}", fixture.oci_layout.display(), fixture.tag))
                .arg(work.join("bundle")),
        )?;
    }
    let raw = work.join("disk.raw");
    let build_raw = argv(&[
        &d2v,
        &"build",
        &fixture.oci_ref(),
        &"--format",
        &"raw",
        &"-o",
        &raw,
        &"--cache-dir",
        &work.join("cache"),
    ]);
    if names.contains(&"vmdk") && !raw.is_file() {
        step("bench input: the systemd fixture's raw disk (d2v build --format raw)");
        exec(Command::new(&build_raw[0]).args(&build_raw[1..]))?;
    }
    let mut registry = None;
    let mut sections = Vec::new();
    for &name in names {
        let scratch = work.join(format!("scratch-{name}"));
        let out = |f: &str| scratch.join(f);
        let cmp = match name {
            "export" => {
                let reg = match &registry {
                    Some(r) => r,
                    None => {
                        registry.insert(Registry::start_in(Kind::Plain, &work.join("registry")))
                    }
                };
                reg.push(&fixture.oci_ref(), "bench:latest");
                let image = format!("{}/bench:latest", reg.host);
                Comparison {
                    name,
                    title: "d2v export (registry → flattened tar) vs skopeo copy + umoci unpack",
                    a: d2v_side(d2v, "export", &image, &scratch, None),
                    b: Side {
                        label: "skopeo copy + umoci unpack".into(),
                        cmds: vec![
                            argv(&[
                                &"skopeo",
                                &"copy",
                                &"--quiet",
                                &"--src-tls-verify=false",
                                &format!("docker://{image}"),
                                &format!("oci:{}:latest", out("oci").display()),
                            ]),
                            argv(&[
                                &"umoci",
                                &"unpack",
                                &"--image",
                                &format!("{}:latest", out("oci").display()),
                                &out("bundle"),
                            ]),
                        ],
                        output: None,
                    },
                    scratch: scratch.clone(),
                    notes: vec![format!(
                        "Both sides pull the systemd fixture from a local docker-registry \
                             (plain HTTP on 127.0.0.1) into an empty directory every run: d2v \
                             with an empty `--cache-dir`, skopeo into an empty OCI layout. d2v \
                             writes one tar, umoci unpacks a directory tree."
                    )],
                }
            }
            "ext4" => {
                let cache = work.join("cache");
                let size = ext4_auto_size(d2v, &fixture.oci_ref(), work, &cache)?;
                Comparison {
                    name,
                    title: "ext4 root filesystem of the systemd fixture: d2v's writer vs mke2fs -d",
                    a: d2v_side(d2v, "ext4", &fixture.oci_ref(), &scratch, Some(&cache)),
                    b: mke2fs_side(&rootfs, &out("root.ext4"), size),
                    scratch: scratch.clone(),
                    notes: vec![format!(
                        "Same size for both: d2v's automatic size ({size} bytes), given to \
                         mke2fs. mke2fs reads the tree extracted beforehand by `umoci unpack` \
                         (extraction not timed). The d2v side starts from the OCI layout with \
                         its blob cache already filled (by an untimed first run), so its time \
                         includes decompressing and applying the layers (gzip) plus writing; \
                         mke2fs's does not (its input tree is in the page cache). Both end \
                         with an fsync of the image file. Peak RSS is of the whole d2v process, \
                         flattening included."
                    )],
                }
            }
            "ext4-tar" => {
                let layout = work.join("uncompressed/oci");
                step("bench input: the systemd fixture with uncompressed layers");
                crate::uncompressed::copy(&fixture.oci_layout, &fixture.tag, &layout)?;
                let image = format!("oci:{}:{}", layout.display(), fixture.tag);
                let cache = work.join("uncompressed/cache");
                let size = ext4_auto_size(d2v, &image, work, &cache)?;
                Comparison {
                    name,
                    title: "ext4 root filesystem of the systemd fixture, layers stored \
                            uncompressed: d2v's writer vs mke2fs -d",
                    a: d2v_side(d2v, "ext4", &image, &scratch, Some(&cache)),
                    b: mke2fs_side(&rootfs, &out("root.ext4"), size),
                    scratch: scratch.clone(),
                    notes: vec![format!(
                        "The `ext4` comparison with no decompression on either side: d2v reads \
                         a copy of the fixture whose layer blobs are the uncompressed tars \
                         (`application/vnd.oci.image.layer.v1.tar`; same config, so the same \
                         diff_ids and the same tree; made once, untimed), mke2fs the tree \
                         extracted beforehand by `umoci unpack`. d2v still reads the tars, \
                         checks their digests and applies them into its staging tree before \
                         writing; mke2fs walks the extracted directory. Same size for both: \
                         d2v's automatic size ({size} bytes). Both end with an fsync of the \
                         image file."
                    )],
                }
            }
            "vmdk" => Comparison {
                name,
                title: "raw disk → streamOptimized VMDK: d2v's writer vs qemu-img convert",
                a: d2v_side(d2v, "vmdk", &raw.display().to_string(), &scratch, None),
                b: Side {
                    label: "qemu-img convert".into(),
                    cmds: vec![argv(&[
                        &"qemu-img",
                        &"convert",
                        &"-f",
                        &"raw",
                        &"-O",
                        &"vmdk",
                        &"-o",
                        &"subformat=streamOptimized",
                        &raw,
                        &out("disk.vmdk"),
                    ])],
                    output: Some(out("disk.vmdk")),
                },
                scratch: scratch.clone(),
                notes: vec![format!(
                    "Input: the systemd fixture's {} byte sparse raw disk (GPT, ESP, ext4 root), \
                     made once by `{}` (not timed). Both at their default deflate level.",
                    fs::metadata(&raw).map(|m| m.len()).unwrap_or(0),
                    build_raw.join(" ")
                )],
            },
            _ => unreachable!(),
        };
        step(&format!("bench {name}: {}", cmp.title));
        let outcome = measure(&cmp)?;
        sections.push((cmp.name, render(&cmp, &outcome, load_before)));
        let _ = fs::remove_dir_all(&scratch);
    }
    drop(registry);
    Ok(sections)
}

/// d2v's automatic ext4 size for `image` (bytes), from one untimed `d2v debug ext4` run,
/// which mke2fs is then given. The run also fills d2v's blob cache `cache`, so the timed runs
/// read cached blobs.
pub(crate) fn ext4_auto_size(d2v: &Path, image: &str, work: &Path, cache: &Path) -> Result<u64> {
    let probe = work.join("probe.ext4");
    let first = d2v_side(d2v, "ext4", image, work, Some(cache));
    let mut c = first.cmds[0].clone();
    let o = c.iter().position(|a| a == "-o").unwrap() + 1;
    c[o] = probe.display().to_string();
    exec(Command::new(&c[0]).args(&c[1..]))?;
    let size = fs::metadata(&probe)?.len();
    fs::remove_file(&probe)?;
    Ok(size)
}

/// `mke2fs -d TREE OUT SIZE` with the options the ext4 comparisons use.
pub(crate) fn mke2fs_side(tree: &Path, out: &Path, size: u64) -> Side {
    Side {
        label: "mke2fs -d".into(),
        cmds: vec![argv(&[
            &"mke2fs",
            &"-q",
            &"-F",
            &"-t",
            &"ext4",
            &"-E",
            &"nodiscard",
            &"-d",
            &tree,
            &out,
            &format!("{}k", size / 1024),
        ])],
        output: Some(out.to_path_buf()),
    }
}

pub(crate) const TIME: &str = "/usr/bin/time";

/// `uptime` (load averages), to say how busy the machine was.
pub(crate) fn uptime() -> String {
    crate::util::output(&mut Command::new("uptime"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The d2v command line for each comparison.
pub(crate) fn d2v_side(
    d2v: &Path,
    what: &str,
    input: &str,
    scratch: &Path,
    cache: Option<&Path>,
) -> Side {
    let d2v = d2v.display().to_string();
    let s = |p: &str| scratch.join(p).display().to_string();
    let (mut cmd, output): (Vec<String>, _) = match what {
        "export" => (
            vec![
                d2v,
                "export".into(),
                input.into(),
                "-o".into(),
                s("out.tar"),
            ],
            None,
        ),
        "ext4" => (
            vec![
                d2v,
                "debug".into(),
                "ext4".into(),
                input.into(),
                "-o".into(),
                s("root.ext4"),
            ],
            Some(scratch.join("root.ext4")),
        ),
        _ => (
            vec![
                d2v,
                "debug".into(),
                "vmdk".into(),
                input.into(),
                "-o".into(),
                s("disk.vmdk"),
            ],
            Some(scratch.join("disk.vmdk")),
        ),
    };
    match (what, cache) {
        (_, Some(c)) => cmd.extend(["--cache-dir".into(), c.display().to_string()]),
        ("export", None) => cmd.extend(["--cache-dir".into(), s("cache")]),
        _ => {}
    }
    Side {
        label: format!("d2v {what}"),
        cmds: vec![cmd],
        output,
    }
}

pub(crate) fn time_side(side: &Side, scratch: &Path) -> std::result::Result<Sample, String> {
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
    // Untimed: the previous run's outputs (GBs after the plain tools) are written back and
    // their freed blocks discarded now, not while this run writes. The pipeline's first d2v
    // run, after the plain tools' untimed check, took 1.19x its CPU / cores without this
    // (the other rounds 1.08-1.10x) and 1.15x with it.
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let rss_file = scratch.with_extension("rss");
    let mut max_rss_kib = 0;
    let mut anon_kib: Option<u64> = None;
    let mut flatten_secs = None;
    let mut write_secs = None;
    let t = Timer::start();
    for c in &side.cmds {
        let mut cmd = Command::new(TIME);
        cmd.args(["-f", "%M", "-o"]).arg(&rss_file).args(c);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let (out, anon) = run_sampling(&mut cmd).map_err(|e| format!("{}: {e}", c[0]))?;
        anon_kib = match (anon_kib, anon) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "`{}` failed ({}): {}",
                show(&cmd),
                out.status,
                err.trim()
            ));
        }
        let rss = fs::read_to_string(&rss_file).map_err(|e| e.to_string())?;
        let kib: u64 = rss
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("{TIME} wrote no max RSS: {rss:?}"))?;
        max_rss_kib = max_rss_kib.max(kib);
        let err = String::from_utf8_lossy(&out.stderr);
        flatten_secs = stage_secs(&err, "flatten ").or(flatten_secs);
        write_secs = stage_secs(&err, "ext4 write ").or(write_secs);
    }
    let secs = t.secs();
    let _ = fs::remove_file(&rss_file);
    let output_bytes = side
        .output
        .as_ref()
        .map(|p| {
            fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .transpose()?;
    Ok(Sample {
        secs,
        max_rss_kib,
        anon_kib,
        output_bytes,
        flatten_secs,
        write_secs,
    })
}

/// Runs `cmd` (`/usr/bin/time … PROGRAM …`) to its end, sampling the anonymous resident
/// memory (`RssAnon`) of the program it starts every 2 ms; returns its output and the largest
/// sample (`None` if the program ended before a sample was taken).
fn run_sampling(cmd: &mut Command) -> std::io::Result<(std::process::Output, Option<u64>)> {
    let child = cmd.stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak: Option<u64> = None;
            let children = format!("/proc/{pid}/task/{pid}/children");
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let kids = fs::read_to_string(&children).unwrap_or_default();
                for k in kids.split_whitespace() {
                    let status =
                        fs::read_to_string(format!("/proc/{k}/status")).unwrap_or_default();
                    if let Some(kib) = status_kib(&status, "RssAnon:") {
                        peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        })
    };
    let out = child.wait_with_output();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(None);
    Ok((out?, peak))
}

/// The KiB value of a `/proc/PID/status` line such as `RssAnon:     4008 kB`.
pub(crate) fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The seconds after the last `STAGE` (e.g. `"ext4 write "`) in d2v's stderr, as in
/// `…; flatten 1.234 s, ext4 write 0.456 s`.
pub(crate) fn stage_secs(stderr: &str, stage: &str) -> Option<f64> {
    let i = stderr.rfind(stage)?;
    stderr[i + stage.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
}

pub(crate) fn measure(c: &Comparison<'_>) -> Result<Outcome> {
    let mut a: Runs = Ok(Vec::new());
    let mut b: Runs = Ok(Vec::new());
    for round in 1..=rounds() {
        for (side, acc) in [(&c.a, &mut a), (&c.b, &mut b)] {
            let Ok(runs) = acc else { continue };
            match time_side(side, &c.scratch) {
                Ok(s) => {
                    println!(
                        "  round {round}: {:<28} {:8.2} s {:>8} KiB max RSS",
                        side.label, s.secs, s.max_rss_kib
                    );
                    runs.push(s);
                }
                Err(e) => {
                    println!("  round {round}: {:<28} FAILED: {e}", side.label);
                    *acc = Err(e);
                }
            }
        }
    }
    Ok(Outcome { a, b })
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|x, y| x.total_cmp(y));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn median_of(v: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&v.iter().map(f).collect::<Vec<_>>())
}

/// The median sampled anonymous RSS of `v`, or a dash when a run was too short to sample.
pub(crate) fn anon_cell(v: &[Sample]) -> String {
    let a: Vec<f64> = v
        .iter()
        .filter_map(|s| s.anon_kib)
        .map(|k| k as f64)
        .collect();
    if a.len() == v.len() && !a.is_empty() {
        format!("{:.1} MiB", median(&a) / 1024.0)
    } else {
        "–".into()
    }
}

pub(crate) fn render(c: &Comparison<'_>, o: &Outcome, load_before: &str) -> String {
    let row = |side: &Side, r: &Runs| match r {
        Ok(v) => format!(
            "| {} | {:.2} s | {} | {:.1} MiB | {} | {} |\n",
            side.label,
            median_of(v, |s| s.secs),
            v.iter()
                .map(|s| format!("{:.2}", s.secs))
                .collect::<Vec<_>>()
                .join(", "),
            median_of(v, |s| s.max_rss_kib as f64) / 1024.0,
            anon_cell(v),
            match v.first().and_then(|s| s.output_bytes) {
                Some(b) => format!("{b}"),
                None => "–".into(),
            }
        ),
        Err(e) => format!(
            "| {} | failed | {} | | | |\n",
            side.label,
            e.lines().next().unwrap_or("").replace('|', "\\|")
        ),
    };
    let mut s = format!("## {}\n\n{}\n\n", c.name, c.title);
    s.push_str(
        "| side | median time | runs (s) | median peak RSS | median peak anon RSS (sampled) | output bytes |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- |\n");
    s.push_str(&row(&c.a, &o.a));
    s.push_str(&row(&c.b, &o.b));
    if let (Ok(a), Ok(b)) = (&o.a, &o.b) {
        s.push_str(&format!(
            "\n{} / {}: time {:.2}, peak RSS {:.2}",
            c.a.label,
            c.b.label,
            median_of(a, |s| s.secs) / median_of(b, |s| s.secs),
            median_of(a, |s| s.max_rss_kib as f64) / median_of(b, |s| s.max_rss_kib as f64),
        ));
        if let (Some(x), Some(y)) = (
            a.first().and_then(|s| s.output_bytes),
            b.first().and_then(|s| s.output_bytes),
        ) {
            s.push_str(&format!(", output size {:.4}", x as f64 / y as f64));
        }
        s.push('\n');
    }
    if let Ok(a) = &o.a {
        let w: Vec<f64> = a.iter().filter_map(|s| s.write_secs).collect();
        if w.len() == a.len() && !w.is_empty() {
            s.push_str(&format!(
                "\nd2v's own stage time for the ext4 write alone (from its stderr, includes the \
                 final fsync): median {:.2} s (runs {})",
                median(&w),
                w.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if let Ok(b) = &o.b {
                s.push_str(&format!(
                    "; write / reference = {:.2}",
                    median(&w) / median_of(b, |s| s.secs)
                ));
            }
            s.push('\n');
        }
    }
    for n in &c.notes {
        s.push_str(&format!("\n{n}\n"));
    }
    s.push_str(
        "\nCommand lines (run alternately, each under `/usr/bin/time -f %M` for the peak RSS, \
         outputs removed between runs; the anonymous RSS is sampled from /proc every 2 ms):\n\n```\n",
    );
    for side in [&c.a, &c.b] {
        for cmd in &side.cmds {
            s.push_str(&format!("{}\n", command_line(cmd)));
        }
    }
    s.push_str(&format!("```\n\n{}", machine_line(load_before)));
    relative_paths(&s)
}

/// A command line as a shell would take it.
pub(crate) fn command_line(cmd: &[String]) -> String {
    let mut p = Command::new(&cmd[0]);
    p.args(&cmd[1..]);
    show(&p)
}

/// The closing line of a section: rounds, CPUs, date, `uptime` before and now.
pub(crate) fn machine_line(load_before: &str) -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date =
        crate::util::output(Command::new("date").args(["-u", "+%F %H:%M UTC"])).unwrap_or_default();
    format!(
        "{} rounds, {cpus} CPUs, {}. `uptime` before the benchmarks: `{load_before}`; \
         after this one: `{}`.\n",
        rounds(),
        date.trim(),
        uptime()
    )
}

/// Paths relative to the workspace root, so the file reads the same on every machine.
pub(crate) fn relative_paths(s: &str) -> String {
    s.replace(&format!("{}/", root().display()), "")
}

/// Replaces (or appends) the `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` section.
fn replace_section(doc: &str, name: &str, text: &str) -> String {
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let block = format!("{open}\n{text}{close}");
    match (doc.find(&open), doc.find(&close)) {
        (Some(i), Some(j)) if j > i => format!("{}{block}{}", &doc[..i], &doc[j + close.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn stage_times_are_read_from_d2v_stderr() {
        let err = "d2v: flattening\nd2v: wrote x.ext4 (600 MiB ext4, 9 inodes used); \
                   flatten 1.234 s, ext4 write 0.456 s\n";
        assert_eq!(stage_secs(err, "flatten "), Some(1.234));
        assert_eq!(stage_secs(err, "ext4 write "), Some(0.456));
        assert_eq!(stage_secs("no stages here", "ext4 write "), None);
        assert_eq!(stage_secs("flatten layers", "flatten "), None);
    }

    #[test]
    fn anonymous_rss_is_read_from_proc_status() {
        let st = "Name:\td2v\nVmHWM:\t    8804 kB\nRssAnon:\t    4008 kB\nRssFile:\t    5108 kB\n";
        assert_eq!(status_kib(st, "RssAnon:"), Some(4008));
        assert_eq!(status_kib(st, "RssFile:"), Some(5108));
        assert_eq!(status_kib(st, "RssShmem:"), None);
        // A real process: this test's own status has it.
        let me = fs::read_to_string("/proc/self/status").unwrap();
        assert!(status_kib(&me, "RssAnon:").is_some_and(|k| k > 0));
    }

    #[test]
    fn sampling_sees_the_program_started_by_time() {
        // A program that holds 64 MiB of touched heap for a moment: the sample must see it.
        let mut cmd = Command::new(TIME);
        cmd.args(["-f", "%M", "-o", "/dev/null", "python3", "-c"])
            .arg("b = bytearray(64 << 20); import time; time.sleep(0.3)")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (out, anon) = run_sampling(&mut cmd).unwrap();
        assert!(out.status.success());
        let anon = anon.expect("sampled");
        assert!(anon > 60 * 1024, "{anon} KiB");
    }

    #[test]
    fn sections_are_replaced_not_duplicated() {
        let d = replace_section("# B\n", "vmdk", "one\n");
        let d = replace_section(&d, "ext4", "two\n");
        let d = replace_section(&d, "vmdk", "three\n");
        assert_eq!(d.matches("<!-- bench:vmdk -->").count(), 1);
        assert!(d.contains("three") && !d.contains("one") && d.contains("two"));
    }
}
