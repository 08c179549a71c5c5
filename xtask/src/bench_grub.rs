//! `cargo xtask bench grub`: d2v's own mkimage (`d2v debug grub`) against the host's
//! `grub-mkimage`, assembling both GRUB images d2v installs — i386-pc core.img and x86_64-efi
//! BOOTX64.EFI — from the host's module directories, with the same modules, early config and
//! prefix. The module list is the one d2v builds in, read from an untimed d2v run.

use crate::bail;
use crate::bench::{self, argv, Comparison, Side};
use crate::util::{show, step, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

const PLATFORMS: [&str; 2] = ["i386-pc", "x86_64-efi"];
const PREFIX: &str = "(hd0,gpt2)/grub";

/// The modules `d2v debug grub` builds in for `platform` (from its `modules: …` line).
fn d2v_modules(d2v: &Path, platform: &str, work: &Path) -> Result<Vec<String>> {
    let mut cmd = Command::new(d2v);
    cmd.args(["debug", "grub", "-O", platform, "-d"])
        .arg(Path::new("/usr/lib/grub").join(platform))
        .arg("-o")
        .arg(work.join("probe.img"));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", show(&cmd)))?;
    // d2v's progress lines (with the module list) go to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", show(&cmd), out.status, err.trim());
    }
    let line = err
        .lines()
        .find_map(|l| l.split_once("modules: ").map(|(_, m)| m.to_string()))
        .ok_or_else(|| format!("`d2v debug grub` printed no module list: {err}"))?;
    Ok(line.split_whitespace().map(str::to_string).collect())
}

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let dir = work.join("grub");
    fs::create_dir_all(&dir)?;
    let cfg = dir.join("early.cfg");
    fs::write(
        &cfg,
        "search --no-floppy --fs-uuid --set=root abcd-0123\nset prefix=($root)/grub\n",
    )?;
    let scratch = dir.join("out");
    let out = |p: &str| scratch.join(p);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut counts = Vec::new();
    for p in PLATFORMS {
        let modules = d2v_modules(d2v, p, &dir)?;
        counts.push(format!("{} for {p}", modules.len()));
        let lib = Path::new("/usr/lib/grub").join(p);
        let file = out(&format!("{p}.img"));
        let mut a = argv(&[
            &d2v, &"debug", &"grub", &"-O", &p, &"-d", &lib, &"-c", &cfg, &"-o", &file,
        ]);
        a.extend(modules.iter().cloned());
        ours.push(a);
        let mut b = argv(&[
            &"grub-mkimage",
            &"-O",
            &p,
            &"-d",
            &lib,
            &"-c",
            &cfg,
            &"-p",
            &PREFIX,
            &"-o",
            &file,
        ]);
        b.extend(modules);
        theirs.push(b);
    }
    let cmp = Comparison {
        name: "grub",
        title: "GRUB images (BIOS core.img + UEFI BOOTX64.EFI): d2v's mkimage vs grub-mkimage",
        a: Side {
            label: "d2v debug grub".into(),
            cmds: ours,
            output: Some(out("i386-pc.img")),
        },
        b: Side {
            label: "grub-mkimage".into(),
            cmds: theirs,
            output: Some(out("i386-pc.img")),
        },
        scratch: scratch.clone(),
        notes: vec![format!(
            "Each side assembles both images from the host's /usr/lib/grub/{{i386-pc,x86_64-efi}} \
             (Debian 12's grub-pc-bin / grub-efi-amd64-bin) with the modules d2v builds in \
             ({}; dependencies added by both), the same early config and prefix. The output \
             size is core.img's (LZMA-compressed: d2v's encoder is lzma-rust2 in its fast mode, \
             GRUB's the LZMA SDK's normal mode); the EFI images are byte-identical but for the MS-DOS stub and time stamp \
             (tests/grub_mkimage.rs).",
            counts.join(", ")
        )],
    };
    step(&format!("bench grub: {}", cmp.title));
    let outcome = bench::measure(&cmp)?;
    Ok(bench::render(&cmp, &outcome, load_before))
}
