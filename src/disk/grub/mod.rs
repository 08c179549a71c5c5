//! GRUB for both firmwares on one disk: `core.img` for BIOS (installed by `bios`) and
//! `\EFI\BOOT\BOOTX64.EFI` for UEFI (the removable-media path: nothing in NVRAM), both
//! assembled by d2v ([`mkimage`]) from the image's GRUB modules when it ships them, else the
//! host's. Both images carry an early config that finds the ESP by its FAT serial and loads
//! `(ESP)/grub/grub.cfg`.

pub(crate) mod bios;
pub(crate) mod config;
pub(crate) mod defaults;
mod error;
pub mod mkimage;

use std::path::{Path, PathBuf};

use crate::disk::Result;
use crate::tree::{show, Inode, Kind, Metadata, Tree};
use mkimage::PlatformDir;

pub(crate) use config::{find_kernels, BootEntry, ConfigOptions};
pub use error::GrubError;

/// A GRUB target platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// BIOS: `core.img` for `i386-pc`, loaded by `boot.img` from the BIOS boot partition.
    I386Pc,
    /// UEFI: `BOOTX64.EFI` for `x86_64-efi`, a PE32+ image on the ESP.
    X86_64Efi,
}

impl Platform {
    /// The directory name under `/usr/lib/grub` and the `-O` format of `grub-mkimage`.
    pub fn name(self) -> &'static str {
        match self {
            Platform::I386Pc => "i386-pc",
            Platform::X86_64Efi => "x86_64-efi",
        }
    }

    /// The Debian package that ships the host's modules for this platform.
    pub fn debian_package(self) -> &'static str {
        match self {
            Platform::I386Pc => "grub-pc-bin",
            Platform::X86_64Efi => "grub-efi-amd64-bin",
        }
    }

    /// Modules built into the image (those missing from a module directory are left out).
    pub(crate) fn modules(self) -> Vec<&'static str> {
        let mut m = vec![
            "part_gpt",
            "part_msdos",
            "fat",
            "ext2",
            "normal",
            "linux",
            "echo",
            "search",
            "search_fs_uuid",
            "search_fs_file",
            "search_label",
            "configfile",
            "test",
            "serial",
            "terminal",
            "halt",
            "reboot",
            "gzio",
            "xzio",
            "lzopio",
            "zstd",
            "sleep",
            "cat",
            "ls",
            "minicmd",
            "loadenv",
            "all_video",
            "gfxterm",
        ];
        match self {
            Platform::I386Pc => m.push("biosdisk"),
            Platform::X86_64Efi => m.extend(["efi_gop", "efi_uga"]),
        }
        m
    }

    /// The modules d2v builds in (`Platform::modules`) that the module directory `dir` has
    /// (`NAME.mod`).
    pub fn available_modules(self, dir: &(impl PlatformDir + ?Sized)) -> Vec<&'static str> {
        self.modules()
            .into_iter()
            .filter(|m| dir.has(&format!("{m}.mod")))
            .collect()
    }
}

/// Where a platform's modules came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// `/usr/lib/grub/<platform>` of the image.
    Image,
    /// The host's `/usr/lib/grub/<platform>`.
    Host,
}

/// A GRUB module directory to build from: the image's, read from the staging tree, or the
/// host's.
#[derive(Debug, Clone)]
pub(crate) struct ModuleDir {
    pub(crate) platform: Platform,
    /// `/usr/lib/grub/<platform>`, of the image or of the host as `source` says.
    pub(crate) path: PathBuf,
    pub(crate) source: ModuleSource,
}

impl ModuleDir {
    /// The directory's files as [`mkimage::build`] reads them (`tree`: the image).
    pub(crate) fn files<'a>(&'a self, tree: &'a Tree) -> Files<'a> {
        Files { dir: self, tree }
    }

    /// Its path in the tree (for the image's directory): no leading `/`.
    fn tree_dir(&self) -> Vec<u8> {
        let dir = self.path.to_string_lossy();
        dir.trim_start_matches('/').as_bytes().to_vec()
    }

    /// The path of its file `name` in the tree.
    fn in_tree(&self, name: &str) -> Vec<u8> {
        [&self.tree_dir(), b"/".as_slice(), name.as_bytes()].concat()
    }

    /// The names of its regular files.
    fn names(&self, tree: &Tree) -> std::io::Result<Vec<String>> {
        match self.source {
            ModuleSource::Image => {
                let Some(d) = tree.resolve_dir(&self.tree_dir()) else {
                    return Ok(Vec::new());
                };
                Ok(d.entries
                    .keys()
                    .filter_map(|n| std::str::from_utf8(n).ok())
                    .filter(|n| tree.resolve_file(&self.in_tree(n)).is_some())
                    .map(str::to_string)
                    .collect())
            }
            ModuleSource::Host => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&self.path)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }
}

