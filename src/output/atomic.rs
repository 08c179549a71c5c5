//! All-or-nothing outputs: a file is written as an unnamed `O_TMPFILE` inode in the target's
//! directory and only gets a name on [`AtomicFile::commit`] (link to a temporary name, then
//! rename over the target), so a killed process leaves nothing behind. Where the filesystem
//! lacks `O_TMPFILE`, a hidden temporary name is used and removed on drop. Directories (the
//! `ovf` format) are built under a hidden temporary name and renamed on commit. Hidden names
//! are [`Temp`]s, so an interrupted d2v removes them (`crate::interrupt`); those of SIGKILLed
//! runs are removed by the next run writing the same target.
//!
//! Test hook: with `D2V_TEST_HOLD_BEFORE_COMMIT=SECONDS` set, `commit` prints
//! `d2v: holding output before commit` to stderr and sleeps first, so a test can kill the
//! process while the output is complete but not yet committed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::interrupt::Temp;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writeback is started every this many bytes written through [`AtomicFile::writer`].
const WRITEBACK_EVERY: u64 = 32 << 20;

/// See [`AtomicFile::writer`].
pub(crate) struct Writeback<'f> {
    file: &'f File,
    /// Bytes written since writeback was last started.
    unstarted: u64,
}

impl io::Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.unstarted += n as u64;
        if self.unstarted >= WRITEBACK_EVERY {
            self.unstarted = 0;
            // SAFETY: a valid descriptor and plain integer arguments; offset 0 and length 0
            // mean the whole file. Only a hint, not waited for: errors are ignored (the
            // commit's fsync reports real ones).
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A hidden sibling name for `target`: `.NAME.d2v-tmp-PID-N`.
fn temp_sibling(target: &Path) -> PathBuf {
    let mut n = OsString::from(".");
    n.push(target.file_name().unwrap_or_default());
    n.push(format!(
        ".d2v-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    parent_of(target).join(n)
}

/// Remove hidden temporaries of `target` left by d2v processes that no longer run (killed
/// mid-write on a filesystem without `O_TMPFILE`, or an `ovf` directory build).
pub(crate) fn remove_stale(target: &Path) {
    let Some(name) = target.file_name() else {
        return;
    };
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".d2v-tmp-");
    let prefix = prefix.as_encoded_bytes().to_vec();
    let Ok(entries) = std::fs::read_dir(parent_of(target)) else {
        return;
    };
    for entry in entries.flatten() {
        let n = entry.file_name();
        let Some(rest) = n.as_encoded_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('-').next()?.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let p = entry.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Whether a file can be made in the existing directory `dir` (an unnamed one, gone at once):
/// a read-only mount or missing permissions fail here, before any work.
pub(crate) fn check_writable_dir(dir: &Path) -> io::Result<()> {
    tempfile::tempfile_in(dir).map(drop)
}

fn hold_for_tests() {
    if let Some(secs) = std::env::var("D2V_TEST_HOLD_BEFORE_COMMIT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!("d2v: holding output before commit");
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}

/// An output file that appears at its path only when committed.
#[derive(Debug)]
pub(crate) struct AtomicFile {
    file: File,
    target: PathBuf,
    /// `Some` when the fallback named temporary file is used.
    named: Option<Temp>,
}

impl AtomicFile {
    /// Start writing `target` (its directory must exist).
    pub(crate) fn create(target: &Path) -> io::Result<AtomicFile> {
        remove_stale(target);
        let dir = parent_of(target);
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        match unnamed {
            Ok(file) => Ok(AtomicFile {
                file,
                target: target.to_path_buf(),
                named: None,
            }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                AtomicFile::create_named(target)
            }
            Err(e) => Err(e),
        }
    }

    /// The fallback of [`AtomicFile::create`] where the filesystem lacks `O_TMPFILE`: a hidden
    /// named temporary beside `target`, a [`Temp`] (removed on drop and on a signal).
    fn create_named(target: &Path) -> io::Result<AtomicFile> {
        let (file, tmp) = Temp::create(|| {
            let tmp = temp_sibling(target);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            Ok((file, tmp))
        })?;
        Ok(AtomicFile {
            file,
            target: target.to_path_buf(),
            named: Some(tmp),
        })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// A writer at the file's position that starts writeback of what it wrote every
    /// [`WRITEBACK_EVERY`] bytes, so that [`AtomicFile::commit`]'s fsync finds little left
    /// to write (its wait was a tail of the build with no CPU work).
    pub(crate) fn writer(&mut self) -> Writeback<'_> {
        Writeback {
            file: &self.file,
            unstarted: 0,
        }
    }

    /// [`AtomicFile::commit`] under another name, on the same filesystem as the one it was
    /// created for (e.g. inside a directory made after the file).
    pub(crate) fn commit_as(mut self, target: &Path) -> io::Result<()> {
        self.target = target.to_path_buf();
        self.commit()
    }

    /// Flush to disk and give the file its name, replacing any existing file there.
    pub(crate) fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        hold_for_tests();
        let tmp = match self.named.take() {
            Some(t) => t,
            None => {
                Temp::create(|| {
                    let tmp = temp_sibling(&self.target);
                    link_unnamed(&self.file, &tmp)?;
                    Ok(((), tmp))
                })?
                .1
            }
        };
        // A failed rename drops (removes) the temporary name.
        tmp.finish(|t| std::fs::rename(t, &self.target))?;
        sync_dir(&parent_of(&self.target));
        Ok(())
    }
}

/// Gives the `O_TMPFILE` inode of `file` the name `to`.
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let src = format!("/proc/self/fd/{}", file.as_raw_fd());
    let c_src = std::ffi::CString::new(src).expect("no NUL");
    let c_dst = std::ffi::CString::new(to.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in output path"))?;
    // SAFETY: two valid NUL-terminated paths; linkat gives the O_TMPFILE inode a name.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            c_src.as_ptr(),
            libc::AT_FDCWD,
            c_dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Checks that the existing directory `dir` may be replaced by a new `ovf` output: it holds
/// only regular `.ovf`, `.mf` and `.vmdk` files (an earlier output), so a mistyped `-o` never
/// deletes anything else. The error says what is in the way.
pub(crate) fn check_replaceable_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let ours = entry.file_type()?.is_file()
            && Path::new(&name)
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["ovf", "mf", "vmdk"].contains(&x));
        if !ours {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "the directory {} already exists and holds {:?}, which is not part of an OVF \
                     output; d2v only replaces a directory of .ovf, .mf and .vmdk files: move it \
                     away or give another -o",
                    dir.display(),
                    name
                ),
            ));
        }
    }
    Ok(())
}

