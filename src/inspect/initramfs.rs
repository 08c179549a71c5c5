//! Which kernel modules an initramfs carries: enough to tell whether the guest can reach its
//! root disk through the SCSI controller the OVF gives the VM (`vmw_pvscsi` for PVSCSI,
//! `mptspi` for LSI Logic Parallel). An image built in a container with a host-only initramfs
//! (`MODULES=dep`, dracut's `hostonly`) lacks them and stops in the initramfs shell on vSphere.
//!
//! An initramfs is a sequence of `newc` cpio archives (magic `070701`/`070702`), possibly
//! zero-padded between them, the last usually compressed (as the kernel's `unpack_to_rootfs`
//! reads it): Debian puts an uncompressed early archive (CPU microcode) before a zstd one.
//! gzip and zstd are read; other compressions (xz, lz4, bzip2, lzma) are reported as such.
//! Modules are found by file name (`…/NAME.ko`, `.ko.gz`, `.ko.xz`, `.ko.zst`) and built-in
//! drivers by the `modules.builtin` lists in the archive.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read};

/// What an initramfs holds, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// The modules (file names without `.ko…`, `-` as `_`) and built-in drivers it lists.
    Modules(BTreeSet<String>),
    /// A part is compressed in a way d2v does not read (`xz`, `lz4`, ...).
    Unreadable(&'static str),
}

/// Largest `modules.builtin` read (Debian's is ~20 KB).
const MAX_BUILTIN: u64 = 4 << 20;
/// Most bytes a compressed part is unpacked to (Debian's cloud initramfs: ~30 MB); past it
/// the archive reads as cut short, so the image is reported unreadable, not scanned forever.
const MAX_UNPACKED: u64 = 1 << 30;

/// Reads a whole initramfs image from `r`.
#[cfg(test)]
pub fn scan(r: impl Read) -> io::Result<Contents> {
    scan_for(r, &[])
}

/// Reads an initramfs image from `r` until every module of `wanted` (as [`module_name`]s
/// them) is found: the set then holds what was seen up to there (an initramfs is unpacked
/// whole for nothing else: Debian's takes ~0.08 s, on the critical path of a build). With
/// `wanted` empty, the whole image is read.
pub fn scan_for(r: impl Read, wanted: &[&str]) -> io::Result<Contents> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut found = Found {
        names: BTreeSet::new(),
        wanted,
    };
    loop {
        if found.complete() {
            return Ok(Contents::Modules(found.names));
        }
        let buf = r.fill_buf()?;
        let Some(&first) = buf.first() else {
            return Ok(Contents::Modules(found.names));
        };
        if first == 0 {
            // Padding between archives.
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            r.consume(zeros);
            continue;
        }
        if buf.starts_with(b"07070") {
            archive(&mut r, &mut found)?;
            continue;
        }
        // A compressed part: what follows it is not looked at (the kernel allows more parts
        // after one; initramfs generators do not write them).
        match compression(buf) {
            Some("gzip") => stream(
                flate2::read::MultiGzDecoder::new(r).take(MAX_UNPACKED),
                &mut found,
            )?,
            Some("zstd") => stream(
                zstd::stream::read::Decoder::with_buffer(r)?.take(MAX_UNPACKED),
                &mut found,
            )?,
            Some(other) => return Ok(Contents::Unreadable(other)),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "neither a cpio archive nor a known compression",
                ))
            }
        }
        return Ok(Contents::Modules(found.names));
    }
}

/// The module names seen, and those the scan may stop at.
struct Found<'a> {
    names: BTreeSet<String>,
    wanted: &'a [&'a str],
}

impl Found<'_> {
    fn complete(&self) -> bool {
        !self.wanted.is_empty() && self.wanted.iter().all(|w| self.names.contains(*w))
    }
}

fn compression(magic: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 6] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
    ];
    MAGICS
        .iter()
        .find(|(m, _)| magic.starts_with(m))
        .map(|(_, name)| *name)
}

/// The archives of a decompressed part (until `found` is complete).
fn stream(r: impl Read, found: &mut Found) -> io::Result<()> {
    let mut r = BufReader::with_capacity(64 << 10, r);
    loop {
        if found.complete() {
            return Ok(());
        }
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if buf[0] == 0 {
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            r.consume(zeros);
        } else {
            archive(&mut r, found)?;
        }
    }
}

/// One `newc` archive, up to and including its `TRAILER!!!` entry (or until `found` is
/// complete). Entries are padded to 4 bytes from the start of the archive (archives start
/// 4-aligned in every initramfs).
fn archive(r: &mut impl BufRead, found: &mut Found) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    loop {
        if found.complete() {
            return Ok(());
        }
        let mut head = [0u8; 110];
        r.read_exact(&mut head)?;
        if !head.starts_with(b"070701") && !head.starts_with(b"070702") {
            return Err(bad("a cpio entry without the newc magic".into()));
        }
        let field = |i: usize| -> io::Result<u64> {
            let hex = std::str::from_utf8(&head[6 + 8 * i..14 + 8 * i])
                .map_err(|_| bad("a cpio header field is not hex".into()))?;
            u64::from_str_radix(hex, 16).map_err(|_| bad(format!("cpio header field {hex:?}")))
        };
        let (size, name_len) = (field(6)?, field(11)?);
        if name_len == 0 || name_len > 4096 {
            return Err(bad(format!("a cpio name of {name_len} bytes")));
        }
        let mut name = vec![0u8; (110 + name_len).next_multiple_of(4) as usize - 110];
        r.read_exact(&mut name)?;
        name.truncate(name_len as usize - 1); // the NUL
        if name == b"TRAILER!!!" {
            return Ok(());
        }
        let padded = size.next_multiple_of(4);
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(&name);
        if base == b"modules.builtin" && size <= MAX_BUILTIN {
            let mut list = vec![0u8; padded as usize];
            r.read_exact(&mut list)?;
            list.truncate(size as usize);
            for line in list.split(|&b| b == b'\n') {
                found.names.extend(module_name(line));
            }
        } else {
            found.names.extend(module_name(&name));
            let skipped = io::copy(&mut r.take(padded), &mut io::sink())?;
            if skipped < padded {
                return Err(bad("the archive ends inside a file".into()));
            }
        }
    }
}