/// A [`ModuleDir`]'s files, readable by [`mkimage::build`].
pub(crate) struct Files<'a> {
    dir: &'a ModuleDir,
    tree: &'a Tree,
}

impl PlatformDir for Files<'_> {
    fn path(&self) -> &Path {
        &self.dir.path
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        match self.dir.source {
            ModuleSource::Host => self.dir.path.read(name),
            ModuleSource::Image => {
                let Some(data) = self.tree.resolve_file(&self.dir.in_tree(name)) else {
                    return Err(std::io::ErrorKind::NotFound.into());
                };
                let mut v = Vec::with_capacity(data.len as usize);
                std::io::Read::read_to_end(&mut self.tree.spill().reader(data), &mut v)?;
                Ok(v)
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        match self.dir.source {
            ModuleSource::Host => self.dir.path.has(name),
            ModuleSource::Image => self.tree.resolve_file(&self.dir.in_tree(name)).is_some(),
        }
    }
}

/// GRUB's platform directories, on the host and in images.
const GRUB_LIB: &str = "/usr/lib/grub";

/// The image's module directory for `platform` when it has a usable one (with `kernel.img`
/// and `moddep.lst`); else the host's.
pub(crate) fn module_dir(tree: &Tree, platform: Platform) -> Result<ModuleDir> {
    let image = ModuleDir {
        platform,
        path: Path::new(GRUB_LIB).join(platform.name()),
        source: ModuleSource::Image,
    };
    let files = image.files(tree);
    if files.has("kernel.img") && files.has("moddep.lst") {
        return Ok(image);
    }
    host_module_dir(platform)
}

/// The host's module directory for `platform`.
pub(crate) fn host_module_dir(platform: Platform) -> Result<ModuleDir> {
    let path = Path::new(GRUB_LIB).join(platform.name());
    if !path.join("kernel.img").is_file() {
        return Err(GrubError::NoModules {
            platform: platform.name(),
            package: platform.debian_package(),
        }
        .into());
    }
    Ok(ModuleDir {
        platform,
        path,
        source: ModuleSource::Host,
    })
}

/// The early config built into core.img/BOOTX64.EFI: find the ESP by its FAT serial, make it
/// `$root`, and let `normal` read `$prefix/grub.cfg`. [`PREFIX`] is the fallback when the
/// search fails.
pub fn early_config(esp_serial: &str) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {esp_serial}\nset prefix=($root)/grub\n",
        esp_serial = esp_serial.to_lowercase()
    )
}

/// The built-in `$prefix`: the ESP is the second GPT partition.
pub const PREFIX: &str = "(hd0,gpt2)/grub";

/// Modules without which the image cannot reach and run grub.cfg: a directory lacking one
/// is not used (the host's is, when it has them).
const ESSENTIAL: [&str; 7] = [
    "part_gpt",
    "fat",
    "normal",
    "search_fs_uuid",
    "configfile",
    "linux",
    "echo",
];

/// Assembles the image for `dir.platform` ([`mkimage::build`]), returning its bytes.
pub(crate) fn mkimage(tree: &Tree, dir: &ModuleDir, early_cfg: &str) -> Result<Vec<u8>> {
    let files = dir.files(tree);
    let missing: Vec<&str> = ESSENTIAL
        .into_iter()
        .chain((dir.platform == Platform::I386Pc).then_some("biosdisk"))
        .filter(|m| !files.has(&format!("{m}.mod")))
        .collect();
    if !missing.is_empty() {
        return Err(GrubError::MissingModules {
            platform: dir.platform.name(),
            missing,
        }
        .into());
    }
    let modules = dir.platform.available_modules(&files);
    Ok(mkimage::build(
        &files,
        dir.platform,
        &modules,
        early_cfg,
        PREFIX,
    )?)
}

/// Builds the image for `platform` from the image's modules, falling back to the host's
/// when those fail to build (a kernel.img of a layout d2v does not know). Returns the bytes,
/// the directory used and warnings.
pub(crate) fn build(
    tree: &Tree,
    platform: Platform,
    early_cfg: &str,
) -> Result<(Vec<u8>, ModuleDir, Vec<String>)> {
    let dir = module_dir(tree, platform)?;
    match mkimage(tree, &dir, early_cfg) {
        Ok(img) => Ok((img, dir, Vec::new())),
        Err(e) if dir.source == ModuleSource::Image => {
            let host = host_module_dir(platform)?;
            let img = mkimage(tree, &host, early_cfg)?;
            Ok((
                img,
                host,
                vec![format!("{e}; used the host's modules instead")],
            ))
        }
        Err(e) => Err(e),
    }
}

