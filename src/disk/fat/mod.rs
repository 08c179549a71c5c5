//! The FAT32 EFI System Partition, filled from the staging tree's `/boot` (the ESP is the
//! guest's `/boot`, as in the seed article).
//!
//! FAT has no symlinks, owners or modes: a symlink is resolved inside the image root and its
//! target copied, or dropped with a warning; names FAT cannot hold are dropped with a warning.
//! Output is deterministic: the volume serial comes from the layout (derived from the image
//! digest) and time stamps from the tree's mtimes, clamped to `SOURCE_DATE_EPOCH` when set: a
//! file's created/modified/accessed are its mtime, a directory's created (and its `.` entry)
//! its own mtime and its modified the mtime of the last entry copied into it (as writing the
//! entry would set it on any file system). No wall clock, no FAT epoch.

mod fixup;
mod window;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

pub(crate) use window::Window;

use super::Result;
use crate::tree::{show, InodeId, Kind, Tree};

/// The ESP could not be written: the filesystem as a whole (`what` was being done), or one
/// entry copied from `/boot`.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// The FAT32 volume as a whole failed (`what` was being done).
    #[error("{what}: {source}")]
    Volume {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// One entry copied from `/boot` failed.
    #[error("/{path}: {source}{}", too_small_hint(.source, *.esp_mib))]
    Entry {
        /// Its path below `/boot`.
        path: String,
        /// The error.
        source: io::Error,
        /// The partition's size, for the hint.
        esp_mib: u64,
    },
}

/// An OS error comes from the disk image file (its filesystem is full, say); the FAT's own
/// errors (out of clusters) mean `/boot` does not fit the ESP.
fn too_small_hint(e: &io::Error, esp_mib: u64) -> String {
    if e.raw_os_error().is_some() {
        String::new()
    } else {
        format!(" (the ESP is {esp_mib} MiB; if /boot does not fit, raise --boot-size)")
    }
}

/// How to write the FAT32 EFI System Partition.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Volume serial (`XXXX-XXXX` in fstab).
    pub volume_id: u32,
    /// Volume label, up to 11 ASCII characters.
    pub label: String,
    /// The tree directory copied to the root of the filesystem (normally `boot`).
    pub source: Vec<u8>,
}

/// What was written, and what could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FatSummary {
    /// Regular files written.
    pub files: u64,
    pub(crate) dirs: u64,
    pub(crate) bytes: u64,
    pub(crate) warnings: Vec<String>,
}

/// Deepest directory nesting copied (guards against symlinked directory loops).
const MAX_DEPTH: usize = 32;

thread_local! {
    /// The mtime (seconds) of the entry being created, for [`EntryTime`].
    static ENTRY_SECS: Cell<i64> = const { Cell::new(0) };
}

/// `fatfs` stamps each new entry with its time provider's "now": this provider answers the
/// mtime of the tree entry being copied (set in [`ENTRY_SECS`] just before), never a clock.
#[derive(Debug)]
struct EntryTime;

impl fatfs::TimeProvider for EntryTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        dos_time(ENTRY_SECS.with(Cell::get))
    }
}

static ENTRY_TIME: EntryTime = EntryTime;

/// Formats `[offset, offset+size)` of `out` as FAT32 and copies `opts.source` into it.
pub fn write(
    tree: &Tree,
    out: &File,
    offset: u64,
    size: u64,
    opts: &FatOptions,
) -> Result<FatSummary> {
    let fat_err = |what: &str, source: io::Error| FatError::Volume {
        what: what.into(),
        source,
    };
    let mut label = [b' '; 11];
    for (d, s) in label
        .iter_mut()
        .zip(opts.label.to_ascii_uppercase().bytes())
    {
        *d = s;
    }
    let format = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .volume_id(opts.volume_id)
        .volume_label(label);
    let mut disk = Window::new(out, offset, size);
    fatfs::format_volume(&mut disk, format)
        .map_err(|e| fat_err(&format!("formatting a {} MiB partition", size >> 20), e))?;
    let fs = FileSystem::new(&mut disk, FsOptions::new().time_provider(&ENTRY_TIME))
        .map_err(|e| fat_err("opening the new filesystem", e))?;
    let mut summary = FatSummary::default();
    match tree.resolve(&opts.source, true) {
        Some(id) if tree.inode(id).kind.is_dir() => {
            let mut cx = Copy {
                tree,
                summary: &mut summary,
                ancestors: vec![id],
                top: opts.source.clone(),
                size,
            };
            cx.dir(id, &opts.source, &fs.root_dir())?;
        }
        _ => summary.warnings.push(format!(
            "/{} is not a directory in the image: the ESP is empty",
            show(&opts.source)
        )),
    }
    fs.unmount().map_err(|e| fat_err("writing the FAT", e))?;
    fixup::repair(&mut disk, (offset / super::SECTOR) as u32)
        .map_err(|e| fat_err("repairing directories", e))?;
    disk.flush()
        .map_err(|e| fat_err("writing the partition", e))?;
    Ok(summary)
}

struct Copy<'t, 's> {
    tree: &'t Tree,
    summary: &'s mut FatSummary,
    /// Directories on the current path (loop detection for symlinked directories).
    ancestors: Vec<InodeId>,
    top: Vec<u8>,
    /// Partition size, for error messages.
    size: u64,
}

