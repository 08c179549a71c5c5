//! `d2v pull` / `d2v build`: image → staging tree → guest fixes → disk → VM output.
//! `checks.rs`: what is checked and reported before anything is written; `deploy.rs`: the
//! OVF's deploy-time properties.

mod checks;
mod deploy;

pub(super) use checks::check_output_file;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{appvm, flatten_with, io_err, print_stdout, Error, Log, Spilled, Stage};
use crate::cli::{BuildArgs, Controller, Firmware, GrubConfig, SecureBoot};
use crate::disk::ext4::{self, Ext4Options, Ext4Summary};
use crate::disk::grub::{self, ConfigMode, GrubOptions};
use crate::disk::layout::{self, DiskOptions, DiskSummary, Layout};
use crate::disk::secureboot::{self, Chain};
use crate::disk::DiskError;
use crate::finality::{Finality, Finisher};
use crate::inspect::{self, BootReport};
use crate::output::guest_os::GuestOs;
use crate::output::{self, ovf, OutputOptions, OutputSummary};
use crate::source::Image;
use crate::tree::Tree;
use crate::{guest, ids};
use checks::*;
use deploy::{check_deploy_args, deploy_properties, reader_warning};

pub(super) fn build(args: &BuildArgs, json: bool, log: &Log) -> Result<(), Error> {
    check_build_args(args)?;
    check_deploy_args(args)?;
    let format = output_format(args.format);
    if let Some(p) = &args.output {
        // Before reading the image: a wrong -o should not cost a download.
        output::check_target(p, format)?;
    }
    let (image, mut tree, layer_warnings) =
        flatten_with(&args.source, &args.src, json, log, Spilled::Early)?;
    let seed = image.manifest_digest.clone();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| guest::default_hostname(&image.reference));
    // The VM name may hold spaces and capitals; a hostname may not.
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| guest::default_hostname(&name));
    let properties = deploy_properties(&args.deploy, &hostname)?;
    let plan = appvm::prepare(
        &image,
        &mut tree,
        &appvm::PlanInputs {
            app: &args.app,
            src: &args.src,
            controller: args.controller,
            hostname: &hostname,
            json,
            install: true,
        },
        log,
    )?;
    let (report, grub_images) = report_and_grub(&tree, args, &seed);
    // The image's own warnings and the layers' were shown when they were found.
    let mut warnings = image.warnings.clone();
    warnings.extend(layer_warnings);
    warnings.extend(bootability(&report, &image, args, log)?);
    if let Some(w) = reader_warning(&properties, &report.ovf_environment) {
        log.step(format!("warning: {w}"));
        warnings.push(w);
    }
    let secure_boot = secure_boot(args, &report.secure_boot, log)?;
    let os_release = inspect::os_release_text(&tree);
    let kernel_release = crate::kernel::source::find(&tree).ok().map(|k| k.version);

    // Root filesystem identity, then the guest fixes that refer to it, then the sizes.
    let mut ext4_opts = root_fs_options(args, &seed)?;
    let fix_lines = guest_fixes(&mut tree, &hostname, &ext4_opts, &seed, log)?;
    let overhead = Layout::plan(&seed, args.boot_size, 0).disk_size;
    let root_size = root_size(args, &tree, &mut ext4_opts, overhead)?;
    ext4_opts.size = Some(root_size);

    let out_path = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&name, args.format));
    output::check_target(&out_path, format)?;
    let (scratch_dir, raw) = scratch_disk(&out_path)?;
    let mut disk_opts = disk_options(args, &seed, root_size);
    disk_opts.grub.secure_boot = secure_boot.then(|| report.secure_boot.clone());
    // d2v's init words first: `--kernel-arg` can still override them.
    let user_args = std::mem::take(&mut disk_opts.grub.kernel_args);
    disk_opts.grub.kernel_args = plan.kernel_args.iter().cloned().chain(user_args).collect();

    let mut out_opts = output_options(args, &name, &image, json, &properties);
    out_opts.vm.secure_boot = secure_boot;
    out_opts.os_release = os_release;
    out_opts.vm.kernel_release = kernel_release;
    let (guest, warning) = guest_id(&out_opts, log);
    warnings.extend(warning);
    let target = Target {
        format,
        path: &out_path,
        opts: &out_opts,
        scratch_dir: &scratch_dir,
    };
    let disk_inputs = DiskInputs {
        opts: &disk_opts,
        ext4: &ext4_opts,
        grub_images,
    };
    let (disk, root_fs, summary) = write_disk_and_outputs(tree, &raw, disk_inputs, &target, log)?;
    if let Some(bar) = &out_opts.vmdk.progress {
        bar.finish();
    }

    if json {
        let built = Built {
            args,
            image: &image,
            name: &name,
            hostname: &hostname,
            disk: &disk,
            root_fs_uuid: &ext4_opts.uuid,
            root_fs: root_fs.as_ref(),
            output: &summary,
            guest_fixes: &fix_lines,
            warnings: &warnings,
            vm: &plan,
            ovf: (&out_opts.vm, &guest),
            properties: &properties,
            ovf_environment: &report.ovf_environment,
            chain: &report.secure_boot,
        };
        print_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&built.json(log)).expect("JSON of plain values")
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