/// How to get `grub.cfg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ConfigMode {
    /// Keep the image's `/boot/grub/grub.cfg` when it has one, else generate.
    #[default]
    KeepOrGenerate,
    /// Always generate (`--grub-config generate`).
    Generate,
}

/// GRUB settings for [`prepare`].
#[derive(Debug, Clone)]
pub struct GrubOptions {
    pub(crate) config: ConfigMode,
    /// Extra kernel command-line arguments (`--kernel-arg`).
    pub kernel_args: Vec<String>,
    /// Menu timeout in seconds of the generated grub.cfg.
    pub(crate) timeout: u32,
    /// The image's signed chain to install in place of d2v's `BOOTX64.EFI`
    /// ([`crate::disk::secureboot`]); `None`: d2v's GRUB, Secure Boot off.
    pub secure_boot: Option<crate::disk::secureboot::Chain>,
}

impl Default for GrubOptions {
    fn default() -> GrubOptions {
        GrubOptions {
            config: ConfigMode::default(),
            kernel_args: Vec::new(),
            timeout: 1,
            secure_boot: None,
        }
    }
}

/// What [`prepare`] built; `boot_img`/`core_img` still have to be installed with
/// `bios::install` once the partition table is written.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) boot_img: Vec<u8>,
    /// The BIOS `core.img` (kernel, embedded modules, early config).
    pub core_img: Vec<u8>,
    pub(crate) kernels: Vec<BootEntry>,
    /// Whether d2v generated `grub.cfg` (rather than keeping the image's own).
    pub generated_config: bool,
    /// Where the `i386-pc` modules came from.
    pub bios_modules: ModuleSource,
    /// Where the `x86_64-efi` modules came from.
    pub efi_modules: ModuleSource,
    /// Whether the image's signed chain went on the ESP (Secure Boot can be on).
    pub secure_boot: bool,
    /// Notes for the user: what was generated or kept, and from where.
    pub notes: Vec<String>,
}

/// Puts `data` at `path` in the tree (a regular file, mode 0644, `SOURCE_DATE_EPOCH`'s mtime),
/// replacing what was there.
pub(crate) fn put_file(tree: &mut Tree, path: &str, data: &[u8]) -> Result<()> {
    let err = |source| GrubError::Put {
        path: path.into(),
        source,
    };
    let fd = tree.store(&mut &data[..]).map_err(err)?;
    let mtime = crate::ids::source_date_epoch()
        .map(|s| crate::tree::Timestamp { sec: s, nsec: 0 })
        .unwrap_or_default();
    let inode = Inode {
        meta: Metadata {
            mode: 0o644,
            mtime,
            ..Metadata::default()
        },
        kind: Kind::File(fd),
    };
    tree.insert(path.as_bytes(), inode).map_err(err)?;
    Ok(())
}

/// Copies a module directory's modules and lists into the tree at `boot/grub/<platform>`, so
/// `insmod` in grub.cfg finds modules matching the GRUB that loaded it.
fn put_modules(tree: &mut Tree, dir: &ModuleDir) -> Result<()> {
    for name in dir.names(tree)? {
        if name.ends_with(".mod") || name.ends_with(".lst") {
            let data = dir.files(tree).read(&name)?;
            put_file(
                tree,
                &format!("boot/grub/{}/{name}", dir.platform.name()),
                &data,
            )?;
        }
    }
    Ok(())
}

/// Generates `/boot/grub/grub.cfg` (an entry per kernel, the image's `/etc/default/grub`
/// command line, then `--kernel-arg`) in place of the image's; notes on what it took.
fn write_config(
    tree: &mut Tree,
    kernels: &[BootEntry],
    root_partuuid: &str,
    opts: &GrubOptions,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let defaults = defaults::cmdline_defaults(tree);
    if !defaults.files.is_empty() {
        notes.push(format!(
            "kernel command line from {}: {}",
            defaults.files.join(", "),
            defaults.args.join(" ")
        ));
    }
    for s in &defaults.skipped {
        notes.push(format!(
            "not understood, left out of the kernel command line: {s}"
        ));
    }
    let cfg = config::generate(
        kernels,
        &ConfigOptions {
            root_partuuid: root_partuuid.into(),
            image_args: defaults.args,
            kernel_args: opts.kernel_args.clone(),
            timeout: opts.timeout,
        },
    );
    tree.remove(b"boot/grub/grub.cfg")
        .map_err(GrubError::RemoveConfig)?;
    put_file(tree, "boot/grub/grub.cfg", cfg.as_bytes())?;
    notes.push(format!(
        "generated /boot/grub/grub.cfg with {} kernel entries",
        kernels.len()
    ));
    Ok(notes)
}

