//! `cargo xtask bench local`: `d2v build` of the systemd fixture from its local sources — the
//! OCI layout (`oci:DIR`) and the docker archive (`docker-archive:FILE`), both read in place,
//! no blob written anywhere — each against `d2v build` of the same image from a local
//! registry with d2v's blob cache warm (filled by an untimed first run), all to an OVA.
//! The target: a local build within 10 % of the warm-cache build.

use crate::bail;
use crate::bench::{self, argv, Comparison, Side};
use crate::fixtures;
use crate::util::{exec, step, Result};
use std::fs;
use std::path::Path;
use std::process::Command;
use testkit::fixtures::SYSTEMD;
use testkit::registry::{Kind, Registry};

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let fixture = fixtures::ensure(&[SYSTEMD], false)?.remove(0);
    let dir = work.join("local");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let registry = Registry::start_in(Kind::Plain, &dir.join("registry"));
    registry.push(&fixture.oci_ref(), "bench/systemd:latest");
    let image = format!("{}/bench/systemd:latest", registry.host);
    let (cache, scratch) = (dir.join("cache"), dir.join("scratch"));
    let out = scratch.join("out.ova");
    // Every side names a cache directory: the local sides must leave theirs empty.
    let local_cache = dir.join("local-cache");
    let build = |src: &str, cache: &Path| {
        argv(&[&d2v, &"build", &src, &"-o", &out, &"--cache-dir", &cache])
    };
    let side = |label: &str, cmd: Vec<String>| Side {
        label: label.into(),
        cmds: vec![cmd],
        output: Some(out.clone()),
    };
    let warm = || {
        side(
            "d2v build REF (registry, warm cache)",
            build(&image, &cache),
        )
    };
    step("bench local: untimed first run (fill d2v's blob cache from the registry)");
    fs::create_dir_all(&scratch)?;
    let first = build(&image, &cache);
    exec(Command::new(&first[0]).args(&first[1..]))?;
    let layers: u64 = fixture.layers.iter().map(|l| l.size).sum();
    let archive = fs::metadata(&fixture.docker_archive)?.len();
    let mut text = String::new();
    for (name, src, what) in [
        (
            "local (oci:DIR)",
            fixture.oci_ref(),
            format!("the fixture's OCI layout ({layers} bytes of gzip layers)"),
        ),
        (
            "local (docker-archive:FILE)",
            fixture.docker_archive_ref(),
            format!("the fixture's docker archive ({archive} bytes, layers uncompressed)"),
        ),
    ] {
        let cmp = Comparison {
            name,
            title: "A local image read in place vs the same image from the registry with d2v's \
                    blob cache warm: `d2v build` to an OVA",
            a: side(
                &format!("d2v build {}", name.trim_start_matches("local ")),
                build(&src, &local_cache),
            ),
            b: warm(),
            scratch: scratch.clone(),
            notes: vec![format!(
                "Side A reads {what} where it is: digests are checked while the layers stream \
                 into the staging tree, and nothing is written to its `--cache-dir` (checked \
                 after the runs). Side B pulls the same image from a local docker-registry \
                 (plain HTTP on 127.0.0.1) with `--cache-dir` filled by an untimed first run, \
                 so only the manifest is fetched and the blobs are read from the cache. Both \
                 write a whole OVA (GPT, ESP, ext4, GRUB, streamOptimized VMDK). Target \
                 (issue 16): A within 10 % of B."
            )],
        };
        step(&format!("bench {name}: {}", cmp.title));
        let outcome = bench::measure(&cmp)?;
        text.push_str(&bench::render(&cmp, &outcome, load_before));
        text.push('\n');
    }
    let written = testkit::files_under(&local_cache);
    if !written.is_empty() {
        bail!("the local builds wrote into their --cache-dir: {written:?}");
    }
    Ok(text)
}
