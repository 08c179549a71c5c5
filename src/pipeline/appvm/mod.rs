//! `--kernel-from` and d2v's init, for `build` and `inspect`: a kernel grafted from another
//! image, and for an image without an init system, d2v's own init that runs the image's
//! entrypoint (with the initramfs d2v writes when the kernel brings none that reaches the
//! VM's disk).

mod options;
mod report;

use std::io::{Seek, SeekFrom};

pub(super) use options::*;
use report::{drivers, Driver};

use super::{flatten, io_err, Error, Log};
use crate::cli::{AppArgs, Controller, SourceArgs};
use crate::guest::app::{self as guest_app};
use crate::init::config::AppConfig;
use crate::kernel::graft::{graft, modules_dir, GraftOptions, GraftReport};
use crate::kernel::initramfs::{self, needs_own_initramfs};
use crate::kernel::modules::{ModuleIndex, Resolved, WANTED};
use crate::kernel::source::{self as kernel_source, Shape};
use crate::source::Image;
use crate::tree::Tree;

/// What the VM will run, decided after the image is flattened and before the disk is sized.
#[derive(Debug, Default)]
pub(super) struct VmPlan {
    /// The kernel `--kernel-from` brought, and where it went.
    pub(super) kernel: Option<GraftedKernel>,
    /// What d2v's init runs, when the image has no init system.
    pub(super) app: Option<AppConfig>,
    /// The modules of the VM's kernel d2v's init and initramfs load (empty otherwise).
    pub(super) modules: Resolved,
    /// The drivers of the VM's devices, when a kernel was grafted or d2v's init runs.
    pub(super) drivers: Vec<Driver>,
    /// Words for the kernel command line.
    pub(super) kernel_args: Vec<String>,
    /// Lines for the log and `--json`.
    pub(super) lines: Vec<String>,
}

/// A kernel taken from `--kernel-from`.
#[derive(Debug)]
pub(super) struct GraftedKernel {
    /// The kernel image's reference.
    pub(super) source: String,
    /// `uname -r`.
    pub(super) version: String,
    /// The bzImage header's version string (`6.1.0-28-cloud-amd64 (debian-kernel@…) #1 SMP …`).
    pub(super) version_string: String,
    /// A Debian-style image or a LinuxKit one.
    pub(super) shape: Shape,
    /// Where its parts went in the guest.
    pub(super) graft: GraftReport,
    /// Whether d2v wrote its own initramfs (the kernel image had none that drives the disk).
    pub(super) own_initramfs: bool,
}

/// What [`prepare`] needs beyond the image.
pub(super) struct PlanInputs<'a> {
    pub(super) app: &'a AppArgs,
    pub(super) src: &'a SourceArgs,
    pub(super) controller: Controller,
    pub(super) hostname: &'a str,
    pub(super) json: bool,
    /// Write d2v's init and initramfs into the tree (`build`), or only decide (`inspect`).
    pub(super) install: bool,
}

/// The driver of the VM's disk controller.
pub(super) fn controller_driver(c: Controller) -> &'static str {
    match c {
        Controller::Pvscsi => "vmw_pvscsi",
        Controller::Lsilogic => "mptspi",
    }
}

/// Grafts `--kernel-from`'s kernel into `tree` and, when the image has no init system,
/// resolves (and with `install`, puts in) d2v's init and its modules; writes d2v's initramfs
/// when the kernel image has none that reaches the disk.
pub(super) fn prepare(
    image: &Image,
    tree: &mut Tree,
    i: &PlanInputs,
    log: &Log,
) -> Result<VmPlan, Error> {
    // Before anything else (pulling a kernel, installing an init): the VM is x86-64, so is
    // the image to be (`build` and `inspect` both come through here).
    super::arch::check(image, tree)?;
    let mut plan = VmPlan::default();
    if let Some(k) = &i.app.kernel_from {
        plan.kernel = Some(graft_kernel(k, tree, i, log, &mut plan.lines)?);
    }
    let own_init = crate::inspect::init_system(tree).1;
    let version = newest_kernel(tree);
    // Without a kernel, `build` stops at the bootability check; `inspect` still shows what
    // d2v's init would run.
    let d2v_init = own_init.is_none() && (version.is_some() || !i.install);
    if let Some(v) = version
        .as_deref()
        .filter(|_| d2v_init || plan.kernel.is_some())
    {
        plan_modules(tree, v, own_init.is_some(), i, &mut plan)?;
    }
    if let Some((path, resolved)) = own_init {
        if plan.kernel.is_some() {
            plan.lines
                .push(format!("init: the image's own {path} ({resolved})"));
        }
        let ignored = ignored_app_options(i.app);
        if !ignored.is_empty() {
            plan.lines.push(format!(
                "warning: {} only apply to d2v's init; the image's own init ignores them",
                ignored.join(", ")
            ));
        }
    } else if d2v_init {
        install_init(image, tree, i, &mut plan)?;
    }
    if let Some(k) = plan
        .kernel
        .as_mut()
        .filter(|k| k.own_initramfs && i.install)
    {
        let path = write_initramfs(tree, &k.version, &plan.modules.paths)?;
        plan.lines.push(format!(
            "wrote d2v's initramfs {path} ({} modules; the kernel image has none that drives \
             the {} disk)",
            plan.modules.paths.len(),
            controller_driver(i.controller)
        ));
        k.graft.initrd = Some(path);
    }
    for l in &plan.lines {
        log.step(l.clone());
    }
    Ok(plan)
}