/// GRUB's two images, built by [`Images::build`] for an ESP serial before [`prepare`] puts
/// them in place; each an image, the module directory it came from and notes, or why not.
pub struct Images {
    esp_serial: String,
    bios: Result<(Vec<u8>, ModuleDir, Vec<String>)>,
    efi: Result<(Vec<u8>, ModuleDir, Vec<String>)>,
}

impl Images {
    /// Builds the BIOS `core.img` and the UEFI image from the tree's modules (the host's when
    /// the image's cannot be used) for the ESP `esp_serial`. They read only the module
    /// directories, so this can run while other work reads the tree; failures are kept for
    /// [`prepare`] to report in its order.
    pub fn build(tree: &Tree, esp_serial: &str) -> Images {
        let early = early_config(esp_serial);
        // The two images are independent: one is built on another thread.
        let (bios, efi) = std::thread::scope(|s| {
            let efi = s.spawn(|| build(tree, Platform::X86_64Efi, &early));
            let bios = build(tree, Platform::I386Pc, &early);
            (bios, efi.join())
        });
        Images {
            esp_serial: esp_serial.to_string(),
            bios,
            efi: efi.unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}

/// Builds GRUB for both firmwares (unless `images` were built for `esp_serial` already) and
/// puts what belongs on the ESP into the tree's `/boot`: `EFI/BOOT/BOOTX64.EFI`,
/// `grub/grub.cfg` (generated unless kept), `grub/<platform>/*.mod`. `esp_serial` is the
/// ESP's `XXXX-XXXX`; `root_partuuid` the root partition's GUID.
pub fn prepare(
    tree: &mut Tree,
    images: Option<Images>,
    esp_serial: &str,
    root_partuuid: &str,
    opts: &GrubOptions,
) -> Result<Prepared> {
    let kernels = find_kernels(tree);
    let has_cfg = tree.resolve_file(b"boot/grub/grub.cfg").is_some();
    let generate = opts.config == ConfigMode::Generate || !has_cfg;
    if generate && kernels.is_empty() {
        return Err(GrubError::NoKernel.into());
    }
    let images = match images {
        Some(i) if i.esp_serial == esp_serial => i,
        _ => Images::build(tree, esp_serial),
    };
    let (core_img, bios_dir, mut notes) = images.bios?;
    let (efi_img, efi_dir, more) = images.efi?;
    crate::interrupt::pause_point("esp_grub");
    let boot_img = bios_dir
        .files(tree)
        .read("boot.img")
        .map_err(|source| GrubError::BootImg {
            dir: bios_dir.path.clone(),
            source,
        })?;
    notes.extend(more);

    match &opts.secure_boot {
        Some(chain) => notes.extend(crate::disk::secureboot::install(tree, chain, esp_serial)?),
        None => put_file(tree, "boot/EFI/BOOT/BOOTX64.EFI", &efi_img)?,
    }
    put_modules(tree, &bios_dir)?;
    put_modules(tree, &efi_dir)?;

    if generate {
        notes.extend(write_config(tree, &kernels, root_partuuid, opts)?);
    } else {
        notes.push("kept the image's /boot/grub/grub.cfg".into());
    }
    let src = |d: &ModuleDir| match d.source {
        ModuleSource::Image => format!("the image's {}", d.path.display()),
        ModuleSource::Host => format!("the host's {}", d.path.display()),
    };
    if opts.secure_boot.is_none() {
        notes.push(format!(
            "GRUB BIOS core.img from {}, UEFI BOOTX64.EFI from {}",
            src(&bios_dir),
            src(&efi_dir)
        ));
    } else {
        notes.push(format!("GRUB BIOS core.img from {}", src(&bios_dir)));
    }
    if kernels.is_empty() {
        notes.push(format!("no kernel (vmlinuz-*) in /{}", show(b"boot")));
    }
    Ok(Prepared {
        boot_img,
        core_img,
        kernels,
        generated_config: generate,
        bios_modules: bios_dir.source,
        efi_modules: efi_dir.source,
        secure_boot: opts.secure_boot.is_some(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generating_a_config_without_a_kernel_names_packages() {
        let mut t = Tree::in_temp().unwrap();
        let err = prepare(&mut t, None, "ABCD-0123", "u", &GrubOptions::default()).unwrap_err();
        assert!(
            matches!(err, crate::disk::DiskError::Grub(GrubError::NoKernel)),
            "{err}"
        );
        let err = err.to_string();
        assert!(
            err.contains("linux-image-cloud-amd64") && err.contains("linux-virt"),
            "{err}"
        );
    }

    #[test]
    fn early_config_searches_the_esp_serial() {
        let c = early_config("ABCD-0123");
        assert!(
            c.contains("search --no-floppy --fs-uuid --set=root abcd-0123\n"),
            "{c}"
        );
        assert!(c.contains("set prefix=($root)/grub\n"), "{c}");
    }
}
