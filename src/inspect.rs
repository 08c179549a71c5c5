//! The bootability report of `d2v inspect`: what in the flattened tree a VM boot needs —
//! kernels, initramfs images, the init system, GRUB's module directories — and container
//! markers that guest fixes will remove. Symlinks are resolved inside the tree (as a chroot
//! would), never on the host.

use std::fmt;
use std::io::Read;

use serde::Serialize;

use crate::tree::{components, show, InodeId, Kind, Tree};

pub mod initramfs;
pub mod network;
pub mod ovfenv;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootReport {
    /// Kernel images: `/boot/vmlinuz-*`, `/lib/modules/*/vmlinuz`, `/vmlinuz*` and `/boot/vmlinuz` links.
    pub kernels: Vec<Artifact>,
    /// `/boot/initrd.img-*`, `/boot/initramfs-*`, `/initrd.img*` and `/boot/initrd.img` links.
    pub initramfs: Vec<Artifact>,
    /// For each initramfs file (once, symlinks resolved): whether the guest can drive the
    /// disk controllers d2v's OVF can declare.
    pub initramfs_drivers: Vec<InitramfsDrivers>,
    /// For each `/lib/modules/VERSION` of a kernel in `/boot`: whether it has the driver of the
    /// NIC d2v's OVF declares.
    pub kernel_modules: Vec<KernelModules>,
    pub init: InitSystem,
    /// The program the init system starts as PID 1 (resolved inside the tree), if any.
    pub init_path: Option<String>,
    pub grub_i386_pc: GrubModules,
    pub grub_x86_64_efi: GrubModules,
    /// Container markers present: `/.dockerenv`, `/run/.containerenv`.
    pub container_markers: Vec<String>,
    pub os_release: OsRelease,
    /// What configures the network ([`network::network_config`]); empty: nothing does.
    pub network: Vec<String>,
    /// VMware Tools in the guest (open-vm-tools' `vmtoolsd`), which vSphere's guest operations
    /// use: clean shutdown, the guest's IP addresses and name in vCenter, customization.
    pub vmware_tools: Option<String>,
    /// What reads deploy-time OVF properties in the guest: cloud-init, its data sources,
    /// `vmware-rpctool` ([`ovfenv::readers`]).
    pub ovf_environment: ovfenv::OvfEnvReaders,
    /// The image's signed boot chain for UEFI Secure Boot ([`crate::disk::secureboot`]).
    pub secure_boot: crate::disk::secureboot::Chain,
}

/// A file found by the report; for a symlink, the regular file it resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolves_to: Option<String>,
}

/// The storage drivers for vSphere's SCSI controllers an initramfs has, or the kernel has built
/// in (its `modules.builtin` in the image or in the initramfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitramfsDrivers {
    /// The initramfs file, symlinks resolved.
    pub path: String,
    /// `vmw_pvscsi` (VMware Paravirtual SCSI, `--controller pvscsi`); `None`: not readable
    /// (or not looked for, [`boot_report_for`]).
    pub vmw_pvscsi: Option<bool>,
    /// `mptspi` (LSI Logic Parallel, `--controller lsilogic`); `None`: not readable (or not
    /// looked for).
    pub mptspi: Option<bool>,
    /// Why the file could not be read (e.g. `xz-compressed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl InitramfsDrivers {
    /// Whether `driver` (`vmw_pvscsi` or `mptspi`) is there; `None` when unknown.
    pub fn has(&self, driver: &str) -> Option<bool> {
        match driver {
            "vmw_pvscsi" => self.vmw_pvscsi,
            "mptspi" => self.mptspi,
            _ => None,
        }
    }
}

