//! The guest OS the OVF declares: VMware's guest ID (`vmw:osType`) and the CIM
//! `OperatingSystemSection/@ovf:id`, chosen so that every ESXi the `--hw-version` runs on
//! knows the ID.
//!
//! From the image's `/etc/os-release` (and the kernel's version) d2v wishes a list of IDs, the
//! closest first (`debian12_64Guest`, `debian11_64Guest`, …, then `other6xLinux64Guest`, …,
//! `otherLinux64Guest`), and takes the first one the hardware version's ESXi knows.

use super::hw::{ApiRelease, HwVersion};

/// A guest ID, the vSphere API release that added it, and its CIM `OperatingSystem.OSType`.
///
/// Sources: "since" is the vSphere Web Services API reference's "Since vSphere API …" for
/// `VirtualMachineGuestOsIdentifier` (developer.broadcom.com, vim.vm.GuestOsDescriptor.
/// GuestOsIdentifier.html); the releases from 7.0.1.0 on are govmomi's
/// `vim25/types/enum.go` `minAPIVersionForEnumValue["VirtualMachineGuestOsIdentifier"]`
/// verbatim. The CIM codes are govmomi's `ovf/cim.go` `GuestIDToCIMOSType` (DMTF CIM schema
/// `CIM_OperatingSystem.OSType`: 36 LINUX, 80 RedHat Enterprise Linux 64-Bit, 83 SUSE 64-Bit,
/// 85 SLES 64-Bit, 94 Ubuntu 64-Bit, 96 Debian 64-Bit, 101 Linux 64-Bit, 107 CentOS 64-bit,
/// 109 Oracle 64-bit); `almalinux_64Guest`, which govmomi does not map, gets 101 as Rocky
/// Linux does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestId {
    pub(crate) id: &'static str,
    pub(crate) since: &'static str,
    pub(crate) cim: u16,
}

const fn g(id: &'static str, since: &'static str, cim: u16) -> GuestId {
    GuestId { id, since, cim }
}

/// Linux of any kernel version: every vSphere knows it.
const OTHER_LINUX: GuestId = g("otherLinux64Guest", "2.5", 101);

/// The 64-bit Linux guest IDs d2v chooses from.
pub(crate) const GUEST_IDS: &[GuestId] = &[
    g("debian8_64Guest", "5.5", 96),
    g("debian9_64Guest", "6.5", 96),
    g("debian10_64Guest", "6.5", 96),
    g("debian11_64Guest", "7.0", 96),
    g("debian12_64Guest", "8.0.0.1", 96),
    g("ubuntu64Guest", "2.5", 94),
    g("rhel7_64Guest", "5.5", 80),
    g("rhel8_64Guest", "6.7", 80),
    g("rhel9_64Guest", "7.0.1.0", 80),
    g("centos7_64Guest", "6.5", 107),
    g("centos8_64Guest", "6.7", 107),
    g("centos9_64Guest", "7.0.1.0", 107),
    g("oracleLinux7_64Guest", "6.5", 109),
    g("oracleLinux8_64Guest", "6.7", 109),
    g("oracleLinux9_64Guest", "7.0.1.0", 109),
    g("rockylinux_64Guest", "8.0.0.1", 101),
    g("almalinux_64Guest", "8.0.0.1", 101),
    g("fedora64Guest", "2.5", 101),
    g("sles11_64Guest", "4.0", 85),
    g("sles12_64Guest", "5.5", 85),
    g("sles15_64Guest", "6.7", 85),
    g("sles16_64Guest", "7.0.1.0", 85),
    g("opensuse64Guest", "2.5", 83),
    g("vmwarePhoton64Guest", "6.5", 101),
    g("amazonlinux2_64Guest", "6.7.1", 101),
    g("amazonlinux3_64Guest", "7.0.1.0", 101),
    g("other3xLinux64Guest", "5.5", 101),
    g("other4xLinux64Guest", "6.7", 101),
    g("other5xLinux64Guest", "7.0.1.0", 101),
    g("other6xLinux64Guest", "8.0.0.1", 101),
    OTHER_LINUX,
];

impl GuestId {
    /// The row of `id`, if d2v's table has it.
    pub(crate) fn find(id: &str) -> Option<GuestId> {
        GUEST_IDS.iter().copied().find(|g| g.id == id)
    }

    /// The oldest hardware version whose ESXi knows this ID (`None`: newer than vmx-21's).
    pub(crate) fn oldest_hw(self) -> Option<HwVersion> {
        HwVersion::oldest_with(ApiRelease::parse(self.since))
    }

    /// Whether every ESXi that runs `hw` knows this ID.
    pub(crate) fn known_by(self, hw: HwVersion) -> bool {
        ApiRelease::parse(self.since) <= hw.api()
    }
}

/// A guest OS: CIM `OperatingSystemSection/@ovf:id`, VMware `vmw:osType`, and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestOs {
    pub(crate) cim_id: u16,
    pub os_type: String,
    pub(crate) description: String,
    /// The ID the image asked for, when `--hw-version` made d2v fall back from it.
    pub(crate) wished: Option<String>,
}

/// What `/etc/os-release` says.
#[derive(Debug, Default)]
struct OsRelease {
    id: String,
    like: String,
    version: String,
    pretty: String,
}

