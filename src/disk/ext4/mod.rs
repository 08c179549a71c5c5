//! A pure-Rust ext4 writer: turns the staging [`Tree`] into an ext4 filesystem written into a
//! region of a (sparse) file, with no mke2fs, root, loop device or mount.
//!
//! Feature set (a Debian 12 `mke2fs -t ext4` root without `resize_inode`): `has_journal`,
//! `ext_attr`, `dir_index`, `filetype`, `extent`, `64bit`, `flex_bg`, `sparse_super`,
//! `large_file`, `huge_file`, `dir_nlink`, `extra_isize`, `metadata_csum`. 4 KiB blocks,
//! 256-byte inodes, 16 groups per flex group, half_md4 directory hash.
//!
//! How it works: [`plan`] numbers the inodes (root 2, journal 8, `lost+found` 11, the rest
//! from 12 in walk order; an ext4 inode number is an [`ino::Ino`], never the tree's
//! [`InodeId`](crate::tree::InodeId)) and measures every inode; [`layout`] places the group
//! metadata; blocks are then handed out by a forward-only allocator ([`order`]): everything
//! but file contents in walk order, then the files' contents in the order of their bytes in
//! the spill, which is the order the layers were read in. So the data pass reads the spill
//! (and the layers, for files left in them) front to back and the output writes are
//! sequential. Holes in the spill file (and a deferred file's pieces of zeros) stay holes
//! (unallocated) in the filesystem; the output region is punched first so that everything
//! not written reads as zeros.
//!
//! Size: [`plan_size`] gives `opts.size` when set, else the content (data, directories,
//! extent and xattr blocks, journal, metadata) plus free space of `opts.free_space` or by
//! default max(256 MiB, 20 % of the content), rounded up to 1 MiB. Inodes: one per
//! `opts.bytes_per_inode` (16 KiB) of filesystem, at least the tree's inodes + 1/8 + 64.

mod csum;
mod dir;
mod hash;
mod ino;
mod inode;
mod layout;
mod order;
mod plan;
mod sb;
mod sink;
mod write;
mod xattr;

use std::fs::File;

use crate::finality::Finality;
use crate::tree::Tree;

pub use hash::{dx_hash, HashVersion};

/// How to build the filesystem. [`Ext4Options::from_seed`] derives UUID and hash seed.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// Filesystem size in bytes (rounded down to 4 KiB); `None`: auto, see [`plan_size`].
    pub size: Option<u64>,
    /// Free space for auto size; `None`: max(256 MiB, 20 % of the content).
    pub free_space: Option<u64>,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID (`s_uuid`), the one fstab and `root=UUID=` name.
    pub uuid: [u8; 16],
    /// Directory hash seed (`s_hash_seed`).
    pub hash_seed: [u8; 16],
    /// Superblock times (mkfs, write, last check), seconds since the epoch; also the time of
    /// `lost+found` and the journal inode.
    pub time: i64,
    /// Bytes of filesystem per inode (mke2fs `-i`); more inodes are made when the tree needs them.
    pub(crate) bytes_per_inode: u64,
    /// Blocks reserved for root, in percent (mke2fs `-m`).
    pub reserved_percent: u32,
    /// Journal size in bytes; `None`: by filesystem size, 4 MiB (< 128 MiB) to 64 MiB (>= 2 GiB).
    pub(crate) journal_size: Option<u64>,
    /// The tree's file data is not needed after: each file's bytes are punched out of the
    /// spill file once copied, so the temporary disk shrinks as the root fills.
    pub consume_spill: bool,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Ext4Options {
            size: None,
            free_space: None,
            label: String::new(),
            uuid: [0; 16],
            hash_seed: [0; 16],
            time: 0,
            bytes_per_inode: 16384,
            reserved_percent: 0,
            journal_size: None,
            consume_spill: false,
        }
    }
}

