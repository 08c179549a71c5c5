//! vSphere outputs: streamOptimized VMDK, OVF descriptor, OVA archive, and the atomic
//! (temp + rename) writing every output format goes through.
//!
//! [`write_outputs`] turns the finished raw disk into the chosen `--format`:
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
pub mod properties;
pub mod vmdk;

use atomic::{AtomicDir, AtomicFile};
use ova::{HashingWriter, TarWriter};
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
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

/// The VMDK options for the disk `file_name` of the output at `path`; its compressed grains
/// wait in a scratch file beside the output (where the user chose to have the space).
fn vmdk_opts(opts: &OutputOptions, file_name: String, path: &Path) -> VmdkOptions {
    let mut v = opts.vmdk.clone();
    v.file_name = file_name;
    v.scratch_dir = Some(dir_of(path).to_path_buf());
    v.adapter_type = "lsilogic".into(); // VMware writes lsilogic for PVSCSI disks too
    v
}

/// Write `raw` as `format` at `path`, atomically.
pub fn write_outputs(
    raw: &File,
    format: Format,
    path: &Path,
    opts: &OutputOptions,
) -> Result<OutputSummary, OutputError> {
    let written = match format {
        Format::Raw => write_raw(raw, path).map(|b| (b, None)),
        Format::Vmdk => write_vmdk(raw, path, opts).map(|s| (s.file_size, Some(s))),
        Format::Ovf => write_ovf_dir(raw, path, opts),
        Format::Ova => write_ova(raw, path, opts),
    };
    let (bytes, vmdk) = written.map_err(|e| directory_gone(e, path))?;
    Ok(OutputSummary {
        path: path.to_path_buf(),
        format,
        vmdk,
        bytes,
    })
}

/// The raw disk, holes kept; its size.
fn write_raw(raw: &File, path: &Path) -> Result<u64, OutputError> {
    let e = io_err(path);
    let out = AtomicFile::create(path).map_err(&e)?;
    let bytes = sparse_copy(raw, out.file()).map_err(&e)?;
    out.commit().map_err(&e)?;
    Ok(bytes)
}

/// The disk alone as a streamOptimized VMDK.
fn write_vmdk(raw: &File, path: &Path, opts: &OutputOptions) -> Result<VmdkSummary, OutputError> {
    let e = io_err(path);
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or(OutputError::Path(path.into()))?;
    let mut out = AtomicFile::create(path).map_err(&e)?;
    let mut w = BufWriter::with_capacity(1 << 20, out.file_mut());
    let s = vmdk::write_stream_optimized(raw, &mut w, &vmdk_opts(opts, name.to_string(), path))?;
    w.flush().map_err(&e)?;
    drop(w);
    out.commit().map_err(&e)?;
    Ok(s)
}

/// A directory with the `.ovf`, the `.mf` and the VMDK; the three files' size.
fn write_ovf_dir(
    raw: &File,
    path: &Path,
    opts: &OutputOptions,
) -> Result<(u64, Option<VmdkSummary>), OutputError> {
    let e = io_err(path);
    let base = base_name(path)?;
    let dir = AtomicDir::create(path).map_err(&e)?;
    let disk_name = disk_name(&base);
    let f = File::create(dir.path().join(&disk_name)).map_err(&e)?;
    let p = package(raw, f, &base, disk_name, opts, path)?;
    std::fs::write(dir.path().join(&p.ovf_name), &p.ovf).map_err(&e)?;
    std::fs::write(dir.path().join(format!("{base}.mf")), &p.mf).map_err(&e)?;
    dir.commit().map_err(&e)?;
    let bytes = p.s.file_size + p.ovf.len() as u64 + p.mf.len() as u64;
    Ok((bytes, Some(p.s)))
}

/// The OVA: a ustar of the `.ovf`, the `.mf` and the VMDK, in that order; its size.
fn write_ova(
    raw: &File,
    path: &Path,
    opts: &OutputOptions,
) -> Result<(u64, Option<VmdkSummary>), OutputError> {
    let e = io_err(path);
    let base = base_name(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The disk goes to an unnamed scratch file first: the .ovf before it needs its size.
    let mut scratch = tempfile::tempfile_in(dir).map_err(&e)?;
    let disk_name = disk_name(&base);
    let Package {
        s,
        ovf_name,
        ovf,
        mf,
    } = package(raw, &scratch, &base, disk_name.clone(), opts, path)?;

    let mut out = AtomicFile::create(path).map_err(&e)?;
    let mut tar = TarWriter::new(
        BufWriter::with_capacity(1 << 20, out.file_mut()),
        opts.mtime,
    );
    tar.append(&ovf_name, ovf.len() as u64, &mut ovf.as_bytes())
        .map_err(&e)?;
    tar.append(&format!("{base}.mf"), mf.len() as u64, &mut mf.as_bytes())
        .map_err(&e)?;
    crate::interrupt::pause_point("ova");
    scratch.rewind().map_err(&e)?;
    tar.append(&disk_name, s.file_size, &mut scratch)
        .map_err(&e)?;
    tar.finish().map_err(&e)?;
    let bytes = out.file().metadata().map_err(&e)?.len();
    out.commit().map_err(&e)?;
    Ok((bytes, Some(s)))
}

fn disk_name(base: &str) -> String {
    format!("{base}-disk1.vmdk")
}

/// An OVF package's VMDK (written to `disk`) and the descriptor and manifest naming it.
struct Package {
    s: VmdkSummary,
    ovf_name: String,
    ovf: String,
    mf: String,
}

/// Writes `raw` as the streamOptimized VMDK `disk_name` to `disk`, hashing it on the way,
/// then makes the `.ovf` descriptor and the `.mf` manifest of the package `base` (its I/O
/// errors name the output `path`).
fn package(
    raw: &File,
    disk: impl Write,
    base: &str,
    disk_name: String,
    opts: &OutputOptions,
    path: &Path,
) -> Result<Package, OutputError> {
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, disk));
    let s = vmdk::write_stream_optimized(raw, &mut w, &vmdk_opts(opts, disk_name.clone(), path))?;
    let (disk_digest, bw) = w.finish();
    bw.into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_err(path))?;
    let ovf = descriptor(opts, &disk_name, &s);
    let ovf_name = format!("{base}.ovf");
    let mf = ova::manifest(&[
        (&ovf_name, &ova::sha256(ovf.as_bytes())),
        (&disk_name, &disk_digest),
    ]);
    Ok(Package {
        s,
        ovf_name,
        ovf,
        mf,
    })
}

fn descriptor(opts: &OutputOptions, disk_name: &str, s: &VmdkSummary) -> String {
    let disk = ovf::DiskFile {
        href: disk_name.to_string(),
        file_size: s.file_size,
        capacity: s.capacity,
        populated_size: s.populated_size,
    };
    ovf::descriptor(&opts.vm, opts.os_release.as_deref(), &disk)
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
