//! The OS-image fixtures `cargo xtask test` builds (with `mmdebstrap`) and the tests read.
//!
//! Each fixture lives in `fixtures_dir()/<name>/` and is described by `<name>/fixture.json`
//! (a [`Fixture`]). Paths in the file are relative to the fixture's directory; [`load`] makes
//! them absolute. The recipe hash in `<name>/stamp` decides when xtask rebuilds it.
//!
//! Fixtures are shared and read-only: copy a layout before modifying it (its base blob is a
//! hard link into the cache).
//!
//! Fixtures:
//! - [`SYSTEMD`]: Debian bookworm, `linux-image-cloud-amd64`, `systemd-sysv`, GRUB modules;
//!   three layers: base, a layer with whiteouts / an opaque dir / replacements / a symlink /
//!   a hardlink, and a layer adding the boot self-check service.
//! - [`OPENRC`]: the same on `sysvinit-core` + `openrc`, with `/.dockerenv` in its layers.
//! - [`TRIXIE`]: Debian 13 trixie (GRUB 2.12, Linux 6.12), systemd; base and self-check layers.
//! - [`CLOUDINIT`]: bookworm, systemd and `cloud-init` (its OVF data source); the self-check
//!   leaves the VM running, so that cloud-init's user scripts can run after it.
//! - [`SECUREBOOT`]: bookworm, systemd, with Debian's signed boot chain (`shim-signed`,
//!   `grub-efi-amd64-signed`; the cloud kernel is signed); base and self-check layers.
//!
//! The self-check (in the guest, at boot) writes to `/dev/ttyS0`:
//! ```text
//! D2V-SELFCHECK-BEGIN
//! <sha256>  <path>          (sha256sum's format, for a file that exists)
//! ABSENT <path>             (for a path that must not exist)
//! OPENRC-SYS <openrc --sys> (OpenRC fixture only; must not be DOCKER)
//! NET-ADDR <addresses>      (`hostname -I`, after waiting for DHCP when there is a NIC)
//! SECUREBOOT <0|1>          (under UEFI: the firmware's `SecureBoot` variable)
//! D2V-SELFCHECK-END
//! ```
//! then powers the VM off. [`Fixture::check_selfcheck`] compares a serial log with the
//! checksums xtask computed from the layers it built.
//!
//! The app and kernel-image fixtures (`d2v pull APP --kernel-from KIMAGE`) are in [`apps`].

pub mod apps;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SYSTEMD: &str = "systemd";
pub const OPENRC: &str = "openrc";
pub const TRIXIE: &str = "trixie";
pub const SECUREBOOT: &str = "secureboot";
/// Every fixture, in build order.
pub const CLOUDINIT: &str = "cloudinit";

pub const ALL: &[&str] = &[SYSTEMD, OPENRC, TRIXIE, SECUREBOOT, CLOUDINIT];

pub const SELFCHECK_BEGIN: &str = "D2V-SELFCHECK-BEGIN";
pub const SELFCHECK_END: &str = "D2V-SELFCHECK-END";
/// Bump when the manifest format changes (xtask rebuilds, old readers refuse).
pub const FORMAT_VERSION: u32 = 1;

