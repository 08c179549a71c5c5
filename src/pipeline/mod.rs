//! The commands, joining the stages: source → staging tree → guest fixes → disk → output.
//!
//! `flatten.rs`: the source resolved and its layers applied (every command starts there);
//! `build/`: `pull`/`build` (the whole pipeline); `show.rs`: `inspect` and `export`;
//! `debug.rs`: the hidden `debug` commands (single stages).

mod appvm;
mod arch;
mod build;
mod debug;
mod flatten;
mod log;
mod show;

pub(crate) use log::{Log, Stage};

use build::build;
pub(crate) use flatten::{flatten, flatten_with, Spilled};
use show::{export, inspect};

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::{Cli, Command, SourceArgs};
use crate::disk::{ext4, DiskError};
use crate::output;
use crate::source::{self, Platform, SourceOptions};
use crate::{guest, layers};

/// Why a command failed; `main` prints it and its causes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The image could not be read from its source.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A layer could not be applied to the staging tree.
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
    /// A layer's tar holds a PAX header or GNU long name larger than d2v reads.
    #[error(transparent)]
    LayerHeader(#[from] layers::SpecialTooLarge),
    /// Reading a layer's stream to its end (where its `diff_id` is checked) failed.
    #[error("layer {layer}: {source}")]
    LayerStream {
        /// The layer's digest.
        layer: String,
        /// The error.
        source: io::Error,
    },
    /// The image has no kernel or initramfs in `/boot` to boot.
    #[error("{0}")]
    NoKernel(String),
    /// `--kernel-from` named an image whose kernel d2v cannot use.
    #[error("--kernel-from {reference}: {source}")]
    KernelSource {
        /// The kernel image.
        reference: String,
        /// Why (boxed: the enum stays small).
        source: Box<crate::kernel::KernelError>,
    },
    /// Grafting the kernel, resolving its modules or writing d2v's initramfs failed.
    #[error(transparent)]
    Kernel(Box<crate::kernel::KernelError>),
    /// The image's config cannot be run by d2v's init (no command, unknown user, ...).
    #[error(transparent)]
    App(#[from] crate::guest::app::AppError),
    /// An image for another machine than the VM's.
    #[error(
        "image {reference} is not for x86-64 ({found}): d2v builds x86-64 VMs; pull its \
         linux/amd64 variant (--platform linux/amd64) or build the image for amd64"
    )]
    ForeignArchitecture {
        /// The image.
        reference: String,
        /// What says so: the config's `architecture`, the init's ELF machine, the kernel's.
        found: String,
    },
    /// The guest fixes (fstab, hostname, machine-id, ...) failed.
    #[error("guest fixes: {0}")]
    Guest(#[from] guest::GuestError),
    /// The ext4 root filesystem could not be planned or written.
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    /// The disk (GPT, ESP, GRUB, root) could not be written.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// `--secure-boot on` cannot be honoured.
    #[error(transparent)]
    SecureBoot(#[from] crate::disk::secureboot::SecureBootError),
    /// The VMDK, OVF or OVA could not be written.
    #[error(transparent)]
    Output(#[from] output::OutputError),
    /// A deploy-time property (`--property`, its label or description) is malformed.
    #[error(transparent)]
    Property(#[from] output::properties::PropertyError),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The staging tree's spill file could not be made.
    #[error("staging tree spill file: {0}")]
    Spill(#[source] crate::tree::TreeError),
    /// The error in `source` came from a full filesystem (ENOSPC, EDQUOT).
    #[error("{what} in {}: the filesystem is full; {hint}", dir.display())]
    NoSpace {
        /// What d2v keeps there.
        what: &'static str,
        /// The directory on the full filesystem.
        dir: std::path::PathBuf,
        /// What to do about it.
        hint: &'static str,
        /// The error as it happened.
        source: Box<Error>,
    },
}

impl Error {
    /// Whether a full filesystem (ENOSPC, EDQUOT) is behind this error: an `io::Error` of that
    /// kind among its causes.
    pub(crate) fn is_storage_full(&self) -> bool {
        crate::error::causes(self).any(|e| {
            e.downcast_ref::<io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                )
            })
        })
    }

    /// This error, or when the filesystem of `dir` is full, [`Error::NoSpace`] saying what
    /// d2v keeps there and what to do.
    pub(crate) fn or_no_space(
        self,
        what: &'static str,
        dir: impl Into<std::path::PathBuf>,
        hint: &'static str,
    ) -> Error {
        if self.is_storage_full() {
            Error::NoSpace {
                what,
                dir: dir.into(),
                hint,
                source: Box::new(self),
            }
        } else {
            self
        }
    }
}

/// GRUB images assembled outside the disk stage (`d2v debug grub`) fail as they do inside it.
impl From<crate::kernel::KernelError> for Error {
    fn from(e: crate::kernel::KernelError) -> Error {
        Error::Kernel(Box::new(e))
    }
}

impl From<crate::disk::grub::mkimage::MkimageError> for Error {
    fn from(e: crate::disk::grub::mkimage::MkimageError) -> Error {
        Error::Disk(e.into())
    }
}

pub(crate) use crate::error::io_err;

impl<C: Into<String>> From<crate::error::IoFailure<C>> for Error {
    fn from(f: crate::error::IoFailure<C>) -> Error {
        Error::Io {
            what: f.context.into(),
            source: f.source,
        }
    }
}

/// Runs the command `cli` names: `pull`, `build`, `inspect`, `export`, `completion` or a
/// `debug` stage.
pub fn run(cli: &Cli) -> Result<(), Error> {
    let log = Log::new(cli.json, cli.verbose);
    match &cli.command {
        Command::Pull(args) | Command::Build(args) => build(args, cli.json, &log),
        Command::Inspect {
            source,
            kernel_from,
            src,
        } => inspect(source, kernel_from.as_deref(), src, cli.json, &log),
        Command::Export {
            source,
            output,
            src,
        } => export(source, output, src, &log),
        Command::Debug(cmd) => debug::run(cmd, &log),
        Command::Completion { shell } => completion(*shell),
    }?;
    log.summary();
    Ok(())
}

/// `d2v completion SHELL`: the shell's completion script for d2v's command line.
fn completion(shell: clap_complete::Shell) -> Result<(), Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "d2v", &mut script);
    print_stdout(&String::from_utf8_lossy(&script))
}