/// The boot report (its initramfs scan looks for the controller's driver only) and GRUB's
/// images, built beside it: both only read the tree, and nothing before the disk changes
/// what the images are built from (`/usr/lib/grub`; the ESP serial follows from `seed`).
fn report_and_grub(tree: &Tree, args: &BuildArgs, seed: &str) -> (BootReport, grub::Images) {
    let esp_serial = Layout::plan(seed, args.boot_size, 0).esp_volume_id_string();
    let drivers = [appvm::controller_driver(args.controller)];
    std::thread::scope(|s| {
        let report = s.spawn(|| inspect::boot_report_for(tree, &drivers));
        let images = grub::Images::build(tree, &esp_serial);
        let report = report
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (report, images)
    })
}

/// What the disk is written from besides the tree.
struct DiskInputs<'a> {
    opts: &'a DiskOptions,
    ext4: &'a Ext4Options,
    /// Built by [`report_and_grub`].
    grub_images: grub::Images,
}

/// The raw disk: an unnamed sparse temporary file (gone with the process, whatever happens)
/// in the output's directory (else TMPDIR), and that directory.
fn scratch_disk(out_path: &Path) -> Result<(PathBuf, File), Error> {
    let dir = output::dir_of(out_path).to_path_buf();
    let raw = tempfile::tempfile_in(&dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(io_err("creating the temporary disk image"))?;
    Ok((dir, raw))
}

/// Refuses an image without a kernel; logs (and returns) the warnings about what the VM
/// would lack, and notes what vSphere's guest operations would miss.
fn bootability(
    report: &BootReport,
    image: &Image,
    args: &BuildArgs,
    log: &Log,
) -> Result<Vec<String>, Error> {
    if report.kernels.is_empty() {
        return Err(Error::NoKernel(no_kernel_message(report, &image.reference)));
    }
    let mut warnings = driver_warnings(report, args.controller);
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
    Ok(warnings)
}

/// Whether the image's signed chain goes on the ESP and Secure Boot on (`--secure-boot`, the
/// firmware, what the image has); says so, and why not when `auto` finds part of a chain.
fn secure_boot(args: &BuildArgs, chain: &Chain, log: &Log) -> Result<bool, Error> {
    let mode = match args.secure_boot {
        SecureBoot::Auto => secureboot::Mode::Auto,
        SecureBoot::On => secureboot::Mode::On,
        SecureBoot::Off => secureboot::Mode::Off,
    };
    let on = secureboot::decide(mode, args.firmware == Firmware::Efi, chain)?;
    if on {
        log.step(format!("Secure Boot on: the image's signed chain, {chain}"));
    } else if mode == secureboot::Mode::Auto && chain.any() {
        let why: Vec<String> = chain.missing.iter().map(ToString::to_string).collect();
        log.step(format!(
            "note: Secure Boot off: {}",
            if why.is_empty() {
                "BIOS firmware".to_string()
            } else {
                format!(
                    "the image's signed chain is incomplete ({})",
                    why.join("; ")
                )
            }
        ));
    }
    Ok(on)
}

/// The root filesystem's identity: label `root`, UUID from the seed unless `--fs-uuid`.
fn root_fs_options(args: &BuildArgs, seed: &str) -> Result<Ext4Options, Error> {
    let mut o = Ext4Options::from_seed(seed);
    o.label = "root".into();
    if let Some(u) = &args.fs_uuid {
        o.uuid = crate::disk::gpt::parse_uuid(u).ok_or_else(|| {
            Error::Usage(format!("--fs-uuid {u:?} is not a UUID like 0f8c5a4e-..."))
        })?;
    }
    Ok(o)
}

/// The container → VM changes, each reported; their lines for `--json`.
fn guest_fixes(
    tree: &mut Tree,
    hostname: &str,
    ext4_opts: &Ext4Options,
    seed: &str,
    log: &Log,
) -> Result<Vec<String>, Error> {
    let opts = guest::GuestOptions {
        hostname: hostname.to_string(),
        root_fs_uuid: ids::uuid_string(&ext4_opts.uuid),
        esp_serial: layout::esp_serial(seed),
    };
    let fixes = log.time(Stage::Guest, || guest::apply(tree, &opts))?;
    let lines: Vec<String> = fixes.iter().map(|r| r.to_string()).collect();
    for l in &lines {
        log.step(format!("guest: {l}"));
    }
    Ok(lines)
}

/// The root filesystem's size: `--root-size`, else what `--disk-size` leaves beside the
/// `overhead` (GPT and boot partitions), else the content plus `--root-free` (which then goes
/// into `ext4_opts`). Checked against the content and vSphere's largest disk.
fn root_size(
    args: &BuildArgs,
    tree: &Tree,
    ext4_opts: &mut Ext4Options,
    overhead: u64,
) -> Result<u64, Error> {
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
            ext4::plan_size(tree, ext4_opts)?
        }
    };
    if let Some(opt) = explicit_size_option(args) {
        check_root_fits(tree, ext4_opts, root_size, opt)?;
    }
    if root_size.saturating_add(overhead) > MAX_DISK {
        return Err(Error::Usage(format!(
            "the disk would be {} GiB, above vSphere's maximum virtual disk size of 62 TiB; \
             give a smaller --root-size, --root-free or --disk-size",
            root_size.saturating_add(overhead) >> 30
        )));
    }
    Ok(root_size)
}