/// The network driver a kernel's modules provide for the VM's NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelModules {
    /// The kernel version (`/boot/vmlinuz-VERSION`, `/lib/modules/VERSION`).
    pub version: String,
    /// `vmxnet3` (the VMXNET3 NIC) as a module below `/lib/modules/VERSION` or built in.
    pub vmxnet3: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    Systemd,
    #[serde(rename = "openrc")]
    OpenRc,
    Busybox,
    Sysvinit,
    /// `/sbin/init` is some other program.
    Other,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrubModules {
    pub path: String,
    pub present: bool,
    /// Number of `*.mod` files.
    pub modules: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    /// `ID_LIKE`: the distributions this one derives from (`debian`, `rhel fedora`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_like: Option<String>,
    pub pretty_name: Option<String>,
}

const MARKERS: [&str; 2] = ["/.dockerenv", "/run/.containerenv"];

/// Builds the bootability report of `tree`.
pub fn boot_report(tree: &Tree) -> BootReport {
    boot_report_for(tree, &SCSI_DRIVERS)
}

/// The SCSI drivers a boot report looks for in each initramfs (see [`InitramfsDrivers`]).
pub const SCSI_DRIVERS: [&str; 2] = ["vmw_pvscsi", "mptspi"];

/// [`boot_report`] looking in each initramfs only for `drivers` (of [`SCSI_DRIVERS`]), which
/// stops its scan once they are found (a build needs only its controller's); the others
/// read as unknown (`None`).
pub fn boot_report_for(tree: &Tree, drivers: &[&str]) -> BootReport {
    let mut kernels = Vec::new();
    let mut initramfs = Vec::new();
    for name in dir_names(tree, "/boot") {
        let path = format!("/boot/{name}");
        if name.starts_with("vmlinuz-") || name == "vmlinuz" {
            kernels.extend(artifact(tree, &path));
        } else if name.starts_with("initrd.img-")
            || name.starts_with("initramfs-")
            || name == "initrd.img"
        {
            initramfs.extend(artifact(tree, &path));
        }
    }
    for version in dir_names(tree, "/lib/modules") {
        kernels.extend(artifact(tree, &format!("/lib/modules/{version}/vmlinuz")));
    }
    for name in dir_names(tree, "/") {
        if name == "vmlinuz" || name == "vmlinuz.old" {
            kernels.extend(artifact(tree, &format!("/{name}")));
        } else if name == "initrd.img" || name == "initrd.img.old" {
            initramfs.extend(artifact(tree, &format!("/{name}")));
        }
    }
    let (init, found) = init_system(tree);
    let init_path = found.map(|(_, resolved)| resolved);
    let initramfs_drivers = initramfs_drivers(tree, &initramfs, drivers);
    let kernel_modules = kernel_modules(tree, &kernels);
    BootReport {
        kernels,
        initramfs,
        initramfs_drivers,
        kernel_modules,
        init,
        init_path,
        grub_i386_pc: grub(tree, "/usr/lib/grub/i386-pc"),
        grub_x86_64_efi: grub(tree, "/usr/lib/grub/x86_64-efi"),
        container_markers: MARKERS
            .iter()
            .filter(|m| tree.lookup(m.as_bytes()).is_some())
            .map(|m| m.to_string())
            .collect(),
        os_release: os_release(tree),
        network: network::network_config(tree),
        vmware_tools: ["/usr/bin/vmtoolsd", "/usr/sbin/vmtoolsd"]
            .iter()
            .find_map(|p| is_file(tree, p)),
        ovf_environment: ovfenv::readers(tree),
        secure_boot: crate::disk::secureboot::Chain::find(tree),
    }
}

