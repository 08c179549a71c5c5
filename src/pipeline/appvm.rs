//! `--kernel-from` and d2v's init, for `build` and `inspect`: a kernel grafted from another
//! image, and for an image without an init system, d2v's own init that runs the image's
//! entrypoint (with the initramfs d2v writes when the kernel brings none that reaches the
//! VM's disk).

use std::io::{Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr};

use super::{flatten, io_err, Error, Log};
use crate::cli::{AppArgs, Controller, NetworkConfig, Restart, SourceArgs};
use crate::guest::app::{self as guest_app};
use crate::init::config::{self, AppConfig};
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
fn controller_driver(c: Controller) -> &'static str {
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
    let mut plan = VmPlan::default();
    if let Some(k) = &i.app.kernel_from {
        // Before pulling the kernel: the VM is x86-64 whatever the image is for.
        check_architecture(image)?;
        plan.kernel = Some(graft_kernel(k, tree, i, log)?);
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
        let ix = ModuleIndex::load(tree, &modules_dir_of(tree, v))?;
        plan.modules = ix.resolve(&WANTED);
        if plan.kernel.is_some() && own_init.is_some() && i.install {
            plan.lines.extend(load_boot_modules(tree, &ix)?);
        }
        plan.drivers = drivers(&ix, i.controller);
        let lacking = ix.missing_for(controller_driver(i.controller));
        if !lacking.is_empty() {
            plan.lines.push(format!(
                "warning: kernel {v} has no {} (neither built in nor a module): the VM will not \
                 find its root disk on the {} controller",
                lacking.join(", "),
                controller_driver(i.controller)
            ));
        }
    }
    if let Some((path, resolved)) = own_init {
        plan.lines
            .push(format!("init: the image's own {path} ({resolved})"));
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

/// Resolves what d2v's init runs and, with `install`, puts it into the tree.
fn install_init(
    image: &Image,
    tree: &mut Tree,
    i: &PlanInputs,
    plan: &mut VmPlan,
) -> Result<(), Error> {
    check_architecture(image)?;
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

/// A driver the VM needs and where the kernel has it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Driver {
    /// What it drives: `disk controller`, `root filesystem`, `network adapter`, `power button`.
    pub(super) role: &'static str,
    /// The module name.
    pub(super) name: &'static str,
    /// `built-in`, `module` or `missing`.
    pub(super) status: &'static str,
}

/// The drivers of the VM's devices (the OVF's controller, ext4, VMXNET3, the ACPI power
/// button) and where kernel `ix` has them.
fn drivers(ix: &ModuleIndex, controller: Controller) -> Vec<Driver> {
    [
        ("disk controller", controller_driver(controller)),
        ("disk", "sd_mod"),
        ("root filesystem", "ext4"),
        ("network adapter", "vmxnet3"),
        ("power button", "button"),
    ]
    .into_iter()
    .map(|(role, name)| Driver {
        role,
        name,
        status: if ix.is_builtin(name) {
            "built-in"
        } else if ix.has(name) {
            "module"
        } else {
            "missing"
        },
    })
    .collect()
}

impl VmPlan {
    /// What the VM will run, for `inspect --json` and `build --json`.
    pub(super) fn json(&self, init_system: &str) -> serde_json::Value {
        serde_json::json!({
            "kernel": self.kernel.as_ref().map(|k| serde_json::json!({
                "version": k.version,
                "version_string": k.version_string,
                "from": k.source,
                "shape": match k.shape { Shape::Distribution => "distribution", Shape::LinuxKit => "linuxkit" },
                "initramfs": if k.own_initramfs { "d2v" } else { "kernel image" },
                "replaced": k.graft.replaced,
            })),
            "init": if self.app.is_some() { "d2v" } else { init_system },
            "app": self.app,
            "kernel_args": self.kernel_args,
            "drivers": self.drivers,
        })
    }

    /// The same as text lines.
    pub(super) fn text(&self, init_system: &str) -> String {
        let mut out = String::from("VM:\n");
        if let Some(k) = &self.kernel {
            let initramfs = if k.own_initramfs {
                "d2v writes the initramfs"
            } else {
                "its initramfs"
            };
            out += &format!(
                "  kernel:      {} (from {}; {initramfs})\n",
                k.version, k.source
            );
        }
        match &self.app {
            Some(a) => {
                out += &format!("  init:        d2v's init ({})\n", config::INIT_PATH);
                out += &format!("  command:     {:?}\n", a.args);
                let groups: Vec<String> = a.groups.iter().map(u32::to_string).collect();
                out += &format!(
                    "  user:        uid {} gid {} groups [{}]\n",
                    a.uid,
                    a.gid,
                    groups.join(",")
                );
                out += &format!("  working dir: {}\n", a.working_dir);
                out += &format!("  environment: {}\n", a.env.join(" "));
                out += &format!("  ports:       {}\n", a.exposed_ports.join(", "));
                out += &format!("  kernel args: {}\n", self.kernel_args.join(" "));
            }
            None => out += &format!("  init:        the image's own ({init_system})\n"),
        }
        for d in &self.drivers {
            out += &format!("  driver:      {} {} ({})\n", d.role, d.name, d.status);
        }
        out
    }
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
) -> Result<GraftedKernel, Error> {
    // The VM is x86-64: the kernel image's amd64 variant, whatever --platform picked.
    let mut src = i.src.clone();
    src.platform = "linux/amd64".into();
    let (kimage, ktree) = flatten(reference, &src, i.json, log)?;
    let ks = kernel_source::find(&ktree).map_err(|source| Error::KernelSource {
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
    log.step(format!(
        "kernel {} from {} → {}, modules → {}",
        ks.version, kimage.reference, g.kernel, g.modules
    ));
    if !g.replaced.is_empty() {
        log.step(format!(
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

/// An image whose config says it is for another machine than the VM's.
fn check_architecture(image: &Image) -> Result<(), Error> {
    let arch = &image.config.architecture;
    if !arch.is_empty() && arch != "amd64" {
        return Err(Error::ForeignArchitecture {
            reference: image.reference.clone(),
            architecture: arch.clone(),
        });
    }
    Ok(())
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

/// The kernel command-line words for d2v's init: `init=`, and the network
/// ([`crate::init::config`] documents them).
pub(super) fn init_kernel_args(app: &AppArgs) -> Result<Vec<String>, Error> {
    let mut words = vec![format!("init={}", config::INIT_PATH)];
    words.extend(network_words(app)?);
    Ok(words)
}

/// `d2v.network=…` and the static address words, checked.
fn network_words(app: &AppArgs) -> Result<Vec<String>, Error> {
    let usage = |m: String| Err(Error::Usage(m));
    let mode =
        match (app.network_config, &app.ip) {
            (NetworkConfig::None, Some(_)) => {
                return usage("--ip with --network-config none: give one or the other".into())
            }
            (NetworkConfig::Static, None) => return usage(
                "--network-config static needs --ip ADDR/PREFIX (and usually --gateway and --dns)"
                    .into(),
            ),
            (_, Some(_)) => "static",
            (NetworkConfig::Dhcp, None) => "dhcp",
            (NetworkConfig::None, None) => "none",
        };
    if mode != "static" && (app.gateway.is_some() || !app.dns.is_empty()) {
        return usage("--gateway and --dns go with --ip ADDR/PREFIX (a static address)".into());
    }
    let mut words = vec![format!("d2v.network={mode}")];
    if let Some(ip) = &app.ip {
        let ok = ip.split_once('/').and_then(|(a, p)| {
            Some((
                a.parse::<Ipv4Addr>().ok()?,
                p.parse::<u8>().ok().filter(|p| *p <= 32)?,
            ))
        });
        if ok.is_none() {
            return usage(format!(
                "--ip {ip:?} is not an IPv4 address with a prefix length, e.g. 192.168.10.5/24"
            ));
        }
        words.push(format!("d2v.ip={ip}"));
    }
    if let Some(gw) = &app.gateway {
        if gw.parse::<Ipv4Addr>().is_err() {
            return usage(format!(
                "--gateway {gw:?} is not an IPv4 address, e.g. 192.168.10.1"
            ));
        }
        words.push(format!("d2v.gateway={gw}"));
    }
    if !app.dns.is_empty() {
        if let Some(bad) = app.dns.iter().find(|d| d.parse::<IpAddr>().is_err()) {
            return usage(format!(
                "--dns {bad:?} is not an IP address, e.g. 192.168.10.53"
            ));
        }
        words.push(format!("d2v.dns={}", app.dns.join(",")));
    }
    Ok(words)
}

/// The [`crate::guest::app::AppOptions`] from the command line.
pub(super) fn app_options(app: &AppArgs, hostname: &str) -> crate::guest::app::AppOptions {
    crate::guest::app::AppOptions {
        hostname: hostname.to_string(),
        stop_timeout_secs: app.stop_timeout,
        restart: match app.restart {
            Restart::No => config::Restart::No,
            Restart::OnFailure => config::Restart::OnFailure,
            Restart::Always => config::Restart::Always,
        },
        network_timeout_secs: app.network_timeout,
    }
}

/// Options that only d2v's init reads, given with an image that keeps its own init.
pub(super) fn ignored_app_options(app: &AppArgs) -> Vec<&'static str> {
    let mut out = Vec::new();
    if app.stop_timeout != 10 {
        out.push("--stop-timeout");
    }
    if app.restart != Restart::No {
        out.push("--restart");
    }
    if app.network_config != NetworkConfig::Dhcp || app.ip.is_some() {
        out.push("--network-config/--ip");
    }
    out
}

/// One line about what d2v's init will run, for the log.
pub(super) fn describe(app: &AppConfig) -> String {
    format!(
        "d2v's init will run {:?} as {}:{} in {}",
        app.args, app.uid, app.gid, app.working_dir
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn app(extra: &[&str]) -> AppArgs {
        let mut argv = vec!["d2v", "build", "x"];
        argv.extend(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Build(b) => b.app,
            _ => unreachable!(),
        }
    }

    #[test]
    fn network_words_by_option() {
        assert_eq!(network_words(&app(&[])).unwrap(), ["d2v.network=dhcp"]);
        assert_eq!(
            network_words(&app(&["--network-config", "none"])).unwrap(),
            ["d2v.network=none"]
        );
        assert_eq!(
            network_words(&app(&[
                "--ip",
                "10.0.0.5/24",
                "--gateway",
                "10.0.0.1",
                "--dns",
                "10.0.0.53",
                "--dns",
                "1.1.1.1"
            ]))
            .unwrap(),
            [
                "d2v.network=static",
                "d2v.ip=10.0.0.5/24",
                "d2v.gateway=10.0.0.1",
                "d2v.dns=10.0.0.53,1.1.1.1"
            ]
        );
        for bad in [
            &["--ip", "10.0.0.5"][..],
            &["--ip", "10.0.0.5/33"],
            &["--ip", "10.0.0.5/24", "--gateway", "x"],
            &["--ip", "10.0.0.5/24", "--network-config", "none"],
            &["--network-config", "static"],
            &["--gateway", "10.0.0.1"],
        ] {
            assert!(network_words(&app(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_words_come_first() {
        let w = init_kernel_args(&app(&[])).unwrap();
        assert_eq!(w[0], "init=/.d2v/init");
    }
}
