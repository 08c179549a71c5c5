//! `d2v pull` / `d2v build`: image → staging tree → guest fixes → disk → VM output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{flatten, io_err, print_stdout, Error, Log, Stage};
use crate::cli::{BuildArgs, Controller, Firmware, Format, GrubConfig};
use crate::disk::ext4::{self, Ext4Options};
use crate::disk::grub::{ConfigMode, GrubOptions};
use crate::disk::layout::{self, DiskOptions, Layout};
use crate::disk::DiskError;
use crate::inspect::{self, BootReport};
use crate::output::{self, ovf, OutputOptions};
use crate::tree::Tree;
use crate::{guest, ids};

/// What to tell the user to install when an image has no kernel.
fn no_kernel_message(report: &BootReport, reference: &str) -> String {
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
    format!("image {reference} has no kernel (no /boot/vmlinuz-*): a VM needs one; {hint}")
}

/// The option that fixed the root filesystem's size, if the user gave one.
fn explicit_size_option(args: &BuildArgs) -> Option<&'static str> {
    match (args.root_size, args.disk_size) {
        (Some(_), _) => Some("--root-size"),
        (None, Some(_)) => Some("--disk-size"),
        (None, None) => None,
    }
}

/// Fails before any disk is written when a size the user chose cannot hold the content.
fn check_root_fits(
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

fn default_output(name: &str, format: Format) -> PathBuf {
    PathBuf::from(match format {
        Format::Ova => format!("{name}.ova"),
        Format::Ovf => name.to_string(),
        Format::Vmdk => format!("{name}.vmdk"),
        Format::Raw => format!("{name}.raw"),
    })
}

/// Fails before any work when the directory an output goes into does not exist, or the
/// output path is a directory.
pub(super) fn check_output_file(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "output directory {} does not exist: create it or give another -o",
                dir.display()
            )));
        }
    }
    if path.is_dir() || path.file_name().is_none() {
        return Err(Error::Usage(format!(
            "output {} is a directory: give a file path such as {}",
            path.display(),
            path.join("rootfs.tar").display()
        )));
    }
    Ok(())
}

/// What to do when the filesystem beside the output (disk image, output) is full.
const OUTPUT_DIR_FULL: &str =
    "free some space there or write the output to another filesystem with -o";

