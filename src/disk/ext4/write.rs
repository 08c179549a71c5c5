//! The write pass: one walk over the plan's nodes in inode order that allocates each node's
//! blocks, copies its data (file contents straight from the spill file, with
//! `copy_file_range` where the kernel can), writes its directory, extent-tree and xattr blocks
//! and its inode record; then bitmaps, group descriptors and superblocks. Nothing is kept per
//! node once it is written, so memory does not grow with the tree beyond the plan itself.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::inode::{encode_tree, tree_shape, Extent, InodeRec, EXTENTS_FL, INDEX_FL, MAX_LEN};
use super::layout::{self, has_super, Alloc, Layout, BLOCK, DESC_SIZE, INODE_SIZE};
use super::plan::{self, journal_blocks, Node, Plan, Src, JOURNAL_INO};
use super::sb::{self, GroupInfo, SbInfo};
use super::{csum, dir, io_err, xattr, Ext4Error, Ext4Options, Ext4Summary};
use crate::tree::{FileData, InodeId, Kind, Spill, Timestamp, Tree};

/// Largest single buffered write (and the size of each write buffer).
const CAP: usize = 128 << 10;

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

/// Inode records go into the groups' inode tables through a buffer of consecutive records.
struct Itable<'f, 'l> {
    file: &'f File,
    base: u64,
    layout: &'l Layout,
    buf: Vec<u8>,
    /// Inode number of the first record in `buf`.
    first: u64,
}

impl Itable<'_, '_> {
    fn group(&self, ino: u64) -> u64 {
        (ino - 1) / self.layout.inodes_per_group as u64
    }

    fn put(&mut self, ino: u32, rec: &[u8; INODE_SIZE as usize]) -> Result<(), Ext4Error> {
        let ino = ino as u64;
        let next = self.first + self.buf.len() as u64 / INODE_SIZE;
        if ino != next || self.group(ino) != self.group(self.first) || self.buf.len() >= CAP {
            self.flush()?;
            self.first = ino;
        }
        self.buf.extend_from_slice(rec);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Ext4Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let ipg = self.layout.inodes_per_group as u64;
        let g = self.group(self.first);
        let index = (self.first - 1) % ipg;
        debug_assert!(
            (index * INODE_SIZE + self.buf.len() as u64) <= self.layout.itable_blocks * BLOCK
        );
        let at = self.layout.meta[g as usize].inode_table * BLOCK + index * INODE_SIZE;
        self.file
            .write_all_at(&self.buf, self.base + at)
            .map_err(io_err("writing the ext4 inode tables"))?;
        self.buf.clear();
        Ok(())
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

/// Copies `len` bytes from `from` at `src` to `to` at `dst` inside the kernel. `Ok(false)`:
/// `copy_file_range` cannot do it for these files (nothing was copied); the caller copies
/// through its own buffer instead.
fn kernel_copy(from: &File, src: u64, to: &File, dst: u64, len: u64) -> std::io::Result<bool> {
    let (mut off_in, mut off_out) = (src as libc::loff_t, dst as libc::loff_t);
    let mut left = len;
    while left > 0 {
        // SAFETY: both descriptors are valid; the offsets are our own variables, so the
        // descriptors' file positions are untouched.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                left.min(1 << 30) as usize,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EPERM)
            );
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                _ if unsupported && left == len => return Ok(false),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the spill file ended early",
            ));
        }
        left -= n as u64;
    }
    Ok(true)
}

