//! `cargo xtask bench app`: `d2v pull` of an app image with `--kernel-from` (d2v grafts the
//! kernel image's kernel, modules and GRUB modules, writes its own initramfs and installs its
//! own init) beside `d2v pull` of the systemd fixture (an image built to be a VM), both from a
//! local registry to an OVA, with d2v's blob cache warm (the kernel image is pulled once by an
//! untimed first run, as a pipeline's cache would hold it).

use crate::bench::{self, argv, Comparison, Side};
use crate::fixtures;
use crate::util::{exec, step, Result};
use std::fs;
use std::path::Path;
use std::process::Command;
use testkit::fixtures::apps::{APP_PYTHON, KERNEL_DEBIAN};
use testkit::fixtures::SYSTEMD;
use testkit::registry::{Kind, Registry};

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let (os, apps) = fixtures::ensure_with_apps(&[SYSTEMD, APP_PYTHON, KERNEL_DEBIAN], false)?;
    let app = |name: &str| {
        apps.iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("fixture {name} was not built"))
    };
    let (python, kernel) = (app(APP_PYTHON)?, app(KERNEL_DEBIAN)?);
    let dir = work.join("app");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let registry = Registry::start_in(Kind::Plain, &dir.join("registry"));
    registry.push(&os[0].oci_ref(), "bench/systemd:latest");
    registry.push(&python.oci_ref(), "bench/app-python:latest");
    registry.push(&kernel.oci_ref(), "bench/kernel-debian:latest");
    let image = |repo: &str| format!("{}/bench/{repo}:latest", registry.host);
    let (cache, scratch) = (dir.join("cache"), dir.join("scratch"));
    let out = scratch.join("out.ova");
    let pull = |repo: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = argv(&[&d2v, &"pull", &image(repo)]);
        a.extend(argv(extra));
        a.extend(argv(&[&"-o", &out, &"--cache-dir", &cache]));
        a
    };
    let a = Side {
        label: "d2v pull app-python --kernel-from".into(),
        cmds: vec![pull(
            "app-python",
            &[&"--kernel-from", &image("kernel-debian")],
        )],
        output: Some(out.clone()),
    };
    let b = Side {
        label: "d2v pull systemd".into(),
        cmds: vec![pull("systemd", &[])],
        output: Some(out.clone()),
    };
    step("bench app: untimed first runs (fill d2v's blob cache)");
    fs::create_dir_all(&scratch)?;
    for side in [&a, &b] {
        exec(Command::new(&side.cmds[0][0]).args(&side.cmds[0][1..]))?;
    }
    let layers =
        |layers: &[testkit::fixtures::FixtureLayer]| -> u64 { layers.iter().map(|l| l.size).sum() };
    let cmp = Comparison {
        name: "app",
        title: "App image with a kernel from another image (`--kernel-from`) vs an image built \
                to be a VM: `d2v pull` to an OVA, warm cache",
        a,
        b,
        scratch,
        notes: vec![format!(
            "Both sides pull from a local docker-registry (plain HTTP on 127.0.0.1) with d2v's \
             `--cache-dir` filled by an untimed first run, so every blob (the kernel image's \
             too) is read from the cache and only the manifests are fetched. Side A: \
             app-python ({} compressed bytes of layers: Debian's python3 on a minbase, an \
             entrypoint, no kernel, no init) with the kernel of kernel-debian ({} bytes: \
             linux-image-cloud-amd64 and GRUB's modules): d2v flattens both, grafts the \
             kernel, its modules and GRUB's modules, writes its initramfs, copies its own \
             executable in as init. Side B: the systemd fixture ({} bytes, its own kernel and \
             init). Each run writes a whole OVA (GPT, ESP, ext4, GRUB, streamOptimized VMDK).",
            layers(&python.layers),
            layers(&kernel.layers),
            layers(&os[0].layers),
        )],
    };
    step(&format!("bench app: {}", cmp.title));
    let outcome = bench::measure(&cmp)?;
    Ok(bench::render(&cmp, &outcome, load_before))
}