/// The VM kernel's modules: the list d2v's init and initramfs load, the drivers of the VM's
/// devices, a warning when the disk controller's is missing, and for an image's own init the
/// modules `/boot` needs.
fn plan_modules(
    tree: &mut Tree,
    version: &str,
    own_init: bool,
    i: &PlanInputs,
    plan: &mut VmPlan,
) -> Result<(), Error> {
    let ix = ModuleIndex::load(tree, &modules_dir_of(tree, version))?;
    plan.modules = ix.resolve(&WANTED);
    if plan.kernel.is_some() && own_init && i.install {
        plan.lines.extend(load_boot_modules(tree, &ix)?);
    }
    plan.drivers = drivers(&ix, i.controller);
    let lacking = ix.missing_for(controller_driver(i.controller));
    if !lacking.is_empty() {
        plan.lines.push(format!(
            "warning: kernel {version} has no {} (neither built in nor a module): the VM will \
             not find its root disk on the {} controller",
            lacking.join(", "),
            controller_driver(i.controller)
        ));
    }
    Ok(())
}

/// Resolves what d2v's init runs and, with `install`, puts it into the tree.
fn install_init(
    image: &Image,
    tree: &mut Tree,
    i: &PlanInputs,
    plan: &mut VmPlan,
) -> Result<(), Error> {
    let opts = app_options(i.app, i.hostname);
    let app = guest_app::resolve(tree, &image.config.config, &opts)?;
    plan.lines.push(describe(&app));
    if i.install {
        let mut exe = guest_app::own_executable()?;
        let reports = guest_app::install(tree, &app, &plan.modules.paths, &mut exe)?;
        plan.lines.extend(reports.iter().map(|r| r.to_string()));
    }
    plan.kernel_args = init_kernel_args(i.app)?;
    plan.app = Some(app);
    Ok(())
}

/// Modules the image's own init must load for the ESP at `/boot` (vfat and its code pages),
/// listed in `/etc/modules-load.d/` (systemd-modules-load and OpenRC read it): the kernel would
/// load them on demand with `/sbin/modprobe`, which an image without a kernel of its own may
/// lack (kmod comes with Debian's kernel package). `None` when they are built in or absent.
fn load_boot_modules(tree: &mut Tree, ix: &ModuleIndex) -> Result<Option<String>, Error> {
    let names: Vec<&str> = ["vfat", "nls_cp437", "nls_ascii", "nls_utf8"]
        .into_iter()
        .filter(|m| ix.has(m) && !ix.is_builtin(m))
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let path = "etc/modules-load.d/d2v-boot.conf";
    let text = format!(
        "# Written by d2v: the ESP mounted at /boot needs these (the kernel came from another image).\n{}\n",
        names.join("\n")
    );
    crate::guest::put_reader(tree, path, &mut text.as_bytes(), 0o644)?;
    Ok(Some(format!(
        "wrote /{path}: {} (for /boot)",
        names.join(", ")
    )))
}

/// Pulls the kernel image and copies its kernel, modules and GRUB modules into `tree`.
fn graft_kernel(
    reference: &str,
    tree: &mut Tree,
    i: &PlanInputs,
    log: &Log,
    lines: &mut Vec<String>,
) -> Result<GraftedKernel, Error> {
    // The VM is x86-64: the kernel image's amd64 variant, whatever --platform picked.
    let mut src = i.src.clone();
    src.platform = "linux/amd64".into();
    let (kimage, ktree, _logged) = flatten(reference, &src, i.json, log)?;
    let ks = kernel_source::find_to_graft(&ktree).map_err(|source| Error::KernelSource {
        reference: kimage.reference.clone(),
        source: Box::new(source),
    })?;
    let own_initramfs = needs_own_initramfs(&ktree, &ks, controller_driver(i.controller));
    let g = graft(
        &ktree,
        &ks,
        tree,
        GraftOptions {
            keep_initrd: !own_initramfs,
        },
    )?;
    lines.push(format!(
        "kernel {} from {} → {}, modules → {}",
        ks.version, kimage.reference, g.kernel, g.modules
    ));
    if !g.replaced.is_empty() {
        lines.push(format!(
            "the kernel from --kernel-from replaces the image's own: removed {}",
            g.replaced.join(", ")
        ));
    }
    Ok(GraftedKernel {
        source: kimage.reference,
        version: ks.version.clone(),
        version_string: ks.version_string.clone(),
        shape: ks.shape,
        graft: g,
        own_initramfs,
    })
}

/// The version of the newest kernel in the tree's `/boot`.
fn newest_kernel(tree: &Tree) -> Option<String> {
    kernel_source::find(tree).ok().map(|k| k.version)
}

/// The tree's modules directory for `version` (`/usr/lib/modules/VER` or `/lib/modules/VER`,
/// whichever exists; where a graft would put it otherwise).
fn modules_dir_of(tree: &Tree, version: &str) -> String {
    ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| format!("{d}/{version}"))
        .find(|d| tree.resolve_dir(d.as_bytes()).is_some())
        .unwrap_or_else(|| modules_dir(tree, version))
}

/// Writes d2v's initramfs (d2v's own executable as `/init`, `modules`) to
/// `/boot/initrd.img-VERSION`; returns that path.
fn write_initramfs(tree: &mut Tree, version: &str, modules: &[String]) -> Result<String, Error> {
    let mut exe = guest_app::own_executable()?;
    let tmp = tempfile::tempfile().map_err(io_err("creating the initramfs"))?;
    let mut tmp = initramfs::write(
        std::io::BufWriter::new(tmp),
        tree,
        version,
        modules,
        &mut exe,
    )?
    .into_inner()
    .map_err(|e| io_err("writing the initramfs")(e.into_error()))?;
    tmp.seek(SeekFrom::Start(0))
        .map_err(io_err("reading the initramfs back"))?;
    let path = format!("boot/initrd.img-{version}");
    crate::guest::put_reader(tree, &path, &mut tmp, 0o644)?;
    Ok(format!("/{path}"))
}
