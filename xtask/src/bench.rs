//! `cargo xtask bench [export|ext4|vmdk]…`: d2v against the reference tools on the systemd
//! fixture. Each comparison runs the two sides alternately (A B A B …, ≥ 3 rounds, outputs
//! removed between runs outside the timing) and reports medians; results and the exact
//! command lines go into a marked section of BENCHMARKS.md (other sections are kept).
//!
//! The d2v command lines are in [`d2v_side`]; a side that fails is reported as such (e.g. a
//! d2v subcommand not wired yet) while the reference side is still measured.

use crate::bail;
use crate::registry::Registry;
use crate::util::{exec, root, show, step, Result, Timer};
use crate::{fixtures, testcmd};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Rounds per comparison: `$D2V_BENCH_RUNS`, at least 3.
fn rounds() -> usize {
    std::env::var("D2V_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(3)
}

const ALL: &[&str] = &["export", "ext4", "vmdk"];

/// One side of a comparison: commands run in sequence, timed together.
struct Side {
    label: String,
    cmds: Vec<Vec<String>>,
}

struct Comparison<'a> {
    name: &'a str,
    title: &'static str,
    a: Side,
    b: Side,
    /// Emptied before every run (outputs of the previous run).
    scratch: PathBuf,
}

struct Outcome {
    a: std::result::Result<Vec<f64>, String>,
    b: std::result::Result<Vec<f64>, String>,
}

fn argv(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
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
    let fixture = fixtures::ensure(&[testkit::fixtures::SYSTEMD], false)?.remove(0);
    let d2v = testcmd::release_d2v()?;
    let work = root().join("target/bench");
    fs::create_dir_all(&work)?;
    let rootfs = work.join("bundle/rootfs");
    let raw = work.join("root.ext4");
    let needs_inputs = names.iter().any(|n| *n == "ext4" || *n == "vmdk");
    if needs_inputs && (!rootfs.is_dir() || !raw.is_file()) {
        step("bench inputs: umoci unpack + mke2fs -d of the systemd fixture");
        let _ = fs::remove_dir_all(work.join("bundle"));
        exec(
            Command::new("umoci")
                .args(crate::util::umoci_unpack())
                .arg(format!("{}:{}", fixture.oci_layout.display(), fixture.tag))
                .arg(work.join("bundle")),
        )?;
        exec(
            Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard", "-d"])
                .arg(&rootfs)
                .arg(&raw)
                .arg("2G"),
        )?;
    }
    let mut registry = None;
    let mut sections = Vec::new();
    for name in names {
        let scratch = work.join(format!("scratch-{name}"));
        let out = |f: &str| scratch.join(f);
        let cmp = match name {
            "export" => {
                let reg = match &registry {
                    Some(r) => r,
                    None => registry.insert(Registry::start(&work.join("registry"))?),
                };
                let image = reg.push(&fixture.oci_ref(), "bench:latest")?;
                Comparison {
                    name,
                    title: "d2v export (registry → flattened tar) vs skopeo copy + umoci unpack",
                    a: d2v_side(&d2v, "export", &image, &scratch),
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
                    },
                    scratch: scratch.clone(),
                }
            }
            "ext4" => Comparison {
                name,
                title: "ext4 root filesystem: d2v's writer vs mke2fs -d",
                a: d2v_side(&d2v, "ext4", &fixture.oci_ref(), &scratch),
                b: Side {
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
                        &rootfs,
                        &out("root.ext4"),
                        &"2G",
                    ])],
                },
                scratch: scratch.clone(),
            },
            "vmdk" => Comparison {
                name,
                title: "raw → streamOptimized VMDK: d2v's writer vs qemu-img convert",
                a: d2v_side(&d2v, "vmdk", &raw.display().to_string(), &scratch),
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
                },
                scratch: scratch.clone(),
            },
            _ => unreachable!(),
        };
        step(&format!("bench {name}: {}", cmp.title));
        let outcome = measure(&cmp)?;
        sections.push((cmp.name, render(&cmp, &outcome)));
        let _ = fs::remove_dir_all(&scratch);
    }
    drop(registry);
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

