//! ext4 inode numbers (`ino`): 1-based, as directory entries, the inode tables, the bitmaps and
//! the checksum seeds count them; 0 is no inode. Not the staging tree's
//! [`InodeId`](crate::tree::InodeId)s: the plan maps one to the other.

use std::num::NonZeroU32;

/// An ext4 inode number. Never 0, so `Option<Ino>` (0: none) is 4 bytes like a bare `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ino(NonZeroU32);

impl Ino {
    /// Inode number `n`; panics on 0.
    pub const fn new(n: u32) -> Ino {
        match NonZeroU32::new(n) {
            Some(n) => Ino(n),
            None => panic!("ext4 inode numbers start at 1"),
        }
    }

    /// The number as the on-disk fields hold it.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The inode numbered one higher.
    pub fn next(self) -> Ino {
        Ino(self
            .0
            .checked_add(1)
            .expect("ext4 inode numbers fit 32 bits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_inode_costs_no_space() {
        assert_eq!(std::mem::size_of::<Option<Ino>>(), 4);
    }
}