impl Copy<'_, '_> {
    /// The FAT name for `name` (in the directory at `path`), or `None` (with a warning) for an
    /// entry FAT cannot or should not hold: `/boot/boot`, a name FAT cannot store, a name that
    /// differs from one in `taken` only in case.
    fn fat_name_for(
        &mut self,
        path: &[u8],
        name: &[u8],
        child_path: &[u8],
        taken: &mut BTreeSet<String>,
    ) -> Option<String> {
        if path == self.top.as_slice() && name == b"boot" {
            self.warn(
                child_path,
                "skipped (a /boot/boot link is meaningless when /boot is its own filesystem)",
            );
            return None;
        }
        let Some(fat_name) = fat_name(name) else {
            self.warn(child_path, "name cannot be stored on FAT; dropped");
            return None;
        };
        if !taken.insert(fat_name.to_lowercase()) {
            self.warn(
                child_path,
                "differs only in case from another name; FAT is case-insensitive; dropped",
            );
            return None;
        }
        Some(fat_name)
    }

    /// What to copy for `child`: itself, or for a symlink (FAT has none) the file or
    /// directory it resolves to inside the image; `None` (with a warning) when it does not.
    fn follow(&mut self, child: InodeId, child_path: &[u8]) -> Option<InodeId> {
        let Kind::Symlink(to) = &self.tree.inode(child).kind else {
            return Some(child);
        };
        match self.tree.resolve(child_path, true) {
            Some(t) if matches!(self.tree.inode(t).kind, Kind::Dir(_) | Kind::File(_)) => {
                self.summary.warnings.push(format!(
                    "/{}: symlink to {:?}; FAT has no symlinks, copied its target",
                    show(child_path),
                    show(to)
                ));
                Some(t)
            }
            _ => {
                let why = format!(
                    "symlink to {:?} does not resolve inside the image; dropped",
                    show(to)
                );
                self.warn(child_path, &why);
                None
            }
        }
    }

    fn warn(&mut self, path: &[u8], why: &str) {
        self.summary
            .warnings
            .push(format!("/{}: {why}", show(path)));
    }

    fn dir<T: fatfs::ReadWriteSeek>(
        &mut self,
        id: InodeId,
        path: &[u8],
        fat: &fatfs::Dir<T>,
    ) -> Result<()> {
        let Kind::Dir(d) = &self.tree.inode(id).kind else {
            return Ok(());
        };
        let mut taken = BTreeSet::new();
        for (name, &child) in &d.entries {
            let child_path = [path, b"/", name].concat();
            let Some(fat_name) = self.fat_name_for(path, name, &child_path, &mut taken) else {
                continue;
            };
            let Some(target) = self.follow(child, &child_path) else {
                continue;
            };
            let esp_mib = self.size >> 20;
            let io = |source: io::Error| FatError::Entry {
                path: show(&child_path),
                source,
                esp_mib,
            };
            let inode = self.tree.inode(target);
            ENTRY_SECS.with(|s| s.set(inode.meta.mtime.sec));
            match &inode.kind {
                Kind::Dir(_) => {
                    if self.ancestors.contains(&target) || self.ancestors.len() >= MAX_DEPTH {
                        self.warn(&child_path, "directory loop or nesting too deep; dropped");
                        continue;
                    }
                    let sub = fat.create_dir(&fat_name).map_err(io)?;
                    self.summary.dirs += 1;
                    self.ancestors.push(target);
                    self.dir(target, &child_path, &sub)?;
                    self.ancestors.pop();
                }
                Kind::File(data) => {
                    let mut f = fat.create_file(&fat_name).map_err(io)?;
                    let mut reader = self.tree.spill().reader(data);
                    io::copy(&mut reader, &mut f).map_err(io)?;
                    #[allow(deprecated)]
                    f.set_modified(dos_time(inode.meta.mtime.sec));
                    f.flush().map_err(io)?;
                    self.summary.files += 1;
                    self.summary.bytes += data.len;
                }
                _ => self.warn(&child_path, "special file cannot be stored on FAT; dropped"),
            }
        }
        Ok(())
    }
}

/// The name as FAT long-name text, or `None` when FAT cannot hold it.
pub(crate) fn fat_name(name: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(name).ok()?;
    let bad = |c: char| c < ' ' || "\"*/:<>?\\|".contains(c);
    if s.is_empty()
        || s.encode_utf16().count() > 255
        || s.chars().any(bad)
        || s.ends_with(['.', ' '])
    {
        return None;
    }
    Some(s.to_string())
}

/// A Unix time as a FAT time stamp (UTC), clamped to `SOURCE_DATE_EPOCH` when set and to
/// FAT's range 1980-01-01..2107-12-31.
pub(crate) fn dos_time(mut secs: i64) -> fatfs::DateTime {
    if let Some(sde) = crate::ids::source_date_epoch() {
        secs = secs.min(sde);
    }
    let secs = secs.clamp(315_532_800, 4_354_819_199);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::ids::civil_from_days(days);
    fatfs::DateTime {
        date: fatfs::Date {
            year: y as u16,
            month: m as u16,
            day: d as u16,
        },
        time: fatfs::Time {
            hour: (rem / 3600) as u16,
            min: (rem / 60 % 60) as u16,
            sec: (rem % 60) as u16,
            millis: 0,
        },
    }
}

#[cfg(test)]
mod tests;
