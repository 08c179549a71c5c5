//! A `newc` cpio writer (the initramfs format), for d2v's initramfs tests: the archives d2v
//! reads must come from an independent writer.

/// One member of an archive written by [`newc_entries`].
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file: name, permission bits, contents.
    File(String, u32, Vec<u8>),
    /// A directory: name, permission bits.
    Dir(String, u32),
    /// A symbolic link: name, target.
    Symlink(String, String),
}

/// A `newc` archive (magic `070701`) of regular files `(name, data)`, mode 0644, ending with
/// the `TRAILER!!!` entry; names and data padded to 4 bytes.
pub fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let entries: Vec<Entry> = entries
        .iter()
        .map(|(name, data)| Entry::File(name.to_string(), 0o644, data.to_vec()))
        .collect();
    newc_entries(&entries)
}

/// A `newc` archive of files, directories and symlinks (owner 0:0), ending with the
/// `TRAILER!!!` entry. Parents are not added implicitly: list directories before what they
/// hold.
pub fn newc_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer = Entry::File("TRAILER!!!".into(), 0, Vec::new());
    for (i, entry) in entries.iter().chain([&trailer]).enumerate() {
        let (name, mode, data) = match entry {
            Entry::File(n, perm, d) => (n.as_str(), 0o100000 | perm, d.as_slice()),
            Entry::Dir(n, perm) => (n.as_str(), 0o040000 | perm, &b""[..]),
            Entry::Symlink(n, t) => (n.as_str(), 0o120777, t.as_bytes()),
        };
        let mode = if name == "TRAILER!!!" { 0 } else { mode };
        let nlink = if matches!(entry, Entry::Dir(..)) {
            2
        } else {
            1
        };
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize (with its NUL), check
        let fields = [
            i as u64 + 1,
            u64::from(mode),
            0,
            0,
            nlink,
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

    #[test]
    fn directories_and_symlinks_have_their_mode_bits() {
        let a = newc_entries(&[
            Entry::Dir("d".into(), 0o755),
            Entry::Symlink("d/l".into(), "../t".into()),
        ]);
        assert_eq!(&a[6 + 8..6 + 16], b"000041ED"); // mode of d
        let second = 112; // after the 110-byte header and "d\0" (112, a multiple of 4)
        assert_eq!(&a[second..second + 6], b"070701");
        assert_eq!(&a[second + 14..second + 22], b"0000A1FF"); // symlink 0777
        assert_eq!(&a[second + 54..second + 62], b"00000004"); // target length
    }
}
