//! UEFI Secure Boot with the image's own signed boot chain. d2v's GRUB is assembled by d2v,
//! so it is unsigned; an image that carries its distribution's signed chain can boot with
//! Secure Boot on instead:
//!
//! - Debian/Ubuntu: `shim-signed` (`/usr/lib/shim/shimx64.efi.signed`, signed by Microsoft's
//!   UEFI CA; `mmx64.efi.signed`, MokManager), `grub-efi-amd64-signed`
//!   (`/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed`, monolithic: every module it needs
//!   is built in) and a kernel signed by the distribution (`/boot/vmlinuz-*`).
//! - Fedora/RHEL: `shim-x64` and `grub2-efi-x64` (`/boot/efi/EFI/VENDOR/shimx64.efi`,
//!   `grubx64.efi`, `mmx64.efi`).
//!
//! [`Chain::find`] reads what the image has; [`decide`] turns `--secure-boot auto|on|off` and
//! the firmware into whether to install it; [`install`] puts it on the ESP (the tree's
//! `/boot`): shim as `\EFI\BOOT\BOOTX64.EFI` (the removable-media path, nothing in NVRAM),
//! the signed GRUB beside it as `grubx64.efi` (where shim looks), MokManager as `mmx64.efi`
//! (not the fallback `fbx64.efi`, which would write NVRAM boot entries), and a `grub.cfg`
//! where the signed GRUB looks for one: its built-in prefix (read from the image,
//! [`embedded::read`], e.g. `/EFI/debian`) on the ESP it was loaded from. That file sends
//! GRUB on to d2v's `/grub/grub.cfg`, whose `linux` command has shim verify the kernel.
//!
//! "Signed" means "carries an Authenticode signature" ([`crate::pe`]): d2v does not verify
//! signatures, the firmware and shim do.

use std::fmt;

use serde::Serialize;

use super::grub::mkimage::embedded;
use super::grub::{early_config, find_kernels};
use crate::tree::Tree;

/// `--secure-boot`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// On when the image carries a complete signed chain and the firmware is UEFI.
    #[default]
    Auto,
    /// On; an error without a complete chain or with BIOS firmware.
    On,
    /// d2v's own GRUB, Secure Boot off.
    Off,
}

/// The Debian/Ubuntu and Fedora/RHEL packages of a signed chain, for messages.
pub const PACKAGES: &str = "shim-signed and grub-efi-amd64-signed (Debian/Ubuntu) or shim-x64 \
                            and grub2-efi-x64 (Fedora/RHEL), with a signed kernel";

/// One EFI binary of the chain in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// Its path in the image.
    pub path: String,
    /// Whether it carries an Authenticode signature.
    pub signed: bool,
}

/// What the image has of a signed boot chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// shim (`shimx64.efi`).
    pub shim: Option<Part>,
    /// shim's MokManager (`mmx64.efi`), optional.
    pub mok_manager: Option<Part>,
    /// The signed GRUB (`grubx64.efi`).
    pub grub: Option<Part>,
    /// The GRUB's built-in prefix, where it reads `grub.cfg` (e.g. `/EFI/debian`).
    pub grub_prefix: Option<String>,
    /// The modules of [`GRUB_NEEDS`] the signed GRUB lacks (it cannot load any under Secure
    /// Boot).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grub_lacks_modules: Vec<String>,
    /// Every kernel in `/boot` (`vmlinuz-*`).
    pub kernels: Vec<Part>,
    /// What keeps the chain from being complete; empty: complete.
    pub missing: Vec<Lack>,
}

/// What a chain lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "lack", content = "path", rename_all = "snake_case")]
pub enum Lack {
    /// No shim.
    NoShim,
    /// No signed GRUB.
    NoGrub,
    /// A file that carries no signature.
    Unsigned(String),
    /// A GRUB without a readable built-in prefix.
    NoPrefix(String),
    /// No kernel in `/boot`.
    NoKernel,
    /// A GRUB without modules d2v's configuration needs built in.
    GrubModules(String),
}

