//! What `build` checks and reports before it writes anything: option values, the kernel,
//! the drivers the OVF's devices need, the sizes the user chose.

use std::path::{Path, PathBuf};

use super::super::Error;
use crate::cli::{BuildArgs, Controller, Format};
use crate::disk::ext4::{self, Ext4Options};
use crate::inspect::BootReport;
use crate::output::guest_os::{self, GuestOs};
use crate::output::{self, OutputOptions};
use crate::pipeline::Log;
use crate::tree::Tree;

/// What to tell the user to install when an image has no kernel.
pub(super) fn no_kernel_message(report: &BootReport, reference: &str) -> String {
    let os = &report.os_release;
    let id = os.id.as_deref().unwrap_or("");
    let like = os.id_like.as_deref().unwrap_or("");
    let hint = if id == "alpine" {
        "add `RUN apk add linux-virt` to the Dockerfile".to_string()
    } else if id == "debian" || like.contains("debian") || id == "ubuntu" {
        let pkg = if id == "ubuntu" {
            "linux-image-virtual"
        } else {
            "linux-image-cloud-amd64"
        };
        format!("add `RUN apt-get install -y {pkg}` to the Dockerfile")
    } else if like.contains("fedora") || like.contains("rhel") || id == "fedora" {
        "add `RUN dnf install -y kernel` to the Dockerfile".to_string()
    } else {
        "install a Linux kernel and initramfs into /boot (e.g. linux-image-cloud-amd64 on Debian, linux-virt on Alpine)"
            .to_string()
    };
    format!(
        "image {reference} has no kernel (no /boot/vmlinuz-*): a VM needs one; {hint}, or take \
         one from another image with --kernel-from (e.g. a Debian image with \
         linux-image-cloud-amd64, or a LinuxKit kernel image)"
    )
}

/// The option that fixed the root filesystem's size, if the user gave one.
pub(super) fn explicit_size_option(args: &BuildArgs) -> Option<&'static str> {
    match (args.root_size, args.disk_size) {
        (Some(_), _) => Some("--root-size"),
        (None, Some(_)) => Some("--disk-size"),
        (None, None) => None,
    }
}

/// Fails before any disk is written when a size the user chose cannot hold the content.
pub(super) fn check_root_fits(
    tree: &Tree,
    opts: &Ext4Options,
    root_size: u64,
    option: &str,
) -> Result<(), Error> {
    let mut min = opts.clone();
    min.size = None;
    min.free_space = Some(0);
    let need = ext4::plan_size(tree, &min)?;
    if root_size < need {
        return Err(Error::Usage(format!(
            "{option} too small: the root filesystem would get {} KiB but the image's content \
             needs at least {} MiB; give a larger {option} or leave it out to size the disk automatically",
            root_size >> 10,
            need.div_ceil(1 << 20)
        )));
    }
    Ok(())
}

pub(super) fn default_output(name: &str, format: Format) -> PathBuf {
    PathBuf::from(match format {
        Format::Ova => format!("{name}.ova"),
        Format::Ovf => name.to_string(),
        Format::Vmdk => format!("{name}.vmdk"),
        Format::Raw => format!("{name}.raw"),
    })
}

/// Fails before any work when the directory an output goes into does not exist or cannot
/// be written, or the output path is a directory.
pub(in crate::pipeline) fn check_output_file(path: &Path) -> Result<(), Error> {
    let dir = crate::output::dir_of(path);
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "output directory {} does not exist: create it or give another -o",
            dir.display()
        )));
    }
    if path.is_dir() || path.file_name().is_none() {
        return Err(Error::Usage(format!(
            "output {} is a directory: give a file path such as {}",
            path.display(),
            path.join("rootfs.tar").display()
        )));
    }
    crate::output::atomic::check_writable_dir(dir).map_err(|e| {
        Error::Usage(format!(
            "output directory {} cannot be written ({e}): give -o a writable directory",
            dir.display()
        ))
    })
}

/// What to do when the filesystem beside the output (disk image, output) is full.
pub(super) const OUTPUT_DIR_FULL: &str =
    "free some space there or write the output to another filesystem with -o";

/// A warning for each initramfs that cannot drive the SCSI controller the OVF declares (on
/// vSphere that guest would stop in its initramfs, its root disk not found), for each kernel
/// whose modules lack the driver of the OVF's VMXNET3 NIC, and when nothing in the image
/// configures a network.
pub(super) fn driver_warnings(report: &BootReport, controller: Controller) -> Vec<String> {
    let (driver, device, other) = match controller {
        Controller::Pvscsi => ("vmw_pvscsi", "VMware Paravirtual SCSI", "lsilogic"),
        Controller::Lsilogic => ("mptspi", "LSI Logic Parallel", "pvscsi"),
    };
    let mut out = Vec::new();
    for d in &report.initramfs_drivers {
        if d.has(driver) == Some(false) {
            out.push(format!(
                "{} has no {driver} driver and the kernel has none built in: on vSphere the \
                 VM's disk is on a {device} controller, which this initramfs cannot reach, so \
                 the guest will not find its root filesystem. Rebuild the initramfs with the \
                 driver (initramfs-tools: MODULES=most; dracut: --no-hostonly or \
                 add_drivers+=\" {driver} \") or pick --controller {other} if it has that \
                 driver",
                d.path
            ));
        }
    }
    for k in report.kernel_modules.iter().filter(|k| !k.vmxnet3) {
        out.push(format!(
            "kernel {0} has no vmxnet3 driver in /lib/modules/{0}: the VM's network adapter on \
             vSphere is a VMXNET3, so the guest will have no network; install the kernel's \
             modules with it",
            k.version
        ));
    }
    if report.network.is_empty() {
        out.push(
            "the image configures no network (no .network file in /etc/systemd/network, no \
             interface in /etc/network/interfaces, no netplan, NetworkManager or cloud-init): a \
             container gets its network from the runtime, but this VM will boot without one; \
             add one to the image, e.g. a systemd-networkd .network file with DHCP=yes and \
             systemd-networkd enabled"
                .into(),
        );
    }
    out
}

