//! A small tar writer for tests: builds layer tars entry by entry, with explicit control of
//! how long names are encoded (PAX or GNU), PAX fractional mtimes, `SCHILY.xattr.*` records,
//! devices, hardlinks and whiteouts. Independent of d2v's own tar code on purpose.

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// How names and link names longer than the ustar fields are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongNames {
    Pax,
    Gnu,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// `Some(nsec)` writes a PAX `mtime` record with a fraction.
    pub mtime_nsec: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub long_names: LongNames,
}

impl Entry {
    pub fn new(path: impl AsRef<[u8]>, kind: Kind) -> Entry {
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: None,
            xattrs: Vec::new(),
            long_names: LongNames::Pax,
        }
    }
    pub fn file(path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::File(data.as_ref().to_vec()))
    }
    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Dir)
    }
    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Symlink(target.as_ref().to_vec()))
    }
    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Hardlink(target.as_ref().to_vec()))
    }
    pub fn char_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, Kind::Char(major, minor))
    }
    pub fn block_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry::new(path, Kind::Block(major, minor))
    }
    pub fn fifo(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::Fifo)
    }
    /// `.wh.NAME` next to `path`, deleting `path` from lower layers.
    pub fn whiteout(path: impl AsRef<[u8]>) -> Entry {
        let p = path.as_ref();
        let (dir, name) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => (&p[..0], p),
        };
        Entry::file([dir, b".wh.", name].concat(), b"")
    }
    /// `DIR/.wh..wh..opq`.
    pub fn opaque(dir: impl AsRef<[u8]>) -> Entry {
        let mut p = dir.as_ref().to_vec();
        if !p.is_empty() && !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(b".wh..wh..opq");
        Entry::file(p, b"")
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, sec: i64, nsec: Option<u32>) -> Entry {
        self.mtime = sec;
        self.mtime_nsec = nsec;
        self
    }
    pub fn xattr(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Entry {
        self.xattrs
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }
    pub fn gnu(mut self) -> Entry {
        self.long_names = LongNames::Gnu;
        self
    }
}

/// A complete tar archive (with the two zero end blocks) of `entries`, in order.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write_entry(&mut out, e);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `entries` as umoci 0.4.7's `insert` writes a layer: the stream ends right after the last
/// entry's data (no padding to 512 bytes, no end-of-archive blocks), as Go's archive/tar reads.
pub fn unterminated(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        write_entry(&mut out, e);
    }
    let last = match entries.last().map(|e| &e.kind) {
        Some(Kind::File(d)) => d.len(),
        _ => 0,
    };
    out.truncate(out.len() - (512 - last % 512) % 512);
    out
}

fn write_entry(out: &mut Vec<u8>, e: &Entry) {
    let (flag, link, data, dev): (u8, &[u8], &[u8], (u32, u32)) = match &e.kind {
        Kind::File(d) => (b'0', b"", d, (0, 0)),
        Kind::Dir => (b'5', b"", b"", (0, 0)),
        Kind::Symlink(t) => (b'2', t, b"", (0, 0)),
        Kind::Hardlink(t) => (b'1', t, b"", (0, 0)),
        Kind::Char(a, b) => (b'3', b"", b"", (*a, *b)),
        Kind::Block(a, b) => (b'4', b"", b"", (*a, *b)),
        Kind::Fifo => (b'6', b"", b"", (0, 0)),
    };
    let gnu = e.long_names == LongNames::Gnu;
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // Names over 100 bytes: a GNU `././@LongLink` entry (L: path, K: link target) or a PAX
    // record.
    for (long, gnu_flag, key) in [(&e.path[..], b'L', "path"), (link, b'K', "linkpath")] {
        if long.len() <= 100 {
            continue;
        }
        if gnu {
            let name = [long, b"\0"].concat();
            write_raw(
                out,
                b"././@LongLink",
                gnu_flag,
                b"",
                &name,
                (0, 0),
                0o644,
                0,
                0,
                0,
                true,
            );
        } else {
            pax.push((key.as_bytes().to_vec(), long.to_vec()));
        }
    }
    for (key, v) in [("uid", e.uid), ("gid", e.gid)] {
        if v > 0o7777777 && !gnu {
            pax.push((key.as_bytes().to_vec(), v.to_string().into_bytes()));
        }
    }
    if let Some(nsec) = e.mtime_nsec {
        pax.push((
            b"mtime".to_vec(),
            format!("{}.{:09}", e.mtime, nsec).into_bytes(),
        ));
    }
    for (k, v) in &e.xattrs {
        pax.push(([b"SCHILY.xattr.".as_slice(), k].concat(), v.clone()));
    }
    if !pax.is_empty() {
        let mut body = Vec::new();
        for (k, v) in &pax {
            body.extend_from_slice(&pax_record(k, v));
        }
        write_raw(
            out,
            b"PaxHeader",
            b'x',
            b"",
            &body,
            (0, 0),
            0o644,
            0,
            0,
            0,
            false,
        );
    }
    let name = &e.path[..e.path.len().min(100)];
    let link = &link[..link.len().min(100)];
    write_raw(
        out, name, flag, link, data, dev, e.mode, e.uid, e.gid, e.mtime, gnu,
    );
}

/// One PAX record: `LEN KEY=VALUE\n` where LEN counts the whole record.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest > len {
        len += 1;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

#[allow(clippy::too_many_arguments)]
fn write_raw(
    out: &mut Vec<u8>,
    name: &[u8],
    flag: u8,
    link: &[u8],
    data: &[u8],
    dev: (u32, u32),
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    gnu: bool,
) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid as u64);
    octal(&mut h[116..124], gid as u64);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], mtime.max(0) as u64);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    if gnu {
        h[257..265].copy_from_slice(b"ustar  \0");
    } else {
        h[257..265].copy_from_slice(b"ustar\x0000");
    }
    if flag == b'3' || flag == b'4' {
        octal(&mut h[329..337], dev.0 as u64);
        octal(&mut h[337..345], dev.1 as u64);
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// Octal digits and a NUL; GNU base-256 (high bit set, big-endian) when the value is too big.
fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    if v >= 1 << (3 * w) {
        field.fill(0);
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        field[0] |= 0x80;
        return;
    }
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(s.as_bytes());
    field[w] = 0;
}
