//! Inode ids of the staging tree: indices into its inode table, and tables with one value per
//! inode indexed by them. Ids are made by the tree only; they are not ext4 inode numbers
//! (`disk::ext4` numbers the inodes it writes on its own, see its `Ino`).

use std::ops::{Index, IndexMut};

/// Index of an inode in the tree's inode table. The root directory is [`ROOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeId(pub(super) u32);

/// The root directory's id.
pub const ROOT: InodeId = InodeId(0);

impl InodeId {
    /// The id of slot `index` of the inode table.
    pub(super) fn from_index(index: usize) -> InodeId {
        InodeId(index as u32)
    }

    /// The slot of the inode table this id names (`0..Tree::inode_slots()`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One `T` per slot of a tree's inode table, indexed by [`InodeId`]
/// (made by `Tree::per_inode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerInode<T>(Vec<T>);

impl<T: Clone> PerInode<T> {
    pub(super) fn new(slots: usize, value: T) -> PerInode<T> {
        PerInode(vec![value; slots])
    }
}

impl<T> PerInode<T> {
    /// Number of slots (the tree's [`inode_slots`](super::Tree::inode_slots) when made).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no slots.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> Index<InodeId> for PerInode<T> {
    type Output = T;

    fn index(&self, id: InodeId) -> &T {
        &self.0[id.index()]
    }
}

impl<T> IndexMut<InodeId> for PerInode<T> {
    fn index_mut(&mut self, id: InodeId) -> &mut T {
        &mut self.0[id.index()]
    }
}
