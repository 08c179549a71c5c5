//! Inode numbering and measuring: which tree inode becomes which ext4 inode, how many blocks
//! each needs, which xattrs go where. Independent of the filesystem size.

use std::collections::HashMap;

use super::dir::{self, DirEntry, HashCtx};
use super::hash::HashVersion;
use super::ino::Ino;
use super::inode::{tree_shape, MAX_LEN};
use super::layout::{self, Layout, BLOCK};
use super::{io_err, xattr, Ext4Error, Ext4Options};
use crate::tree::{show, FileData, Inode, InodeId, Kind, PerInode, Spill, Tree, Walk, ROOT};

/// `EXT4_ROOT_INO`: the root directory.
pub const ROOT_INO: Ino = Ino::new(2);
/// `EXT4_JOURNAL_INO`: the journal.
pub const JOURNAL_INO: Ino = Ino::new(8);
/// `lost+found`: the first inode that is not reserved (`s_first_ino`).
pub const LPF_INO: Ino = super::sb::FIRST_INO;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Tree(InodeId),
    /// `lost+found` made by the writer (the tree has none).
    LostFound,
}

/// One inode to write, as [`Plan::nodes`] produces them in writing order. Nothing per node is
/// stored beyond inode numbers and link counts: nodes are made again from the tree when needed.
#[derive(Clone, Copy)]
pub struct Node<'p> {
    pub ino: Ino,
    pub src: Src,
    /// Parent directory's inode number (directories only).
    pub parent: Ino,
    /// Blocks of a directory's entries (directories; 0 while the plan measures them).
    pub dir_blocks: u32,
    pub links: u16,
    pub xattrs: Option<&'p NodeXattrs>,
}

pub struct NodeXattrs {
    pub inline: Vec<xattr::Entry>,
    pub block: Vec<xattr::Entry>,
    /// The tree inode whose xattr block this one shares (itself: it owns one).
    pub owner: InodeId,
    /// Inodes sharing this inode's xattr block (owners only).
    pub refs: u32,
}

impl Node<'_> {
    pub fn inline_xattrs(&self) -> &[xattr::Entry] {
        self.xattrs.map_or(&[], |x| &x.inline)
    }

    /// Whether this node owns (writes) the xattr block its inodes share.
    pub fn owns_xattr_block(&self) -> bool {
        self.xattrs
            .is_some_and(|x| !x.block.is_empty() && Src::Tree(x.owner) == self.src)
    }
}

pub struct Plan {
    /// Tree inode id → ext4 inode number (`None`: unreachable).
    pub ino_of: PerInode<Option<Ino>>,
    /// Tree inode id → link count as written.
    links: PerInode<u16>,
    /// Xattrs of the inodes that have any.
    xattrs: HashMap<InodeId, NodeXattrs>,
    /// Blocks of each directory's entries.
    dir_blocks: HashMap<InodeId, u32>,
    /// The tree has no `lost+found`: the writer adds one (inode 11) to the root.
    pub make_lpf: bool,
    /// Highest inode number in use.
    pub max_ino: Ino,
    /// Data, directory, extent-tree (estimated) and xattr blocks.
    pub content_blocks: u64,
    pub hash: HashCtx,
}

/// The plan's nodes in writing order: the tree's walk order, each inode once (at its first
/// name), the made `lost+found` right after the root.
pub struct Nodes<'p, 't> {
    plan: &'p Plan,
    walk: Walk<'t>,
    /// Tree inodes already produced (hardlinks are walked once per name).
    seen: Vec<u64>,
    lpf_next: bool,
}

impl<'p> Iterator for Nodes<'p, '_> {
    type Item = Node<'p>;

    fn next(&mut self) -> Option<Node<'p>> {
        if std::mem::take(&mut self.lpf_next) {
            return Some(Node {
                ino: LPF_INO,
                src: Src::LostFound,
                parent: ROOT_INO,
                dir_blocks: 1,
                links: 2,
                xattrs: None,
            });
        }
        loop {
            let e = self.walk.next()?;
            let (id, p) = (e.id.index(), self.plan);
            if self.seen[id / 64] >> (id % 64) & 1 == 1 {
                continue;
            }
            let Some(ino) = p.ino_of[e.id] else {
                continue;
            };
            self.seen[id / 64] |= 1 << (id % 64);
            self.lpf_next = e.id == ROOT && p.make_lpf;
            return Some(Node {
                ino,
                src: Src::Tree(e.id),
                parent: p.ino_of[e.parent].expect("a directory is numbered before its entries"),
                dir_blocks: p.dir_blocks.get(&e.id).copied().unwrap_or(0),
                links: p.links[e.id],
                xattrs: p.xattrs.get(&e.id),
            });
        }
    }
}

pub fn ftype(k: &Kind) -> u8 {
    match k {
        Kind::File(_) => 1,
        Kind::Dir(_) => 2,
        Kind::CharDevice { .. } => 3,
        Kind::BlockDevice { .. } => 4,
        Kind::Fifo => 5,
        Kind::Socket => 6,
        Kind::Symlink(_) => 7,
    }
}