/// `fixtures_dir()/<name>/fixture.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fixture {
    pub format: u32,
    pub name: String,
    /// sha256 of the recipe the fixture was built from (also in `<name>/stamp`).
    pub recipe: String,
    /// OCI image layout directory (`oci:DIR:TAG`).
    pub oci_layout: PathBuf,
    pub tag: String,
    /// `skopeo copy oci:… docker-archive:…` of the same image.
    pub docker_archive: PathBuf,
    /// The `name:tag` recorded inside the docker archive.
    pub docker_archive_name: String,
    /// Digest of the OCI manifest in the layout (sha256:…).
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<FixtureLayer>,
    /// "systemd" or "openrc".
    pub init: String,
    /// Absolute guest paths of the kernel and initramfs, e.g. "/boot/vmlinuz-6.1.0-35-cloud-amd64".
    pub kernel: String,
    pub initrd: String,
    /// Container markers present in the image (e.g. "/.dockerenv") that d2v must drop.
    pub container_markers: Vec<String>,
    pub selfcheck: SelfCheckExpect,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FixtureLayer {
    /// Blob digest (gzip-compressed tar) and size in the OCI layout.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// What the layer does ("base", "whiteouts", "selfcheck").
    pub comment: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SelfCheckExpect {
    /// Checked paths in the order the guest prints them; `None` = must be absent.
    pub files: Vec<ExpectedFile>,
    /// The guest prints `OPENRC-SYS …` (OpenRC fixture); the value must not be `DOCKER`.
    pub openrc_sys: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExpectedFile {
    pub path: String,
    pub sha256: Option<String>,
}

/// What the guest printed between the markers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SelfCheckReport {
    /// path → Some(sha256) or None (ABSENT).
    pub files: BTreeMap<String, Option<String>>,
    pub openrc_sys: Option<String>,
    /// The guest's addresses (`hostname -I`) after waiting for DHCP when it has a network
    /// adapter; `None` when the line is missing.
    pub net_addrs: Option<Vec<String>>,
    /// The firmware's `SecureBoot` variable (1: enforcing) when booted under UEFI.
    pub secure_boot: Option<u8>,
}

impl Fixture {
    pub fn dir(&self) -> PathBuf {
        fixture_dir(&self.name)
    }
    /// `oci:/abs/layout:TAG` for d2v / skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.oci_layout.display(), self.tag)
    }
    /// `docker-archive:/abs/file.tar`.
    pub fn docker_archive_ref(&self) -> String {
        format!("docker-archive:{}", self.docker_archive.display())
    }

    /// Checks a serial console log against the expected self-check output: the markers, every
    /// expected path with the expected checksum (or ABSENT), and for OpenRC a `openrc --sys`
    /// that is not DOCKER. Returns the parsed report, or a message listing every mismatch.
    pub fn check_selfcheck(&self, log: &str) -> Result<SelfCheckReport, String> {
        let report = parse_selfcheck(log).ok_or_else(|| {
            format!("no complete {SELFCHECK_BEGIN} … {SELFCHECK_END} block in the serial log")
        })?;
        let mut errors = Vec::new();
        for want in &self.selfcheck.files {
            match (report.files.get(&want.path), &want.sha256) {
                (None, _) => errors.push(format!("{}: not reported by the guest", want.path)),
                (Some(got), want_sum) if got != want_sum => errors.push(format!(
                    "{}: guest {} but the image has {}",
                    want.path,
                    got.as_deref().unwrap_or("ABSENT"),
                    want_sum.as_deref().unwrap_or("ABSENT")
                )),
                _ => {}
            }
        }
        if self.selfcheck.openrc_sys {
            match report.openrc_sys.as_deref() {
                None => errors.push("OPENRC-SYS line missing".into()),
                Some("DOCKER") => errors.push(
                    "openrc --sys says DOCKER: the guest still looks like a container (/.dockerenv)"
                        .into(),
                ),
                Some(_) => {}
            }
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(format!("self-check mismatch:\n  {}", errors.join("\n  ")))
        }
    }
}

/// Parses the last complete self-check block of a serial log (tolerates `\r` and console noise
/// on other lines). `None` when there is no complete block.
pub fn parse_selfcheck(log: &str) -> Option<SelfCheckReport> {
    let mut current: Option<SelfCheckReport> = None;
    let mut done = None;
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r').trim();
        if line.ends_with(SELFCHECK_BEGIN) {
            current = Some(SelfCheckReport::default());
            continue;
        }
        let Some(report) = current.as_mut() else {
            continue;
        };
        if line.ends_with(SELFCHECK_END) {
            done = current.take();
        } else if let Some(path) = line.strip_prefix("ABSENT ") {
            report.files.insert(path.to_string(), None);
        } else if let Some(sys) = line.strip_prefix("OPENRC-SYS") {
            report.openrc_sys = Some(sys.trim().to_string());
        } else if let Some(sb) = line.strip_prefix("SECUREBOOT ") {
            report.secure_boot = sb.trim().parse().ok();
        } else if let Some(addrs) = line.strip_prefix("NET-ADDR") {
            report.net_addrs = Some(addrs.split_whitespace().map(str::to_string).collect());
        } else if let Some((sum, path)) = line.split_once("  ") {
            if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                report
                    .files
                    .insert(path.to_string(), Some(sum.to_ascii_lowercase()));
            }
        }
    }
    done
}

/// `fixtures_dir()/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    crate::fixtures_dir().join(name)
}

/// `fixtures_dir()/<name>/fixture.json`.
pub fn manifest_path(name: &str) -> PathBuf {
    fixture_dir(name).join("fixture.json")
}

/// Reads a fixture's manifest; `None` when it is missing or from another format version.
pub fn try_load(name: &str) -> Option<Fixture> {
    let text = std::fs::read_to_string(manifest_path(name)).ok()?;
    let mut f: Fixture = serde_json::from_str(&text).ok()?;
    if f.format != FORMAT_VERSION {
        return None;
    }
    let dir = fixture_dir(name);
    f.oci_layout = absolute(&dir, &f.oci_layout);
    f.docker_archive = absolute(&dir, &f.docker_archive);
    Some(f)
}

