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

/// [`boot`] with the disk on a PVSCSI controller and a VMXNET3 NIC: QEMU's models of the
/// devices d2v's OVF gives the VM on vSphere (SeaBIOS only: Debian's OVMF has no PVSCSI driver).
pub fn boot_on_vmware_devices(
    disk: &Path,
    format: &str,
    work: &Path,
    marker: &str,
) -> Result<Boot> {
    let mut b = settings(disk, format, Firmware::Bios, work, marker);
    b.scsi_controller = Some("pvscsi".into());
    b.nic = Some("vmxnet3".into());
    run(b, disk)
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
    let mut b = settings(disk, format, fw, work, marker);
    b.extra_args = extra.to_vec();
    run(b, disk)
}

fn settings(
    disk: &Path,
    format: &str,
    fw: Firmware,
    work: &Path,
    marker: &str,
) -> testkit::qemu::Boot {
    let tag = match fw {
        Firmware::Bios => "bios",
        Firmware::Uefi => "uefi",
    };
    let mut b = testkit::qemu::Boot::new(disk, fw, marker);
    b.format = format.into();
    // The disk as the first IDE disk (QEMU's default), which the boot check's root=/dev/sda needs.
    b.interface = "ide".into();
    b.memory_mib = 1024;
    b.timeout = timeout();
    b.linger = Duration::from_secs(5);
    b.log = Some(work.join(format!("serial-{tag}.log")));
    b.echo = true;
    b
}

fn run(b: testkit::qemu::Boot, disk: &Path) -> Result<Boot> {
    let (fw, marker) = (b.firmware, b.marker.clone());
    if let Some(dir) = b.log.as_deref().and_then(Path::parent) {
        fs::create_dir_all(dir)?;
    }
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