/// Scans each initramfs file once for the SCSI drivers; the kernel's built-in drivers listed in
/// the image's `/lib/modules/*/modules.builtin` count as present.
fn initramfs_drivers(
    tree: &Tree,
    initramfs: &[Artifact],
    drivers: &[&str],
) -> Vec<InitramfsDrivers> {
    let builtin: std::collections::BTreeSet<String> = dir_names(tree, "/lib/modules")
        .iter()
        .flat_map(|version| builtin_modules(tree, version))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for a in initramfs {
        let path = a.resolves_to.clone().unwrap_or_else(|| a.path.clone());
        if !seen.insert(path.clone()) {
            continue;
        }
        let Some(fd) = tree.resolve_file(path.trim_start_matches('/').as_bytes()) else {
            continue;
        };
        let scan = initramfs::scan_for(tree.spill().reader(fd), drivers);
        let (modules, unreadable) = match scan {
            Ok(initramfs::Contents::Modules(m)) => (Some(m), None),
            Ok(initramfs::Contents::Unreadable(c)) => (None, Some(format!("{c}-compressed"))),
            Err(e) => (None, Some(format!("not a readable initramfs: {e}"))),
        };
        let has = |d: &str| {
            let m = modules.as_ref().filter(|_| drivers.contains(&d))?;
            Some(m.contains(d) || builtin.contains(d))
        };
        out.push(InitramfsDrivers {
            vmw_pvscsi: has("vmw_pvscsi"),
            mptspi: has("mptspi"),
            path,
            unreadable,
        });
    }
    out
}

/// For each kernel image named `vmlinuz-VERSION` with a `/lib/modules/VERSION`: whether the
/// VMXNET3 driver is there, as a module file anywhere below it or in its `modules.builtin`.
fn kernel_modules(tree: &Tree, kernels: &[Artifact]) -> Vec<KernelModules> {
    let versions: std::collections::BTreeSet<String> = kernels
        .iter()
        .filter_map(|k| {
            let path = k.resolves_to.as_deref().unwrap_or(&k.path);
            let name = path.rsplit('/').next()?;
            name.strip_prefix("vmlinuz-").map(str::to_string)
        })
        .collect();
    versions
        .into_iter()
        .filter_map(|version| {
            let dir = format!("lib/modules/{version}");
            let id = tree.resolve(dir.as_bytes(), true)?;
            tree.inode(id).kind.is_dir().then_some(())?;
            let builtin = builtin_modules(tree, &version)
                .iter()
                .any(|m| m == "vmxnet3");
            Some(KernelModules {
                vmxnet3: builtin || has_module(tree, id, "vmxnet3", 0),
                version,
            })
        })
        .collect()
}

/// The drivers built into kernel `version`: its `/lib/modules/VERSION/modules.builtin`.
fn builtin_modules(tree: &Tree, version: &str) -> Vec<String> {
    let path = format!("lib/modules/{version}/modules.builtin");
    let mut list = Vec::new();
    if let Some(fd) = tree.resolve_file(path.as_bytes()) {
        let _ = tree.spill().reader(fd).take(4 << 20).read_to_end(&mut list);
    }
    list.split(|&b| b == b'\n')
        .filter_map(initramfs::module_name)
        .collect()
}

/// Whether a module file named `module` (`.ko`, compressed or not) is below directory `id`.
fn has_module(tree: &Tree, id: InodeId, module: &str, depth: usize) -> bool {
    let Kind::Dir(d) = &tree.inode(id).kind else {
        return false;
    };
    depth < 16
        && d.entries
            .iter()
            .any(|(name, &child)| match &tree.inode(child).kind {
                Kind::Dir(_) => has_module(tree, child, module, depth + 1),
                Kind::File(_) => initramfs::module_name(name).as_deref() == Some(module),
                _ => false,
            })
}

/// Follows symlinks in every component of `path` inside the tree (absolute targets start at the
/// tree's root; `..` stops at the root; see [`Tree::resolve_path`]). Returns the inode and
/// its resolved absolute path, or `None` if nothing is there or the symlinks loop.
pub fn resolve(tree: &Tree, path: &str) -> Option<(InodeId, String)> {
    let normalized = components(path.as_bytes()).ok()?.join(&b'/');
    let resolved = tree.resolve_path(&normalized, true).ok()?;
    Some((resolved.id?, format!("/{}", show(&resolved.path))))
}

fn artifact(tree: &Tree, path: &str) -> Option<Artifact> {
    let (id, resolved) = resolve(tree, path)?;
    if !matches!(tree.inode(id).kind, Kind::File(_)) {
        return None;
    }
    let resolves_to = (resolved != path).then_some(resolved);
    Some(Artifact {
        path: path.to_string(),
        resolves_to,
    })
}

