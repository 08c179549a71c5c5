//! vSphere outputs: streamOptimized VMDK, OVF descriptor, OVA archive, and the atomic
//! (temp + rename) writing every output format goes through.
//!
//! [`write_outputs`] turns the raw disk into the chosen `--format` (and
//! [`write_outputs_following`] does so while the disk is still being written, see
//! [`crate::finality`]); `package.rs` writes the VMDK and the OVF package around it:
//! - `ova` (default): one ustar file, `NAME.ovf`, `NAME.mf`, `NAME-disk1.vmdk`;
//! - `ovf`: a directory with the same three files;
//! - `vmdk`: the streamOptimized disk alone;
//! - `raw`: a sparse copy of the raw disk.
//!
//! `NAME` is the output path's file stem. Nothing appears at the path until it is complete.

pub(crate) mod atomic;
pub(crate) mod guest_os;
pub mod hw;
pub(crate) mod ova;
pub mod ovf;
mod package;
pub mod properties;
pub mod vmdk;

use crate::finality::{Finality, Ready};
use atomic::AtomicFile;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vmdk::{VmdkError, VmdkOptions, VmdkSummary};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An OVA: a tar of the OVF descriptor, its manifest and the VMDK.
    #[default]
    Ova,
    /// A directory with the `.ovf`, `.mf` and the VMDK.
    Ovf,
    /// A streamOptimized VMDK alone.
    Vmdk,
    /// The raw disk image.
    Raw,
}

impl Format {
    /// Its `--format` name, also the output file's extension.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Ova => "ova",
            Format::Ovf => "ovf",
            Format::Vmdk => "vmdk",
            Format::Raw => "raw",
        }
    }

    /// Whether the output has an OVF descriptor (`ova`, `ovf`).
    pub(crate) fn has_descriptor(self) -> bool {
        matches!(self, Format::Ova | Format::Ovf)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ova" => Ok(Format::Ova),
            "ovf" => Ok(Format::Ovf),
            "vmdk" => Ok(Format::Vmdk),
            "raw" => Ok(Format::Raw),
            _ => Err(format!(
                "unknown output format {s:?}: use ova, ovf, vmdk or raw"
            )),
        }
    }
}

/// Everything the output stage needs besides the raw disk.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// The VM described by the OVF (name, CPUs, memory, controller, firmware, provenance...).
    pub vm: ovf::OvfOptions,
    /// VMDK settings: `seed` (manifest digest) and `compression_level` matter; `file_name` and
    /// `adapter_type` are set here from the output name and `vm.controller`.
    pub vmdk: VmdkOptions,
    /// The image's `/etc/os-release` text, for the guest OS type.
    pub os_release: Option<String>,
    /// Modification time of the OVA members (seconds since the epoch): `SOURCE_DATE_EPOCH`
    /// or the image's creation time, never the wall clock.
    pub mtime: u64,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            vm: ovf::OvfOptions::default(),
            vmdk: VmdkOptions::default(),
            os_release: None,
            mtime: crate::ids::source_date_epoch()
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(0),
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct OutputSummary {
    pub(crate) path: PathBuf,
    /// The format written.
    pub format: Format,
    /// The VMDK's summary (not for `raw`).
    pub vmdk: Option<VmdkSummary>,
    /// Size of the output file (for `ovf`, of the directory's files together).
    pub bytes: u64,
}