impl fmt::Display for Lack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lack::NoShim => write!(f, "no shim (shimx64.efi)"),
            Lack::NoGrub => write!(f, "no signed GRUB (grubx64.efi)"),
            Lack::Unsigned(p) => write!(f, "{p} is not signed"),
            Lack::NoPrefix(p) => write!(f, "{p} has no built-in prefix d2v can read"),
            Lack::NoKernel => write!(f, "no kernel in /boot"),
            Lack::GrubModules(p) => write!(
                f,
                "{p} lacks built-in modules d2v's grub.cfg needs ({})",
                GRUB_NEEDS.join(", ")
            ),
        }
    }
}

/// Why `--secure-boot on` cannot be honoured, or the chain not installed.
#[derive(Debug, thiserror::Error)]
pub enum SecureBootError {
    /// Secure Boot is a UEFI feature.
    #[error("--secure-boot on needs --firmware efi: Secure Boot is a UEFI feature")]
    Bios,
    /// The image's chain is incomplete.
    #[error(
        "--secure-boot on: the image has no complete signed boot chain ({}); install {PACKAGES} \
         in the image, or build with --secure-boot off",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Incomplete(Vec<Lack>),
    /// A file of the chain could not be read from the image.
    #[error("reading {path} from the image: {source}")]
    Read {
        /// The file in the image.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The modules the prefix `grub.cfg` and d2v's menu need (`search --fs-uuid`, `configfile`,
/// `linux` from the ESP's FAT on a GPT disk): under Secure Boot GRUB loads no module from disk,
/// so the signed GRUB must have them built in (Debian's and Fedora's do).
pub const GRUB_NEEDS: [&str; 6] = ["normal", "configfile", "search", "linux", "fat", "part_gpt"];

/// Where Debian and Ubuntu put the chain, first found wins (Ubuntu's `.latest`).
const DEBIAN_SHIM: [&str; 2] = [
    "usr/lib/shim/shimx64.efi.signed",
    "usr/lib/shim/shimx64.efi.signed.latest",
];
const DEBIAN_MOK_MANAGER: &str = "usr/lib/shim/mmx64.efi.signed";
const DEBIAN_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// Fedora and RHEL: `/boot/efi/EFI/VENDOR/` (the vendor directory is the distribution's).
const FEDORA_EFI: &str = "boot/efi/EFI";

/// The bytes of the regular file at `path` (symlinks followed inside the image); `None` when
/// there is none.
fn read(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>, SecureBootError> {
    let Some(data) = tree.resolve_file(path.as_bytes()) else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut tree.spill().reader(data), &mut buf).map_err(|source| {
        SecureBootError::Read {
            path: format!("/{path}"),
            source,
        }
    })?;
    Ok(Some(buf))
}

/// A part at `path` when the image has it (and it can be read), with its bytes.
fn part(tree: &Tree, path: &str) -> Option<(Part, Vec<u8>)> {
    let data = read(tree, path).ok()??;
    let p = Part {
        path: format!("/{path}"),
        signed: crate::pe::is_signed(&data),
    };
    Some((p, data))
}

/// The Debian/Ubuntu paths of shim, MokManager and GRUB; else Fedora's vendor directory's.
fn chain_paths(tree: &Tree) -> [Option<String>; 3] {
    let debian_shim = DEBIAN_SHIM
        .into_iter()
        .find(|p| tree.resolve_file(p.as_bytes()).is_some());
    if debian_shim.is_some() || tree.resolve_file(DEBIAN_GRUB.as_bytes()).is_some() {
        return [
            debian_shim.map(String::from),
            Some(DEBIAN_MOK_MANAGER.into()),
            Some(DEBIAN_GRUB.into()),
        ];
    }
    let vendor = tree.resolve_dir(FEDORA_EFI.as_bytes()).and_then(|d| {
        d.entries
            .keys()
            .filter(|n| !n.eq_ignore_ascii_case(b"BOOT"))
            .map(|n| format!("{FEDORA_EFI}/{}", String::from_utf8_lossy(n)))
            .find(|dir| {
                tree.resolve_file(format!("{dir}/shimx64.efi").as_bytes())
                    .is_some()
            })
    });
    match vendor {
        Some(dir) => {
            ["shimx64.efi", "mmx64.efi", "grubx64.efi"].map(|f| Some(format!("{dir}/{f}")))
        }
        None => [None, None, None],
    }
}

impl Chain {
    /// What `tree` has of a signed chain (module docs), and what it lacks.
    pub fn find(tree: &Tree) -> Chain {
        let [shim, mm, grub] = chain_paths(tree);
        let get = |p: &Option<String>| p.as_deref().and_then(|p| part(tree, p));
        let grub = get(&grub);
        let built_in = grub
            .as_ref()
            .and_then(|(_, data)| embedded::read(data).ok());
        let grub_prefix = built_in
            .as_ref()
            .and_then(|e| e.prefix.clone())
            .filter(|p| !p.is_empty());
        let grub_lacks_modules = built_in.map_or_else(Vec::new, |e| {
            GRUB_NEEDS
                .iter()
                .filter(|m| !e.modules.iter().any(|n| n == *m))
                .map(|m| m.to_string())
                .collect()
        });
        let kernels = find_kernels(tree)
            .iter()
            .filter_map(|k| part(tree, &format!("boot/{}", k.kernel)).map(|(p, _)| p))
            .collect();
        let mut c = Chain {
            shim: get(&shim).map(|(p, _)| p),
            mok_manager: get(&mm).map(|(p, _)| p),
            grub: grub.map(|(p, _)| p),
            grub_prefix,
            grub_lacks_modules,
            kernels,
            missing: Vec::new(),
        };
        c.missing = c.lacks();
        c
    }

    fn lacks(&self) -> Vec<Lack> {
        let mut out = Vec::new();
        let unsigned = |p: &Part| (!p.signed).then(|| Lack::Unsigned(p.path.clone()));
        match &self.shim {
            None => out.push(Lack::NoShim),
            Some(p) => out.extend(unsigned(p)),
        }
        match &self.grub {
            None => out.push(Lack::NoGrub),
            Some(p) => {
                out.extend(unsigned(p));
                if self.grub_prefix.is_none() {
                    out.push(Lack::NoPrefix(p.path.clone()));
                } else if !self.grub_lacks_modules.is_empty() {
                    out.push(Lack::GrubModules(p.path.clone()));
                }
            }
        }
        if self.kernels.is_empty() {
            out.push(Lack::NoKernel);
        }
        out.extend(self.kernels.iter().filter_map(unsigned));
        out
    }

    /// Whether shim, GRUB (with its prefix) and every kernel are there and signed.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Whether the image has any part of a chain (worth a line in reports).
    pub fn any(&self) -> bool {
        self.shim.is_some() || self.grub.is_some()
    }
}

/// Whether to install the chain and turn Secure Boot on: `mode` with a UEFI (`efi`) or BIOS
/// VM and what the image has.
pub fn decide(mode: Mode, efi: bool, chain: &Chain) -> Result<bool, SecureBootError> {
    match mode {
        Mode::Off => Ok(false),
        Mode::Auto => Ok(efi && chain.complete()),
        Mode::On if !efi => Err(SecureBootError::Bios),
        Mode::On if !chain.complete() => Err(SecureBootError::Incomplete(chain.missing.clone())),
        Mode::On => Ok(true),
    }
}

/// The ESP-relative directory of a GRUB prefix: `/EFI/debian` and `(,gpt2)/EFI/debian` give
/// `EFI/debian`.
fn prefix_dir(prefix: &str) -> &str {
    let path = match prefix.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map_or("", |(_, p)| p),
        None => prefix,
    };
    path.trim_matches('/')
}

/// The `grub.cfg` at the signed GRUB's prefix: find the ESP (the device it was loaded from
/// already, searched by serial to be sure), then d2v's menu.
pub(crate) fn prefix_config(esp_serial: &str, prefix: &str) -> String {
    format!(
        "# Written by d2v: the signed GRUB reads {prefix}/grub.cfg; the menu is /grub/grub.cfg.\n\
         {}configfile $prefix/grub.cfg\n",
        early_config(esp_serial)
    )
}

/// Puts a complete `chain` on the tree's `/boot` (module docs). Returns notes.
pub(crate) fn install(
    tree: &mut Tree,
    chain: &Chain,
    esp_serial: &str,
) -> super::Result<Vec<String>> {
    use super::grub::put_file;
    let (Some(shim), Some(grub), Some(prefix), true) = (
        &chain.shim,
        &chain.grub,
        &chain.grub_prefix,
        chain.complete(),
    ) else {
        return Err(SecureBootError::Incomplete(chain.missing.clone()).into());
    };
    let mut copy = |from: &Part, to: &str| -> super::Result<()> {
        let path = from.path.trim_start_matches('/');
        let data = read(tree, path)?.ok_or_else(|| SecureBootError::Read {
            path: from.path.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        put_file(tree, to, &data)
    };
    copy(shim, "boot/EFI/BOOT/BOOTX64.EFI")?;
    copy(grub, "boot/EFI/BOOT/grubx64.efi")?;
    if let Some(mm) = &chain.mok_manager {
        copy(mm, "boot/EFI/BOOT/mmx64.efi")?;
    }
    let cfg = match prefix_dir(prefix) {
        "" => "boot/grub.cfg".to_string(),
        dir => format!("boot/{dir}/grub.cfg"),
    };
    put_file(tree, &cfg, prefix_config(esp_serial, prefix).as_bytes())?;
    Ok(vec![format!(
        "Secure Boot: \\EFI\\BOOT\\BOOTX64.EFI is {}, grubx64.efi {} (prefix {prefix}: /{})",
        shim.path,
        grub.path,
        cfg.trim_start_matches("boot/")
    )])
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Option<Part>| match p {
            None => "none".to_string(),
            Some(p) if p.signed => format!("{} (signed)", p.path),
            Some(p) => format!("{} (NOT signed)", p.path),
        };
        write!(f, "shim {}, GRUB {}", show(&self.shim), show(&self.grub))?;
        if let Some(p) = &self.grub_prefix {
            write!(f, " (prefix {p})")?;
        }
        let kernels: Vec<String> = self
            .kernels
            .iter()
            .map(|k| show(&Some(k.clone())))
            .collect();
        write!(
            f,
            ", kernels {}",
            if kernels.is_empty() {
                "none".into()
            } else {
                kernels.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::grub::mkimage::embedded::test_module;
    use crate::pe::testing::image;
    use crate::tree::testing::add_file_with;
    use crate::tree::Metadata;

    fn add(t: &mut Tree, path: &str, data: &[u8]) {
        add_file_with(t, path, data, Metadata::default());
    }

    /// A tree with Debian's chain: shim, MokManager and GRUB (prefix `/EFI/debian`) signed,
    /// a kernel signed or not.
    fn debian(kernel_signed: bool) -> Tree {
        let mut t = Tree::in_temp().unwrap();
        let signed = image(&[(".text", b"x")], Some(2));
        add(&mut t, DEBIAN_SHIM[0], &signed);
        add(&mut t, DEBIAN_MOK_MANAGER, &signed);
        let mods: Vec<Vec<u8>> = GRUB_NEEDS.iter().map(|m| test_module(m)).collect();
        let area = crate::disk::grub::mkimage::modules::area(8, &mods, "", "/EFI/debian");
        add(&mut t, DEBIAN_GRUB, &image(&[("mods", &area)], Some(2)));
        let kernel = image(&[(".text", b"k")], kernel_signed.then_some(2));
        add(&mut t, "boot/vmlinuz-6.1.0-1-cloud-amd64", &kernel);
        t
    }

    #[test]
    fn a_complete_debian_chain_is_found_with_its_prefix() {
        let c = Chain::find(&debian(true));
        assert!(c.complete(), "{:?}", c.missing);
        assert_eq!(c.grub_prefix.as_deref(), Some("/EFI/debian"));
        assert_eq!(c.shim.unwrap().path, "/usr/lib/shim/shimx64.efi.signed");
        assert!(c.mok_manager.is_some());
        assert_eq!(c.kernels.len(), 1);
    }

    #[test]
    fn an_unsigned_kernel_makes_the_chain_incomplete() {
        let c = Chain::find(&debian(false));
        assert_eq!(
            c.missing,
            [Lack::Unsigned("/boot/vmlinuz-6.1.0-1-cloud-amd64".into())]
        );
        assert!(!decide(Mode::Auto, true, &c).unwrap());
        let err = decide(Mode::On, true, &c).unwrap_err().to_string();
        assert!(
            err.contains("vmlinuz-6.1.0-1-cloud-amd64 is not signed"),
            "{err}"
        );
        assert!(
            err.contains("shim-signed") && err.contains("grub2-efi-x64"),
            "{err}"
        );
    }

    #[test]
    fn an_image_without_a_chain_names_the_packages() {
        let c = Chain::find(&Tree::in_temp().unwrap());
        assert_eq!(c.missing, [Lack::NoShim, Lack::NoGrub, Lack::NoKernel]);
        assert!(!c.any());
        let err = decide(Mode::On, true, &c).unwrap_err();
        assert!(matches!(err, SecureBootError::Incomplete(_)));
        assert!(err.to_string().contains("grub-efi-amd64-signed"), "{err}");
    }

    #[test]
    fn modes_with_firmwares() {
        let c = Chain::find(&debian(true));
        assert!(decide(Mode::Auto, true, &c).unwrap());
        assert!(!decide(Mode::Auto, false, &c).unwrap());
        assert!(!decide(Mode::Off, true, &c).unwrap());
        assert!(decide(Mode::On, true, &c).unwrap());
        assert!(matches!(
            decide(Mode::On, false, &c),
            Err(SecureBootError::Bios)
        ));
    }

    #[test]
    fn install_puts_shim_grub_and_the_prefix_config_on_the_esp() {
        let mut t = debian(true);
        let c = Chain::find(&t);
        install(&mut t, &c, "ABCD-0123").unwrap();
        let shim = read(&t, "boot/EFI/BOOT/BOOTX64.EFI").unwrap().unwrap();
        assert_eq!(Some(shim), read(&t, DEBIAN_SHIM[0]).unwrap());
        assert!(t.resolve_file(b"boot/EFI/BOOT/grubx64.efi").is_some());
        assert!(t.resolve_file(b"boot/EFI/BOOT/mmx64.efi").is_some());
        assert!(t.resolve_file(b"boot/EFI/BOOT/fbx64.efi").is_none());
        let cfg = read(&t, "boot/EFI/debian/grub.cfg").unwrap().unwrap();
        let cfg = String::from_utf8(cfg).unwrap();
        assert!(cfg.contains("--set=root abcd-0123\n"), "{cfg}");
        assert!(cfg.ends_with("configfile $prefix/grub.cfg\n"), "{cfg}");
    }

    #[test]
    fn a_grub_without_the_needed_modules_is_incomplete() {
        let mut t = debian(true);
        let area = crate::disk::grub::mkimage::modules::area(8, &[test_module("linux")], "", "/p");
        add(&mut t, DEBIAN_GRUB, &image(&[("mods", &area)], Some(2)));
        let c = Chain::find(&t);
        assert!(c.grub_lacks_modules.contains(&"configfile".to_string()));
        assert_eq!(c.missing, [Lack::GrubModules(format!("/{DEBIAN_GRUB}"))]);
    }

    #[test]
    fn prefix_dirs_are_esp_relative() {
        assert_eq!(prefix_dir("/EFI/debian"), "EFI/debian");
        assert_eq!(prefix_dir("(,gpt2)/EFI/fedora/"), "EFI/fedora");
        assert_eq!(prefix_dir("/"), "");
    }

    #[test]
    fn fedora_vendor_directory_is_found() {
        let mut t = Tree::in_temp().unwrap();
        let signed = image(&[(".text", b"x")], Some(2));
        add(&mut t, "boot/efi/EFI/BOOT/BOOTX64.EFI", &signed);
        add(&mut t, "boot/efi/EFI/fedora/shimx64.efi", &signed);
        let c = Chain::find(&t);
        assert_eq!(c.shim.unwrap().path, "/boot/efi/EFI/fedora/shimx64.efi");
        assert!(c.missing.contains(&Lack::NoGrub));
    }
}