/// Writes results to stdout; a closed pipe or full disk is an error, not a panic.
pub(crate) fn print_stdout(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io_err("writing to stdout"))?;
    Ok(())
}

pub(crate) fn source_options(src: &SourceArgs, json: bool) -> Result<SourceOptions, Error> {
    if let Some(d) = &src.cert_dir {
        if !d.is_dir() {
            return Err(Error::Usage(format!(
                "--cert-dir {}: not a directory; give a directory holding the registry's CA \
                 certificate(s) as *.crt files",
                d.display()
            )));
        }
    }
    let platform: Platform = src
        .platform
        .parse()
        .map_err(|e: source::SourceError| Error::Usage(e.to_string()))?;
    Ok(SourceOptions {
        platform,
        cache_dir: src.cache_dir.clone(),
        creds: src.creds.clone(),
        authfile: src.authfile.clone(),
        cert_dir: src.cert_dir.clone(),
        tls_verify: src.tls_verify,
        registry_timeout: std::time::Duration::from_secs(src.registry_timeout),
        progress: !json,
        proxy: source::proxy::ProxyConfig::from_env(),
        registries: source::registries::RegistriesConf::load(src.registries_conf.as_deref())?,
        limits: source::Limits {
            max_expansion: src.max_expansion,
            max_image_size: src.max_image_size,
        },
        ..SourceOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::fat::FatError;
    use crate::disk::grub::GrubError;

    fn full(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn a_full_disk_is_found_by_the_io_error_among_the_causes() {
        let fat = DiskError::Fat(FatError::Entry {
            path: "boot/vmlinuz".into(),
            source: full(libc::ENOSPC),
        });
        let ext4 = DiskError::Root(ext4::Ext4Error::Io {
            what: "writing the ext4 image".into(),
            source: full(libc::EDQUOT),
        });
        let vmdk = output::OutputError::Vmdk(output::vmdk::VmdkError::Write(full(libc::ENOSPC)));
        for e in [Error::from(fat), Error::from(ext4), Error::from(vmdk)] {
            assert!(e.is_storage_full(), "{e}");
            let shown = e
                .or_no_space("the disk image", "/out", "use another -o")
                .to_string();
            assert!(
                shown.contains("/out: the filesystem is full; use another -o"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_message_that_only_reads_like_a_full_disk_is_not_one() {
        for e in [
            Error::Usage(format!("quoted: (os error {})", libc::ENOSPC)),
            Error::from(DiskError::Grub(GrubError::NoKernel)),
            Error::from(DiskError::Io(io::Error::other(
                "No space left (os error 28)",
            ))),
        ] {
            assert!(!e.is_storage_full(), "{e}");
        }
        // Another OS error of the disk file is not a full disk either.
        assert!(!Error::from(DiskError::Io(full(libc::EIO))).is_storage_full());
    }

    #[test]
    fn no_kernel_names_the_packages() {
        let e = Error::from(DiskError::Grub(GrubError::NoKernel)).to_string();
        assert!(
            e.starts_with("GRUB: the image has no kernel in /boot")
                && e.contains("linux-image-cloud-amd64")
                && e.contains("linux-virt"),
            "{e}"
        );
    }
}