/// Why the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The VMDK writer failed.
    #[error(transparent)]
    Vmdk(#[from] VmdkError),
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An output path without a usable file name.
    #[error("output path {0:?} has no usable file name: give -o a path like out/app.ova")]
    Path(PathBuf),
    /// The OVA's tar could not be written.
    #[error(transparent)]
    Tar(#[from] ova::TarError),
    /// The disk writer gave up before the disk was whole: nothing was written.
    #[error("the disk image was not finished, so no output was written")]
    Unfinished,
    /// The output path cannot be written or replaced.
    #[error("output {path}: {why}")]
    Target {
        /// The output path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Checks, before any work, that `format` can be written at `path`: a usable file name, an
/// existing parent directory that can be written, no directory where a file goes (or the reverse), and for `ovf`
/// an existing directory only if it is an earlier OVF output.
pub(crate) fn check_target(path: &Path, format: Format) -> Result<(), OutputError> {
    let bad = |why: String| OutputError::Target {
        path: path.to_path_buf(),
        why,
    };
    match format {
        Format::Ova | Format::Ovf => {
            base_name(path)?;
        }
        Format::Vmdk | Format::Raw => {
            if path.file_name().is_none() {
                return Err(OutputError::Path(path.to_path_buf()));
            }
        }
    }
    let parent = dir_of(path);
    if !parent.is_dir() {
        return Err(bad(format!(
            "the directory {} does not exist: create it or give another -o",
            parent.display()
        )));
    }
    atomic::check_writable_dir(parent).map_err(|e| {
        bad(format!(
            "the directory {} cannot be written ({e}): give -o a writable directory",
            parent.display()
        ))
    })?;
    let meta = std::fs::metadata(path).ok();
    match format {
        Format::Ovf => match meta {
            Some(m) if !m.is_dir() => Err(bad(
                "exists and is not a directory, but --format ovf writes a directory: give another -o"
                    .into(),
            )),
            Some(_) => atomic::check_replaceable_dir(path).map_err(|e| bad(e.to_string())),
            None => Ok(()),
        },
        _ => match meta {
            Some(m) if m.is_dir() => Err(bad(format!(
                "is a directory; give a file path such as {}",
                path.join(format!("vm.{}", format.name())).display()
            ))),
            _ => Ok(()),
        },
    }
}

use crate::error::io_err;

/// The directory an output path is in (`.` for a bare name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `e`, or when the output's directory was removed while d2v wrote, an error that says so.
fn directory_gone(e: OutputError, path: &Path) -> OutputError {
    let not_found = crate::error::causes(&e).any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    let dir = dir_of(path);
    if not_found && !dir.exists() {
        OutputError::Target {
            path: path.to_path_buf(),
            why: format!(
                "the directory {} no longer exists (removed while d2v was writing); nothing was \
                 written: create it and run d2v again, or give another -o",
                dir.display()
            ),
        }
    } else {
        e
    }
}

impl<P: AsRef<Path>> From<crate::error::IoFailure<P>> for OutputError {
    fn from(f: crate::error::IoFailure<P>) -> OutputError {
        OutputError::Io {
            path: f.context.as_ref().to_path_buf(),
            source: f.source,
        }
    }
}

/// The base name for files inside OVF/OVA: the path's stem, limited to portable characters.
fn base_name(path: &Path) -> Result<String, OutputError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let base: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if base.is_empty() || base.starts_with('.') {
        return Err(OutputError::Path(path.to_path_buf()));
    }
    Ok(base)
}

/// Write the finished disk `raw` as `format` at `path`, atomically.
pub fn write_outputs(
    raw: &File,
    format: Format,
    path: &Path,
    opts: &OutputOptions,
) -> Result<OutputSummary, OutputError> {
    let len = raw.metadata().map_err(io_err(path))?.len();
    write_outputs_following(raw, len, &Finality::complete(), format, path, opts)
}

/// [`write_outputs`] of the `len` bytes of a disk still being written: the VMDK's grains are
/// compressed as `finality` says they are final, and the files go out once the disk is whole.
/// [`OutputError::Unfinished`] if the disk writer gives up.
pub fn write_outputs_following(
    raw: &File,
    len: u64,
    finality: &Finality,
    format: Format,
    path: &Path,
    opts: &OutputOptions,
) -> Result<OutputSummary, OutputError> {
    // A limit on the writer's lead (set by the VMDK outputs) ends with this function.
    let _reading = finality.reading();
    let disk = package::Disk { raw, len, finality };
    let written = match format {
        Format::Raw => write_raw(disk, path).map(|b| (b, None)),
        Format::Vmdk => package::write_vmdk(disk, path, opts).map(|s| (s.file_size, Some(s))),
        Format::Ovf => package::write_ovf_dir(disk, path, opts),
        Format::Ova => package::write_ova(disk, path, opts),
    };
    let (bytes, vmdk) = written.map_err(|e| directory_gone(e, path))?;
    Ok(OutputSummary {
        path: path.to_path_buf(),
        format,
        vmdk,
        bytes,
    })
}

/// The raw disk once whole, holes kept; its size.
fn write_raw(disk: package::Disk, path: &Path) -> Result<u64, OutputError> {
    if disk.finality.wait_beyond(u64::MAX) == Ready::Aborted {
        return Err(OutputError::Unfinished);
    }
    let e = io_err(path);
    let out = AtomicFile::create(path).map_err(&e)?;
    let bytes = sparse_copy(disk.raw, out.file()).map_err(&e)?;
    out.commit().map_err(&e)?;
    Ok(bytes)
}

/// Copy `src` to `dst` keeping holes: only data extents are copied. Returns the length.
fn sparse_copy(src: &File, dst: &File) -> std::io::Result<u64> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in crate::sparse::data_extents(src, 0, len)? {
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], off)?;
            if buf[..n].iter().any(|&b| b != 0) {
                dst.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
    }
    Ok(len)
}
