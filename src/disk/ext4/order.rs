//! Where blocks go: the forward-only allocator's walk over the plan, shared by the write
//! passes. Everything but file contents (the journal, directories, slow symlinks, and their
//! extent-tree and xattr blocks) is placed first, in the plan's walk order; then each regular
//! file's data, extent-tree blocks and xattr block, in the order of its bytes in the spill
//! ([`FileData::offset`](crate::tree::FileData)): the order the layers were read in. A file
//! left in its layer is read again in that same order, so the data pass reads the layers
//! front to back and writes the disk front to back.

use std::collections::HashMap;

use super::inode::{tree_shape, Extent, MAX_LEN};
use super::layout::{Alloc, Layout};
use super::plan::{self, journal_blocks, Node, Plan, Src};
use super::{Ext4Error, Ext4Options};
use crate::tree::{FileData, Kind, Tree};

/// Blocks for `ranges` (logical block ranges), as extents of at most [`MAX_LEN`] blocks.
pub(super) fn extents_for(
    alloc: &mut Alloc,
    ranges: &[(u64, u64)],
) -> Result<Vec<Extent>, Ext4Error> {
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

/// Blocks for the extent tree of `extents` extents (none when they fit in the inode).
pub(super) fn tree_blocks(alloc: &mut Alloc, extents: usize) -> Result<Vec<u64>, Ext4Error> {
    (0..tree_shape(extents).iter().sum::<usize>())
        .map(|_| Ok(alloc.run(1)?.0))
        .collect()
}

/// The journal's size in blocks, its blocks and its extent-tree blocks, allocated.
pub(super) fn journal(
    alloc: &mut Alloc,
    fs_blocks: u64,
    opts: &Ext4Options,
) -> Result<(u64, Vec<Extent>, Vec<u64>), Ext4Error> {
    let blocks = journal_blocks(fs_blocks, opts);
    let extents = extents_for(alloc, &[(0, blocks)])?;
    let tree_blocks = tree_blocks(alloc, extents.len())?;
    Ok((blocks, extents, tree_blocks))
}

/// A node's blocks, allocated: its data extents, its extent-tree blocks and the xattr block
/// it owns (0: none).
pub(super) fn place(
    alloc: &mut Alloc,
    tree: &Tree,
    n: &Node,
) -> Result<(Vec<Extent>, Vec<u64>, u64), Ext4Error> {
    let extents = extents_for(alloc, &plan::ranges(tree, n)?)?;
    let tree_blocks = tree_blocks(alloc, extents.len())?;
    let owned_xattr = match n.owns_xattr_block() {
        true => alloc.run(1)?.0,
        false => 0,
    };
    Ok((extents, tree_blocks, owned_xattr))
}

/// A regular file's contents, if `n` is one.
pub(super) fn file_data<'t>(tree: &'t Tree, n: &Node) -> Option<&'t FileData> {
    match n.src {
        Src::Tree(id) => match &tree.inode(id).kind {
            Kind::File(fd) => Some(fd),
            _ => None,
        },
        Src::LostFound => None,
    }
}

/// The regular files in data order and where the allocator stands at each.
pub(super) struct Order<'p> {
    /// The files, in the order their blocks are allocated.
    pub files: Vec<Node<'p>>,
    /// The allocator's cursor where each file's blocks begin, by inode number.
    starts: HashMap<u32, u64>,
    /// The cursor after everything but the files: where file contents begin.
    pub data_start: u64,
    /// The cursor after everything.
    pub end: u64,
}

impl<'p> Order<'p> {
    /// Walks the allocation once without writing: everything but files in plan order, then
    /// the files in spill order.
    pub(super) fn new(
        tree: &Tree,
        p: &'p Plan,
        layout: &Layout,
        opts: &Ext4Options,
    ) -> Result<Order<'p>, Ext4Error> {
        let mut alloc = Alloc::new(layout);
        journal(&mut alloc, layout.blocks, opts)?;
        let mut files = Vec::new();
        for n in p.nodes(tree) {
            match file_data(tree, &n) {
                Some(fd) => files.push((fd.offset, n)),
                None => {
                    place(&mut alloc, tree, &n)?;
                }
            }
        }
        files.sort_by_key(|(offset, n)| (*offset, n.ino));
        let data_start = alloc.cursor;
        let mut starts = HashMap::with_capacity(files.len());
        for (_, n) in &files {
            starts.insert(n.ino.get(), alloc.cursor);
            place(&mut alloc, tree, n)?;
        }
        Ok(Order {
            files: files.into_iter().map(|(_, n)| n).collect(),
            starts,
            data_start,
            end: alloc.cursor,
        })
    }

    /// The layer and stream position of the first file whose contents are read from its
    /// layer, if any is.
    pub(super) fn first_in_layer(&self, tree: &Tree) -> Option<(usize, u64)> {
        (self.files.iter())
            .filter_map(|n| file_data(tree, n))
            .find_map(|fd| tree.spill().stream_at(fd))
    }

    /// Where the blocks of file `n` begin, if it is a file.
    pub(super) fn start(&self, n: &Node) -> Option<u64> {
        self.starts.get(&n.ino.get()).copied()
    }
}
