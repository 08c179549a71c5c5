//! The VMDK outputs: the disk alone, an OVF directory, an OVA. Each writes the VMDK straight
//! to its place while the disk is written (see [`crate::finality`]), hashed on the way for the
//! `.mf`; what depends on the VMDK's size and digest (the `.ovf`, the `.mf`, the OVA's tar
//! headers) is written once the VMDK is whole.

use super::atomic::{AtomicDir, AtomicFile};
use super::ova::{self, HashingWriter};
use super::{base_name, io_err, ovf, vmdk, OutputError, OutputOptions};
use crate::finality::Finality;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use vmdk::{VmdkOptions, VmdkSummary};

/// How far the disk writer may run ahead of the compression: the raw disk's bytes on disk
/// (beyond the metadata ext4 writes first) when its grains are punched once read.
const LEAD: u64 = 32 << 20;

/// The raw disk: `len` bytes of `raw`, final as `finality` says.
#[derive(Clone, Copy)]
pub(super) struct Disk<'a> {
    pub(super) raw: &'a File,
    pub(super) len: u64,
    pub(super) finality: &'a Finality,
}

impl Disk<'_> {
    /// Writes the disk to `out` as the VMDK `file_name`, as it becomes final.
    fn compress(
        self,
        opts: &OutputOptions,
        file_name: String,
        out: &mut dyn Write,
    ) -> Result<VmdkSummary, OutputError> {
        let mut v: VmdkOptions = opts.vmdk.clone();
        v.file_name = file_name;
        v.adapter_type = "lsilogic".into(); // VMware writes lsilogic for PVSCSI disks too
        if v.consume {
            // The raw disk is given back as it is read: keep what is written ahead bounded.
            self.finality.limit_lead(LEAD);
        }
        match vmdk::compress(self.raw, self.len, self.finality, &v, out) {
            Err(vmdk::VmdkError::Aborted) => Err(OutputError::Unfinished),
            r => Ok(r?),
        }
    }
}

/// The disk alone as a streamOptimized VMDK.
pub(super) fn write_vmdk(
    disk: Disk,
    path: &Path,
    opts: &OutputOptions,
) -> Result<VmdkSummary, OutputError> {
    let e = io_err(path);
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or(OutputError::Path(path.into()))?;
    let mut out = AtomicFile::create(path).map_err(&e)?;
    let mut w = BufWriter::with_capacity(1 << 20, out.writer());
    let s = disk.compress(opts, name.to_string(), &mut w)?;
    w.flush().map_err(&e)?;
    drop(w);
    out.commit().map_err(&e)?;
    Ok(s)
}

/// A directory with the `.ovf`, the `.mf` and the VMDK; the three files' size.
pub(super) fn write_ovf_dir(
    disk: Disk,
    path: &Path,
    opts: &OutputOptions,
) -> Result<(u64, Option<VmdkSummary>), OutputError> {
    let e = io_err(path);
    let base = base_name(path)?;
    let names = Names::new(&base);
    // The VMDK is an unnamed file until the directory is made around it, once it is whole.
    let mut vmdk = AtomicFile::create(path).map_err(&e)?;
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, vmdk.writer()));
    let s = disk.compress(opts, names.disk.clone(), &mut w)?;
    let (disk_digest, mut bw) = w.finish();
    bw.flush().map_err(&e)?;
    drop(bw);
    let ovf = descriptor(opts, &names.disk, &s);
    let mf = names.manifest(&ovf, &disk_digest);
    let dir = AtomicDir::create(path).map_err(&e)?;
    vmdk.commit_as(&dir.path().join(&names.disk)).map_err(&e)?;
    std::fs::write(dir.path().join(&names.ovf), &ovf).map_err(&e)?;
    std::fs::write(dir.path().join(&names.mf), &mf).map_err(&e)?;
    dir.commit().map_err(&e)?;
    let bytes = s.file_size + ovf.len() as u64 + mf.len() as u64;
    Ok((bytes, Some(s)))
}