/// Reads a fixture's manifest, panicking with what to run when it has not been built.
pub fn load(name: &str) -> Fixture {
    try_load(name).unwrap_or_else(|| {
        panic!(
            "fixture {name:?} not built ({} missing or outdated): run `cargo xtask test` \
             (or `cargo xtask fixtures`), or set D2V_FIXTURES to where they are",
            manifest_path(name).display()
        )
    })
}

fn absolute(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Extracts the `.vmdk` member(s) of an OVA (a tar) into `dir` with GNU tar; returns the first.
pub fn vmdk_from_ova(ova: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xvf")
        .arg(ova)
        .arg("-C")
        .arg(dir)
        .args(["--wildcards", "*.vmdk"])
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "no .vmdk extracted from {}: {}",
        ova.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    dir.join(first.trim())
}

/// The d2v binary for heavy integration tests: `$D2V_BIN` (xtask sets it to a release build),
/// else `default` (pass `env!("CARGO_BIN_EXE_d2v")`).
pub fn d2v_bin(default: &str) -> PathBuf {
    std::env::var_os("D2V_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(openrc: bool) -> Fixture {
        Fixture {
            format: FORMAT_VERSION,
            name: "t".into(),
            recipe: String::new(),
            oci_layout: "oci".into(),
            tag: "latest".into(),
            docker_archive: "docker.tar".into(),
            docker_archive_name: "t:latest".into(),
            manifest_digest: String::new(),
            config_digest: String::new(),
            layers: vec![],
            init: "systemd".into(),
            kernel: String::new(),
            initrd: String::new(),
            container_markers: vec![],
            selfcheck: SelfCheckExpect {
                files: vec![
                    ExpectedFile {
                        path: "/a".into(),
                        sha256: Some("ab".repeat(32)),
                    },
                    ExpectedFile {
                        path: "/gone".into(),
                        sha256: None,
                    },
                ],
                openrc_sys: openrc,
            },
        }
    }

    fn log(sum: &str, sys: &str) -> String {
        format!(
            "[  1.0] noise\r\n{SELFCHECK_BEGIN}\r\n{sum}  /a\r\nABSENT /gone\r\n{sys}{SELFCHECK_END}\r\n"
        )
    }

    #[test]
    fn selfcheck_matches_and_mismatches() {
        let f = fixture(false);
        assert!(f.check_selfcheck(&log(&"ab".repeat(32), "")).is_ok());
        let err = f.check_selfcheck(&log(&"cd".repeat(32), "")).unwrap_err();
        assert!(err.contains("/a"), "{err}");
        assert!(f.check_selfcheck("booting...\n").is_err());
        let truncated = format!("{SELFCHECK_BEGIN}\nABSENT /gone\n");
        assert!(f.check_selfcheck(&truncated).is_err());
    }

    #[test]
    fn openrc_docker_is_refused() {
        let f = fixture(true);
        let sum = "ab".repeat(32);
        assert!(f.check_selfcheck(&log(&sum, "OPENRC-SYS KVM\n")).is_ok());
        assert!(f.check_selfcheck(&log(&sum, "OPENRC-SYS \n")).is_ok());
        let err = f
            .check_selfcheck(&log(&sum, "OPENRC-SYS DOCKER\n"))
            .unwrap_err();
        assert!(err.contains("DOCKER"), "{err}");
        assert!(f.check_selfcheck(&log(&sum, "")).is_err());
    }

    #[test]
    fn secure_boot_variable_is_parsed() {
        let sum = "ab".repeat(32);
        let r = parse_selfcheck(&log(&sum, "SECUREBOOT 1\r\n")).unwrap();
        assert_eq!(r.secure_boot, Some(1));
        let r = parse_selfcheck(&log(&sum, "")).unwrap();
        assert_eq!(r.secure_boot, None, "no line under BIOS");
    }

    #[test]
    fn vmdk_comes_out_of_an_ova() {
        let dir = std::env::temp_dir().join(format!("testkit-ova-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.ovf"), "ovf").unwrap();
        std::fs::write(src.join("a-disk1.vmdk"), "vmdk").unwrap();
        let ova = dir.join("a.ova");
        let st = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&ova)
            .arg("-C")
            .arg(&src)
            .args(["a.ovf", "a-disk1.vmdk"])
            .status()
            .unwrap();
        assert!(st.success());
        let vmdk = vmdk_from_ova(&ova, &dir.join("out"));
        assert_eq!(std::fs::read_to_string(&vmdk).unwrap(), "vmdk");
        assert!(!dir.join("out/a.ovf").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn manifest_round_trips_as_json() {
        let f = fixture(true);
        let text = serde_json::to_string_pretty(&f).unwrap();
        assert_eq!(serde_json::from_str::<Fixture>(&text).unwrap(), f);
    }
}
