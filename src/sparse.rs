//! Sparse files: the byte ranges that hold data, via `lseek(SEEK_DATA/SEEK_HOLE)`, so that
//! holes cost nothing. One walk for every stage that reads a sparse file: the ext4 writer
//! (file data in the staging tree's spill file) and the VMDK writer (the raw disk); and
//! punching holes, to clear a region or give back the space of bytes no longer needed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The `[start, end)` byte ranges within `[from, to)` of `file` that may hold data, in order.
/// Where the filesystem cannot report holes (EINVAL, EOPNOTSUPP), the rest of the range counts
/// as data. Moves the file offset: callers read and write with positioned I/O.
pub fn data_extents(file: &File, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let start = match seek(file, pos, libc::SEEK_DATA) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                out.push((pos, to));
                break;
            }
            Err(e) => return Err(e),
        };
        if start >= to {
            break;
        }
        let end = match seek(file, start, libc::SEEK_HOLE) {
            Ok(e) => e.min(to),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => to,
            Err(e) => return Err(e),
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<u64> {
    let off = libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on a valid descriptor owned by `file`; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// Deallocates `[offset, offset + len)` of `file` (it then reads as zeros; the size is kept).
/// Whether the filesystem did it: one that cannot keeps the bytes.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    // SAFETY: fallocate on a valid descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_are_skipped_and_data_is_covered() {
        let f = tempfile::tempfile().unwrap();
        let len = 64 << 20;
        f.set_len(len).unwrap();
        f.write_all_at(&[1u8; 4096], 8 << 20).unwrap();
        f.write_all_at(&[2u8; 100], len - 100).unwrap();
        let ext = data_extents(&f, 0, len).unwrap();
        // Every data byte must be inside an extent.
        for off in [8u64 << 20, (8 << 20) + 4095, len - 100, len - 1] {
            assert!(
                ext.iter().any(|&(s, e)| s <= off && off < e),
                "{off} not covered: {ext:?}"
            );
        }
        // On filesystems that report holes, most of the file is skipped.
        let covered: u64 = ext.iter().map(|(s, e)| e - s).sum();
        assert!(covered <= len);
        assert!(
            ext.windows(2).all(|w| w[0].1 <= w[1].0),
            "sorted, disjoint: {ext:?}"
        );
    }

    #[test]
    fn a_window_of_the_file_is_clipped_to_it() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[1u8; 8192], 4 << 20).unwrap();
        let ext = data_extents(&f, (4 << 20) + 4096, 8 << 20).unwrap();
        assert!(!ext.is_empty(), "{ext:?}");
        assert!(
            ext.iter()
                .all(|&(s, e)| s >= (4 << 20) + 4096 && e <= 8 << 20 && s < e),
            "{ext:?}"
        );
        assert!(ext[0].0 == (4 << 20) + 4096, "{ext:?}");
    }

    #[test]
    fn empty_sparse_file_has_no_extents_or_one_full_range() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        let ext = data_extents(&f, 0, 1 << 20).unwrap();
        assert!(ext.is_empty() || ext == vec![(0, 1 << 20)], "{ext:?}");
    }
}