/// Names in the directory `path` (resolved), in byte order; non-UTF-8 names shown lossily.
fn dir_names(tree: &Tree, path: &str) -> Vec<String> {
    match resolve(tree, path).map(|(id, _)| &tree.inode(id).kind) {
        Some(Kind::Dir(d)) => d.entries.keys().map(|n| show(n)).collect(),
        _ => Vec::new(),
    }
}

fn is_file(tree: &Tree, path: &str) -> Option<String> {
    let (id, resolved) = resolve(tree, path)?;
    matches!(tree.inode(id).kind, Kind::File(_)).then_some(resolved)
}

/// The paths the kernel tries for its first process, in its order (`/bin/sh` last, which
/// no VM should rely on).
pub const INIT_PATHS: [&str; 3] = ["/sbin/init", "/etc/init", "/bin/init"];

/// The init the kernel will start: the first of [`INIT_PATHS`] that is a file (symlinks
/// followed inside the tree), classified by what it resolves to, with that path and what it
/// resolves to. The one classifier: `inspect` reports it and `build`'s guest check warns from it.
pub fn init_system(tree: &Tree) -> (InitSystem, Option<(&'static str, String)>) {
    let Some((tried, init)) = INIT_PATHS
        .iter()
        .find_map(|p| Some((*p, is_file(tree, p)?)))
    else {
        return (InitSystem::None, None);
    };
    let base = init.rsplit('/').next().unwrap_or("");
    let kind = match base {
        "systemd" => InitSystem::Systemd,
        "openrc-init" => InitSystem::OpenRc,
        _ if is_file(tree, "/sbin/openrc").is_some() => InitSystem::OpenRc,
        "busybox" => InitSystem::Busybox,
        _ if is_file(tree, "/etc/inittab").is_some() => InitSystem::Sysvinit,
        _ => InitSystem::Other,
    };
    (kind, Some((tried, init)))
}

/// Whether systemd is installed without the `/sbin/init` that would start it (Debian's
/// `systemd` without `systemd-sysv`).
pub fn systemd_without_init(tree: &Tree) -> bool {
    ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .iter()
        .any(|p| is_file(tree, p).is_some())
}

impl InitSystem {
    /// The init system's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            InitSystem::Systemd => "systemd",
            InitSystem::OpenRc => "OpenRC",
            InitSystem::Busybox => "BusyBox init",
            InitSystem::Sysvinit => "sysvinit",
            InitSystem::Other => "an init",
            InitSystem::None => "no init",
        }
    }
}

fn grub(tree: &Tree, path: &str) -> GrubModules {
    let names = dir_names(tree, path);
    let present = resolve(tree, path).is_some_and(|(id, _)| tree.inode(id).kind.is_dir());
    GrubModules {
        path: path.to_string(),
        present,
        modules: names.iter().filter(|n| n.ends_with(".mod")).count(),
    }
}

/// The image's os-release text (`/etc/os-release`, else `/usr/lib/os-release`, symlinks
/// followed inside the tree), at most 64 KiB.
pub fn os_release_text(tree: &Tree) -> Option<String> {
    [&b"etc/os-release"[..], b"usr/lib/os-release"]
        .iter()
        .find_map(|p| tree.read_text(p, 64 * 1024))
}

fn os_release(tree: &Tree) -> OsRelease {
    let text = os_release_text(tree);
    let mut out = OsRelease::default();
    for line in text.unwrap_or_default().lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = Some(unquote(value.trim()));
        match key.trim() {
            "ID" => out.id = value,
            "VERSION_ID" => out.version_id = value,
            "ID_LIKE" => out.id_like = value,
            "PRETTY_NAME" => out.pretty_name = value,
            _ => {}
        }
    }
    out
}

/// Shell-style value of os-release(5): `"..."` with `\` escapes, `'...'`, or bare.
fn unquote(v: &str) -> String {
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_string()
    } else {
        v.to_string()
    }
}

