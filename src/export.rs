//! `d2v export`: the flattened staging tree as one POSIX (PAX) tar, byte-identical across runs.
//!
//! Entries come in [`Tree::walk`] order (depth-first, names in byte order), the root first as
//! `./`. A non-directory inode met again is written as a tar hardlink to the first path that
//! named it. A PAX extended header precedes an entry when it needs one: names or link names
//! longer than the ustar fields (raw bytes; `hdrcharset=BINARY` when not UTF-8), mtimes with
//! nanoseconds or outside the octal field, large ids/sizes/device numbers, and xattrs as
//! `SCHILY.xattr.NAME`. User and group names are left empty; nothing depends on the clock.
//! Sockets cannot be represented in tar and are left out.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::tree::{InodeId, Kind, Tree};

const BLOCK: usize = 512;
const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;

/// Writes `tree` as one PAX tar to `out`, ending with the two zero blocks.
pub fn write_tar(tree: &Tree, out: &mut dyn Write) -> io::Result<()> {
    let mut first_path: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    for entry in tree.walk() {
        let inode = tree.inode(entry.id);
        let mut path = if entry.path.is_empty() {
            b".".to_vec()
        } else {
            entry.path.clone()
        };
        if inode.kind.is_dir() {
            path.push(b'/');
        }
        let mut h = Fields {
            path,
            flag: b'0',
            link: Vec::new(),
            size: 0,
            dev: (0, 0),
        };
        let mut data = None;
        match &inode.kind {
            Kind::Socket => continue,
            Kind::Dir(_) => h.flag = b'5',
            _ if first_path.contains_key(&entry.id) => {
                h.flag = b'1';
                h.link = first_path[&entry.id].clone();
            }
            Kind::File(fd) => {
                h.size = fd.len;
                data = Some(*fd);
            }
            Kind::Symlink(target) => {
                h.flag = b'2';
                h.link = target.to_vec();
            }
            Kind::CharDevice { major, minor } => {
                h.flag = b'3';
                h.dev = (*major, *minor);
            }
            Kind::BlockDevice { major, minor } => {
                h.flag = b'4';
                h.dev = (*major, *minor);
            }
            Kind::Fifo => h.flag = b'6',
        }
        if !inode.kind.is_dir() {
            first_path
                .entry(entry.id)
                .or_insert_with(|| entry.path.clone());
        }
        write_header(out, &h, inode)?;
        if let Some(fd) = data {
            let mut r = tree.spill().reader(&fd);
            let mut left = fd.len;
            while left > 0 {
                let n = (buf.len() as u64).min(left) as usize;
                io::Read::read_exact(&mut r, &mut buf[..n])?;
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
            pad(out, fd.len)?;
        }
    }
    out.write_all(&[0u8; 2 * BLOCK])
}

struct Fields {
    path: Vec<u8>,
    flag: u8,
    link: Vec<u8>,
    size: u64,
    dev: (u32, u32),
}

fn write_header(out: &mut dyn Write, f: &Fields, inode: &crate::tree::Inode) -> io::Result<()> {
    let meta = &inode.meta;
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let binary = std::str::from_utf8(&f.path).is_err() || std::str::from_utf8(&f.link).is_err();
    if binary && (f.path.len() > 100 || f.link.len() > 100) {
        pax.push((b"hdrcharset".to_vec(), b"BINARY".to_vec()));
    }
    if f.path.len() > 100 {
        pax.push((b"path".to_vec(), f.path.clone()));
    }
    if f.link.len() > 100 {
        pax.push((b"linkpath".to_vec(), f.link.clone()));
    }
    let mt = meta.mtime;
    let mtime_fits = mt.sec >= 0 && mt.sec as u64 <= MAX_OCTAL_11;
    if mt.nsec != 0 || !mtime_fits {
        pax.push((b"mtime".to_vec(), pax_time(mt.sec, mt.nsec).into_bytes()));
    }
    for (key, v) in [("uid", meta.uid as u64), ("gid", meta.gid as u64)] {
        if v > MAX_OCTAL_7 {
            pax.push((key.as_bytes().to_vec(), v.to_string().into_bytes()));
        }
    }
    if f.size > MAX_OCTAL_11 {
        pax.push((b"size".to_vec(), f.size.to_string().into_bytes()));
    }
    for (key, v) in [
        ("SCHILY.devmajor", f.dev.0 as u64),
        ("SCHILY.devminor", f.dev.1 as u64),
    ] {
        if v > MAX_OCTAL_7 {
            pax.push((key.as_bytes().to_vec(), v.to_string().into_bytes()));
        }
    }
    for (name, value) in &meta.xattrs {
        pax.push(([b"SCHILY.xattr.".as_slice(), name].concat(), value.clone()));
    }
    if !pax.is_empty() {
        let body: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut name = b"PaxHeaders/".to_vec();
        let base = f.path.strip_suffix(b"/").unwrap_or(&f.path);
        let base = base.rsplit(|&b| b == b'/').next().unwrap_or(base);
        name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
        let h = ustar(&name, b'x', b"", body.len() as u64, (0, 0), 0o644, 0, 0, 0);
        out.write_all(&h)?;
        out.write_all(&body)?;
        pad(out, body.len() as u64)?;
    }
    let cut = |b: &[u8]| b[..b.len().min(100)].to_vec();
    let mtime = if mtime_fits { mt.sec as u64 } else { 0 };
    let h = ustar(
        &cut(&f.path),
        f.flag,
        &cut(&f.link),
        f.size.min(MAX_OCTAL_11),
        (
            f.dev.0.min(MAX_OCTAL_7 as u32),
            f.dev.1.min(MAX_OCTAL_7 as u32),
        ),
        meta.mode & 0o7777,
        (meta.uid as u64).min(MAX_OCTAL_7),
        (meta.gid as u64).min(MAX_OCTAL_7),
        mtime,
    );
    out.write_all(&h)
}

/// `SEC[.NNNNNNNNN]` for a time whose nanoseconds count forward from `sec`.
fn pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        // -1 s + 0.25 s = -0.75 s
        let (s, n) = (-(sec + 1), 1_000_000_000 - nsec);
        format!("-{s}.{n:09}")
    }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len.to_string().len() + rest > len {
        len += 1;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

#[allow(clippy::too_many_arguments)]
fn ustar(
    name: &[u8],
    flag: u8,
    link: &[u8],
    size: u64,
    dev: (u32, u32),
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar\x0000");
    if flag == b'3' || flag == b'4' {
        octal(&mut h[329..337], dev.0 as u64);
        octal(&mut h[337..345], dev.1 as u64);
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    octal(&mut h[148..155], sum as u64);
    h
}

/// Zero-padded octal digits filling all but the last byte of `field`, which is NUL. Callers
/// keep values within range.
fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(&s.as_bytes()[s.len() - w..]);
    field[w] = 0;
}

fn pad(out: &mut dyn Write, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
