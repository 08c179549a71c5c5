//! The FAT32 EFI System Partition, filled from the staging tree's `/boot` (the ESP is the
//! guest's `/boot`, as in the seed article), written by d2v from the FAT specification.
//!
//! The volume is planned whole first ([`plan`]: names, then clusters, directories before file
//! contents), so it is written front to back in one sequential pass: reserved sectors, both
//! FATs, directories, file contents, telling a [`Finality`] as it goes so the VMDK writer
//! compresses the ESP while it is written.
//!
//! Output is deterministic: the volume serial comes from the layout (derived from the image
//! digest) and time stamps from the tree's mtimes, clamped to `SOURCE_DATE_EPOCH` when set: a
//! file's created/modified/accessed are its mtime, a directory's created (and its `.` and `..`
//! entries) its own mtime and its modified the mtime of its last entry (as writing the entry
//! would set it on any file system). No wall clock, no FAT epoch.

mod dirent;
mod geometry;
mod plan;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use dirent::{dos_time, Short, ATTR_ARCHIVE, ATTR_DIRECTORY};
use geometry::{Geometry, END_OF_CHAIN, ROOT_CLUSTER, SECTOR};
use plan::{Node, NodeKind};

use super::Result;
use crate::finality::Finality;
use crate::tree::{show, Tree};

/// The ESP could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Writing the volume's structures failed (`what` was being written).
    #[error("{what}: {source}")]
    Volume {
        /// What was being written.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Copying one file from `/boot` failed (reading it from the staging tree, or writing it).
    #[error("/{path}: {source}")]
    Entry {
        /// Its path in the image.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// `/boot` does not fit: this entry was the first without room.
    #[error("/{path}: no room left on the ESP ({esp_mib} MiB); if /boot does not fit, raise --boot-size")]
    NoSpace {
        /// Its path in the image.
        path: String,
        /// The partition's size.
        esp_mib: u64,
    },
    /// A directory with more entries than FAT allows (65 536, long-name parts included).
    #[error("/{path}: more entries than a FAT directory holds (65 536 with their long names)")]
    TooManyEntries {
        /// Its path in the image.
        path: String,
    },
    /// A file FAT cannot hold (4 GiB or more).
    #[error("/{path}: {len} bytes; FAT holds files below 4 GiB")]
    TooLarge {
        /// Its path in the image.
        path: String,
        /// Its size.
        len: u64,
    },
    /// The partition cannot be FAT32: fewer than 65 525 clusters of 512 bytes fit (below
    /// 33 MiB), or more sectors than FAT32 counts (2 TiB).
    #[error("an ESP of {size} bytes cannot be FAT32 (33 MiB to 2 TiB): change --boot-size")]
    Size {
        /// The partition's size.
        size: u64,
    },
}

/// How to write the FAT32 EFI System Partition.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Volume serial (`XXXX-XXXX` in fstab).
    pub volume_id: u32,
    /// Volume label, up to 11 ASCII characters.
    pub label: String,
    /// The tree directory copied to the root of the filesystem (normally `boot`).
    pub source: Vec<u8>,
}

/// What was written, and what could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FatSummary {
    /// Regular files written.
    pub files: u64,
    pub(crate) dirs: u64,
    pub(crate) bytes: u64,
    pub(crate) warnings: Vec<String>,
}

/// Formats `[offset, offset+size)` of `out` as FAT32 and copies `opts.source` into it.
pub fn write(
    tree: &Tree,
    out: &File,
    offset: u64,
    size: u64,
    opts: &FatOptions,
) -> Result<FatSummary> {
    write_reporting(tree, out, offset, size, opts, &Finality::new())
}

/// [`write`], telling `finality` (without waiting for its reader: the partition's size bounds
/// what it holds) how far the disk is final as the volume is written front to back.
pub fn write_reporting(
    tree: &Tree,
    out: &File,
    offset: u64,
    size: u64,
    opts: &FatOptions,
    finality: &Finality,
) -> Result<FatSummary> {
    let g = Geometry::for_size(size).ok_or(FatError::Size { size })?;
    let mut summary = FatSummary::default();
    let plan = plan::plan(tree, &opts.source, &g, &mut summary)?;
    let label = label(&opts.label);
    let end = ROOT_CLUSTER + plan.used;
    let next_free = if plan.used < g.clusters {
        end
    } else {
        u32::MAX
    };
    let mut w = Sequential::new(out, offset, finality);
    let volume = |what: &str| {
        let what = what.to_string();
        move |source| FatError::Volume { what, source }
    };
    let reserved = g.reserved_region(
        opts.volume_id,
        label,
        (offset / SECTOR) as u32,
        g.clusters - plan.used,
        next_free,
    );
    w.put(&reserved)
        .map_err(volume("writing the boot sector"))?;
    // Only the entries up to the last used cluster are not zero: those are made, the rest
    // of each FAT written as zeros in pieces (a large ESP's FATs are 128 MiB each).
    let used_fat = used_fat(&plan.nodes, end);
    debug_assert_eq!(w.pos, g.fat_offset(0));
    for _ in 0..2 {
        w.put(&used_fat).map_err(volume("writing the FAT"))?;
        w.zeros(g.fat_bytes() - used_fat.len() as u64)
            .map_err(volume("writing the FAT"))?;
    }
    for node in &plan.nodes {
        if let NodeKind::Dir { entries, parent } = &node.kind {
            debug_assert_eq!(w.pos, g.cluster_offset(node.first));
            let bytes = dir_bytes(&plan.nodes, node, entries, *parent, label, &g);
            w.put(&bytes).map_err(volume("writing directories"))?;
        }
    }
    for node in &plan.nodes {
        if let NodeKind::File(data) = &node.kind {
            copy_file(tree, node, data, &g, &mut w)?;
        }
    }
    w.flush().map_err(volume("writing the partition"))?;
    Ok(summary)
}

