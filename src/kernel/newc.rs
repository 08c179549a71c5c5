//! A `newc` cpio writer (`man 5 cpio`; the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): the format the kernel
//! unpacks an initramfs from. Each entry is a 110-byte ASCII header (magic `070701` and
//! thirteen 8-digit hex fields), the NUL-terminated name padded to 4 bytes, and the data padded
//! to 4 bytes; a `TRAILER!!!` entry ends the archive.
//!
//! Deterministic: inode numbers count up from 1 in the order entries are written, owner and
//! group are 0, every mtime is the one given (see [`default_mtime`]).

use std::io::{self, Read, Write};

use crate::kernel::KernelError;

/// `SOURCE_DATE_EPOCH` when set (clamped to the format's 32 bits), else 0.
pub(crate) fn default_mtime() -> u32 {
    crate::ids::source_date_epoch().map_or(0, |t| t.clamp(0, u32::MAX as i64) as u32)
}

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
#[cfg(test)]
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes a `newc` archive to `out`.
pub(crate) struct Writer<W: Write> {
    out: W,
    /// Bytes written so far (padding is relative to the archive's start).
    pos: u64,
    /// The last inode number given.
    ino: u32,
    mtime: u32,
}

/// One header's fields besides magic, inode number, owner, mtime and check.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> Writer<W> {
    /// A writer whose entries all have modification time `mtime`.
    pub(crate) fn new(out: W, mtime: u32) -> Writer<W> {
        Writer {
            out,
            pos: 0,
            ino: 0,
            mtime,
        }
    }

    fn err(what: &str) -> impl FnOnce(io::Error) -> KernelError + '_ {
        move |source| KernelError::Write {
            what: what.to_string(),
            source,
        }
    }

    fn put(&mut self, bytes: &[u8], what: &str) -> Result<(), KernelError> {
        self.out.write_all(bytes).map_err(Self::err(what))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, what: &str) -> Result<(), KernelError> {
        let n = (self.pos.next_multiple_of(4) - self.pos) as usize;
        self.put(&[0u8; 3][..n], what)
    }

    /// Writes a header and the name; `ino` 0 for the trailer.
    fn header(&mut self, h: Header, ino: u32) -> Result<(), KernelError> {
        let name = h.name.trim_start_matches('/');
        let fields = [
            ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            if ino == 0 { 0 } else { self.mtime },
            h.size,
            0, // devmajor
            0, // devminor
            h.rdev.0,
            h.rdev.1,
            name.len() as u32 + 1,
            0, // check (070701 has none)
        ];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for f in fields {
            head.push_str(&format!("{f:08X}"));
        }
        self.put(head.as_bytes(), name)?;
        self.put(name.as_bytes(), name)?;
        self.put(&[0], name)?;
        self.pad(name)
    }

    fn next_ino(&mut self) -> u32 {
        self.ino += 1;
        self.ino
    }

    /// A directory `name` with permission bits `mode`.
    pub(crate) fn dir(&mut self, name: &str, mode: u32) -> Result<(), KernelError> {
        let ino = self.next_ino();
        let h = Header {
            name,
            mode: S_IFDIR | (mode & 0o7777),
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        };
        self.header(h, ino)
    }

    /// A regular file `name` of `len` bytes read from `data` (streamed, not held in memory).
    pub(crate) fn file(
        &mut self,
        name: &str,
        mode: u32,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<(), KernelError> {
        let size = u32::try_from(len).map_err(|_| KernelError::TooLarge {
            path: name.to_string(),
            len,
        })?;
        let ino = self.next_ino();
        let h = Header {
            name,
            mode: S_IFREG | (mode & 0o7777),
            nlink: 1,
            size,
            rdev: (0, 0),
        };
        self.header(h, ino)?;
        let copied = io::copy(&mut data.take(len), &mut self.out).map_err(Self::err(name))?;
        if copied != len {
            let source = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{copied} bytes where {len} were announced"),
            );
            return Err(KernelError::Write {
                what: name.to_string(),
                source,
            });
        }
        self.pos += len;
        self.pad(name)
    }

    /// A symbolic link `name` to `target` (the target is its data). d2v's initramfs has
    /// none; the writer's tests check the format with GNU cpio.
    #[cfg(test)]
    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> Result<(), KernelError> {
        let ino = self.next_ino();
        let h = Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size: target.len() as u32,
            rdev: (0, 0),
        };
        self.header(h, ino)?;
        self.put(target.as_bytes(), name)?;
        self.pad(name)
    }

    /// A character device `name` with device number `major`:`minor`.
    pub(crate) fn char_device(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), KernelError> {
        let ino = self.next_ino();
        let h = Header {
            name,
            mode: S_IFCHR | (mode & 0o7777),
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        };
        self.header(h, ino)
    }

    /// Writes the `TRAILER!!!` entry and returns the output.
    pub(crate) fn finish(mut self) -> Result<W, KernelError> {
        let h = Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.header(h, 0)?;
        self.out
            .flush()
            .map_err(Self::err("the end of the archive"))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests;