/// The disk's layout and boot options.
fn disk_options(args: &BuildArgs, seed: &str, root_size: u64) -> DiskOptions {
    let mut o = DiskOptions::new(seed, root_size);
    o.esp_size = args.boot_size;
    o.grub = GrubOptions {
        config: match args.grub_config {
            GrubConfig::Auto => ConfigMode::KeepOrGenerate,
            GrubConfig::Generate => ConfigMode::Generate,
        },
        kernel_args: args.kernel_args.clone(),
        ..GrubOptions::default()
    };
    o
}

/// Where the output goes and how.
struct Target<'a> {
    format: output::Format,
    path: &'a Path,
    opts: &'a OutputOptions,
    /// The directory of the temporary disk image (and of the VMDK's scratch file).
    scratch_dir: &'a Path,
}

/// Writes the disk into `raw` and, on a second thread following it (see
/// [`crate::finality`]), the output: the VMDK's grains are compressed while the ext4 root is
/// still being written. The tree (and its spill file) is dropped once the disk is written. A
/// disk error is reported before the output's.
fn write_disk_and_outputs(
    mut tree: Tree,
    raw: &File,
    disk: DiskInputs,
    target: &Target,
    log: &Log,
) -> Result<(DiskSummary, Option<Ext4Summary>, OutputSummary), Error> {
    let o = disk.opts;
    let len = Layout::plan(&o.seed, o.esp_size, o.root_size).disk_size;
    let finality = Finality::new();
    log.step(format!("writing {}", target.path.display()));
    let (disk, output) = std::thread::scope(|s| {
        let output = s.spawn(|| {
            let r = output::write_outputs_following(
                raw,
                len,
                &finality,
                target.format,
                target.path,
                target.opts,
            );
            (r, Instant::now())
        });
        let disk = write_disk(&mut tree, raw, disk, &finality, target, log);
        let disk_done = Instant::now();
        drop(tree);
        let (r, output_done) = output
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (disk, (r, output_done.saturating_duration_since(disk_done)))
    });
    let (disk, root_fs) = disk?;
    let (summary, tail) = output;
    // What the output took beyond the disk: its compression ran beside the ext4 writer.
    log.add(Stage::Output, tail);
    let summary = summary.map_err(|e| {
        Error::from(e).or_no_space("the output", target.scratch_dir, OUTPUT_DIR_FULL)
    })?;
    Ok((disk, root_fs, summary))
}