/// `…/vmw_pvscsi.ko.zst` → `vmw_pvscsi` (module names use `_` where file names may use `-`).
pub fn module_name(path: &[u8]) -> Option<String> {
    let base = path.rsplit(|&b| b == b'/').next()?;
    let base = std::str::from_utf8(base).ok()?;
    let stem = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use testkit::cpio::newc as cpio;

    fn names(c: Contents) -> Vec<String> {
        match c {
            Contents::Modules(m) => m.into_iter().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name(b"usr/lib/modules/6.1/kernel/drivers/scsi/vmw_pvscsi.ko.zst").as_deref(),
            Some("vmw_pvscsi")
        );
        assert_eq!(
            module_name(b"a/crc32c-intel.ko").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(
            module_name(b"kernel/drivers/message/fusion/mptspi.ko.xz").as_deref(),
            Some("mptspi")
        );
        assert_eq!(module_name(b"etc/modprobe.d/x.conf"), None);
        assert_eq!(module_name(b".ko"), None);
    }

    #[test]
    fn early_archive_then_compressed_main_archive() {
        // As Debian's: an uncompressed microcode archive, zero padding, a compressed archive.
        let early = cpio(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = cpio(&[
            (
                "usr/lib/modules/6.1/kernel/drivers/scsi/vmw_pvscsi.ko",
                b"\x7fELF",
            ),
            ("usr/lib/modules/6.1/kernel/drivers/ata/ahci.ko.zst", b"zz"),
            (
                "usr/lib/modules/6.1/modules.builtin",
                b"kernel/drivers/scsi/sd_mod.ko\nkernel/fs/ext4/ext4.ko\n",
            ),
            ("init", b"#!/bin/sh\n"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&main).unwrap();
        let zst = zstd::encode_all(&main[..], 3).unwrap();
        for compressed in [gz.finish().unwrap(), zst, main.clone()] {
            let mut img = early.clone();
            img.extend_from_slice(&[0u8; 512]);
            img.extend_from_slice(&compressed);
            assert_eq!(
                names(scan(&img[..]).unwrap()),
                ["ahci", "ext4", "sd_mod", "vmw_pvscsi"]
            );
        }
    }

    #[test]
    fn host_only_initramfs_lacks_the_driver() {
        let img = cpio(&[("lib/modules/6.1/kernel/drivers/block/virtio_blk.ko", b"")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&img).unwrap();
        let got = names(scan(&gz.finish().unwrap()[..]).unwrap());
        assert_eq!(got, ["virtio_blk"]);
    }

    #[test]
    fn the_scan_stops_once_the_wanted_modules_are_found() {
        let d = "usr/lib/modules/6.1/kernel/drivers";
        let img = cpio(&[
            (&format!("{d}/scsi/vmw_pvscsi.ko")[..], &b""[..]),
            (&format!("{d}/message/fusion/mptspi.ko.zst")[..], b""),
            (&format!("{d}/ata/ahci.ko")[..], b""),
        ]);
        let zst = zstd::encode_all(&img[..], 3).unwrap();
        // Cut after the two wanted entries: read whole, the cut is an error; stopping at
        // them, it is never reached.
        let cut = &img[..img.len() - 150];
        assert!(scan(cut).is_err());
        let got = names(scan_for(cut, &["vmw_pvscsi", "mptspi"]).unwrap());
        assert_eq!(got, ["mptspi", "vmw_pvscsi"]);
        // Compressed, and one wanted module missing: read to the end.
        let got = names(scan_for(&zst[..], &["vmw_pvscsi", "virtio_scsi"]).unwrap());
        assert_eq!(got, ["ahci", "mptspi", "vmw_pvscsi"]);
        let got = names(scan_for(&zst[..], &["vmw_pvscsi"]).unwrap());
        assert_eq!(got, ["vmw_pvscsi"]);
    }

    #[test]
    fn other_compressions_and_garbage() {
        let mut img = cpio(&[("a", b"1")]);
        img.extend_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]);
        assert_eq!(scan(&img[..]).unwrap(), Contents::Unreadable("xz"));
        assert!(scan(&b"MZ this is not an initramfs"[..]).is_err());
        // Cut inside a file's data.
        let whole = cpio(&[("lib/x.ko", &[7u8; 100])]);
        assert!(scan(&whole[..150]).is_err());
        assert_eq!(names(scan(&b""[..]).unwrap()), Vec::<String>::new());
    }
}
