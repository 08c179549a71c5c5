//! Geometry: block groups, where the superblock backups, group descriptor tables, bitmaps and
//! inode tables go (packed per flex group of 16, as mke2fs does), and the forward-only block
//! allocator for everything else. Used blocks are always `[0, cursor)` plus the fixed
//! metadata ranges, so bitmaps and free counts follow from a handful of ranges.

use super::Ext4Error;

pub const BLOCK: u64 = 4096;
pub const BLOCKS_PER_GROUP: u64 = 32768;
pub const INODE_SIZE: u64 = 256;
pub const INODES_PER_BLOCK: u32 = (BLOCK / INODE_SIZE) as u32;
pub const DESC_SIZE: u64 = 64;
pub const LOG_GROUPS_PER_FLEX: u32 = 4;
pub const FLEX: u64 = 1 << LOG_GROUPS_PER_FLEX;

#[derive(Debug, Clone, Copy)]
pub struct GroupMeta {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub blocks: u64,
    pub groups: u64,
    pub inodes_per_group: u32,
    pub gdt_blocks: u64,
    pub itable_blocks: u64,
    pub meta: Vec<GroupMeta>,
    /// Sorted, disjoint `[start, end)` ranges of fixed metadata.
    pub fixed: Vec<(u64, u64)>,
}

/// Whether group `g` holds a superblock backup (`sparse_super`: 0, 1 and powers of 3, 5, 7).
pub fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut p = b;
        while p < g {
            p *= b;
        }
        p == g
    })
}

impl Layout {
    /// Lays out a filesystem of `blocks` blocks with at least `min_inodes` inodes in total.
    /// The last group is dropped when it is too small to be useful.
    pub fn new(blocks: u64, min_inodes: u64) -> Result<Layout, Ext4Error> {
        let mut blocks = blocks;
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let last = blocks - (groups - 1) * BLOCKS_PER_GROUP;
            if groups > 1 && last < 1024 {
                blocks = (groups - 1) * BLOCKS_PER_GROUP;
                continue;
            }
            if blocks < 256 {
                return Err(Ext4Error::TooSmall {
                    size: blocks * BLOCK,
                    need: 256 * BLOCK,
                });
            }
            let ipg = min_inodes
                .div_ceil(groups)
                .next_multiple_of(INODES_PER_BLOCK as u64)
                .max(16);
            if ipg > 8 * BLOCK {
                return Err(Ext4Error::TooManyInodes {
                    inodes: min_inodes,
                    max: groups * 8 * BLOCK,
                });
            }
            if let Some(l) = Layout::place(blocks, groups, ipg as u32) {
                return Ok(l);
            }
            if groups == 1 {
                return Err(Ext4Error::TooSmall {
                    size: blocks * BLOCK,
                    need: (blocks + 1024) * BLOCK,
                });
            }
            blocks = (groups - 1) * BLOCKS_PER_GROUP;
        }
    }

    fn place(blocks: u64, groups: u64, ipg: u32) -> Option<Layout> {
        let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK);
        let itable_blocks = ipg as u64 / INODES_PER_BLOCK as u64;
        let mut supers = Vec::new();
        for g in 0..groups {
            if has_super(g) {
                let s = g * BLOCKS_PER_GROUP;
                supers.push((s, s + 1 + gdt_blocks));
            }
        }
        let mut fixed = supers.clone();
        let mut meta = Vec::with_capacity(groups as usize);
        for leader in (0..groups).step_by(FLEX as usize) {
            let members = FLEX.min(groups - leader);
            let mut cur = Cursor {
                at: leader * BLOCKS_PER_GROUP,
                skip: &supers,
            };
            let bb: Vec<u64> = (0..members).map(|_| cur.take(1)).collect();
            let ib: Vec<u64> = (0..members).map(|_| cur.take(1)).collect();
            let it: Vec<u64> = (0..members).map(|_| cur.take(itable_blocks)).collect();
            if cur.at > blocks {
                return None;
            }
            for i in 0..members as usize {
                meta.push(GroupMeta {
                    block_bitmap: bb[i],
                    inode_bitmap: ib[i],
                    inode_table: it[i],
                });
                fixed.push((bb[i], bb[i] + 1));
                fixed.push((ib[i], ib[i] + 1));
                fixed.push((it[i], it[i] + itable_blocks));
            }
        }
        fixed.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(fixed.len());
        for (s, e) in fixed {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Some(Layout {
            blocks,
            groups,
            inodes_per_group: ipg,
            gdt_blocks,
            itable_blocks,
            meta,
            fixed: merged,
        })
    }

    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group as u64
    }

    pub fn group_range(&self, g: u64) -> (u64, u64) {
        let s = g * BLOCKS_PER_GROUP;
        (s, (s + BLOCKS_PER_GROUP).min(self.blocks))
    }

    /// Blocks of fixed metadata.
    pub fn overhead(&self) -> u64 {
        self.fixed.iter().map(|(s, e)| e - s).sum()
    }

    /// Used blocks of `[s, e)` when everything below `cursor` is allocated.
    pub fn used_in(&self, s: u64, e: u64, cursor: u64) -> u64 {
        let below = cursor.clamp(s, e) - s;
        let from = cursor.max(s);
        let fixed: u64 = self
            .fixed_in(s, e)
            .iter()
            .map(|&(fs, fe)| fe.min(e).saturating_sub(fs.max(from)))
            .sum();
        below + fixed
    }

    /// The fixed ranges that may overlap `[s, e)`.
    fn fixed_in(&self, s: u64, e: u64) -> &[(u64, u64)] {
        let a = self.fixed.partition_point(|f| f.1 <= s);
        let b = self.fixed.partition_point(|f| f.0 < e);
        &self.fixed[a..b.max(a)]
    }

    /// The block bitmap of group `g` (one block; bits past the end of the filesystem set).
    pub fn block_bitmap(&self, g: u64, cursor: u64) -> Vec<u8> {
        let (s, e) = self.group_range(g);
        let mut bm = vec![0u8; BLOCK as usize];
        let mut set = |mut a: u64, b: u64| {
            while a < b && !a.is_multiple_of(8) {
                bm[(a / 8) as usize] |= 1 << (a % 8);
                a += 1;
            }
            let whole = (b - a) / 8;
            bm[(a / 8) as usize..(a / 8 + whole) as usize].fill(0xFF);
            a += whole * 8;
            while a < b {
                bm[(a / 8) as usize] |= 1 << (a % 8);
                a += 1;
            }
        };
        set(0, cursor.clamp(s, e) - s);
        for &(fs, fe) in self.fixed_in(s, e) {
            let (a, b) = (fs.max(s), fe.min(e));
            if a < b {
                set(a - s, b - s);
            }
        }
        set(e - s, BLOCKS_PER_GROUP);
        bm
    }
}

