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
/// OVMF built with Secure Boot (needs SMM: a q35 machine with `smm=on` and a secure pflash).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
/// The variable store with Microsoft's keys enrolled and Secure Boot enforced.
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

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
    /// `hostfwd=` rules for the user-mode network of [`Boot::nic`]
    /// (`tcp:127.0.0.1:8080-:80`).
    pub hostfwd: Vec<String>,
    /// A Unix socket for the QEMU monitor (see [`Running::monitor`]); none by default.
    pub monitor: Option<PathBuf>,
    /// With [`Firmware::Uefi`]: Secure Boot enforced, Microsoft's keys enrolled
    /// ([`OVMF_CODE_SECBOOT`], a copy of [`OVMF_VARS_MS`], q35 with SMM).
    pub secure_boot: bool,
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
            hostfwd: Vec::new(),
            monitor: None,
            secure_boot: false,
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
        let log_path = self.log_path();
        let mut cmd = self.command(&log_path);
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

    fn log_path(&self) -> PathBuf {
        let log_path = match &self.log {
            Some(log) => log.clone(),
            None => crate::scratch_dir("qemu").keep().join("serial.log"),
        };
        let _ = std::fs::remove_file(&log_path);
        log_path
    }

    /// The QEMU command line (stdio: null, null, piped stderr). An empty [`Boot::disk`]
    /// means no disk (a `-kernel` boot).
    fn command(&self, log_path: &Path) -> Command {
        let qemu = crate::require_tool("qemu-system-x86_64", "qemu-system-x86");
        let kvm = std::env::var("D2V_KVM").as_deref() == Ok("1") && Path::new("/dev/kvm").exists();
        let monitor = match &self.monitor {
            Some(sock) => format!("unix:{},server=on,wait=off", sock.display()),
            None => "none".into(),
        };
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
            &monitor,
            "-no-reboot",
            "-nodefaults",
            "-vga",
            "std",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log_path.display()));
        match &self.scsi_controller {
            None if self.disk.as_os_str().is_empty() => &mut cmd,
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
            let fwd: String = self
                .hostfwd
                .iter()
                .map(|f| format!(",hostfwd={f}"))
                .collect();
            cmd.args(["-netdev", &format!("user,id=net0{fwd}"), "-device"])
                .arg(format!("{model},netdev=net0"));
        }
        if self.firmware == Firmware::Uefi {
            let (code, vars_template) = if self.secure_boot {
                cmd.args(["-machine", "q35,smm=on"])
                    .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
            } else {
                (OVMF_CODE, OVMF_VARS)
            };
            assert!(
                Path::new(code).is_file(),
                "{code} not found: install Debian's ovmf"
            );
            let vars = log_path.with_file_name("OVMF_VARS.fd");
            std::fs::copy(vars_template, &vars).expect("copy the OVMF variable store");
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
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
        cmd
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

/// A QEMU started by [`Boot::spawn`], to interact with while it runs (killed when dropped).
pub struct Running {
    child: std::process::Child,
    /// The serial log file.
    pub log_path: PathBuf,
    monitor: Option<PathBuf>,
    start: Instant,
}

impl Boot {
    /// Starts QEMU and returns at once; see [`Running`].
    pub fn spawn(&self) -> Running {
        let log_path = self.log_path();
        if let Some(sock) = &self.monitor {
            let _ = std::fs::remove_file(sock);
        }
        let child = self
            .command(&log_path)
            .spawn()
            .expect("start qemu-system-x86_64");
        Running {
            child,
            log_path,
            monitor: self.monitor.clone(),
            start: Instant::now(),
        }
    }
}

impl Running {
    /// The serial log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial log holds `text` (true), QEMU exits or `timeout` passes.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if Instant::now() >= until || matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.log().contains(text);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends one command to the monitor socket ([`Boot::monitor`]).
    pub fn monitor(&self, command: &str) -> std::io::Result<()> {
        use std::io::Write;
        let sock = self.monitor.as_ref().ok_or(std::io::ErrorKind::NotFound)?;
        let mut s = std::os::unix::net::UnixStream::connect(sock)?;
        s.write_all(format!("{command}\n").as_bytes())?;
        // Let the monitor read the command before the connection closes.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits up to `timeout` for the guest to power QEMU off by itself; panics with `what` and
    /// the serial log when it does not. Returns the log.
    pub fn expect_power_off(&mut self, timeout: Duration, what: &str) -> String {
        if self.wait_exit(timeout).is_none() {
            panic!("{what}: QEMU did not exit; serial log:\n{}", self.log());
        }
        self.log()
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static QEMUS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static QEMU_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// One of a test binary's QEMU slots (TCG on a 2-core machine: a few at once), released on
/// drop.
pub struct Slot;

impl Slot {
    /// Waits until fewer than `max` slots are taken, then takes one.
    pub fn take(max: usize) -> Slot {
        let mut n = QEMUS.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= max {
            n = QEMU_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *QEMUS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        QEMU_FREED.notify_one();
    }
}

/// Panics, with the log, unless the serial log holds every one of `lines`.
pub fn assert_log_has(log: &str, lines: &[&str]) {
    for line in lines {
        assert!(log.contains(line), "no {line:?} in the serial log:\n{log}");
    }
}