/// The d2v command line for each comparison (the lead wires these subcommands).
fn d2v_side(d2v: &Path, what: &str, input: &str, scratch: &Path) -> Side {
    let d2v = d2v.display().to_string();
    let s = |p: &str| scratch.join(p).display().to_string();
    let cmd: Vec<String> = match what {
        "export" => vec![
            d2v,
            "export".into(),
            input.into(),
            "-o".into(),
            s("out.tar"),
            "--cache-dir".into(),
            s("cache"),
        ],
        "ext4" => vec![
            d2v,
            "debug".into(),
            "ext4".into(),
            input.into(),
            "-o".into(),
            s("root.ext4"),
        ],
        _ => vec![
            d2v,
            "debug".into(),
            "vmdk".into(),
            input.into(),
            "-o".into(),
            s("disk.vmdk"),
        ],
    };
    Side {
        label: format!("d2v {what}"),
        cmds: vec![cmd],
    }
}

fn time_side(side: &Side, scratch: &Path) -> std::result::Result<f64, String> {
    let _ = fs::remove_dir_all(scratch);
    fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
    let t = Timer::start();
    for c in &side.cmds {
        let mut cmd = Command::new(&c[0]);
        cmd.args(&c[1..]).stdin(Stdio::null()).stdout(Stdio::null());
        let out = cmd
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: {e}", c[0]))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "`{}` failed ({}): {}",
                show(&cmd),
                out.status,
                err.trim()
            ));
        }
    }
    Ok(t.secs())
}

fn measure(c: &Comparison<'_>) -> Result<Outcome> {
    let mut a: std::result::Result<Vec<f64>, String> = Ok(Vec::new());
    let mut b: std::result::Result<Vec<f64>, String> = Ok(Vec::new());
    for round in 1..=rounds() {
        for (side, acc) in [(&c.a, &mut a), (&c.b, &mut b)] {
            let Ok(times) = acc else { continue };
            match time_side(side, &c.scratch) {
                Ok(s) => {
                    println!("  round {round}: {:<28} {s:8.2} s", side.label);
                    times.push(s);
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

fn render(c: &Comparison<'_>, o: &Outcome) -> String {
    let cell = |r: &std::result::Result<Vec<f64>, String>| match r {
        Ok(v) => format!(
            "{:.2} s | {}",
            median(v),
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!(
            "failed | {}",
            e.lines().next().unwrap_or("").replace('|', "\\|")
        ),
    };
    let mut s = format!("## {}\n\n{}\n\n", c.name, c.title);
    s.push_str("| side | median | runs |\n| --- | --- | --- |\n");
    s.push_str(&format!(
        "| {} | {} |\n| {} | {} |\n",
        c.a.label,
        cell(&o.a),
        c.b.label,
        cell(&o.b)
    ));
    if let (Ok(a), Ok(b)) = (&o.a, &o.b) {
        s.push_str(&format!(
            "\nd2v / reference = {:.2}\n",
            median(a) / median(b)
        ));
    }
    s.push_str("\nCommand lines (run alternately, outputs removed between runs):\n\n```\n");
    for side in [&c.a, &c.b] {
        for cmd in &side.cmds {
            let mut p = Command::new(&cmd[0]);
            p.args(&cmd[1..]);
            s.push_str(&format!("{}\n", show(&p)));
        }
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date =
        crate::util::output(Command::new("date").args(["-u", "+%F %H:%M UTC"])).unwrap_or_default();
    s.push_str(&format!(
        "```\n\n{} rounds, {cpus} CPUs, {}.\n",
        rounds(),
        date.trim()
    ));
    // Paths relative to the workspace root, so the file reads the same on every machine.
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
    fn sections_are_replaced_not_duplicated() {
        let d = replace_section("# B\n", "vmdk", "one\n");
        let d = replace_section(&d, "ext4", "two\n");
        let d = replace_section(&d, "vmdk", "three\n");
        assert_eq!(d.matches("<!-- bench:vmdk -->").count(), 1);
        assert!(d.contains("three") && !d.contains("one") && d.contains("two"));
    }
}