impl BootReport {
    /// Per initramfs, whether it carries the SCSI controllers' drivers; per kernel, VMXNET3's.
    fn fmt_drivers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.initramfs_drivers {
            let yes_no = |v: Option<bool>| match v {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            };
            match &d.unreadable {
                Some(why) => writeln!(f, "  {}: SCSI drivers not checked ({why})", d.path)?,
                None => writeln!(
                    f,
                    "  {}: vmw_pvscsi (PVSCSI) {}, mptspi (LSI Logic) {}",
                    d.path,
                    yes_no(d.vmw_pvscsi),
                    yes_no(d.mptspi)
                )?,
            }
        }
        for k in &self.kernel_modules {
            let has = if k.vmxnet3 { "yes" } else { "NO" };
            writeln!(
                f,
                "  /lib/modules/{}: vmxnet3 (VMXNET3 NIC) {has}",
                k.version
            )?;
        }
        Ok(())
    }
}

impl BootReport {
    /// What reads deploy-time properties (`--property`, `--cloud-init`).
    fn fmt_ovf_environment(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = &self.ovf_environment;
        let readers = env.readers();
        if readers.is_empty() {
            writeln!(
                f,
                "ovf properties: nothing reads them (no cloud-init with its OVF data source, no \
                 vmware-rpctool)"
            )?;
        } else {
            writeln!(f, "ovf properties: read by {}", readers.join(", "))?;
        }
        if env.cloud_init.is_some() {
            let list = env.datasource_list.as_ref().map_or(
                "cloud-init's default (with OVF and VMware)".to_string(),
                |l| l.join(", "),
            );
            writeln!(f, "  cloud-init data sources: {list}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[Artifact]| -> String {
            if items.is_empty() {
                return "none".into();
            }
            let shown: Vec<String> = items
                .iter()
                .map(|a| match &a.resolves_to {
                    Some(t) => format!("{} -> {t}", a.path),
                    None => a.path.clone(),
                })
                .collect();
            shown.join(", ")
        };
        let os = &self.os_release;
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "?".into());
        writeln!(
            f,
            "os-release: {} (ID={}, VERSION_ID={})",
            opt(&os.pretty_name),
            opt(&os.id),
            opt(&os.version_id)
        )?;
        writeln!(f, "kernels:    {}", list(&self.kernels))?;
        writeln!(f, "initramfs:  {}", list(&self.initramfs))?;
        self.fmt_drivers(f)?;
        let init = serde_json::to_value(self.init)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(
            f,
            "init:       {init}{}",
            self.init_path
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        )?;
        for g in [&self.grub_i386_pc, &self.grub_x86_64_efi] {
            let state = if g.present {
                format!("{} modules", g.modules)
            } else {
                "absent".into()
            };
            writeln!(f, "grub:       {}: {state}", g.path)?;
        }
        let network = if self.network.is_empty() {
            "none found".into()
        } else {
            self.network.join(", ")
        };
        writeln!(f, "network:    {network}")?;
        writeln!(
            f,
            "vmware tools: {}",
            self.vmware_tools
                .as_deref()
                .unwrap_or("none (no open-vm-tools: vSphere cannot shut the guest down cleanly or show its addresses)")
        )?;
        self.fmt_ovf_environment(f)?;
        let sb = &self.secure_boot;
        writeln!(
            f,
            "secure boot: {} ({sb}; `build --secure-boot auto` {})",
            if sb.complete() {
                "signed chain complete"
            } else {
                "no complete signed chain"
            },
            if sb.complete() {
                "installs it and turns Secure Boot on for --firmware efi"
            } else {
                "keeps d2v's GRUB and Secure Boot off"
            }
        )?;
        let markers = if self.container_markers.is_empty() {
            "none".into()
        } else {
            self.container_markers.join(", ")
        };
        writeln!(f, "container markers: {markers}")
    }
}

#[cfg(test)]
mod tests;
