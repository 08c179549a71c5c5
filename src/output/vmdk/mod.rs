//! streamOptimized VMDK, written from a raw disk image (VMware *Virtual Disk Format 5.0*).
//!
//! Layout written, all on sector boundaries: sparse header (version 3, `gdOffset = GD_AT_END`),
//! embedded descriptor, then for each grain table in disk order its non-zero grains (grain
//! marker and zlib-compressed grain) followed by a GT marker and the grain table; then the GD
//! marker and grain directory, the footer marker and footer (the header with the real
//! `gdOffset`), and the end-of-stream marker. All-zero grains and holes of the raw file are left out.

mod compress;
mod emit;
pub(crate) mod format;

#[cfg(test)]
mod reader;
#[cfg(test)]
mod tests;

pub use compress::compress;

use crate::finality::Finality;
use std::fs::File;
use std::io::Write;

/// Writes `raw` (a plain, possibly sparse disk image, written whole) as a streamOptimized VMDK
/// to `out`, strictly sequentially (`out` may be a pipe or a tar entry).
pub fn write_stream_optimized(
    raw: &File,
    out: &mut dyn Write,
    opts: &VmdkOptions,
) -> Result<VmdkSummary, VmdkError> {
    let len = raw
        .metadata()
        .map_err(|source| VmdkError::Read { offset: 0, source })?
        .len();
    compress(raw, len, &Finality::complete(), opts, out)
}

/// Highest `--compression-level`.
pub(crate) const MAX_LEVEL: u32 = 12;

/// How to write the VMDK.
#[derive(Debug, Clone)]
pub struct VmdkOptions {
    /// Seed for CID and `ddb.longContentID` (normally the image manifest digest).
    pub seed: String,
    /// The file name written in the descriptor's extent line (e.g. `app-disk1.vmdk`).
    pub file_name: String,
    /// Compression level 0..=12 (`--compression-level`, libdeflate's scale: 0 stores, 1 is
    /// fastest, 6 the default, 12 the smallest). The output is zlib format at every level.
    pub compression_level: u32,
    /// `ddb.adapterType`: `lsilogic` for SCSI disks (what VMware writes for both LSI Logic and
    /// PVSCSI controllers), `ide` for IDE.
    pub adapter_type: String,
    /// `ddb.virtualHWVersion`. The field is obsolete (ESX 3.x only read it); VMware's
    /// open-vmdk writes 4, so do we by default.
    pub virtual_hw_version: u32,
    /// `ddb.toolsVersion`: 2147483647 marks guest tools not managed by vSphere (open-vm-tools).
    pub tools_version: u32,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
    /// Advanced by the bytes of the disk compressed (holes included); its length is set here.
    pub progress: Option<indicatif::ProgressBar>,
    /// The raw disk is a temporary nobody reads after: each grain's bytes are punched out of
    /// it once read, so the temporary file shrinks as the VMDK grows.
    pub consume: bool,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions {
            seed: String::new(),
            file_name: "disk1.vmdk".into(),
            compression_level: 6,
            adapter_type: "lsilogic".into(),
            virtual_hw_version: 4,
            tools_version: 2147483647,
            threads: 0,
            progress: None,
            consume: false,
        }
    }
}

/// What was written, for the OVF descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmdkSummary {
    /// Virtual disk size in bytes (the raw file size rounded up to a sector).
    pub capacity: u64,
    /// Bytes of the grains actually stored (non-zero grains × 64 KiB): OVF `populatedSize`.
    pub(crate) populated_size: u64,
    /// Size of the VMDK file in bytes.
    pub(crate) file_size: u64,
    /// Number of grains stored.
    pub(crate) grains: u64,
}

/// Errors of the VMDK writer.
#[derive(Debug, thiserror::Error)]
pub enum VmdkError {
    /// Reading the raw disk image failed at byte `offset`.
    #[error("reading the raw disk image failed at byte {offset}: {source}")]
    Read {
        /// Byte offset in the raw image.
        offset: u64,
        /// The error.
        source: std::io::Error,
    },
    /// Writing the VMDK failed.
    #[error("writing the VMDK failed: {0} (check free space in the output directory)")]
    Write(#[source] std::io::Error),
    /// Deflating a grain failed.
    #[error("compressing a grain failed: {0}")]
    Compress(String),
    /// A compression level out of range.
    #[error("compression level {0} is out of range: use 0 to 12")]
    Level(u32),
    /// A file name the descriptor cannot hold.
    #[error("VMDK file name {0:?} cannot go in a descriptor: use a name without quotes, control characters or more than 200 bytes")]
    FileName(String),
    /// More compressed data than 32-bit grain table entries address (2 TiB).
    #[error("the VMDK would exceed 2 TiB of compressed data, beyond 32-bit grain table entries: use a smaller disk")]
    TooLarge,
    /// The disk writer gave up before the disk was whole.
    #[error("the disk image was not finished, so no VMDK was written")]
    Aborted,
    /// An empty raw disk image.
    #[error("the raw disk image is empty: a VMDK needs at least one sector")]
    Empty,
}

/// The embedded descriptor text for a disk of `capacity_sectors`.
pub(crate) fn descriptor(capacity_sectors: u64, opts: &VmdkOptions) -> Result<String, VmdkError> {
    let name = &opts.file_name;
    if name.is_empty() || name.len() > 200 || name.chars().any(|c| c == '"' || c.is_control()) {
        return Err(VmdkError::FileName(name.clone()));
    }
    let (cid, long) = content_ids(&opts.seed);
    let (cyl, heads, sectors) = format::geometry(capacity_sectors);
    Ok(format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.geometry.cylinders = \"{cyl}\"\n\
         ddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{sectors}\"\n\
         ddb.longContentID = \"{long}\"\n\
         ddb.toolsVersion = \"{tools}\"\n\
         ddb.virtualHWVersion = \"{hw}\"\n",
        adapter = opts.adapter_type,
        tools = opts.tools_version,
        hw = opts.virtual_hw_version,
    ))
}

/// CID (never `ffffffff`/`fffffffe`, which mean "no parent" and "all zeroes" to some tools) and
/// the 128-bit `longContentID`, whose last 32 bits are the CID as VMware writes them.
fn content_ids(seed: &str) -> (u32, String) {
    let b = crate::ids::derive_bytes(seed, "vmdk-content-id");
    let mut cid = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
    if cid >= 0xffff_fffe {
        cid = 0x7fff_fffe;
    }
    let mut long = hex::encode(&b[..12]);
    long.push_str(&format!("{cid:08x}"));
    (cid, long)
}