impl OsRelease {
    fn parse(text: Option<&str>) -> OsRelease {
        let mut o = OsRelease::default();
        for line in text.unwrap_or("").lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
            match k.trim() {
                "ID" => o.id = v.to_ascii_lowercase(),
                "ID_LIKE" => o.like = v.to_ascii_lowercase(),
                "VERSION_ID" => o.version = v,
                "PRETTY_NAME" => o.pretty = v,
                _ => {}
            }
        }
        o
    }

    /// The major version (`12` of `12.4`), 0 when absent.
    fn major(&self) -> u32 {
        leading_number(&self.version)
    }

    fn is_like(&self, any: &[&str]) -> bool {
        self.like.split_whitespace().any(|l| any.contains(&l))
    }
}

fn leading_number(s: &str) -> u32 {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// `PREFIX{N}SUFFIX` for N from `from` (the newest the table has when 0 or above it) down to
/// `low`, those the table has.
fn numbered(prefix: &str, suffix: &str, from: u32, low: u32) -> Vec<String> {
    let newest = (low..=99)
        .rev()
        .find(|n| GuestId::find(&format!("{prefix}{n}{suffix}")).is_some())
        .unwrap_or(low);
    let from = if from == 0 { newest } else { from.min(newest) };
    (low..=from)
        .rev()
        .map(|n| format!("{prefix}{n}{suffix}"))
        .filter(|id| GuestId::find(id).is_some())
        .collect()
}

/// The IDs for the distribution, the closest first (empty: an unknown one).
fn distribution_ids(os: &OsRelease) -> Vec<String> {
    let m = os.major();
    let one = |id: &str| vec![id.to_string()];
    match os.id.as_str() {
        "debian" => numbered("debian", "_64Guest", m, 8),
        "ubuntu" => one("ubuntu64Guest"),
        "rhel" => numbered("rhel", "_64Guest", m, 7),
        "centos" => numbered("centos", "_64Guest", m, 7),
        "ol" => numbered("oracleLinux", "_64Guest", m, 7),
        "rocky" => [
            one("rockylinux_64Guest"),
            numbered("rhel", "_64Guest", m, 7),
        ]
        .concat(),
        "almalinux" => [one("almalinux_64Guest"), numbered("rhel", "_64Guest", m, 7)].concat(),
        "fedora" => one("fedora64Guest"),
        "sles" | "sled" => numbered("sles", "_64Guest", m, 11),
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => one("opensuse64Guest"),
        "photon" => one("vmwarePhoton64Guest"),
        "amzn" if m == 2 => one("amazonlinux2_64Guest"),
        "amzn" => vec!["amazonlinux3_64Guest".into(), "amazonlinux2_64Guest".into()],
        _ if os.is_like(&["debian", "ubuntu"]) => one("debian10_64Guest"),
        _ if os.is_like(&["rhel", "fedora", "centos"]) => numbered("rhel", "_64Guest", 8, 7),
        _ => Vec::new(),
    }
}

/// The generic IDs: `other{N}xLinux64Guest` for the kernel's major version N down to 3, then
/// `otherLinux64Guest`.
fn generic_ids(kernel_release: Option<&str>) -> Vec<String> {
    let major = kernel_release.map_or(0, leading_number);
    let mut ids = if major >= 3 {
        numbered("other", "xLinux64Guest", major, 3)
    } else {
        Vec::new()
    };
    ids.push("otherLinux64Guest".into());
    ids
}

/// The guest OS of an image with `/etc/os-release` text `os_release` (`None`: it has none)
/// and the kernel `kernel_release` (`uname -r`), for a VM of hardware version `hw`; `os_type`
/// (`--os-type`) is taken as it is.
pub(crate) fn guest_os(
    os_release: Option<&str>,
    kernel_release: Option<&str>,
    os_type: Option<&str>,
    hw: HwVersion,
) -> GuestOs {
    let os = OsRelease::parse(os_release);
    let wished = [distribution_ids(&os), generic_ids(kernel_release)].concat();
    let chosen = wished
        .iter()
        .filter_map(|id| GuestId::find(id))
        .find(|g| g.known_by(hw))
        .unwrap_or(OTHER_LINUX);
    let first = wished.first().map(String::as_str);
    let (os_type, cim_id, wished) = match os_type {
        Some(t) => (
            t.to_string(),
            GuestId::find(t).unwrap_or(OTHER_LINUX).cim,
            None,
        ),
        None => {
            let fell_back = first.filter(|w| *w != chosen.id).map(str::to_string);
            (chosen.id.to_string(), chosen.cim, fell_back)
        }
    };
    let description = if os.pretty.is_empty() {
        "Linux (64-bit)".to_string()
    } else {
        os.pretty
    };
    GuestOs {
        cim_id,
        os_type,
        description,
        wished,
    }
}

/// Why a guest ID is a poor fit for `hw`, for `build` to report: `--os-type` that the oldest
/// ESXi of the hardware version does not know, or the fallback d2v took.
pub(crate) fn note(os: &GuestOs, hw: HwVersion, from_option: bool) -> Option<String> {
    let (id, what) = if from_option {
        (os.os_type.as_str(), "--os-type")
    } else {
        (os.wished.as_deref()?, "the image's guest ID")
    };
    let g = GuestId::find(id).filter(|g| !g.known_by(hw))?;
    let needs = match g.oldest_hw() {
        Some(h) => format!("--hw-version {} ({} and later)", h.number(), h.esxi()),
        None => "a newer hardware version than d2v writes".to_string(),
    };
    let now = if from_option {
        "vCenter may refuse it or show another OS".to_string()
    } else {
        format!("the OVF declares {}", os.os_type)
    };
    Some(format!(
        "{what} {id} is known from vSphere API {} on, which vmx-{} ({}) does not guarantee: \
         {now}; for {id} use {needs}",
        g.since,
        hw.number(),
        hw.esxi()
    ))
}

#[cfg(test)]
mod tests;
