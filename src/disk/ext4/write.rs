//! The write passes: two walks that allocate each node the same blocks ([`order`]). The
//! metadata pass walks the plan's nodes in inode order and writes each node's directory,
//! symlink, extent-tree and xattr blocks and its inode record, then bitmaps, group
//! descriptors and superblocks; the data pass walks the files in data order and copies their
//! contents (straight from the spill file, with `copy_file_range` where the kernel can, or
//! from their layers read again), so the image becomes final front to back. Nothing is kept
//! per node once it is written beyond where each file's blocks begin, so memory grows with
//! the tree only by that and the plan itself.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::inode::{encode_tree, Extent, InodeRec, EXTENTS_FL, INDEX_FL};
use super::layout::{self, has_super, Alloc, Layout, BLOCK, DESC_SIZE, INODE_SIZE};
use super::order::{self, Order};
use super::plan::{self, Node, Plan, Src, JOURNAL_INO};
use super::sb::{self, GroupInfo, SbInfo};
use super::sink::{DataCopy, Itable, Writer, CAP};
use super::{csum, dir, io_err, xattr, Ext4Error, Ext4Options, Ext4Summary};
use crate::finality::Finality;
use crate::tree::{InodeId, Kind, Timestamp, Tree};

/// Where a node's blocks went.
struct Placed<'a> {
    extents: &'a [Extent],
    /// Extent-tree blocks.
    tree_blocks: usize,
    xattr_block: u64,
    i_block: [u8; 60],
    /// A directory written as a hashed tree.
    indexed: bool,
}