/// An output directory that appears at its path only when committed.
#[derive(Debug)]
pub(crate) struct AtomicDir {
    tmp: Temp,
    target: PathBuf,
}

impl AtomicDir {
    /// Start building directory `target` (its parent must exist).
    pub(crate) fn create(target: &Path) -> io::Result<AtomicDir> {
        remove_stale(target);
        let ((), tmp) = Temp::create(|| {
            let tmp = temp_sibling(target);
            std::fs::create_dir(&tmp)?;
            Ok(((), tmp))
        })?;
        Ok(AtomicDir {
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// Where to write the directory's files until commit.
    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Sync the files and rename the directory into place, replacing an existing one.
    pub(crate) fn commit(self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.path())? {
            File::open(entry?.path())?.sync_all()?;
        }
        sync_dir(self.path());
        hold_for_tests();
        let target = &self.target;
        self.tmp.finish(|tmp| match std::fs::rename(tmp, target) {
            Ok(()) => Ok(()),
            Err(e) if target.is_dir() => {
                // An earlier output: move it aside, put the new one in place, then delete it.
                // Anything else is left alone.
                check_replaceable_dir(target)?;
                let old = temp_sibling(target);
                std::fs::rename(target, &old).map_err(|_| e)?;
                std::fs::rename(tmp, target)?;
                let _ = std::fs::remove_dir_all(old);
                Ok(())
            }
            Err(e) => Err(e),
        })?;
        sync_dir(&parent_of(&self.target));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    /// Past several writeback starts, from a position after a seek (the OVA leaves room
    /// for its head), every byte lands where it was written.
    #[test]
    fn the_writeback_writer_writes_at_the_file_position() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.ova");
        let mut a = AtomicFile::create(&target).unwrap();
        a.file_mut().seek(SeekFrom::Start(512)).unwrap();
        let piece: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let pieces = (2 * WRITEBACK_EVERY as usize).div_ceil(piece.len()) + 1;
        let mut w = a.writer();
        for _ in 0..pieces {
            w.write_all(&piece).unwrap();
        }
        std::os::unix::fs::FileExt::write_all_at(a.file(), b"head", 0).unwrap();
        a.commit().unwrap();
        let got = std::fs::read(&target).unwrap();
        assert_eq!(got.len(), 512 + pieces * piece.len());
        assert_eq!(&got[..4], b"head");
        assert!(got[512..]
            .chunks(piece.len())
            .all(|c| c == piece.as_slice()));
    }

    #[test]
    fn ovf_dir_never_replaces_a_directory_of_other_files() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("vm");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("notes.txt"), b"precious").unwrap();
        let a = AtomicDir::create(&target).unwrap();
        std::fs::write(a.path().join("vm.ovf"), b"<x/>").unwrap();
        let e = a.commit().unwrap_err();
        assert!(e.to_string().contains("notes.txt"), "{e}");
        assert_eq!(
            std::fs::read(target.join("notes.txt")).unwrap(),
            b"precious"
        );
        // No temporaries left beside it.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // An earlier output is replaced.
        std::fs::remove_file(target.join("notes.txt")).unwrap();
        std::fs::write(target.join("vm-disk1.vmdk"), b"old").unwrap();
        let a = AtomicDir::create(&target).unwrap();
        std::fs::write(a.path().join("vm.ovf"), b"<x/>").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn file_appears_only_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("out.ova");
        let mut a = AtomicFile::create(&t).unwrap();
        a.file_mut().write_all(b"hello").unwrap();
        assert!(
            names(d.path()).is_empty(),
            "nothing visible before commit: {:?}",
            names(d.path())
        );
        a.commit().unwrap();
        assert_eq!(names(d.path()), ["out.ova"]);
        assert_eq!(std::fs::read(&t).unwrap(), b"hello");
        // Replaces an existing file.
        let mut b = AtomicFile::create(&t).unwrap();
        b.file_mut().write_all(b"new").unwrap();
        b.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        assert_eq!(names(d.path()), ["out.ova"]);
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("out.vmdk");
        let mut a = AtomicFile::create(&t).unwrap();
        a.file_mut().write_all(&[1; 4096]).unwrap();
        drop(a);
        assert!(names(d.path()).is_empty());
    }

