//! End-to-end boot tests (issue 5) as an xtask phase: `cargo xtask boot [NAME…]`, and part of
//! `cargo xtask test` when the workspace has no tests/e2e_boot.rs doing the same inside
//! `cargo test` (or with D2V_XTASK_BOOT=1): for each fixture, `d2v build` (the release binary) → OVA →
//! VMDK; the disk checked with the reference tools (`sgdisk -v`, `fsck.fat -n` on the ESP,
//! `e2fsck -fn` on the root); then QEMU (TCG) boots the VMDK under SeaBIOS and OVMF — the two
//! boots of a fixture in parallel, one per core — and the guest's self-check must match
//! fixture.json. Logs stay in target/boot-tests/<name>/. systemd goes in through its OCI
//! layout, openrc through its docker archive (two transports).

use crate::bail;
use crate::qemu::{self, Firmware};
use crate::util::{exec, output, root, step, Result, Timer};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::fixtures::{Fixture, SELFCHECK_END};

pub struct Outcome {
    pub name: String,
    pub checks: Vec<(String, std::result::Result<String, String>)>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, r)| r.is_ok())
    }
}

/// `cargo xtask boot [NAME…]`.
pub fn run(args: &[String]) -> Result<()> {
    let names: Vec<&str> = args.iter().map(String::as_str).collect();
    let fx = crate::fixtures::ensure(&names, false)?;
    let d2v = crate::testcmd::release_d2v()?;
    let outcomes = run_all(&d2v, &fx)?;
    print_summary(&outcomes);
    if outcomes.iter().all(Outcome::ok) {
        Ok(())
    } else {
        bail!("boot tests failed (logs in {})", work_dir().display())
    }
}

pub fn work_dir() -> PathBuf {
    root().join("target/boot-tests")
}

pub fn print_summary(outcomes: &[Outcome]) {
    for o in outcomes {
        for (what, r) in &o.checks {
            match r {
                Ok(s) => println!("boot {:8} {:<24} ok   {s}", o.name, what),
                Err(e) => println!(
                    "boot {:8} {:<24} FAIL {}",
                    o.name,
                    what,
                    e.lines().next().unwrap_or("")
                ),
            }
        }
    }
}

pub fn run_all(d2v: &Path, fixtures: &[Fixture]) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for f in fixtures {
        step(&format!("boot test: {} ({})", f.name, f.init));
        out.push(one(d2v, f)?);
    }
    Ok(out)
}

pub(crate) fn record<T>(
    checks: &mut Vec<(String, std::result::Result<String, String>)>,
    what: &str,
    r: Result<T>,
    ok: impl Fn(&T) -> String,
) -> Option<T> {
    match r {
        Ok(v) => {
            checks.push((what.into(), Ok(ok(&v))));
            Some(v)
        }
        Err(e) => {
            println!("{what}: FAILED: {e}");
            checks.push((what.into(), Err(e.to_string())));
            None
        }
    }
}

fn one(d2v: &Path, f: &Fixture) -> Result<Outcome> {
    let work = work_dir().join(&f.name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let mut checks = Vec::new();
    let source = if f.name == testkit::fixtures::OPENRC {
        f.docker_archive_ref()
    } else {
        f.oci_ref()
    };
    let ova = work.join(format!("{}.ova", f.name));
    let t = Timer::start();
    let built = exec(
        Command::new(d2v)
            .arg("build")
            .arg(&source)
            .arg("-o")
            .arg(&ova),
    );
    let secs = t.secs();
    if record(&mut checks, "d2v build", built, |_| {
        format!("{secs:.1} s, {source}")
    })
    .is_none()
    {
        return Ok(Outcome {
            name: f.name.clone(),
            checks,
        });
    }
    let Some(vmdk) = record(
        &mut checks,
        "OVA has a VMDK",
        crate::demo::extract_vmdk(&ova, &work),
        |p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        },
    ) else {
        return Ok(Outcome {
            name: f.name.clone(),
            checks,
        });
    };
    let raw = work.join("disk.raw");
    let converted = exec(
        Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&vmdk)
            .arg(&raw),
    );
    if record(&mut checks, "qemu-img reads VMDK", converted, |_| {
        String::new()
    })
    .is_some()
    {
        disk_checks(&raw, &work, &mut checks);
        let _ = fs::remove_file(&raw);
    }
    for (fw, r) in boot_both(f, &vmdk, &work) {
        record(
            &mut checks,
            &format!("boot {} self-check", fw.name()),
            r,
            |s| s.clone(),
        );
    }
    Ok(Outcome {
        name: f.name.clone(),
        checks,
    })
}

