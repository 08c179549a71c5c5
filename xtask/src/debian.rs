//! The Debian packages the tests, the fixtures and the demo need — the one list — and their
//! idempotent install: each command installs what it uses and says why.

use crate::bail;
use crate::util::{exec, step, Result};
use std::process::Command;

/// The packages `cargo xtask demo` uses (a subset of [`PACKAGES`], whose reasons apply), and
/// `strace`: the demo runs itself under it to check that these packages provide every
/// program it starts (see `crate::programs`).
pub const DEMO: &[&str] = &[
    "mmdebstrap",
    "skopeo",
    "docker-registry",
    "qemu-system-x86",
    "qemu-utils",
    "qemu-block-extra",
    "ovmf",
    "libc6-dev",
    "strace",
];

/// The named packages of [`PACKAGES`] with their reasons.
pub fn subset(names: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    names
        .iter()
        .map(|n| {
            let why = PACKAGES
                .iter()
                .find(|(p, _)| p == n)
                .map_or("(not in the package list)", |(_, w)| *w);
            (*n, why)
        })
        .collect()
}

/// Every Debian package `cargo xtask test` needs, with why.
pub const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boot tests (SeaBIOS, TCG)"),
    ("qemu-utils", "qemu-img: VMDK checks, vmdk benchmark"),
    ("qemu-block-extra", "goes with qemu-utils (pinned together)"),
    ("ovmf", "UEFI firmware for the boot tests"),
    (
        "xorriso",
        "the OVF environment test's ISO (ovf-env.xml on a CD-ROM, as vSphere attaches it)",
    ),
    ("mmdebstrap", "builds the OS fixtures"),
    ("umoci", "reference unpacker for conformance tests"),
    (
        "runc",
        "the OCI runtime that runs d2v's own container image in its test",
    ),
    (
        "ca-certificates",
        "the CA bundle d2v's container image carries",
    ),
    (
        "skopeo",
        "pushes images to the test registry, docker-archive fixtures",
    ),
    (
        "docker-registry",
        "the test registry (plain HTTP, TLS+htpasswd, token auth)",
    ),
    ("e2fsprogs", "e2fsck -fn, mke2fs -d benchmark"),
    ("dosfstools", "fsck.fat -n on the ESP"),
    ("gdisk", "sgdisk -v on the disk"),
    ("fdisk", "sfdisk: partition table checks"),
    ("mtools", "reading the FAT ESP without mounting"),
    (
        "grub-common",
        "grub-mkimage: what d2v's own mkimage is compared with",
    ),
    ("grub-pc-bin", "GRUB i386-pc modules (host fallback)"),
    (
        "grub-efi-amd64-bin",
        "GRUB x86_64-efi modules (host fallback)",
    ),
    ("libxml2-utils", "xmllint: OVF schema validation"),
    ("apache2-utils", "htpasswd for the basic-auth registry"),
    ("openssl", "test CA and registry TLS certificates"),
    ("jq", "JSON checks in scripts"),
    (
        "strace",
        "checking that d2v starts no other program, and that the demo's packages provide its programs",
    ),
    ("zstd", "zstd-compressed test layers"),
    (
        "busybox-static",
        "/init of the test initramfs (kernel fixture); /bin/busybox of the app-busybox fixture; wget in the app fixtures' run check",
    ),
    ("cpio", "checks the test initramfs"),
    (
        "iproute2",
        "ip netns: the app fixtures' run check runs them in a network namespace of their own",
    ),
    ("hyperfine", "cargo xtask bench"),
    (
        "libdeflate-tools",
        "libdeflate-gzip: the inflate floor of cargo xtask bench pipeline",
    ),
    ("libc6-dev", "libc.a: the release d2v is linked statically"),
    ("file", "file(1): checks that the release d2v is static"),
    ("zsh", "checks d2v's zsh completion script"),
    ("fish", "checks d2v's fish completion script"),
    (
        "python3-venv",
        "a venv in target/ for check-jsonschema and kubernetes-validate (PyPI): the CI recipes' schema checks",
    ),
];

/// Packages that must come from bookworm itself: a newer qemu-utils (backports) conflicts with
/// bookworm's qemu-system-x86, so these are installed together, pinned, with --allow-downgrades.
const QEMU_SET: &[&str] = &["qemu-system-x86", "qemu-utils", "qemu-block-extra"];

pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| o.status.success() && status_installed(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or(false)
}

/// dpkg's `${Status}` is "WANT ERROR STATE": only STATE "installed" counts
/// ("unknown ok not-installed", "deinstall ok config-files" do not).
fn status_installed(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

/// The `apt-get install` arguments for the missing packages.
fn install_args(missing: &[&str]) -> Vec<String> {
    let qemu_missing = missing.iter().any(|p| QEMU_SET.contains(p));
    let mut args = Vec::new();
    if qemu_missing {
        args.push("qemu-system-x86".to_string());
        args.push("qemu-utils/bookworm".to_string());
        args.push("qemu-block-extra/bookworm".to_string());
    }
    args.extend(
        missing
            .iter()
            .filter(|p| !QEMU_SET.contains(p))
            .map(|p| p.to_string()),
    );
    args
}

/// Installs whichever of `packages` are missing, printing each with why it is needed; does
/// nothing (and no `apt-get update`) when all are installed.
pub fn ensure(packages: &[(&str, &str)]) -> Result<()> {
    step("Debian packages");
    let missing: Vec<&str> = packages
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("all {} packages installed", packages.len());
        return Ok(());
    }
    println!("installing {} missing packages:", missing.len());
    for (p, why) in packages.iter().filter(|(p, _)| missing.contains(p)) {
        println!("  {p:20} {why}");
    }
    let args = install_args(&missing);
    if !crate::util::is_root() {
        bail!(
            "not root: run as root, or install them: apt-get install {}",
            args.join(" ")
        );
    }
    let apt = |a: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(a);
        c
    };
    exec(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--allow-downgrades"]);
    install.args(&args);
    exec(&mut install)?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_packages_are_pinned_together() {
        let a = install_args(&["qemu-utils", "jq"]);
        assert_eq!(
            a,
            [
                "qemu-system-x86",
                "qemu-utils/bookworm",
                "qemu-block-extra/bookworm",
                "jq"
            ]
        );
        assert_eq!(install_args(&["jq"]), ["jq"]);
    }

    #[test]
    fn demo_packages_are_listed_with_reasons() {
        for (p, why) in subset(DEMO) {
            assert!(
                PACKAGES.iter().any(|(q, _)| *q == p),
                "{p}: the demo's packages must be in PACKAGES (with their reason)"
            );
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn dpkg_status_words() {
        assert!(status_installed("install ok installed"));
        assert!(status_installed("hold ok installed"));
        assert!(!status_installed("unknown ok not-installed"));
        assert!(!status_installed("deinstall ok config-files"));
        assert!(!status_installed(""));
    }

    #[test]
    fn dpkg_query_distinguishes_installed() {
        assert!(installed("dpkg"));
        assert!(!installed("d2v-no-such-package"));
    }
}