/// Writes the whole disk into `raw`: GPT, ESP and GRUB, and the ext4 root (timed apart),
/// telling `finality` what is final as it goes. A full filesystem or one that cannot hold so
/// large a file is named with what to do.
fn write_disk(
    tree: &mut Tree,
    raw: &File,
    disk: DiskInputs,
    finality: &Finality,
    target: &Target,
    log: &Log,
) -> Result<(DiskSummary, Option<Ext4Summary>), Error> {
    let (disk_opts, ext4_opts) = (disk.opts, disk.ext4);
    // Readers stop if this returns early, with an error or a panic.
    let finisher = Finisher::new(finality);
    log.step(format!(
        "writing disk: ESP {} MiB, root {} MiB",
        disk_opts.esp_size >> 20,
        disk_opts.root_size >> 20
    ));
    let mut root_fs = None;
    let (disk_started, mut ext4_time) = (Instant::now(), Duration::ZERO);
    let write_root = |t: &Tree, f: &File, off, size| {
        let started = Instant::now();
        let mut o = ext4_opts.clone();
        o.size = Some(size);
        // The tree's file data goes once in the root (the tree is dropped after the disk).
        o.consume_spill = true;
        crate::interrupt::pause_point("ext4");
        let s = ext4::write_reporting(t, f, off, &o, finality)?;
        root_fs = Some(s);
        ext4_time += started.elapsed();
        Ok(())
    };
    let images = Some(disk.grub_images);
    let disk = layout::write_disk_reporting(tree, raw, disk_opts, images, finality, write_root)
        .map_err(|e| match e {
            DiskError::Io(io) if io.raw_os_error() == Some(libc::EFBIG) => Error::Usage(format!(
                "the {} GiB disk image is larger than the filesystem holding {} allows for one \
                 file: give a smaller --root-size/--root-free/--disk-size, or an -o on a \
                 filesystem with larger files (e.g. XFS)",
                Layout::plan(&disk_opts.seed, disk_opts.esp_size, disk_opts.root_size).disk_size
                    >> 30,
                target.scratch_dir.display()
            )),
            e => Error::from(e).or_no_space(
                "the disk image (a temporary file beside the output)",
                target.scratch_dir,
                OUTPUT_DIR_FULL,
            ),
        })?;
    finisher.done();
    match tree.spill().early_reads() {
        0 => {}
        1 => log.step(
            "1 file left in its layer was read before the root's data pass (from its layer again)",
        ),
        n => log.step(format!(
            "{n} files left in their layers were read before the root's data pass (each from \
             its layer again)"
        )),
    }
    log.add(Stage::Ext4, ext4_time);
    log.add(
        Stage::EspGrub,
        disk_started.elapsed().saturating_sub(ext4_time),
    );
    for l in disk.report() {
        log.step(l);
    }
    Ok((disk, root_fs))
}

/// The VM the OVF describes and how the VMDK is written.
fn output_options(
    args: &BuildArgs,
    name: &str,
    image: &Image,
    json: bool,
    properties: &[crate::output::properties::Property],
) -> OutputOptions {
    let seed = &image.manifest_digest;
    let vm = ovf::OvfOptions {
        name: name.to_string(),
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
        // Decided with the image's chain (`secure_boot`), set by `build`.
        secure_boot: false,
        os_type: args.os_type.clone(),
        kernel_release: None,
        // Nothing of the build host (a local source's path) goes into what vCenter shows.
        source_reference: image.name.clone().unwrap_or_else(|| seed.clone()),
        manifest_digest: seed.clone(),
        d2v_version: env!("CARGO_PKG_VERSION").to_string(),
        properties: properties.to_vec(),
    };
    let mut o = OutputOptions {
        vm,
        ..OutputOptions::default()
    };
    o.vmdk.seed = seed.clone();
    o.vmdk.compression_level = args.compression_level;
    // The raw disk and the VMDK's scratch file are d2v's own temporaries.
    o.vmdk.consume = true;
    if output_format(args.format) != output::Format::Raw {
        o.vmdk.progress = Some(crate::progress::bar(!json, 0, "VMDK"));
    }
    o
}

