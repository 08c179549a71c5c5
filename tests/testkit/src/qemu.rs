//! Boots a disk image (raw or VMDK) in QEMU with TCG under SeaBIOS or OVMF, captures the
//! serial console to a file and waits for a marker line.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Firmware to boot with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF from Debian's `ovmf` package, with a fresh copy of its variable store.
    Uefi,
}

impl Firmware {
    /// The firmware's name: `SeaBIOS` or `OVMF`.
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "SeaBIOS",
            Firmware::Uefi => "OVMF",
        }
    }
}

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone)]
pub struct Boot {
    pub disk: PathBuf,
    pub firmware: Firmware,
    /// Text whose appearance on the serial console means success.
    pub marker: String,
    pub timeout: Duration,
    pub memory_mib: u32,
    /// QEMU `-drive if=` value: `virtio` (default), `ide`, ... Ignored with `scsi_controller`.
    pub interface: String,
    /// A QEMU SCSI controller model (`pvscsi`, `lsi53c895a`, ...): the disk is then a SCSI
    /// disk on it, the first boot device, instead of an `if=` drive.
    pub scsi_controller: Option<String>,
    /// A QEMU NIC model (`vmxnet3`, `e1000`, ...) on user-mode networking; none by default.
    pub nic: Option<String>,
    /// Where the serial log goes (the OVMF variable store goes beside it); a fresh file in
    /// the temp dir when `None`.
    pub log: Option<PathBuf>,
    /// QEMU `-drive format=` value; from the disk's extension by default (`vmdk`, `qcow2`,
    /// else `raw`).
    pub format: String,
    /// More QEMU arguments (e.g. `-kernel`, `-initrd`, `-append`).
    pub extra_args: Vec<String>,
    /// After the marker, how long to wait for the guest to power off before QEMU is killed.
    pub linger: Duration,
    /// Print the QEMU command line before starting it.
    pub echo: bool,
}

/// What a boot produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub found: bool,
    pub log: String,
    pub log_path: PathBuf,
    pub elapsed: Duration,
    /// When the marker appeared, if it did while QEMU ran.
    pub marker_at: Option<Duration>,
    /// QEMU's exit status when it exited by itself (before the timeout or [`Boot::linger`]).
    pub exited: Option<ExitStatus>,
}

impl Boot {
    pub fn new(disk: impl Into<PathBuf>, firmware: Firmware, marker: &str) -> Boot {
        let disk: PathBuf = disk.into();
        let format = match disk.extension().and_then(|e| e.to_str()) {
            Some("vmdk") => "vmdk",
            Some("qcow2") => "qcow2",
            _ => "raw",
        };
        Boot {
            format: format.into(),
            extra_args: Vec::new(),
            linger: Duration::ZERO,
            echo: false,
            disk,
            firmware,
            marker: marker.into(),
            timeout: Duration::from_secs(120),
            memory_mib: 512,
            interface: "virtio".into(),
            scsi_controller: None,
            nic: None,
            log: None,
        }
    }

    /// Boots, waits for the marker or the timeout (or QEMU exiting), kills QEMU and returns
    /// the serial log. KVM is used only when `D2V_KVM=1`.
    pub fn run(&self) -> Outcome {
        let qemu = crate::require_tool("qemu-system-x86_64", "qemu-system-x86");
        let log_path = match &self.log {
            Some(log) => log.clone(),
            None => crate::scratch_dir("qemu").join("serial.log"),
        };
        let _ = std::fs::remove_file(&log_path);
        let kvm = std::env::var("D2V_KVM").as_deref() == Ok("1") && Path::new("/dev/kvm").exists();
        let mut cmd = Command::new(qemu);
        cmd.args([
            "-accel",
            if kvm { "kvm" } else { "tcg" },
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "1",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-vga",
            "std",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log_path.display()));
        match &self.scsi_controller {
            None => cmd.arg("-drive").arg(format!(
                "file={},format={},if={},snapshot=on",
                self.disk.display(),
                self.format,
                self.interface
            )),
            Some(model) => cmd
                .arg("-device")
                .arg(format!("{model},id=scsi0"))
                .arg("-drive")
                .arg(format!(
                    "file={},format={},if=none,id=disk0,snapshot=on",
                    self.disk.display(),
                    self.format
                ))
                .arg("-device")
                .arg("scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0"),
        };
        if let Some(model) = &self.nic {
            cmd.args(["-netdev", "user,id=net0", "-device"])
                .arg(format!("{model},netdev=net0"));
        }
        if self.firmware == Firmware::Uefi {
            assert!(
                Path::new(OVMF_CODE).is_file(),
                "{OVMF_CODE} not found: install Debian's ovmf"
            );
            let vars = log_path.with_file_name("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF_VARS_4M.fd");
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
        cmd.args(&self.extra_args);
        if self.echo {
            println!("$ {cmd:?}");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("start qemu-system-x86_64");
        let mut marker_at = None;
        let mut exited = None;
        loop {
            if marker_at.is_none() {
                let log = std::fs::read(&log_path).unwrap_or_default();
                if String::from_utf8_lossy(&log).contains(&self.marker) {
                    marker_at = Some(start.elapsed());
                }
            }
            match marker_at {
                Some(at) if start.elapsed() >= at + self.linger => break,
                None if start.elapsed() >= self.timeout => break,
                _ => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let elapsed = start.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        let mut log =
            String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
        let found = marker_at.is_some() || log.contains(&self.marker);
        if let Some(status) = exited.filter(|_| !found) {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            log.push_str(&format!(
                "\n[testkit: QEMU exited early with {status}: {err}]\n"
            ));
        }
        Outcome {
            found,
            log,
            log_path,
            elapsed,
            marker_at,
            exited,
        }
    }

    /// [`Boot::run`], panicking with the serial log when the marker does not appear (the log
    /// file is kept then; after a success the scratch directory is removed).
    pub fn expect_marker(&self) -> String {
        let out = self.run();
        if !out.found {
            panic!(
                "{:?} boot of {} did not print {:?} within {:?}; serial log ({}):\n{}",
                self.firmware,
                self.disk.display(),
                self.marker,
                self.timeout,
                out.log_path.display(),
                out.log
            );
        }
        if self.log.is_none() {
            // Our own scratch directory: nothing to keep after a success.
            if let Some(dir) = out.log_path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        out.log
    }
}
