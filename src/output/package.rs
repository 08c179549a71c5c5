//! The VMDK outputs: the disk alone, an OVF directory, an OVA. Each compresses the disk first
//! (beside its writer, see [`crate::finality`]), so the VMDK's size is known before a byte of
//! it goes out; the descriptor is made from that size and the VMDK is written once, straight
//! to its place, hashed on the way for the `.mf`.

use super::atomic::{AtomicDir, AtomicFile};
use super::ova::{self, HashingWriter, TarWriter};
use super::{base_name, dir_of, io_err, ovf, vmdk, OutputError, OutputOptions};
use crate::finality::Finality;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use vmdk::{Compressed, VmdkOptions, VmdkSummary};

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
    /// The disk compressed as the VMDK `file_name` of the output at `path`; its compressed
    /// grains wait in a scratch file beside the output (where the user chose to have the space).
    fn compress(
        self,
        opts: &OutputOptions,
        file_name: String,
        path: &Path,
    ) -> Result<(Compressed, VmdkSummary), OutputError> {
        let mut v: VmdkOptions = opts.vmdk.clone();
        v.file_name = file_name;
        v.scratch_dir = Some(dir_of(path).to_path_buf());
        v.adapter_type = "lsilogic".into(); // VMware writes lsilogic for PVSCSI disks too
        let store = vmdk::scratch_file(&v)?;
        if v.consume {
            // The raw disk is given back as it is read: keep what is written ahead bounded.
            self.finality.limit_lead(LEAD);
        }
        let c = match vmdk::compress(self.raw, self.len, self.finality, &v, store) {
            Err(vmdk::VmdkError::Aborted) => return Err(OutputError::Unfinished),
            r => r?,
        };
        let s = c.summary()?;
        Ok((c, s))
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
    let (c, _) = disk.compress(opts, name.to_string(), path)?;
    let mut out = AtomicFile::create(path).map_err(&e)?;
    let mut w = BufWriter::with_capacity(1 << 20, out.file_mut());
    let s = c.emit(&mut w)?;
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
    let (c, s) = disk.compress(opts, names.disk.clone(), path)?;
    let dir = AtomicDir::create(path).map_err(&e)?;
    let f = File::create(dir.path().join(&names.disk)).map_err(&e)?;
    let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, f));
    c.emit(&mut w)?;
    let (disk_digest, bw) = w.finish();
    bw.into_inner().map_err(|e| e.into_error()).map_err(&e)?;
    let ovf = descriptor(opts, &names.disk, &s);
    let mf = names.manifest(&ovf, &disk_digest);
    std::fs::write(dir.path().join(&names.ovf), &ovf).map_err(&e)?;
    std::fs::write(dir.path().join(&names.mf), &mf).map_err(&e)?;
    dir.commit().map_err(&e)?;
    let bytes = s.file_size + ovf.len() as u64 + mf.len() as u64;
    Ok((bytes, Some(s)))
}

/// The OVA: a ustar of the `.ovf`, the `.mf` and the VMDK, in that order; its size. The `.mf`
/// holds the VMDK's digest, known only once the VMDK is written after it: its entry is
/// written with a placeholder of the same length, then overwritten in place.
pub(super) fn write_ova(
    disk: Disk,
    path: &Path,
    opts: &OutputOptions,
) -> Result<(u64, Option<VmdkSummary>), OutputError> {
    let e = io_err(path);
    let base = base_name(path)?;
    let names = Names::new(&base);
    let (c, s) = disk.compress(opts, names.disk.clone(), path)?;
    let ovf = descriptor(opts, &names.disk, &s);
    let placeholder = names.manifest(&ovf, &[0; 32]);

    let mut out = AtomicFile::create(path).map_err(&e)?;
    let mut tar = TarWriter::new(
        BufWriter::with_capacity(1 << 20, out.file_mut()),
        opts.mtime,
    );
    tar.append(&names.ovf, ovf.len() as u64, &mut ovf.as_bytes())
        .map_err(&e)?;
    let mf_at = tar.position() + ova::BLOCK as u64;
    tar.append(
        &names.mf,
        placeholder.len() as u64,
        &mut placeholder.as_bytes(),
    )
    .map_err(&e)?;
    crate::interrupt::pause_point("ova");
    let mut disk_digest = [0; 32];
    tar.append_written(
        &names.disk,
        s.file_size,
        |x| OutputError::from(e(x)),
        |w| {
            let mut h = HashingWriter::new(w);
            c.emit(&mut h)?;
            disk_digest = h.finish().0;
            Ok(())
        },
    )?;
    tar.finish().map_err(&e)?;
    let mf = names.manifest(&ovf, &disk_digest);
    debug_assert_eq!(mf.len(), placeholder.len());
    out.file().write_all_at(mf.as_bytes(), mf_at).map_err(&e)?;
    let bytes = out.file().metadata().map_err(&e)?.len();
    out.commit().map_err(&e)?;
    Ok((bytes, Some(s)))
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
