//! d2v's own grub-mkimage: GRUB's `kernel.img` and the modules it needs (resolved through
//! `moddep.lst`) assembled with an embedded config and prefix into the image a firmware
//! starts — `core.img` for BIOS ([`pc`]), `BOOTX64.EFI` for UEFI ([`efi`]). Built from a
//! platform directory such as `/usr/lib/grub/i386-pc`; the output matches GRUB 2.06's
//! grub-mkimage (tests compare them).

pub mod efi;
pub(crate) mod elf;
pub mod embedded;
mod error;
pub(crate) mod modules;
pub mod pc;

use std::path::Path;

pub use error::MkimageError;

use super::Platform;

/// A GRUB platform directory (`/usr/lib/grub/i386-pc`, say) to build from: on the host, or
/// inside the image being converted.
pub trait PlatformDir {
    /// The directory as messages name it.
    fn path(&self) -> &Path;
    /// The contents of its file `name`.
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>>;
    /// Whether it has a regular file `name`.
    fn has(&self, name: &str) -> bool;
}

/// A directory on the host: `Path`, `PathBuf` and the like.
impl<P: AsRef<Path> + ?Sized> PlatformDir for P {
    fn path(&self) -> &Path {
        self.as_ref()
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.as_ref().join(name))
    }

    fn has(&self, name: &str) -> bool {
        self.as_ref().join(name).is_file()
    }
}

fn read(dir: &(impl PlatformDir + ?Sized), name: &str) -> Result<Vec<u8>, MkimageError> {
    dir.read(name).map_err(|source| MkimageError::Read {
        path: dir.path().join(name),
        source,
    })
}

/// The image for `platform` from the module directory `dir`, with `modules` (and what they
/// depend on) built in, `config` as the embedded early config and `prefix` as `$prefix`.
pub fn build(
    dir: &(impl PlatformDir + ?Sized),
    platform: Platform,
    modules: &[&str],
    config: &str,
    prefix: &str,
) -> Result<Vec<u8>, MkimageError> {
    let moddep = String::from_utf8_lossy(&read(dir, "moddep.lst")?).into_owned();
    let deps = modules::parse_moddep(&moddep).map_err(|e| MkimageError::InDir {
        dir: dir.path().into(),
        source: Box::new(e),
    })?;
    let objects = modules::resolve(modules, &deps)
        .iter()
        .map(|m| read(dir, &format!("{m}.mod")))
        .collect::<Result<Vec<_>, _>>()?;
    let kernel = read(dir, "kernel.img")?;
    let bad = |e| MkimageError::Kernel {
        dir: dir.path().into(),
        source: Box::new(e),
    };
    match platform {
        Platform::I386Pc => {
            let k = pc::load_kernel(&kernel).map_err(bad)?;
            let area = modules::area(4, &objects, config, prefix);
            pc::core_img(
                &k,
                &area,
                &read(dir, "diskboot.img")?,
                &read(dir, "lzma_decompress.img")?,
            )
            .map_err(|e| MkimageError::CoreImg {
                dir: dir.path().into(),
                source: Box::new(e),
            })
        }
        Platform::X86_64Efi => {
            let k = efi::load_kernel(&kernel).map_err(bad)?;
            let area = modules::area(8, &objects, config, prefix);
            Ok(efi::pe_image(&k, &area))
        }
    }
}