/// The 11-byte volume label: upper case, space padded.
fn label(l: &str) -> [u8; 11] {
    let mut label = [b' '; 11];
    for (d, s) in label.iter_mut().zip(l.to_ascii_uppercase().bytes()) {
        *d = s;
    }
    label
}

/// The start of a FAT up to cluster `end` (excluded): entries 0 and 1, then each node's
/// contiguous chain; every entry after it is 0 (free).
fn used_fat(nodes: &[Node], end: u32) -> Vec<u8> {
    let mut fat = vec![0u8; end as usize * 4];
    let mut set = |c: u32, v: u32| {
        let at = c as usize * 4;
        fat[at..at + 4].copy_from_slice(&v.to_le_bytes());
    };
    let [e0, e1] = Geometry::fat_head();
    set(0, e0);
    set(1, e1);
    for n in nodes.iter().filter(|n| n.clusters > 0) {
        let last = n.first + n.clusters - 1;
        for c in n.first..last {
            set(c, c + 1);
        }
        set(last, END_OF_CHAIN);
    }
    fat
}

/// The clusters of directory `node` (of `nodes`): the volume label (root) or `.` and `..`,
/// then each entry's long-name entries and short entry, zeros to the end (no more entries).
fn dir_bytes(
    nodes: &[Node],
    node: &Node,
    entries: &[plan::Entry],
    parent: Option<usize>,
    label: [u8; 11],
    g: &Geometry,
) -> Vec<u8> {
    let own = dos_time(node.mtime);
    let mut v = Vec::with_capacity((node.clusters as u64 * g.cluster_bytes()) as usize);
    match parent {
        None => v.extend_from_slice(&dirent::volume_label(label)),
        Some(p) => {
            // `..` of a directory in the root names cluster 0, not the root's.
            let up = if p == 0 { 0 } else { nodes[p].first };
            for (name, first) in [(*b".          ", node.first), (*b"..         ", up)] {
                let e = Short {
                    name,
                    attr: ATTR_DIRECTORY,
                    created: own,
                    modified: own,
                    first_cluster: first,
                    size: 0,
                };
                v.extend_from_slice(&e.bytes());
            }
        }
    }
    for e in entries {
        let child = &nodes[e.node];
        for l in dirent::lfn_entries(&e.name, &e.short) {
            v.extend_from_slice(&l);
        }
        let (attr, size) = match &child.kind {
            NodeKind::Dir { .. } => (ATTR_DIRECTORY, 0),
            NodeKind::File(data) => (ATTR_ARCHIVE, data.len as u32),
        };
        let short = Short {
            name: e.short,
            attr,
            created: dos_time(child.mtime),
            modified: dos_time(child.modified(nodes)),
            first_cluster: child.first,
            size,
        };
        v.extend_from_slice(&short.bytes());
    }
    v.resize((node.clusters as u64 * g.cluster_bytes()) as usize, 0);
    v
}

/// Copies one file's contents from the staging tree into its clusters, zero-padded to the
/// last cluster's end.
fn copy_file(
    tree: &Tree,
    node: &Node,
    data: &crate::tree::FileData,
    g: &Geometry,
    w: &mut Sequential,
) -> Result<()> {
    if node.clusters == 0 {
        return Ok(());
    }
    let err = |source| FatError::Entry {
        path: show(&node.path),
        source,
    };
    debug_assert_eq!(w.pos, g.cluster_offset(node.first));
    let mut reader = tree.spill().reader(data).take(data.len);
    let mut chunk = vec![0u8; COPY_CHUNK.min(data.len as usize)];
    let mut left = data.len;
    while left > 0 {
        let n = reader.read(&mut chunk).map_err(err)?;
        if n == 0 {
            let eof = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the staging tree's data ended early",
            );
            return Err(err(eof).into());
        }
        w.put(&chunk[..n]).map_err(err)?;
        left -= n as u64;
    }
    let tail = node.clusters as u64 * g.cluster_bytes() - data.len;
    w.zeros(tail).map_err(err)?;
    Ok(())
}

/// Size of the reads from the staging tree.
const COPY_CHUNK: usize = 1 << 20;
/// Size of the writes into the partition.
const WRITE_CHUNK: usize = 4 << 20;

/// Writes the partition front to back in large `pwrite`s, telling the [`Finality`] after each.
struct Sequential<'a> {
    out: &'a File,
    base: u64,
    finality: &'a Finality,
    /// Partition offset where `buf` starts.
    start: u64,
    /// Partition offset of the next byte put.
    pos: u64,
    buf: Vec<u8>,
}

impl<'a> Sequential<'a> {
    fn new(out: &'a File, base: u64, finality: &'a Finality) -> Sequential<'a> {
        Sequential {
            out,
            base,
            finality,
            start: 0,
            pos: 0,
            buf: Vec::with_capacity(WRITE_CHUNK),
        }
    }

    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(WRITE_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            self.pos += n as u64;
            bytes = &bytes[n..];
            if self.buf.len() == WRITE_CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Puts `n` zero bytes.
    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        let zeros = [0u8; 64 << 10];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.put(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all_at(&self.buf, self.base + self.start)?;
        self.start = self.pos;
        self.buf.clear();
        self.finality.advance_now(self.base + self.start);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