    /// The fallback for filesystems without `O_TMPFILE` (vfat, some FUSE and network
    /// filesystems): a hidden name while writing, the target's name on commit (replacing an
    /// earlier file), nothing left when dropped.
    #[test]
    fn named_fallback_is_hidden_until_commit_and_removed_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("out.ova");
        let mut a = AtomicFile::create_named(&t).unwrap();
        a.file_mut().write_all(b"hello").unwrap();
        let during = names(d.path());
        assert_eq!(during.len(), 1, "{during:?}");
        assert!(
            during[0].starts_with(&format!(".out.ova.d2v-tmp-{}-", std::process::id())),
            "{during:?}"
        );
        a.commit().unwrap();
        assert_eq!(names(d.path()), ["out.ova"]);
        assert_eq!(std::fs::read(&t).unwrap(), b"hello");
        let mut b = AtomicFile::create_named(&t).unwrap();
        b.file_mut().write_all(b"new").unwrap();
        b.commit().unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        let mut c = AtomicFile::create_named(&t).unwrap();
        c.file_mut().write_all(b"half").unwrap();
        drop(c);
        assert_eq!(names(d.path()), ["out.ova"]);
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("vm");
        // PID 0x7ffffffe does not exist; our own PID does.
        std::fs::create_dir(d.path().join(".vm.d2v-tmp-2147483646-0")).unwrap();
        std::fs::write(
            d.path()
                .join(format!(".vm.d2v-tmp-{}-99", std::process::id())),
            b"",
        )
        .unwrap();
        std::fs::write(d.path().join(".other.d2v-tmp-2147483646-0"), b"").unwrap();
        remove_stale(&t);
        let mine = format!(".vm.d2v-tmp-{}-99", std::process::id());
        assert_eq!(
            names(d.path()),
            [".other.d2v-tmp-2147483646-0".to_string(), mine]
        );
    }

    #[test]
    fn dir_appears_only_on_commit_and_drop_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("vm");
        let a = AtomicDir::create(&t).unwrap();
        std::fs::write(a.path().join("vm.ovf"), b"x").unwrap();
        assert!(!t.exists());
        drop(a);
        assert!(names(d.path()).is_empty());
        let a = AtomicDir::create(&t).unwrap();
        std::fs::write(a.path().join("vm.ovf"), b"x").unwrap();
        a.commit().unwrap();
        assert_eq!(names(&t), ["vm.ovf"]);
        let b = AtomicDir::create(&t).unwrap();
        std::fs::write(b.path().join("vm.mf"), b"y").unwrap();
        b.commit().unwrap();
        assert_eq!(names(&t), ["vm.mf"]);
        assert_eq!(names(d.path()), ["vm"]);
    }
}
