//! The write pass: allocate blocks in walk order, stream file data from the spill file and
//! directory blocks in ascending block order, then write inode tables, bitmaps, group
//! descriptors and superblocks.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::inode::{encode_tree, tree_shape, Extent, InodeRec, EXTENTS_FL, INDEX_FL, MAX_LEN};
use super::layout::{self, has_super, Alloc, Layout, BLOCK, DESC_SIZE, INODE_SIZE};
use super::plan::{self, journal_blocks, Plan, Src, JOURNAL_INO};
use super::sb::{self, GroupInfo, SbInfo};
use super::{csum, dir, io_err, xattr, Ext4Error, Ext4Options, Ext4Summary};
use crate::tree::{Kind, Timestamp, Tree};

/// Largest single write (and the write buffer).
const CAP: usize = 2 << 20;

/// Coalesces writes to consecutive blocks into large `pwrite`s.
struct Writer<'f> {
    file: &'f File,
    base: u64,
    buf: Vec<u8>,
    start: u64,
}

impl Writer<'_> {
    fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.base + self.start * BLOCK)
                .map_err(io_err("writing the ext4 image"))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// A zeroed slice of `len` bytes that will land at block `block`.
    fn slot(&mut self, block: u64, len: usize) -> Result<&mut [u8], Ext4Error> {
        let contiguous = self.start * BLOCK + self.buf.len() as u64 == block * BLOCK;
        if !contiguous || self.buf.len() + len > CAP {
            self.flush()?;
            self.start = block;
        }
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        Ok(&mut self.buf[at..])
    }

    fn put(&mut self, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
        self.slot(block, data.len())?.copy_from_slice(data);
        Ok(())
    }
}

/// Per-node results of allocation and the data pass.
#[derive(Clone)]
struct Placed {
    extents: Vec<Extent>,
    tree_blocks: Vec<u64>,
    xattr_block: u64,
    i_block: [u8; 60],
    indexed: bool,
}

impl Default for Placed {
    fn default() -> Self {
        Placed {
            extents: Vec::new(),
            tree_blocks: Vec::new(),
            xattr_block: 0,
            i_block: [0; 60],
            indexed: false,
        }
    }
}

fn extents_for(alloc: &mut Alloc, ranges: &[(u64, u64)]) -> Result<Vec<Extent>, Ext4Error> {
    let mut out = Vec::new();
    for &(a, b) in ranges {
        let mut l = a;
        while l < b {
            let (phys, n) = alloc.run((b - l).min(MAX_LEN))?;
            out.push(Extent {
                logical: l as u32,
                len: n as u16,
                phys,
            });
            l += n;
        }
    }
    Ok(out)
}

fn punch(out: &File, offset: u64, len: u64) -> bool {
    // SAFETY: fallocate on a valid descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            out.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    r == 0
}

