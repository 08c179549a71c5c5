//! vSphere virtual hardware versions (`--hw-version`, the OVF's `vmx-NN`) and the ESXi release
//! each needs.
//!
//! Source: VMware KB 1003746 "Virtual machine hardware versions" (also in govmomi's
//! `vim25/types/hardware_version.go`: "VMX13 was introduced in ESXi 6.5", …). Versions 12 and
//! 16 are Workstation/Fusion only and not listed. `api` is the vSphere API release of the
//! oldest ESXi that runs the version, compared with the "since" releases of guest IDs
//! ([`super::guest_os`]).

use std::fmt;

/// One row of the table: hardware version, the ESXi release that introduced it, and that
/// release's vSphere API version.
struct Row {
    vmx: &'static str,
    esxi: &'static str,
    api: &'static str,
}

const fn row(vmx: &'static str, esxi: &'static str, api: &'static str) -> Row {
    Row { vmx, esxi, api }
}

/// Every hardware version d2v writes, oldest first.
const TABLE: [Row; 8] = [
    row("13", "ESXi 6.5", "6.5"),
    row("14", "ESXi 6.7", "6.7"),
    row("15", "ESXi 6.7 U2", "6.7.2"),
    row("17", "ESXi 7.0", "7.0"),
    row("18", "ESXi 7.0 U1", "7.0.1.0"),
    row("19", "ESXi 7.0 U2", "7.0.2.0"),
    row("20", "ESXi 8.0", "8.0"),
    row("21", "ESXi 8.0 U2", "8.0.2.0"),
];

/// A virtual hardware version vSphere has (an index into the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HwVersion(usize);

impl HwVersion {
    /// vmx-13 (ESXi 6.5 and later): d2v's default, the oldest ESXi still in the field.
    pub const DEFAULT: HwVersion = HwVersion(0);

    /// Every version, oldest first.
    pub const ALL: &'static [HwVersion] = &[
        HwVersion(0),
        HwVersion(1),
        HwVersion(2),
        HwVersion(3),
        HwVersion(4),
        HwVersion(5),
        HwVersion(6),
        HwVersion(7),
    ];

    /// Every version, oldest first.
    pub fn all() -> impl Iterator<Item = HwVersion> {
        Self::ALL.iter().copied()
    }

    /// The version `n` (13 for vmx-13), if vSphere has it.
    pub fn new(n: u32) -> Option<HwVersion> {
        Self::all().find(|h| h.number() == n)
    }

    /// The number in `vmx-NN`.
    pub fn number(self) -> u32 {
        self.arg().parse().expect("the table's numbers")
    }

    /// The number as `--hw-version` takes it (`13`).
    pub fn arg(self) -> &'static str {
        TABLE[self.0].vmx
    }

    /// `ESXi 6.5 and later`, for `--help`.
    pub fn esxi_and_later(self) -> String {
        format!("{} and later", self.esxi())
    }

    /// The oldest ESXi release that runs it, e.g. `ESXi 6.7 U2`.
    pub fn esxi(self) -> &'static str {
        TABLE[self.0].esxi
    }

    /// The vSphere API release of that ESXi, as a comparable key.
    pub(crate) fn api(self) -> ApiRelease {
        ApiRelease::parse(TABLE[self.0].api)
    }

    /// The oldest version whose ESXi knows what vSphere API `release` added.
    pub(crate) fn oldest_with(release: ApiRelease) -> Option<HwVersion> {
        Self::all().find(|h| h.api() >= release)
    }

    /// `13 (ESXi 6.5), 14 (ESXi 6.7), …` for help texts and errors.
    pub fn list() -> String {
        Self::all()
            .map(|h| format!("{} ({})", h.number(), h.esxi()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for HwVersion {
    fn default() -> Self {
        HwVersion::DEFAULT
    }
}

impl fmt::Display for HwVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vmx-{} ({})", self.number(), self.esxi())
    }
}

impl std::str::FromStr for HwVersion {
    type Err = String;
    /// `13` or `vmx-13`.
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().strip_prefix("vmx-").unwrap_or(s.trim());
        n.parse().ok().and_then(HwVersion::new).ok_or_else(|| {
            format!(
                "unknown virtual hardware version {s:?}: vSphere has {}",
                HwVersion::list()
            )
        })
    }
}

/// A vSphere API release (`6.7.1`, `7.0.1.0`, `8.0.0.1`: major, minor, update, patch), as the
/// API reference writes its "since" versions; ordered as released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiRelease([u8; 4]);

impl ApiRelease {
    /// Parses a dotted release; missing parts are 0, text that is no release is a bug in a
    /// table (tested).
    pub(crate) const fn parse(s: &str) -> ApiRelease {
        let b = s.as_bytes();
        let (mut parts, mut i, mut at) = ([0u8; 4], 0, 0);
        while i < b.len() {
            if b[i] == b'.' {
                at += 1;
            } else {
                assert!(b[i].is_ascii_digit() && at < 4, "not an API release");
                parts[at] = parts[at] * 10 + (b[i] - b'0');
            }
            i += 1;
        }
        ApiRelease(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_their_esxi() {
        // KB 1003746: each version with the ESXi release that introduced it.
        let want = [
            (13, "ESXi 6.5"),
            (14, "ESXi 6.7"),
            (15, "ESXi 6.7 U2"),
            (17, "ESXi 7.0"),
            (18, "ESXi 7.0 U1"),
            (19, "ESXi 7.0 U2"),
            (20, "ESXi 8.0"),
            (21, "ESXi 8.0 U2"),
        ];
        let have: Vec<(u32, &str)> = HwVersion::all().map(|h| (h.number(), h.esxi())).collect();
        assert_eq!(have, want);
        assert_eq!(HwVersion::ALL.len(), TABLE.len());
        assert!(HwVersion::all()
            .zip(HwVersion::all().skip(1))
            .all(|(a, b)| a.api() < b.api()));
        assert_eq!("vmx-19".parse::<HwVersion>().unwrap().number(), 19);
        assert_eq!(HwVersion::default().number(), 13);
        for bad in ["16", "12", "22", "x", ""] {
            let e = bad.parse::<HwVersion>().unwrap_err();
            assert!(
                e.contains("13 (ESXi 6.5)") && e.contains("21 (ESXi 8.0 U2)"),
                "{e}"
            );
        }
    }

    #[test]
    fn api_releases_order() {
        let p = ApiRelease::parse;
        assert!(p("6.7.1") > p("6.7") && p("6.7.1") < p("6.7.2"));
        assert!(p("8.0.0.1") > p("8.0") && p("8.0.0.1") < p("8.0.2.0"));
        // 8.0.0.1 came after ESXi 8.0 (vmx-20): only vmx-21 is sure to know it.
        assert_eq!(HwVersion::oldest_with(p("8.0.0.1")).unwrap().number(), 21);
        assert_eq!(HwVersion::oldest_with(p("7.0.1.0")).unwrap().number(), 18);
        assert_eq!(HwVersion::oldest_with(p("6.7.1")).unwrap().number(), 15);
        assert_eq!(HwVersion::oldest_with(p("4.0")).unwrap().number(), 13);
        assert!(HwVersion::oldest_with(p("9.0.0.0")).is_none());
    }
}
