//! A `newc` cpio writer (the initramfs format), for d2v's initramfs tests: the archives d2v
//! reads must come from an independent writer.

/// A `newc` archive (magic `070701`) of regular files `(name, data)`, mode 0644, ending with
/// the `TRAILER!!!` entry; names and data padded to 4 bytes.
pub fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer = [("TRAILER!!!", &b""[..])];
    for (i, (name, data)) in entries.iter().chain(trailer.iter()).enumerate() {
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize (with its NUL), check
        let fields = [
            i as u64 + 1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len() as u64,
            0,
            0,
            0,
            0,
            name.len() as u64 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    out
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_newc_format() {
        let a = newc(&[("ab", b"xyz")]);
        // 110-byte header, "ab\0" padded to 4 from the archive start (113 → 116), data 3 → 4.
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6 + 8 * 6..6 + 8 * 7], b"00000003"); // filesize
        assert_eq!(&a[6 + 8 * 11..6 + 8 * 12], b"00000003"); // namesize
        assert_eq!(&a[110..113], b"ab\0");
        assert_eq!(&a[116..119], b"xyz");
        assert_eq!(&a[120..126], b"070701");
        assert_eq!(&a[230..241], b"TRAILER!!!\0");
        assert_eq!(a.len() % 4, 0);
    }
}