/// Walks forward from `at`, stepping over superblock/GDT ranges, handing out contiguous runs.
struct Cursor<'a> {
    at: u64,
    skip: &'a [(u64, u64)],
}

impl Cursor<'_> {
    fn take(&mut self, n: u64) -> u64 {
        while let Some(&(_, e)) = self
            .skip
            .iter()
            .find(|&&(s, e)| self.at < e && self.at + n > s)
        {
            self.at = e;
        }
        let start = self.at;
        self.at += n;
        start
    }
}

/// The forward-only allocator for data, directory, extent-tree, xattr and journal blocks.
pub struct Alloc<'a> {
    pub cursor: u64,
    layout: &'a Layout,
    idx: usize,
}

impl<'a> Alloc<'a> {
    pub fn new(layout: &'a Layout) -> Alloc<'a> {
        Alloc {
            cursor: 0,
            layout,
            idx: 0,
        }
    }

    /// An allocator whose next run starts at or after block `cursor`.
    pub fn at(layout: &'a Layout, cursor: u64) -> Alloc<'a> {
        Alloc {
            cursor,
            layout,
            idx: layout.fixed.partition_point(|f| f.1 <= cursor),
        }
    }

    /// The layout it allocates in.
    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// A run of up to `max` contiguous free blocks: `(start, len)`.
    pub fn run(&mut self, max: u64) -> Result<(u64, u64), Ext4Error> {
        let fixed = &self.layout.fixed;
        while self.idx < fixed.len() && fixed[self.idx].1 <= self.cursor {
            self.idx += 1;
        }
        while self.idx < fixed.len() && fixed[self.idx].0 <= self.cursor {
            self.cursor = fixed[self.idx].1;
            self.idx += 1;
        }
        let limit = fixed
            .get(self.idx)
            .map_or(self.layout.blocks, |f| f.0)
            .min(self.layout.blocks);
        let n = max.min(limit.saturating_sub(self.cursor));
        if n == 0 {
            return Err(Ext4Error::NoSpace {
                blocks: self.layout.blocks,
            });
        }
        let start = self.cursor;
        self.cursor += n;
        Ok((start, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let g: Vec<u64> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(g, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn allocator_skips_metadata_and_counts_match_bitmaps() {
        let l = Layout::new(40 * BLOCKS_PER_GROUP + 5000, 100_000).unwrap();
        let mut a = Alloc::new(&l);
        let mut runs = Vec::new();
        let mut left = 3 * BLOCKS_PER_GROUP;
        while left > 0 {
            let (s, n) = a.run(left).unwrap();
            runs.push((s, n));
            left -= n;
        }
        for &(s, n) in &runs {
            assert!(l.fixed.iter().all(|&(fs, fe)| s + n <= fs || s >= fe));
        }
        for g in 0..l.groups {
            let (s, e) = l.group_range(g);
            let bm = l.block_bitmap(g, a.cursor);
            let ones: u64 = (0..e - s)
                .filter(|i| bm[(i / 8) as usize] >> (i % 8) & 1 == 1)
                .count() as u64;
            assert_eq!(ones, l.used_in(s, e, a.cursor), "group {g}");
        }
    }

    #[test]
    fn group_metadata_is_disjoint_and_inside_the_filesystem() {
        for blocks in [
            300,
            40_000,
            17 * BLOCKS_PER_GROUP + 1500,
            100 * BLOCKS_PER_GROUP,
        ] {
            let l = Layout::new(blocks, blocks / 4).unwrap();
            let mut all: Vec<(u64, u64)> = Vec::new();
            for (g, m) in l.meta.iter().enumerate() {
                all.push((m.block_bitmap, m.block_bitmap + 1));
                all.push((m.inode_bitmap, m.inode_bitmap + 1));
                all.push((m.inode_table, m.inode_table + l.itable_blocks));
                if has_super(g as u64) {
                    let s = g as u64 * BLOCKS_PER_GROUP;
                    all.push((s, s + 1 + l.gdt_blocks));
                }
            }
            all.sort_unstable();
            assert!(
                all.windows(2).all(|w| w[0].1 <= w[1].0),
                "{blocks}: overlap"
            );
            assert!(all.last().unwrap().1 <= l.blocks);
            assert_eq!(l.overhead(), all.iter().map(|(s, e)| e - s).sum::<u64>());
            assert!(l.inodes() >= blocks / 4);
        }
    }
}