/// A warning for each initramfs that cannot drive the SCSI controller the OVF declares (on
/// vSphere that guest would stop in its initramfs, its root disk not found), for each kernel
/// whose modules lack the driver of the OVF's VMXNET3 NIC, and when nothing in the image
/// configures a network.
fn driver_warnings(report: &BootReport, controller: Controller) -> Vec<String> {
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

fn output_format(format: Format) -> output::Format {
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
const MAX_DISK: u64 = 62 << 40;

/// Refuses option values that would give a broken VM or smuggle lines into generated files.
fn check_build_args(args: &BuildArgs) -> Result<(), Error> {
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

pub(super) fn build(args: &BuildArgs, json: bool, log: &Log) -> Result<(), Error> {
    check_build_args(args)?;
    let out_path = args.output.clone();
    if let Some(p) = &out_path {
        // Before reading the image: a wrong -o should not cost a download.
        output::check_target(p, output_format(args.format))?;
    }
    let (image, mut tree) = flatten(&args.source, &args.src, json, log)?;
    let seed = image.manifest_digest.clone();

    let report = inspect::boot_report(&tree);
    if report.kernels.is_empty() {
        return Err(Error::NoKernel(no_kernel_message(
            &report,
            &image.reference,
        )));
    }
    let mut warnings = driver_warnings(&report, args.controller);
    // Mirrors (registries.conf) that failed before the one that served the image.
    warnings.extend(
        image
            .endpoint_failures
            .iter()
            .map(|f| format!("not pulled from {f}")),
    );
    for w in &warnings {
        log.step(format!("warning: {w}"));
    }
    if report.vmware_tools.is_none() {
        log.step(
            "note: no open-vm-tools in the image: vSphere's guest operations (clean shutdown, \
             the guest's addresses in vCenter) need it",
        );
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| guest::default_hostname(&image.reference));
    // The VM name may hold spaces and capitals; a hostname may not.
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| guest::default_hostname(&name));
    let os_release = inspect::os_release_text(&tree);

    // Root filesystem identity, then the guest fixes that refer to it.
    let mut ext4_opts = Ext4Options::from_seed(&seed);
    ext4_opts.label = "root".into();
    if let Some(u) = &args.fs_uuid {
        ext4_opts.uuid = crate::disk::gpt::parse_uuid(u).ok_or_else(|| {
            Error::Usage(format!("--fs-uuid {u:?} is not a UUID like 0f8c5a4e-..."))
        })?;
    }
    let guest_opts = guest::GuestOptions {
        hostname: hostname.clone(),
        root_fs_uuid: ids::uuid_string(&ext4_opts.uuid),
        esp_serial: layout::esp_serial(&seed),
    };
    let fixes = log.time(Stage::Guest, || guest::apply(&mut tree, &guest_opts))?;
    let fix_lines: Vec<String> = fixes.iter().map(|r| r.to_string()).collect();
    for l in &fix_lines {
        log.step(format!("guest: {l}"));
    }

    // Sizes: --root-size, else what --disk-size leaves, else content + --root-free.
    let overhead = Layout::plan(&seed, args.boot_size, 0).disk_size;
    let root_size = match (args.root_size, args.disk_size) {
        (Some(r), _) => r / 4096 * 4096,
        (None, Some(d)) => {
            let r = d
                .checked_sub(overhead)
                .filter(|r| *r >= 16 << 20)
                .ok_or_else(|| {
                    Error::Usage(format!(
                    "--disk-size {} MiB leaves no room for the root filesystem: the GPT and boot \
                     partitions take {} MiB (--boot-size) and the root needs at least 16 MiB; give \
                     a larger --disk-size or leave it out to size the disk automatically",
                    d >> 20,
                    overhead.div_ceil(1 << 20)
                ))
                })?;
            r / (1 << 20) * (1 << 20)
        }
        (None, None) => {
            ext4_opts.free_space = Some(args.root_free);
            ext4::plan_size(&tree, &ext4_opts)?
        }
    };
    if let Some(opt) = explicit_size_option(args) {
        check_root_fits(&tree, &ext4_opts, root_size, opt)?;
    }
    if root_size.saturating_add(overhead) > MAX_DISK {
        return Err(Error::Usage(format!(
            "the disk would be {} GiB, above vSphere's maximum virtual disk size of 62 TiB; \
             give a smaller --root-size, --root-free or --disk-size",
            root_size.saturating_add(overhead) >> 30
        )));
    }
    ext4_opts.size = Some(root_size);

    let mut disk_opts = DiskOptions::new(&seed, root_size);
    disk_opts.esp_size = args.boot_size;
    disk_opts.grub = GrubOptions {
        config: match args.grub_config {
            GrubConfig::Auto => ConfigMode::KeepOrGenerate,
            GrubConfig::Generate => ConfigMode::Generate,
        },
        kernel_args: args.kernel_args.clone(),
        ..GrubOptions::default()
    };

    let out_path = out_path.unwrap_or_else(|| default_output(&name, args.format));
    output::check_target(&out_path, output_format(args.format))?;
    let scratch_dir = out_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // The raw disk: an unnamed sparse temporary file (gone with the process, whatever happens).
    let raw: File = tempfile::tempfile_in(&scratch_dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(io_err("creating the temporary disk image"))?;
    log.step(format!(
        "writing disk: ESP {} MiB, root {} MiB",
        args.boot_size >> 20,
        root_size >> 20
    ));
    let mut ext4_summary = None;
    let (disk_started, mut ext4_time) = (Instant::now(), Duration::ZERO);
    let disk = layout::write_disk(&mut tree, &raw, &disk_opts, |t, f, off, size| {
        let started = Instant::now();
        let mut o = ext4_opts.clone();
        o.size = Some(size);
        let s = ext4::write(t, f, off, &o)?;
        ext4_summary = Some(s);
        ext4_time += started.elapsed();
        Ok(())
    })
    .map_err(|e| match e {
        DiskError::Io(io) if io.raw_os_error() == Some(libc::EFBIG) => Error::Usage(format!(
            "the {} GiB disk image is larger than the filesystem holding {} allows for one \
             file: give a smaller --root-size/--root-free/--disk-size, or an -o on a filesystem \
             with larger files (e.g. XFS)",
            (root_size + overhead) >> 30,
            scratch_dir.display()
        )),
        e => Error::from(e).or_no_space(
            "the disk image (a temporary file beside the output)",
            &scratch_dir,
            OUTPUT_DIR_FULL,
        ),
    })?;
    log.add(Stage::Ext4, ext4_time);
    log.add(
        Stage::EspGrub,
        disk_started.elapsed().saturating_sub(ext4_time),
    );
    for l in disk.report() {
        log.step(l);
    }

    let format = output_format(args.format);
    let vm = ovf::OvfOptions {
        name: name.clone(),
        cpus: args.cpus,
        memory_mib: (args.memory >> 20).max(4),
        hw_version: args.hw_version,
        controller: match args.controller {
            Controller::Pvscsi => ovf::ScsiController::Pvscsi,
            Controller::Lsilogic => ovf::ScsiController::LsiLogic,
        },
        network: args.network.clone(),
        firmware: match args.firmware {
            Firmware::Efi => ovf::Firmware::Efi,
            Firmware::Bios => ovf::Firmware::Bios,
        },
        os_type: args.os_type.clone(),
        source_reference: image.reference.clone(),
        manifest_digest: seed.clone(),
        d2v_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut out_opts = OutputOptions {
        vm,
        ..OutputOptions::default()
    };
    out_opts.vmdk.seed = seed.clone();
    out_opts.vmdk.compression_level = args.compression_level;
    let vmdk_bar = (format != output::Format::Raw).then(|| crate::progress::bar(!json, 0, "VMDK"));
    out_opts.vmdk.progress = vmdk_bar.clone();
    out_opts.os_release = os_release;
    log.step(format!("writing {}", out_path.display()));
    let summary = log
        .time(Stage::Output, || {
            output::write_outputs(&raw, format, &out_path, &out_opts)
        })
        .map_err(|e| Error::from(e).or_no_space("the output", &scratch_dir, OUTPUT_DIR_FULL))?;
    if let Some(bar) = vmdk_bar {
        bar.finish();
    }

    let kernels: Vec<String> = disk.grub.kernels.iter().map(|k| k.kernel.clone()).collect();
    if json {
        let v = serde_json::json!({
            "output": summary.path,
            "format": format!("{:?}", args.format).to_lowercase(),
            "bytes": summary.bytes,
            "reference": image.reference,
            "manifest_digest": seed,
            "index_digest": image.index_digest,
            "platform": image.platform.to_string(),
            "pulled_from": image.pulled_from,
            "name": name,
            "hostname": hostname,
            "disk": {
                "size": disk.layout.disk_size,
                "esp_size": disk.layout.esp.size,
                "root_size": disk.layout.root.size,
                "root_partuuid": ids::uuid_string(&disk.layout.root_uuid),
                "root_fs_uuid": ids::uuid_string(&ext4_opts.uuid),
                "esp_serial": disk.layout.esp_volume_id_string(),
            },
            "vmdk": summary.vmdk.as_ref().map(|v| serde_json::json!({
                "capacity": v.capacity, "populated_size": v.populated_size, "file_size": v.file_size,
            })),
            "kernels": kernels,
            "grub_config_generated": disk.grub.generated_config,
            "guest_fixes": fix_lines,
            "warnings": warnings,
            "notes": disk.report(),
            "root_fs": ext4_summary.as_ref().map(|s| serde_json::json!({
                "blocks": s.blocks, "free_blocks": s.free_blocks, "inodes": s.inodes, "free_inodes": s.free_inodes,
            })),
            "timings": log.timings_json(),
        });
        print_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("JSON of plain values")
        ))?;
    } else {
        log.step(format!(
            "done: {} ({} bytes)",
            summary.path.display(),
            summary.bytes
        ));
    }
    Ok(())
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