pub fn write(
    tree: &Tree,
    p: &Plan,
    blocks: u64,
    out: &File,
    offset: u64,
    opts: &Ext4Options,
) -> Result<Ext4Summary, Ext4Error> {
    let layout = match Layout::new(blocks, p.inodes_for(blocks, opts)) {
        Err(Ext4Error::TooManyInodes { .. }) => Layout::new(blocks, p.max_ino as u64)?,
        l => l?,
    };
    if p.max_ino as u64 > layout.inodes() {
        return Err(Ext4Error::TooManyInodes {
            inodes: p.max_ino as u64,
            max: layout.inodes(),
        });
    }
    let size = layout.blocks * BLOCK;
    let cur_len = out.metadata().map_err(io_err("output file"))?.len();
    if cur_len < offset + size {
        out.set_len(offset + size)
            .map_err(io_err("extending the output file"))?;
    }
    let zeroed = cur_len <= offset || punch(out, offset, size.min(cur_len - offset));
    let fs_seed = csum::fs_seed(&opts.uuid);

    // Allocation, in the order the data pass writes.
    let mut alloc = Alloc::new(&layout);
    let jblocks = journal_blocks(layout.blocks, opts);
    let journal = extents_for(&mut alloc, &[(0, jblocks)])?;
    let mut jtree = Vec::new();
    for _ in 0..tree_shape(journal.len()).iter().sum::<usize>() {
        jtree.push(alloc.run(1)?.0);
    }
    let mut placed = vec![Placed::default(); p.nodes.len()];
    for (i, n) in p.nodes.iter().enumerate() {
        let mut pl = Placed {
            extents: extents_for(&mut alloc, &n.ranges)?,
            ..Placed::default()
        };
        for _ in 0..tree_shape(pl.extents.len()).iter().sum::<usize>() {
            pl.tree_blocks.push(alloc.run(1)?.0);
        }
        if !n.block_xattrs.is_empty() {
            let owner = n.xattr_owner as usize;
            pl.xattr_block = if owner == i {
                alloc.run(1)?.0
            } else {
                placed[owner].xattr_block
            };
        }
        placed[i] = pl;
    }

    // Data pass.
    let mut w = Writer {
        file: out,
        base: offset,
        buf: Vec::with_capacity(CAP),
        start: 0,
    };
    w.put(
        journal[0].phys,
        &sb::journal_superblock(jblocks as u32, &opts.uuid),
    )?;
    let (j_iblock, jt) = encode_tree(&journal, &jtree, csum::inode_seed(fs_seed, JOURNAL_INO, 0));
    for (b, data) in jt {
        w.put(b, &data)?;
    }
    let mut indexed_dirs = 0;
    for (i, (n, pl)) in p.nodes.iter().zip(placed.iter_mut()).enumerate() {
        let seed = csum::inode_seed(fs_seed, n.ino, 0);
        let kind = match n.src {
            Src::Tree(id) => Some(&tree.inode(id).kind),
            Src::LostFound => None,
        };
        match kind {
            Some(Kind::Dir(_)) | None => {
                let (blocks, indexed) =
                    dir::build(n.ino, n.parent, &plan::entries(tree, p, n), &p.hash, seed)?;
                pl.indexed = indexed;
                indexed_dirs += indexed as u64;
                let mut it = blocks.iter();
                for e in &pl.extents {
                    for k in 0..e.len as u64 {
                        w.put(e.phys + k, it.next().expect("directory blocks as measured"))?;
                    }
                }
            }
            Some(Kind::Symlink(t)) if !pl.extents.is_empty() => {
                w.slot(pl.extents[0].phys, BLOCK as usize)?[..t.len()].copy_from_slice(t);
            }
            Some(Kind::File(fd)) => {
                for e in &pl.extents {
                    let mut done = 0u64;
                    let total = e.len as u64 * BLOCK;
                    while done < total {
                        let chunk = (total - done).min(CAP as u64);
                        let pos = e.logical as u64 * BLOCK + done;
                        let avail = fd.len.saturating_sub(pos).min(chunk) as usize;
                        let s = w.slot(e.phys + done / BLOCK, chunk as usize)?;
                        tree.spill()
                            .read_at(fd, pos, &mut s[..avail])
                            .map_err(io_err("reading the spill file"))?;
                        done += chunk;
                    }
                }
            }
            _ => {}
        }
        let (ib, tb) = encode_tree(&pl.extents, &pl.tree_blocks, seed);
        pl.i_block = ib;
        for (b, data) in tb {
            w.put(b, &data)?;
        }
        if pl.xattr_block != 0 && n.xattr_owner as usize == i {
            let b = xattr::encode_block(&n.block_xattrs, pl.xattr_block, n.xattr_refs, fs_seed);
            w.put(pl.xattr_block, &b)?;
        }
    }
    w.flush()?;

    // Inode records.
    let mut node_of = vec![u32::MAX; p.max_ino as usize + 1];
    for (i, n) in p.nodes.iter().enumerate() {
        node_of[n.ino as usize] = i as u32;
    }
    let time = Timestamp {
        sec: opts.time,
        nsec: 0,
    };
    let record = |ino: u32| -> Option<InodeRec> {
        if ino == JOURNAL_INO {
            let mut r = InodeRec {
                mode: 0o100600,
                size: jblocks * BLOCK,
                links: 1,
                flags: EXTENTS_FL,
                block: j_iblock,
                sectors: (jblocks + jtree.len() as u64) * 8,
                time,
                ..InodeRec::default()
            };
            r.uid = 0;
            return Some(r);
        }
        let i = *node_of.get(ino as usize)?;
        if i == u32::MAX {
            return None;
        }
        let (n, pl) = (&p.nodes[i as usize], &placed[i as usize]);
        let data: u64 = pl.extents.iter().map(|e| e.len as u64).sum();
        let sectors = (data + pl.tree_blocks.len() as u64 + (pl.xattr_block != 0) as u64) * 8;
        let mut r = InodeRec {
            links: n.links,
            block: pl.i_block,
            sectors,
            file_acl: pl.xattr_block,
            xattrs: n.inline.clone(),
            ..InodeRec::default()
        };
        let Src::Tree(id) = n.src else {
            r.mode = 0o40700;
            r.size = data * BLOCK;
            r.flags = EXTENTS_FL;
            r.time = time;
            return Some(r);
        };
        let inode = tree.inode(id);
        r.mode = inode.st_mode() as u16;
        r.uid = inode.meta.uid;
        r.gid = inode.meta.gid;
        r.time = inode.meta.mtime;
        match &inode.kind {
            Kind::Dir(_) => {
                r.size = data * BLOCK;
                r.flags = EXTENTS_FL | if pl.indexed { INDEX_FL } else { 0 };
            }
            Kind::File(fd) => {
                r.size = fd.len;
                r.flags = EXTENTS_FL;
            }
            Kind::Symlink(t) => {
                r.size = t.len() as u64;
                if pl.extents.is_empty() {
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
        Some(r)
    };

    // Inode tables, bitmaps, descriptors.
    let ipg = layout.inodes_per_group as u64;
    let used_ino = |ino: u64| {
        ino <= 10
            || ino == JOURNAL_INO as u64
            || (ino as usize) < node_of.len() && node_of[ino as usize] != u32::MAX
    };
    let mut dirs_per_group = vec![0u32; layout.groups as usize];
    for n in &p.nodes {
        let is_dir = match n.src {
            Src::Tree(id) => tree.inode(id).kind.is_dir(),
            Src::LostFound => true,
        };
        if is_dir {
            dirs_per_group[((n.ino - 1) as u64 / ipg) as usize] += 1;
        }
    }
    let mut gdt = vec![0u8; (layout.gdt_blocks * BLOCK) as usize];
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..layout.groups {
        let m = layout.meta[g as usize];
        let first = g * ipg + 1;
        let last = (first + ipg - 1).min(p.max_ino as u64);
        let used: Vec<u64> = (first..=last).filter(|&i| used_ino(i)).collect();
        let high = used.last().map_or(0, |&i| i - first + 1);
        if high > 0 {
            let mut table = vec![0u8; (high * INODE_SIZE).next_multiple_of(BLOCK) as usize];
            for &ino in &used {
                if let Some(r) = record(ino as u32) {
                    let at = ((ino - first) * INODE_SIZE) as usize;
                    table[at..at + 256].copy_from_slice(&r.encode(ino as u32, fs_seed));
                }
            }
            debug_assert!(table.len() as u64 <= layout.itable_blocks * BLOCK);
            w.put(m.inode_table, &table)?;
        }
        let mut ibm = vec![0xFFu8; BLOCK as usize];
        ibm[..(ipg / 8) as usize].fill(0);
        for &ino in &used {
            let i = ino - first;
            ibm[(i / 8) as usize] |= 1 << (i % 8);
        }
        let bbm = layout.block_bitmap(g, alloc.cursor);
        w.put(m.block_bitmap, &bbm)?;
        w.put(m.inode_bitmap, &ibm)?;
        let (s, e) = layout.group_range(g);
        let gfree = (e - s) - layout.used_in(s, e, alloc.cursor);
        let ifree = ipg - used.len() as u64;
        free_blocks += gfree;
        free_inodes += ifree;
        let mut flags = if zeroed { sb::ITABLE_ZEROED } else { 0 };
        if used.is_empty() {
            flags |= sb::INODE_UNINIT;
        }
        let gi = GroupInfo {
            free_blocks: gfree as u32,
            free_inodes: ifree as u32,
            used_dirs: dirs_per_group[g as usize],
            itable_unused: (ipg - high) as u32,
            flags,
            block_bitmap_csum: csum::raw(fs_seed, &bbm),
            inode_bitmap_csum: csum::raw(fs_seed, &ibm[..(ipg / 8) as usize]),
        };
        let at = (g * DESC_SIZE) as usize;
        gdt[at..at + DESC_SIZE as usize].copy_from_slice(&sb::group_desc(&layout, g, &gi, fs_seed));
    }

    let mut label = [0u8; 16];
    label[..opts.label.len()].copy_from_slice(opts.label.as_bytes());
    let mut jnl = [0u32; 17];
    for (k, w) in j_iblock.chunks(4).enumerate() {
        jnl[k] = u32::from_le_bytes(w.try_into().unwrap());
    }
    jnl[15] = ((jblocks * BLOCK) >> 32) as u32;
    jnl[16] = (jblocks * BLOCK) as u32;
    let info = SbInfo {
        layout: &layout,
        free_blocks,
        free_inodes,
        reserved_blocks: layout.blocks * opts.reserved_percent.min(50) as u64 / 100,
        uuid: opts.uuid,
        label,
        hash_seed: opts.hash_seed,
        time: opts.time as u32,
        jnl_blocks: jnl,
    };
    for g in (0..layout.groups).filter(|&g| has_super(g)) {
        let mut b = vec![0u8; BLOCK as usize];
        let at = if g == 0 { 1024 } else { 0 };
        b[at..at + 1024].copy_from_slice(&sb::superblock(&info, g as u16));
        let start = g * layout::BLOCKS_PER_GROUP;
        w.put(start, &b)?;
        w.put(start + 1, &gdt)?;
    }
    w.flush()?;
    Ok(Ext4Summary {
        size,
        blocks: layout.blocks,
        free_blocks,
        inodes: layout.inodes(),
        free_inodes,
        journal_blocks: jblocks,
        indexed_dirs,
    })
}
