//! Boots a disk in QEMU (TCG; KVM with D2V_KVM=1) under SeaBIOS or OVMF, serial console to a
//! file, until a marker line appears: testkit's [`testkit::qemu::Boot`] with the demo's and the
//! boot check's settings, and errors instead of panics.

use crate::bail;
use crate::util::Result;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use testkit::qemu::Firmware;

pub struct Boot {
    pub log: String,
    pub log_path: PathBuf,
    pub secs: f64,
}

/// Boot timeout: `$D2V_BOOT_TIMEOUT` seconds, default 900 (TCG on a busy 2-core machine).
pub fn timeout() -> Duration {
    let s = std::env::var("D2V_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(s)
}

/// Boots `disk` (opened read-only: snapshot=on) until `marker` appears on the serial console
/// and the guest powers off (or 5 s more pass; the disk is a snapshot, nothing to lose). Errors carry the log path and its tail.
pub fn boot(disk: &Path, format: &str, fw: Firmware, work: &Path, marker: &str) -> Result<Boot> {
    boot_with(disk, format, fw, work, marker, &[])
}

/// [`boot`] with extra QEMU arguments (e.g. `-kernel`, `-initrd`, `-append`).
pub fn boot_with(
    disk: &Path,
    format: &str,
    fw: Firmware,
    work: &Path,
    marker: &str,
    extra: &[String],
) -> Result<Boot> {
    fs::create_dir_all(work)?;
    let tag = match fw {
        Firmware::Bios => "bios",
        Firmware::Uefi => "uefi",
    };
    let log_path = work.join(format!("serial-{tag}.log"));
    let _ = fs::remove_file(&log_path);
    let mut cmd = Command::new("qemu-system-x86_64");
    let kvm = std::env::var("D2V_KVM").is_ok_and(|v| v == "1") && Path::new("/dev/kvm").exists();
    cmd.args(["-accel", if kvm { "kvm" } else { "tcg" }])
        .args([
            "-m", "1024", "-smp", "1", "-display", "none", "-monitor", "none", "-nic", "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", log_path.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format={format},snapshot=on",
            disk.display()
        ));
    if fw == Firmware::Uefi {
        let vars = work.join("OVMF_VARS_4M.fd");
        fs::copy(OVMF_VARS, &vars).map_err(|e| format!("{OVMF_VARS}: {e} (install ovmf)"))?;
        cmd.arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
    }
    cmd.args(extra);
    println!("$ {}", show(&cmd));
    let t = Timer::start();
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    let limit = timeout();
    let read = || String::from_utf8_lossy(&fs::read(&log_path).unwrap_or_default()).into_owned();
    let mut seen_at: Option<f64> = None;
    let outcome = loop {
        std::thread::sleep(Duration::from_millis(500));
        let exited = child.try_wait()?;
        if seen_at.is_none() && read().contains(marker) {
            seen_at = Some(t.secs());
        }
        match (exited, seen_at) {
            (Some(_), Some(_)) => break Ok(()),
            (None, Some(s)) if t.secs() - s > 5.0 => break Ok(()),
            (Some(status), None) => break Err(format!("QEMU exited ({status}) before {marker}")),
            (None, None) if t.secs() > limit.as_secs_f64() => {
                break Err(format!("no {marker} within {} s", limit.as_secs()))
            }
            _ => {}
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = read();
    if let Err(e) = outcome {
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
    let mut b = testkit::qemu::Boot::new(disk, fw, marker);
    b.format = format.into();
    // The disk as the first IDE disk (QEMU's default), which the boot check's root=/dev/sda needs.
    b.interface = "ide".into();
    b.memory_mib = 1024;
    b.timeout = timeout();
    b.linger = Duration::from_secs(30);
    b.extra_args = extra.to_vec();
    b.log = Some(work.join(format!("serial-{tag}.log")));
    b.echo = true;
    let out = b.run();
    if !out.found {
        let e = match out.exited {
            Some(status) => format!("QEMU exited ({status}) before {marker}"),
            None => format!("no {marker} within {} s", b.timeout.as_secs()),
        };
        let tail: Vec<&str> = out.log.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{} boot of {}: {e}; serial log kept at {}; last lines:\n{}",
            fw.name(),
            disk.display(),
            out.log_path.display(),
            tail.join("\n")
        );
    }
    Ok(Boot {
        log: out.log,
        log_path: out.log_path,
        secs: out.marker_at.unwrap_or(out.elapsed).as_secs_f64(),
    })
}