/// What a build made, for `--json`.
struct Built<'a> {
    args: &'a BuildArgs,
    image: &'a Image,
    name: &'a str,
    hostname: &'a str,
    disk: &'a DiskSummary,
    root_fs_uuid: &'a [u8; 16],
    root_fs: Option<&'a Ext4Summary>,
    output: &'a OutputSummary,
    guest_fixes: &'a [String],
    warnings: &'a [String],
    vm: &'a appvm::VmPlan,
    /// The VM the OVF describes and the guest OS it declares.
    ovf: (&'a ovf::OvfOptions, &'a GuestOs),
    properties: &'a [crate::output::properties::Property],
    ovf_environment: &'a inspect::ovfenv::OvfEnvReaders,
    chain: &'a Chain,
}

impl Built<'_> {
    /// What the descriptor declares (`null` for `--format vmdk|raw`, which write none).
    fn ovf_json(&self) -> serde_json::Value {
        let (vm, guest) = self.ovf;
        if !output_format(self.args.format).has_descriptor() {
            return serde_json::Value::Null;
        }
        serde_json::json!({
            "hw_version": vm.hw_version.number(),
            "esxi": vm.hw_version.esxi(),
            "guest_id": guest.os_type,
            "cim_os_type": guest.cim_id,
            // The image's own, when the hardware version's ESXi does not know it.
            "image_guest_id": guest.wished,
        })
    }

    fn json(&self, log: &Log) -> serde_json::Value {
        let (image, disk) = (self.image, self.disk);
        let kernels: Vec<&str> = disk
            .grub
            .kernels
            .iter()
            .map(|k| k.kernel.as_str())
            .collect();
        serde_json::json!({
            "output": self.output.path,
            "format": format!("{:?}", self.args.format).to_lowercase(),
            "bytes": self.output.bytes,
            "reference": image.reference,
            "manifest_digest": image.manifest_digest,
            "index_digest": image.index_digest,
            "platform": image.platform.to_string(),
            "pulled_from": image.pulled_from,
            "name": self.name,
            "hostname": self.hostname,
            "disk": {
                "size": disk.layout.disk_size,
                "esp_size": disk.layout.esp.size,
                "root_size": disk.layout.root.size,
                "root_partuuid": ids::uuid_string(&disk.layout.root_uuid),
                "root_fs_uuid": ids::uuid_string(self.root_fs_uuid),
                "esp_serial": disk.layout.esp_volume_id_string(),
            },
            "vmdk": self.output.vmdk.as_ref().map(|v| serde_json::json!({
                "capacity": v.capacity, "populated_size": v.populated_size, "file_size": v.file_size,
            })),
            "kernels": kernels,
            "grub_config_generated": disk.grub.generated_config,
            "secure_boot": {
                "enabled": disk.grub.secure_boot,
                "chain": self.chain,
                "complete": self.chain.complete(),
            },
            "guest_fixes": self.guest_fixes,
            "warnings": self.warnings,
            "notes": disk.report(),
            "root_fs": self.root_fs.map(|s| serde_json::json!({
                "blocks": s.blocks, "free_blocks": s.free_blocks, "inodes": s.inodes, "free_inodes": s.free_inodes,
            })),
            "timings": log.timings_json(),
            "vm": self.vm.json(if self.vm.app.is_some() { "d2v" } else { "image" }),
            "ovf": self.ovf_json(),
            "ovf_properties": self.properties.iter().map(|p| &p.key).collect::<Vec<_>>(),
            "ovf_environment": {
                "readers": self.ovf_environment.readers(),
                "cloud_init": self.ovf_environment.cloud_init,
                "datasource_list": self.ovf_environment.datasource_list,
                "vmware_rpctool": self.ovf_environment.vmware_rpctool,
            },
        })
    }
}