/// Logical 4 KiB block ranges of `fd` that hold data, from the spill file's holes.
pub fn data_ranges(spill: &Spill, fd: &FileData) -> Result<Vec<(u64, u64)>, Ext4Error> {
    let out = spill
        .data_ranges(fd)
        .map_err(io_err("spill file SEEK_DATA/SEEK_HOLE"))?;
    let mut blocks: Vec<(u64, u64)> = Vec::with_capacity(out.len());
    for (a, b) in out {
        let (a, b) = (a / BLOCK, b.div_ceil(BLOCK));
        match blocks.last_mut() {
            Some(l) if l.1 >= a => l.1 = l.1.max(b),
            _ => blocks.push((a, b)),
        }
    }
    Ok(blocks)
}

/// Logical block ranges `[start, end)` of node `n` that hold data: a file's from the spill
/// file's holes, a directory's measured blocks, one block for a slow symlink or `lost+found`.
pub fn ranges(tree: &Tree, n: &Node) -> Result<Vec<(u64, u64)>, Ext4Error> {
    let Src::Tree(id) = n.src else {
        return Ok(vec![(0, 1)]);
    };
    Ok(match &tree.inode(id).kind {
        Kind::File(fd) => data_ranges(tree.spill(), fd)?,
        Kind::Dir(_) => vec![(0, n.dir_blocks as u64)],
        Kind::Symlink(t) if t.len() >= 60 => vec![(0, 1)],
        _ => Vec::new(),
    })
}

/// Directory entries of the directory node `n` (without `.` and `..`).
pub fn entries<'t>(tree: &'t Tree, plan: &Plan, n: &Node) -> Vec<DirEntry<'t>> {
    let mut out = Vec::new();
    match n.src {
        Src::Tree(id) => {
            if let Kind::Dir(d) = &tree.inode(id).kind {
                for (name, &child) in &d.entries {
                    let k = &tree.inode(child).kind;
                    out.push(DirEntry {
                        name,
                        ino: plan.ino_of[child].expect("every reachable inode is numbered"),
                        ftype: ftype(k),
                    });
                }
            }
            if id == ROOT && plan.make_lpf {
                out.push(DirEntry {
                    name: b"lost+found",
                    ino: LPF_INO,
                    ftype: 2,
                });
            }
        }
        Src::LostFound => {}
    }
    out
}

/// The node's link count as ext4 stores it (a directory with more than 65000 links counts 1,
/// as `dir_nlink` allows), or an error for what ext4 cannot hold: too many links to a file, a
/// file of more than 2^32 blocks, a symlink target of 4096 bytes or more.
fn check_node(inode: &Inode, links: u32, path: &str) -> Result<u16, Ext4Error> {
    let l = match (&inode.kind, links) {
        (Kind::Dir(_), l) if l > 65000 => 1,
        (_, l) if l > 65000 => {
            return Err(Ext4Error::TooManyLinks {
                path: path.to_string(),
                links: l,
            })
        }
        (_, l) => l as u16,
    };
    match &inode.kind {
        Kind::File(fd) if fd.len.div_ceil(BLOCK) > u32::MAX as u64 => {
            Err(Ext4Error::FileTooLarge {
                path: path.to_string(),
                len: fd.len,
            })
        }
        Kind::Symlink(t) if t.len() >= 4096 => Err(Ext4Error::SymlinkTooLong {
            path: path.to_string(),
            len: t.len(),
        }),
        _ => Ok(l),
    }
}

/// Identical xattr blocks are shared, as the kernel does (up to [`xattr::MAX_REFS`] inodes
/// a block): each node of `with_blocks` (in writing order) gets its block's owner.
fn share_xattr_blocks(xattrs: &mut HashMap<InodeId, NodeXattrs>, with_blocks: Vec<InodeId>) {
    let mut owners: HashMap<Vec<xattr::Entry>, InodeId> = HashMap::new();
    for id in with_blocks {
        let block = xattrs[&id].block.clone();
        let mut owner = *owners.entry(block.clone()).or_insert(id);
        if xattrs[&owner].refs >= xattr::MAX_REFS {
            owners.insert(block, id);
            owner = id;
        }
        xattrs.get_mut(&id).expect("listed").owner = owner;
        xattrs.get_mut(&owner).expect("listed").refs += 1;
    }
}