/// The OVA: a ustar of the `.ovf`, the `.mf` and the VMDK, in that order; its size.
///
/// The VMDK goes first, to its place after room left for the `.ovf` and `.mf` entries and its
/// own tar header, which are written once its size and digest are known. The room is sized by
/// the descriptor with the widest sizes a VMDK can have; the real one is padded to it with
/// spaces after its root element (white space XML allows there).
pub(super) fn write_ova(
    disk: Disk,
    path: &Path,
    opts: &OutputOptions,
) -> Result<(u64, Option<VmdkSummary>), OutputError> {
    let e = io_err(path);
    let base = base_name(path)?;
    let names = Names::new(&base);
    let widest = VmdkSummary {
        capacity: disk.len.next_multiple_of(512),
        populated_size: u64::MAX,
        file_size: u64::MAX,
        grains: 0,
    };
    let widest = descriptor(opts, &names.disk, &widest);
    // The names are checked here, before the work.
    let body = names
        .head(
            &widest,
            &names.manifest(&widest, &[0; 32]),
            u64::MAX,
            opts.mtime,
        )?
        .len() as u64;

    let mut out = AtomicFile::create(path).map_err(&e)?;
    out.file_mut().seek(SeekFrom::Start(body)).map_err(&e)?;
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, out.writer()));
    let s = disk.compress(opts, names.disk.clone(), &mut w)?;
    let (disk_digest, mut bw) = w.finish();
    bw.write_all(&ova::end(s.file_size)).map_err(&e)?;
    bw.flush().map_err(&e)?;
    drop(bw);
    crate::interrupt::pause_point("ova");

    let ovf = padded(descriptor(opts, &names.disk, &s), widest.len());
    let mf = names.manifest(&ovf, &disk_digest);
    let head = names.head(&ovf, &mf, s.file_size, opts.mtime)?;
    debug_assert_eq!(head.len() as u64, body);
    out.file().write_all_at(&head, 0).map_err(&e)?;
    let bytes = out.file().metadata().map_err(&e)?.len();
    out.commit().map_err(&e)?;
    Ok((bytes, Some(s)))
}

/// `ovf` padded to `room` bytes with spaces after its root element.
fn padded(ovf: String, room: usize) -> String {
    let body = ovf.trim_end_matches('\n');
    let pad = room.saturating_sub(ovf.len());
    format!("{body}{}\n", " ".repeat(pad))
}

/// The file names of the package `base`.
struct Names {
    ovf: String,
    mf: String,
    disk: String,
}

impl Names {
    fn new(base: &str) -> Names {
        Names {
            ovf: format!("{base}.ovf"),
            mf: format!("{base}.mf"),
            disk: format!("{base}-disk1.vmdk"),
        }
    }

    /// The OVA up to the VMDK's data: the `.ovf` and `.mf` entries and the VMDK's tar header
    /// for `disk_size` bytes.
    fn head(
        &self,
        ovf: &str,
        mf: &str,
        disk_size: u64,
        mtime: u64,
    ) -> Result<Vec<u8>, ova::TarError> {
        let mut head = ova::entry(&self.ovf, ovf.as_bytes(), mtime)?;
        head.extend(ova::entry(&self.mf, mf.as_bytes(), mtime)?);
        head.extend(ova::header(&self.disk, disk_size, mtime)?);
        Ok(head)
    }

    /// The `.mf`: the descriptor's digest and the disk's.
    fn manifest(&self, ovf: &str, disk_digest: &[u8; 32]) -> String {
        ova::manifest(&[
            (&self.ovf, &ova::sha256(ovf.as_bytes())),
            (&self.disk, disk_digest),
        ])
    }
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

#[cfg(test)]
mod tests {
    use super::padded;

    #[test]
    fn the_descriptor_is_padded_after_its_root_element() {
        let ovf = "<Envelope/>\n".to_string();
        assert_eq!(padded(ovf.clone(), 16), "<Envelope/>    \n");
        assert_eq!(padded(ovf.clone(), ovf.len()), ovf);
    }
}