pub(super) fn output_format(format: Format) -> output::Format {
    match format {
        Format::Ova => output::Format::Ova,
        Format::Ovf => output::Format::Ovf,
        Format::Vmdk => output::Format::Vmdk,
        Format::Raw => output::Format::Raw,
    }
}

/// A hostname as RFC 1123 allows: dot-separated labels of letters, digits and '-' (not at
/// either end), each at most 63 characters, 253 in all.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// vSphere's largest virtual disk (62 TiB).
pub(super) const MAX_DISK: u64 = 62 << 40;

/// Refuses option values that would give a broken VM or smuggle lines into generated files.
pub(super) fn check_build_args(args: &BuildArgs) -> Result<(), Error> {
    if let Some(h) = &args.hostname {
        if !valid_hostname(h) {
            return Err(Error::Usage(format!(
                "--hostname {h:?} is not a valid hostname: use letters, digits and '-' \
                 (dot-separated labels of at most 63 characters), e.g. web-1"
            )));
        }
    }
    for a in &args.kernel_args {
        if a.is_empty() || a.chars().any(|c| c.is_control()) {
            return Err(Error::Usage(format!(
                "--kernel-arg {a:?}: a kernel argument must be non-empty and on one line (no \
                 control characters); repeat --kernel-arg for several"
            )));
        }
    }
    if args.cpus == 0 || args.cpus > 768 {
        return Err(Error::Usage(format!(
            "--cpus {}: a vSphere VM has 1 to 768 virtual CPUs",
            args.cpus
        )));
    }
    const TIB: u64 = 1 << 40;
    if args.memory > 24 * TIB {
        return Err(Error::Usage(format!(
            "--memory {} GiB is above vSphere's maximum of 24 TiB",
            args.memory >> 30
        )));
    }
    for (opt, v) in [
        ("--disk-size", args.disk_size),
        ("--root-size", args.root_size),
        ("--root-free", Some(args.root_free)),
    ] {
        if v.is_some_and(|v| v > MAX_DISK) {
            return Err(Error::Usage(format!(
                "{opt} {} GiB is above vSphere's maximum virtual disk size of 62 TiB",
                v.unwrap_or(0) >> 30
            )));
        }
    }
    let min_esp = crate::disk::layout::MIN_ESP_SIZE;
    if args.boot_size < min_esp || args.boot_size > TIB {
        return Err(Error::Usage(format!(
            "--boot-size {} MiB: the EFI System Partition (FAT32, mounted at /boot) must be \
             {} MiB to 1 TiB; the default is 256M",
            args.boot_size >> 20,
            min_esp >> 20
        )));
    }
    if args.memory < 4 << 20 {
        return Err(Error::Usage(format!(
            "--memory {} bytes is below vSphere's minimum of 4 MiB: give e.g. --memory 2G",
            args.memory
        )));
    }
    if let Some(n) = &args.name {
        if n.trim().is_empty() || n.chars().any(|c| c.is_control()) {
            return Err(Error::Usage(format!(
                "--name {n:?}: the VM name must be non-empty and on one line"
            )));
        }
    }
    Ok(())
}

/// The guest OS the OVF declares; logs why its guest ID is not the image's own:
/// `--hw-version` made d2v fall back to one its ESXi knows (a note), or `--os-type` names one
/// that ESXi may not know (a warning, also returned for `--json`).
pub(super) fn guest_id(opts: &OutputOptions, log: &Log) -> (GuestOs, Option<String>) {
    let vm = &opts.vm;
    let os = guest_os::guest_os(
        opts.os_release.as_deref(),
        vm.kernel_release.as_deref(),
        vm.os_type.as_deref(),
        vm.hw_version,
    );
    let Some(note) = guest_os::note(&os, vm.hw_version, vm.os_type.is_some()) else {
        return (os, None);
    };
    if vm.os_type.is_none() {
        log.step(format!("note: {note}"));
        return (os, None);
    }
    log.step(format!("warning: {note}"));
    (os, Some(note))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames() {
        for ok in ["web", "web-1", "a.b.c", "x1", &"a".repeat(63)] {
            assert!(super::valid_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "my vm",
            "evil\nhost",
            "ü",
            &"a".repeat(64),
        ] {
            assert!(!super::valid_hostname(bad), "{bad:?}");
        }
    }
}