impl Plan {
    pub fn new(tree: &Tree, opts: &Ext4Options) -> Result<Plan, Ext4Error> {
        let hash = HashCtx {
            seed: opts.hash_seed,
            version: HashVersion::HalfMd4,
            signed: true,
        };
        let counts = tree.link_counts();
        let mut ino_of = tree.per_inode(None);
        let mut links = tree.per_inode(0u16);
        let mut xattrs = HashMap::new();
        // Inodes with xattr blocks, in writing order (which one owns a shared block).
        let mut with_blocks = Vec::new();
        let lpf_in_tree = tree
            .lookup(b"lost+found")
            .filter(|&id| tree.inode(id).kind.is_dir());
        let make_lpf = tree.lookup(b"lost+found").is_none();
        // The last inode number given (the numbering goes on after `lost+found`'s).
        let mut last = LPF_INO;
        for e in tree.walk() {
            if e.name().len() > 255 {
                return Err(Ext4Error::NameTooLong {
                    path: show(&e.path),
                });
            }
            if ino_of[e.id].is_some() {
                continue;
            }
            let ino = if e.id == ROOT {
                ROOT_INO
            } else if Some(e.id) == lpf_in_tree && e.parent == ROOT {
                LPF_INO
            } else {
                last = last.next();
                last
            };
            ino_of[e.id] = Some(ino);
            let inode = tree.inode(e.id);
            let path = format!("/{}", show(&e.path));
            let extra = (e.id == ROOT && make_lpf) as u32;
            links[e.id] = check_node(inode, counts[e.id] + extra, &path)?;
            if !inode.meta.xattrs.is_empty() {
                let (inline, block) =
                    xattr::split(xattr::prepare(&inode.meta.xattrs, &path)?, &path)?;
                if !block.is_empty() {
                    with_blocks.push(e.id);
                }
                let x = NodeXattrs {
                    inline,
                    block,
                    owner: e.id,
                    refs: 0,
                };
                xattrs.insert(e.id, x);
            }
        }
        drop(counts);
        share_xattr_blocks(&mut xattrs, with_blocks);
        let mut plan = Plan {
            ino_of,
            links,
            xattrs,
            dir_blocks: HashMap::new(),
            make_lpf,
            max_ino: last,
            content_blocks: 0,
            hash,
        };
        // Directory sizes need every inode number, so they come last.
        plan.dir_blocks = plan.dir_sizes(tree)?;
        plan.content_blocks = plan.content_blocks(tree)?;
        Ok(plan)
    }

    /// Each directory's size in blocks, measured by building its blocks.
    fn dir_sizes(&self, tree: &Tree) -> Result<HashMap<InodeId, u32>, Ext4Error> {
        let mut dir_blocks = HashMap::new();
        for n in self.nodes(tree) {
            if let Src::Tree(id) = n.src {
                if tree.inode(id).kind.is_dir() {
                    let (blocks, _) =
                        dir::build(n.ino, n.parent, &entries(tree, self, &n), &self.hash, 0)?;
                    dir_blocks.insert(id, blocks.len() as u32);
                }
            }
        }
        Ok(dir_blocks)
    }

    /// Blocks the content takes: data, extent-tree blocks (bounded from above) and xattr blocks.
    fn content_blocks(&self, tree: &Tree) -> Result<u64, Ext4Error> {
        let mut content = 0u64;
        for n in self.nodes(tree) {
            let ranges = ranges(tree, &n)?;
            let data: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
            let extents = ranges.len() as u64 + data / MAX_LEN + data / 30000 + 1;
            let tree_blocks: usize = tree_shape(extents as usize).iter().sum();
            content += data + tree_blocks as u64 + n.owns_xattr_block() as u64;
        }
        Ok(content)
    }

    /// The nodes to write, in writing order (made from the tree on the fly).
    pub fn nodes<'p, 't>(&'p self, tree: &'t Tree) -> Nodes<'p, 't> {
        Nodes {
            plan: self,
            walk: tree.walk(),
            seen: vec![0; self.ino_of.len().div_ceil(64)],
            lpf_next: false,
        }
    }

    /// Inodes for a filesystem of `blocks` blocks.
    pub fn inodes_for(&self, blocks: u64, opts: &Ext4Options) -> u64 {
        let n = self.max_ino.get() as u64;
        (blocks * BLOCK / opts.bytes_per_inode.max(1024)).max(n + n / 8 + 64)
    }

    /// Auto size in blocks: content, metadata, journal and the free space.
    pub fn auto_blocks(&self, opts: &Ext4Options) -> Result<u64, Ext4Error> {
        let content = self.content_blocks;
        let free = opts
            .free_space
            .unwrap_or((256 << 20u64).max(content * BLOCK / 5))
            .div_ceil(BLOCK);
        let mut blocks = (content + free).next_multiple_of(256);
        loop {
            let layout = match Layout::new(blocks, self.inodes_for(blocks, opts)) {
                Err(Ext4Error::TooManyInodes { .. }) => {
                    blocks += layout::BLOCKS_PER_GROUP;
                    continue;
                }
                l => l?,
            };
            let need = layout.overhead() + content + journal_blocks(layout.blocks, opts) + free;
            if need <= layout.blocks {
                return Ok(layout.blocks);
            }
            blocks = need.next_multiple_of(256).max(blocks + 256);
        }
    }
}

/// Journal length in blocks for a filesystem of `blocks` blocks.
pub fn journal_blocks(blocks: u64, opts: &Ext4Options) -> u64 {
    if let Some(s) = opts.journal_size {
        return (s / BLOCK).max(1024);
    }
    match blocks {
        0..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        _ => 16384,
    }
}