/// Boots `vmdk` under SeaBIOS and OVMF at once (TCG is one thread per vCPU; the machine has
/// 2 cores) and checks each guest's self-check against `f`: per firmware, a one-line summary
/// or the error (with the serial log's path).
pub(crate) fn boot_both(f: &Fixture, vmdk: &Path, work: &Path) -> Vec<(Firmware, Result<String>)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = [Firmware::Bios, Firmware::Uefi]
            .into_iter()
            .map(|fw| {
                s.spawn(move || {
                    let r = qemu::boot(vmdk, "vmdk", fw, work, SELFCHECK_END).and_then(|b| {
                        f.check_selfcheck(&b.log)
                            .map(|rep| {
                                format!(
                                    "{:.0} s, {} paths match, log {}",
                                    b.secs,
                                    rep.files.len(),
                                    b.log_path.display()
                                )
                            })
                            .map_err(|e| {
                                format!("{e}\nserial log: {}", b.log_path.display()).into()
                            })
                    });
                    (fw, r)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("boot thread"))
            .collect()
    })
}

/// sgdisk -v on the disk; fsck.fat -n on the ESP; e2fsck -fn on the root (partitions copied
/// out by the offsets sfdisk reports).
pub(crate) fn disk_checks(
    raw: &Path,
    work: &Path,
    checks: &mut Vec<(String, std::result::Result<String, String>)>,
) {
    let sg = output(Command::new("sgdisk").arg("-v").arg(raw)).and_then(|o| {
        if o.contains("No problems found") {
            Ok(())
        } else {
            Err(format!("sgdisk -v: {}", o.trim()).into())
        }
    });
    record(checks, "sgdisk -v", sg, |_| "no problems".into());
    let parts = match partitions(raw) {
        Ok(p) => p,
        Err(e) => {
            checks.push(("sfdisk -J".into(), Err(e.to_string())));
            return;
        }
    };
    const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
    for (label, ty, tool, args) in [
        ("fsck.fat -n (ESP)", ESP, "fsck.fat", &["-n"][..]),
        ("e2fsck -fn (root)", ROOT_X86_64, "e2fsck", &["-fn"][..]),
    ] {
        let r = (|| -> Result<String> {
            let Some((start, size)) = parts
                .iter()
                .find(|p| p.0.eq_ignore_ascii_case(ty))
                .map(|p| (p.1, p.2))
            else {
                bail!("no partition of type {ty}");
            };
            let img = work.join(format!("{tool}.img"));
            copy_range(raw, &img, start * 512, size * 512)?;
            let out = Command::new(tool).args(args).arg(&img).output()?;
            let _ = fs::remove_file(&img);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                bail!(
                    "{tool} {} failed ({}): {} {}",
                    args.join(" "),
                    out.status,
                    stdout.trim(),
                    stderr.trim()
                );
            }
            // The summary line ("N files, …"), without the scratch image's path.
            let last = stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Ok(last.rsplit(": ").next().unwrap_or(last).to_string())
        })();
        record(checks, label, r, |s| s.clone());
    }
}

/// (type GUID, start sector, size in sectors) from `sfdisk -J`.
pub(crate) fn partitions(raw: &Path) -> Result<Vec<(String, u64, u64)>> {
    let j: serde_json::Value =
        serde_json::from_str(&output(Command::new("sfdisk").arg("-J").arg(raw))?)?;
    let parts = j["partitiontable"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(parts
        .iter()
        .map(|p| {
            (
                p["type"].as_str().unwrap_or("").to_string(),
                p["start"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Copies [offset, offset+len) of `src` into a new file, keeping zero blocks as holes.
fn copy_range(src: &Path, dst: &Path, offset: u64, len: u64) -> Result<()> {
    let mut r = fs::File::open(src)?;
    r.seek(SeekFrom::Start(offset))?;
    let mut w = fs::File::create(dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])?;
        if buf[..n].iter().all(|b| *b == 0) {
            w.seek(SeekFrom::Current(n as i64))?;
        } else {
            w.write_all(&buf[..n])?;
        }
        left -= n as u64;
    }
    w.set_len(len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_from_sfdisk_and_ranges_copied() {
        testkit::require_tool("sgdisk", "gdisk");
        testkit::require_tool("sfdisk", "fdisk");
        let dir = std::env::temp_dir().join(format!("xtask-parts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("d.raw");
        fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
        exec(
            Command::new("sgdisk")
                .args(["-n", "1:2048:+1M", "-t", "1:EF00"])
                .arg(&disk),
        )
        .unwrap();
        let p = partitions(&disk).unwrap();
        assert_eq!(
            p,
            [(
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".to_string(),
                2048,
                2048
            )]
        );
        // Mark the partition's last sector and copy it out.
        let mut f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start((2048 + 2047) * 512)).unwrap();
        f.write_all(b"end").unwrap();
        let part = dir.join("p.img");
        copy_range(&disk, &part, 2048 * 512, 2048 * 512).unwrap();
        let data = fs::read(&part).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert_eq!(&data[data.len() - 512..][..3], b"end");
        fs::remove_dir_all(&dir).unwrap();
    }
}