impl Ext4Options {
    /// Options with UUID (`"ext4-uuid"`) and hash seed (`"ext4-hash-seed"`) derived from
    /// `seed` (the image manifest digest) and times from `SOURCE_DATE_EPOCH` or 0.
    pub fn from_seed(seed: &str) -> Ext4Options {
        let mut hash_seed = [0u8; 16];
        hash_seed.copy_from_slice(&crate::ids::derive_bytes(seed, "ext4-hash-seed")[..16]);
        Ext4Options {
            uuid: crate::ids::derive_uuid(seed, "ext4-uuid"),
            hash_seed,
            time: crate::ids::source_date_epoch().unwrap_or(0),
            ..Ext4Options::default()
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Summary {
    /// Bytes of the region the filesystem occupies (`blocks * 4096`).
    pub size: u64,
    /// Blocks of 4 KiB (`s_blocks_count`).
    pub blocks: u64,
    /// Free blocks (`s_free_blocks_count`).
    pub free_blocks: u64,
    /// Inodes (`s_inodes_count`).
    pub inodes: u64,
    /// Free inodes (`s_free_inodes_count`).
    pub free_inodes: u64,
    /// Blocks of the journal inode (8).
    pub journal_blocks: u64,
    /// Directories written as hashed trees.
    pub indexed_dirs: u64,
}

/// Why the ext4 filesystem could not be planned or written.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// The requested size is below what the content and metadata need.
    #[error("ext4: a filesystem of {size} bytes is too small, it needs at least {need} bytes; give a larger root size")]
    TooSmall {
        /// The size asked for, in bytes.
        size: u64,
        /// The least size that works, in bytes.
        need: u64,
    },
    /// The content does not fit into `blocks` blocks.
    #[error("ext4: the content does not fit into {blocks} blocks of 4 KiB; give a larger root size or leave it automatic")]
    NoSpace {
        /// The filesystem's blocks.
        blocks: u64,
    },
    /// More inodes than the size allows (`max`).
    #[error(
        "ext4: {inodes} inodes needed but this size allows at most {max}; give a larger root size"
    )]
    TooManyInodes {
        /// Inodes the tree needs.
        inodes: u64,
        /// Inodes the size allows.
        max: u64,
    },
    /// An extended attribute that ext4 cannot store.
    #[error("ext4: {path}: extended attribute {name:?}: {why}")]
    Xattr {
        /// The file's path in the tree.
        path: String,
        /// The attribute's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// A file's extended attributes exceed the one xattr block of 4 KiB.
    #[error(
        "ext4: {path}: extended attributes need {bytes} bytes ({name:?} alone {len}) but the \
         one xattr block an inode may have holds {max}, and d2v keeps no value outside it \
         (no ea_inode); remove the attribute from the image"
    )]
    XattrsTooLarge {
        /// The file's path in the tree.
        path: String,
        /// The largest attribute that did not fit in the inode.
        name: String,
        /// Bytes of its value.
        len: usize,
        /// Bytes they need.
        bytes: usize,
        /// Bytes the block holds.
        max: usize,
    },
    /// A directory entry name longer than 255 bytes.
    #[error("ext4: {path}: name longer than 255 bytes")]
    NameTooLong {
        /// The entry's path in the tree.
        path: String,
    },
    /// A symlink target longer than 4095 bytes.
    #[error("ext4: {path}: symlink target of {len} bytes is longer than 4095")]
    SymlinkTooLong {
        /// The symlink's path in the tree.
        path: String,
        /// Bytes of its target.
        len: usize,
    },
    /// An inode with more than 65000 hard links.
    #[error(
        "ext4: {path}: {links} hardlinks to this file, ext4 allows at most 65000 (its link \
         count is 16 bits); the image must give the file fewer names"
    )]
    TooManyLinks {
        /// A path of the inode in the tree.
        path: String,
        /// Its link count.
        links: u32,
    },
    /// A file larger than ext4's 16 TiB.
    #[error("ext4: {path}: file of {len} bytes is larger than ext4's 16 TiB")]
    FileTooLarge {
        /// The file's path in the tree.
        path: String,
        /// Its size in bytes.
        len: u64,
    },
    /// A directory too large for a two-level htree index.
    #[error("ext4: directory with {entries} entries is too large for a two-level hashed index")]
    DirTooLarge {
        /// Entries of the directory.
        entries: usize,
    },
    /// A volume label longer than 16 bytes.
    #[error("ext4: label {0:?} is longer than 16 bytes")]
    BadLabel(String),
    /// Reading the tree's file data or writing the image failed.
    #[error("ext4: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) use crate::error::io_err;

impl<C: Into<String>> From<crate::error::IoFailure<C>> for Ext4Error {
    fn from(f: crate::error::IoFailure<C>) -> Ext4Error {
        Ext4Error::Io {
            what: f.context.into(),
            source: f.source,
        }
    }
}

/// The filesystem size `write` will use, in bytes: `opts.size` or the auto size.
pub fn plan_size(tree: &Tree, opts: &Ext4Options) -> Result<u64, Ext4Error> {
    if let Some(s) = opts.size {
        return Ok(s / layout::BLOCK * layout::BLOCK);
    }
    let p = plan::Plan::new(tree, opts)?;
    Ok(p.auto_blocks(opts)? * layout::BLOCK)
}

/// Writes the filesystem for `tree` into `[offset, offset + plan_size(tree, opts))` of `out`.
/// The region is punched to a hole first; `out` is extended if it is shorter.
pub fn write(
    tree: &Tree,
    out: &File,
    offset: u64,
    opts: &Ext4Options,
) -> Result<Ext4Summary, Ext4Error> {
    write_reporting(tree, out, offset, opts, &Finality::new())
}

/// [`write`], telling `finality` which bytes are final as they become so (front to back: the
/// filesystem's metadata is written before its file contents), so that a reader can follow
/// the writer.
pub fn write_reporting(
    tree: &Tree,
    out: &File,
    offset: u64,
    opts: &Ext4Options,
    finality: &Finality,
) -> Result<Ext4Summary, Ext4Error> {
    if opts.label.len() > 16 {
        return Err(Ext4Error::BadLabel(opts.label.clone()));
    }
    let p = plan::Plan::new(tree, opts)?;
    let blocks = match opts.size {
        Some(s) => s / layout::BLOCK,
        None => p.auto_blocks(opts)?,
    };
    write::write(tree, &p, blocks, out, offset, opts, finality)
}