/// The inode record of node `n`.
fn record(tree: &Tree, n: &Node, pl: &Placed, time: Timestamp) -> InodeRec {
    let (extents, indexed) = (pl.extents, pl.indexed);
    let data: u64 = extents.iter().map(|e| e.len as u64).sum();
    let sectors = (data + pl.tree_blocks as u64 + (pl.xattr_block != 0) as u64) * 8;
    let mut r = InodeRec {
        links: n.links,
        block: pl.i_block,
        sectors,
        file_acl: pl.xattr_block,
        xattrs: n.inline_xattrs().to_vec(),
        ..InodeRec::default()
    };
    let Src::Tree(id) = n.src else {
        r.mode = 0o40700;
        r.size = data * BLOCK;
        r.flags = EXTENTS_FL;
        r.time = time;
        return r;
    };
    let inode = tree.inode(id);
    r.mode = inode.st_mode() as u16;
    r.uid = inode.meta.uid;
    r.gid = inode.meta.gid;
    r.time = inode.meta.mtime;
    match &inode.kind {
        Kind::Dir(_) => {
            r.size = data * BLOCK;
            r.flags = EXTENTS_FL | if indexed { INDEX_FL } else { 0 };
        }
        Kind::File(fd) => {
            r.size = fd.len;
            r.flags = EXTENTS_FL;
        }
        Kind::Symlink(t) => {
            r.size = t.len() as u64;
            if extents.is_empty() {
                r.block = [0; 60];
                r.block[..t.len()].copy_from_slice(t);
            } else {
                r.flags = EXTENTS_FL;
            }
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            r.block = [0; 60];
            if *major < 256 && *minor < 256 {
                r.block[..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
            } else {
                let v = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                r.block[4..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        Kind::Fifo | Kind::Socket => r.block = [0; 60],
    }
    r
}

fn is_dir(tree: &Tree, n: &Node) -> bool {
    match n.src {
        Src::Tree(id) => tree.inode(id).kind.is_dir(),
        Src::LostFound => true,
    }
}

/// Which inodes the plan uses (the reserved 1..=10 and the plan's), and how many directories
/// each group holds.
struct InodeUse {
    used: Vec<bool>,
    dirs_per_group: Vec<u32>,
    ipg: u64,
    max_ino: u64,
}

impl InodeUse {
    fn new(tree: &Tree, p: &Plan, layout: &Layout) -> InodeUse {
        let ipg = layout.inodes_per_group as u64;
        let mut used = vec![false; p.max_ino.get() as usize + 1];
        used[1..=10].fill(true);
        let mut dirs_per_group = vec![0u32; layout.groups as usize];
        for n in p.nodes(tree) {
            used[n.ino.get() as usize] = true;
            if is_dir(tree, &n) {
                dirs_per_group[((n.ino.get() - 1) as u64 / ipg) as usize] += 1;
            }
        }
        InodeUse {
            used,
            dirs_per_group,
            ipg,
            max_ino: p.max_ino.get() as u64,
        }
    }

    /// How many of group `g`'s inodes come up to its highest used one.
    fn high(&self, g: u64) -> u64 {
        let first = g * self.ipg + 1;
        let last = (first + self.ipg - 1).min(self.max_ino);
        (first..=last)
            .rev()
            .find(|&i| self.used[i as usize])
            .map_or(0, |i| i - first + 1)
    }
}

/// The inode layout for the plan: as many inodes as the options ask for, else as few as the
/// plan needs; an error when even the most a filesystem of `blocks` holds is too few.
fn layout_for(p: &Plan, blocks: u64, opts: &Ext4Options) -> Result<Layout, Ext4Error> {
    let layout = match Layout::new(blocks, p.inodes_for(blocks, opts)) {
        Err(Ext4Error::TooManyInodes { .. }) => Layout::new(blocks, p.max_ino.get() as u64)?,
        l => l?,
    };
    if p.max_ino.get() as u64 > layout.inodes() {
        return Err(Ext4Error::TooManyInodes {
            inodes: p.max_ino.get() as u64,
            max: layout.inodes(),
        });
    }
    Ok(layout)
}

/// Makes `out` long enough for the filesystem at `offset` and empties that region where it
/// can (punching a hole); whether the region now reads as zeros.
fn prepare_region(out: &File, offset: u64, size: u64) -> Result<bool, Ext4Error> {
    let cur_len = out.metadata().map_err(io_err("output file"))?.len();
    if cur_len < offset + size {
        out.set_len(offset + size)
            .map_err(io_err("extending the output file"))?;
    }
    Ok(cur_len <= offset || crate::sparse::punch_hole(out, offset, size.min(cur_len - offset)))
}

/// Clears the inode-table blocks the records will not cover (a region not known to be zero).
fn clear_inode_tables(
    out: &File,
    offset: u64,
    layout: &Layout,
    usage: &InodeUse,
) -> Result<(), Ext4Error> {
    let zeros = vec![0u8; CAP];
    for g in 0..layout.groups {
        let mut left = (usage.high(g) * INODE_SIZE).next_multiple_of(BLOCK);
        let mut at = offset + layout.meta[g as usize].inode_table * BLOCK;
        while left > 0 {
            let n = left.min(CAP as u64);
            out.write_all_at(&zeros[..n as usize], at)
                .map_err(io_err("clearing the ext4 inode tables"))?;
            (at, left) = (at + n, left - n);
        }
    }
    Ok(())
}

/// The write pass's state: the allocator and the three ways bytes reach the image.
struct Pass<'a> {
    alloc: Alloc<'a>,
    w: Writer<'a>,
    itable: Itable<'a, 'a>,
    copy: DataCopy<'a>,
    fs_seed: u32,
    /// Time stamps of the inodes d2v makes (journal, `lost+found`).
    time: Timestamp,
}

/// Bytes of allocation progress between two reports to the [`Finality`].
const REPORT_EVERY: u64 = 8 << 20;

/// Writes the filesystem of `blocks` blocks planned by `p` into `out` at `offset`, in two
/// walks that allocate the same blocks ([`Order`]):
/// - the metadata pass writes everything but file contents: the journal, every node's
///   directory, symlink, extent-tree and xattr blocks and its inode record, then the bitmaps,
///   group descriptors and superblocks;
/// - the data pass copies file contents into their blocks, telling `finality` as the
///   allocator's cursor moves forwards: every byte below it is then final.
///
/// So the disk becomes final front to back, and a reader (the VMDK writer) never waits for
/// the end to read the metadata at the start of each flex group.
pub fn write(
    tree: &Tree,
    p: &Plan,
    blocks: u64,
    out: &File,
    offset: u64,
    opts: &Ext4Options,
    finality: &Finality,
) -> Result<Ext4Summary, Ext4Error> {
    let layout = layout_for(p, blocks, opts)?;
    let size = layout.blocks * BLOCK;
    let zeroed = prepare_region(out, offset, size)?;
    let usage = InodeUse::new(tree, p, &layout);
    if !zeroed {
        clear_inode_tables(out, offset, &layout, &usage)?;
    }
    let order = Order::new(tree, p, &layout, opts)?;
    let mut pass = Pass {
        alloc: Alloc::new(&layout),
        w: Writer::new(out, offset),
        itable: Itable::new(out, offset, &layout),
        copy: DataCopy::new(tree.spill(), out, offset, zeroed, opts.consume_spill),
        fs_seed: csum::fs_seed(&opts.uuid),
        time: Timestamp {
            sec: opts.time,
            nsec: 0,
        },
    };
    if let Some(at) = order.first_in_layer(tree) {
        pass.copy.read_ahead_to(at);
    }
    // The journal comes first, then every node in plan order, each file's blocks where the
    // order put them.
    let journal = pass.journal(layout.blocks, opts)?;
    let mut indexed_dirs = 0;
    let mut xattr_blocks = HashMap::new();
    for n in p.nodes(tree) {
        indexed_dirs += pass.node(tree, p, &n, &order, &mut xattr_blocks)? as u64;
    }
    debug_assert_eq!(
        pass.alloc.cursor, order.data_start,
        "both walks allocate alike"
    );
    pass.alloc.cursor = order.end;
    pass.w.flush()?;
    pass.itable.flush()?;
    let groups = pass.groups(&layout, &usage, zeroed)?;
    let info = SbInfo {
        layout: &layout,
        free_blocks: groups.free_blocks,
        free_inodes: groups.free_inodes,
        reserved_blocks: layout.blocks * opts.reserved_percent.min(50) as u64 / 100,
        uuid: opts.uuid,
        label: label(&opts.label),
        hash_seed: opts.hash_seed,
        time: opts.time as u32,
        jnl_blocks: journal.backup(),
    };
    pass.superblocks(&info, &groups.gdt)?;
    pass.w.flush()?;

    // Everything below the files' data is written.
    pass.alloc = Alloc::at(&layout, order.data_start);
    let mut reported = order.data_start;
    finality.advance(offset + reported * BLOCK);
    for n in &order.files {
        pass.node_data(tree, n)?;
        if (pass.alloc.cursor - reported) * BLOCK >= REPORT_EVERY {
            pass.w.flush()?;
            reported = pass.alloc.cursor;
            finality.advance(offset + reported * BLOCK);
        }
    }
    pass.w.flush()?;
    debug_assert_eq!(pass.alloc.cursor, order.end, "both passes allocate alike");
    Ok(Ext4Summary {
        size,
        blocks: layout.blocks,
        free_blocks: groups.free_blocks,
        inodes: layout.inodes(),
        free_inodes: groups.free_inodes,
        journal_blocks: journal.blocks,
        indexed_dirs,
    })
}

/// The volume label field: the label's bytes, zero-padded.
fn label(l: &str) -> [u8; 16] {
    let mut label = [0u8; 16];
    label[..l.len()].copy_from_slice(l.as_bytes());
    label
}

/// Where the journal went: its size and its inode's extent-tree root.
struct Journal {
    blocks: u64,
    i_block: [u8; 60],
}

impl Journal {
    /// The superblock's `s_jnl_blocks`: a copy of the journal inode's `i_block` and its size.
    fn backup(&self) -> [u32; 17] {
        let mut jnl = [0u32; 17];
        for (k, w) in self.i_block.chunks(4).enumerate() {
            jnl[k] = u32::from_le_bytes(w.try_into().expect("4 bytes"));
        }
        jnl[15] = ((self.blocks * BLOCK) >> 32) as u32;
        jnl[16] = (self.blocks * BLOCK) as u32;
        jnl
    }
}

/// The group descriptor table and the free counts it adds up to.
struct Groups {
    gdt: Vec<u8>,
    free_blocks: u64,
    free_inodes: u64,
}

impl Pass<'_> {
    /// The journal's blocks, its superblock, extent tree and inode record.
    fn journal(&mut self, fs_blocks: u64, opts: &Ext4Options) -> Result<Journal, Ext4Error> {
        let (blocks, extents, tree_blocks) = order::journal(&mut self.alloc, fs_blocks, opts)?;
        self.w.put(
            extents[0].phys,
            &sb::journal_superblock(blocks as u32, &opts.uuid),
        )?;
        let seed = csum::inode_seed(self.fs_seed, JOURNAL_INO, 0);
        let (i_block, tb) = encode_tree(&extents, &tree_blocks, seed);
        for (b, data) in tb {
            self.w.put(b, &data)?;
        }
        let rec = InodeRec {
            mode: 0o100600,
            size: blocks * BLOCK,
            links: 1,
            flags: EXTENTS_FL,
            block: i_block,
            sectors: (blocks + tree_blocks.len() as u64) * 8,
            time: self.time,
            ..InodeRec::default()
        };
        self.itable
            .put(JOURNAL_INO, &rec.encode(JOURNAL_INO, self.fs_seed))?;
        Ok(Journal { blocks, i_block })
    }

    /// The data pass's work on one file: its contents into the blocks the metadata pass gave
    /// it (the allocator stands where the file's blocks begin).
    fn node_data(&mut self, tree: &Tree, n: &Node) -> Result<(), Ext4Error> {
        let (extents, _, _) = order::place(&mut self.alloc, tree, n)?;
        if let Some(fd) = order::file_data(tree, n) {
            self.copy.file(fd, &extents, &mut self.w)?;
        }
        Ok(())
    }

    /// One node in the metadata pass: its blocks allocated, its directory or symlink blocks,
    /// extent tree and xattr block written, then its inode record. `xattr_blocks` holds the
    /// block of each shared xattr block's owner. Whether it is a hashed (indexed) directory.
    fn node(
        &mut self,
        tree: &Tree,
        p: &Plan,
        n: &Node,
        order: &Order,
        xattr_blocks: &mut HashMap<InodeId, u64>,
    ) -> Result<bool, Ext4Error> {
        let (extents, tree_blocks, owned_xattr) = match order.start(n) {
            Some(at) => order::place(&mut Alloc::at(self.alloc.layout(), at), tree, n)?,
            None => order::place(&mut self.alloc, tree, n)?,
        };
        let mut xattr_block = 0;
        if let Some(x) = n.xattrs.filter(|x| !x.block.is_empty()) {
            xattr_block = if n.owns_xattr_block() {
                xattr_blocks.insert(x.owner, owned_xattr);
                owned_xattr
            } else {
                xattr_blocks[&x.owner]
            };
        }
        let seed = csum::inode_seed(self.fs_seed, n.ino, 0);
        let indexed = self.contents(tree, p, n, &extents, seed)?;
        let (i_block, tb) = encode_tree(&extents, &tree_blocks, seed);
        for (b, data) in tb {
            self.w.put(b, &data)?;
        }
        if n.owns_xattr_block() {
            let x = n.xattrs.expect("owner has xattrs");
            let b = xattr::encode_block(&x.block, xattr_block, x.refs, self.fs_seed);
            self.w.put(xattr_block, &b)?;
        }
        let placed = Placed {
            extents: &extents,
            tree_blocks: tree_blocks.len(),
            xattr_block,
            i_block,
            indexed,
        };
        let r = record(tree, n, &placed, self.time);
        self.itable.put(n.ino, &r.encode(n.ino, self.fs_seed))?;
        Ok(indexed)
    }

    /// A node's blocks other than file contents: a directory's entries, a slow symlink's
    /// target. Whether the directory was written as a hashed tree.
    fn contents(
        &mut self,
        tree: &Tree,
        p: &Plan,
        n: &Node,
        extents: &[Extent],
        seed: u32,
    ) -> Result<bool, Ext4Error> {
        let kind = match n.src {
            Src::Tree(id) => Some(&tree.inode(id).kind),
            Src::LostFound => None,
        };
        match kind {
            Some(Kind::Dir(_)) | None => {
                let (blocks, indexed) =
                    dir::build(n.ino, n.parent, &plan::entries(tree, p, n), &p.hash, seed)?;
                let mut it = blocks.iter();
                for e in extents {
                    for k in 0..e.len as u64 {
                        self.w
                            .put(e.phys + k, it.next().expect("directory blocks as measured"))?;
                    }
                }
                return Ok(indexed);
            }
            Some(Kind::Symlink(t)) if !extents.is_empty() => {
                self.w.slot(extents[0].phys, BLOCK as usize)?[..t.len()].copy_from_slice(t);
            }
            _ => {}
        }
        Ok(false)
    }

    /// Each group's block and inode bitmaps, and the descriptor table describing them.
    fn groups(
        &mut self,
        layout: &Layout,
        usage: &InodeUse,
        zeroed: bool,
    ) -> Result<Groups, Ext4Error> {
        let ipg = usage.ipg;
        let mut gdt = vec![0u8; (layout.gdt_blocks * BLOCK) as usize];
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        for g in 0..layout.groups {
            let m = layout.meta[g as usize];
            let first = g * ipg + 1;
            let high = usage.high(g);
            let mut ibm = vec![0xFFu8; BLOCK as usize];
            ibm[..(ipg / 8) as usize].fill(0);
            let mut used_here = 0u64;
            for i in 0..high {
                if usage.used[(first + i) as usize] {
                    ibm[(i / 8) as usize] |= 1 << (i % 8);
                    used_here += 1;
                }
            }
            let bbm = layout.block_bitmap(g, self.alloc.cursor);
            self.w.put(m.block_bitmap, &bbm)?;
            self.w.put(m.inode_bitmap, &ibm)?;
            let (s, e) = layout.group_range(g);
            let gfree = (e - s) - layout.used_in(s, e, self.alloc.cursor);
            let ifree = ipg - used_here;
            free_blocks += gfree;
            free_inodes += ifree;
            let mut flags = if zeroed { sb::ITABLE_ZEROED } else { 0 };
            if used_here == 0 {
                flags |= sb::INODE_UNINIT;
            }
            let gi = GroupInfo {
                free_blocks: gfree as u32,
                free_inodes: ifree as u32,
                used_dirs: usage.dirs_per_group[g as usize],
                itable_unused: (ipg - high) as u32,
                flags,
                block_bitmap_csum: csum::raw(self.fs_seed, &bbm),
                inode_bitmap_csum: csum::raw(self.fs_seed, &ibm[..(ipg / 8) as usize]),
            };
            let at = (g * DESC_SIZE) as usize;
            gdt[at..at + DESC_SIZE as usize].copy_from_slice(&sb::group_desc(
                layout,
                g,
                &gi,
                self.fs_seed,
            ));
        }
        Ok(Groups {
            gdt,
            free_blocks,
            free_inodes,
        })
    }

    /// The superblock and the descriptor table, in group 0 and in each backup group.
    fn superblocks(&mut self, info: &SbInfo, gdt: &[u8]) -> Result<(), Ext4Error> {
        for g in (0..info.layout.groups).filter(|&g| has_super(g)) {
            let mut b = vec![0u8; BLOCK as usize];
            let at = if g == 0 { 1024 } else { 0 };
            b[at..at + 1024].copy_from_slice(&sb::superblock(info, g as u16));
            let start = g * layout::BLOCKS_PER_GROUP;
            self.w.put(start, &b)?;
            self.w.put(start + 1, gdt)?;
        }
        Ok(())
    }
}