/// Starts writing the output's dirty pages to disk without waiting (`sync_file_range`); only
/// a hint, so errors are ignored (the final fsync reports real ones).
fn start_writeback(out: &File) {
    // SAFETY: a valid descriptor and plain integer arguments; offset 0 and length 0 mean the
    // whole file.
    unsafe {
        libc::sync_file_range(out.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// How file contents reach the image.
struct DataCopy<'a> {
    spill: &'a Spill,
    out: &'a File,
    base: u64,
    /// `copy_file_range` works between the spill file and the output (until it fails so). Only
    /// used when the output region reads as zeros, so block tails need no writing.
    kernel: bool,
    /// Bytes copied since writeback of the output was last started.
    unflushed: u64,
}

/// Writeback of the output is started every this many bytes of file data, so that the final
/// fsync has less left to wait for.
const WRITEBACK_EVERY: u64 = 32 << 20;

impl DataCopy<'_> {
    /// Writes the contents of `fd` covered by `extents`; block tails past the end of the file
    /// are zero (the region was punched) or written as zeros through `w`.
    fn file(&mut self, fd: &FileData, extents: &[Extent], w: &mut Writer) -> Result<(), Ext4Error> {
        for e in extents {
            let pos = e.logical as u64 * BLOCK;
            let total = e.len as u64 * BLOCK;
            let avail = fd.len.saturating_sub(pos).min(total);
            if self.kernel {
                let src = fd.offset + pos;
                let dst = self.base + e.phys * BLOCK;
                if kernel_copy(self.spill.file(), src, self.out, dst, avail)
                    .map_err(io_err("copying file data from the spill file"))?
                {
                    self.unflushed += avail;
                    if self.unflushed >= WRITEBACK_EVERY {
                        self.unflushed = 0;
                        start_writeback(self.out);
                    }
                    continue;
                }
                self.kernel = false;
            }
            let mut done = 0u64;
            while done < total {
                let chunk = (total - done).min(CAP as u64);
                let avail = fd.len.saturating_sub(pos + done).min(chunk) as usize;
                let s = w.slot(e.phys + done / BLOCK, chunk as usize)?;
                self.spill
                    .read_at(fd, pos + done, &mut s[..avail])
                    .map_err(io_err("reading the spill file"))?;
                done += chunk;
            }
        }
        Ok(())
    }
}

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
    let ipg = layout.inodes_per_group as u64;

    // Which inodes are used: the reserved ones (1..=10) and the plan's.
    let mut used = vec![false; p.max_ino as usize + 1];
    used[1..=10].fill(true);
    let mut dirs_per_group = vec![0u32; layout.groups as usize];
    for n in p.nodes(tree) {
        used[n.ino as usize] = true;
        if is_dir(tree, &n) {
            dirs_per_group[((n.ino - 1) as u64 / ipg) as usize] += 1;
        }
    }
    let high_of = |g: u64| -> u64 {
        let first = g * ipg + 1;
        let last = (first + ipg - 1).min(p.max_ino as u64);
        (first..=last)
            .rev()
            .find(|&i| used[i as usize])
            .map_or(0, |i| i - first + 1)
    };
    if !zeroed {
        // The records below cover only used inodes: clear the rest of the used table blocks.
        let zeros = vec![0u8; CAP];
        for g in 0..layout.groups {
            let mut left = (high_of(g) * INODE_SIZE).next_multiple_of(BLOCK);
            let mut at = offset + layout.meta[g as usize].inode_table * BLOCK;
            while left > 0 {
                let n = left.min(CAP as u64);
                out.write_all_at(&zeros[..n as usize], at)
                    .map_err(io_err("clearing the ext4 inode tables"))?;
                (at, left) = (at + n, left - n);
            }
        }
    }

    let mut w = Writer {
        file: out,
        base: offset,
        buf: Vec::with_capacity(CAP),
        start: 0,
    };
    let mut itable = Itable {
        file: out,
        base: offset,
        layout: &layout,
        buf: Vec::with_capacity(CAP),
        first: 1,
    };
    let mut copy = DataCopy {
        spill: tree.spill(),
        out,
        base: offset,
        kernel: zeroed,
        unflushed: 0,
    };
    let time = Timestamp {
        sec: opts.time,
        nsec: 0,
    };

    // The journal comes first, then every node in plan order: the allocator hands out blocks
    // forwards, so data and output writes are both sequential.
    let mut alloc = Alloc::new(&layout);
    let jblocks = journal_blocks(layout.blocks, opts);
    let journal = extents_for(&mut alloc, &[(0, jblocks)])?;
    let mut jtree = Vec::new();
    for _ in 0..tree_shape(journal.len()).iter().sum::<usize>() {
        jtree.push(alloc.run(1)?.0);
    }
    w.put(
        journal[0].phys,
        &sb::journal_superblock(jblocks as u32, &opts.uuid),
    )?;
    let (j_iblock, jt) = encode_tree(&journal, &jtree, csum::inode_seed(fs_seed, JOURNAL_INO, 0));
    for (b, data) in jt {
        w.put(b, &data)?;
    }
    let jrec = InodeRec {
        mode: 0o100600,
        size: jblocks * BLOCK,
        links: 1,
        flags: EXTENTS_FL,
        block: j_iblock,
        sectors: (jblocks + jtree.len() as u64) * 8,
        time,
        ..InodeRec::default()
    };
    itable.put(JOURNAL_INO, &jrec.encode(JOURNAL_INO, fs_seed))?;

    // Xattr blocks by owning node, for the nodes that share them.
    let mut xattr_blocks: HashMap<InodeId, u64> = HashMap::new();
    let mut indexed_dirs = 0;
    for n in p.nodes(tree) {
        let extents = extents_for(&mut alloc, &plan::ranges(tree, &n)?)?;
        let mut tree_blocks = Vec::new();
        for _ in 0..tree_shape(extents.len()).iter().sum::<usize>() {
            tree_blocks.push(alloc.run(1)?.0);
        }
        let mut xattr_block = 0;
        if let Some(x) = n.xattrs.filter(|x| !x.block.is_empty()) {
            xattr_block = if n.owns_xattr_block() {
                let b = alloc.run(1)?.0;
                xattr_blocks.insert(x.owner, b);
                b
            } else {
                xattr_blocks[&x.owner]
            };
        }

        let seed = csum::inode_seed(fs_seed, n.ino, 0);
        let kind = match n.src {
            Src::Tree(id) => Some(&tree.inode(id).kind),
            Src::LostFound => None,
        };
        let mut indexed = false;
        match kind {
            Some(Kind::Dir(_)) | None => {
                let (blocks, ix) =
                    dir::build(n.ino, n.parent, &plan::entries(tree, p, &n), &p.hash, seed)?;
                indexed = ix;
                indexed_dirs += ix as u64;
                let mut it = blocks.iter();
                for e in &extents {
                    for k in 0..e.len as u64 {
                        w.put(e.phys + k, it.next().expect("directory blocks as measured"))?;
                    }
                }
            }
            Some(Kind::Symlink(t)) if !extents.is_empty() => {
                w.slot(extents[0].phys, BLOCK as usize)?[..t.len()].copy_from_slice(t);
            }
            Some(Kind::File(fd)) => copy.file(fd, &extents, &mut w)?,
            _ => {}
        }
        let (i_block, tb) = encode_tree(&extents, &tree_blocks, seed);
        for (b, data) in tb {
            w.put(b, &data)?;
        }
        if n.owns_xattr_block() {
            let x = n.xattrs.expect("owner has xattrs");
            let b = xattr::encode_block(&x.block, xattr_block, x.refs, fs_seed);
            w.put(xattr_block, &b)?;
        }
        let placed = Placed {
            extents: &extents,
            tree_blocks: tree_blocks.len(),
            xattr_block,
            i_block,
            indexed,
        };
        let r = record(tree, &n, &placed, time);
        itable.put(n.ino, &r.encode(n.ino, fs_seed))?;
    }
    w.flush()?;
    itable.flush()?;

    // Bitmaps and group descriptors.
    let mut gdt = vec![0u8; (layout.gdt_blocks * BLOCK) as usize];
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..layout.groups {
        let m = layout.meta[g as usize];
        let first = g * ipg + 1;
        let high = high_of(g);
        let mut ibm = vec![0xFFu8; BLOCK as usize];
        ibm[..(ipg / 8) as usize].fill(0);
        let mut used_here = 0u64;
        for i in 0..high {
            if used[(first + i) as usize] {
                ibm[(i / 8) as usize] |= 1 << (i % 8);
                used_here += 1;
            }
        }
        let bbm = layout.block_bitmap(g, alloc.cursor);
        w.put(m.block_bitmap, &bbm)?;
        w.put(m.inode_bitmap, &ibm)?;
        let (s, e) = layout.group_range(g);
        let gfree = (e - s) - layout.used_in(s, e, alloc.cursor);
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
