//! The superblock (primary at byte 1024, backups at the start of sparse_super groups), the
//! 64-byte group descriptors and the jbd2 journal superblock.

use super::csum;
use super::ino::Ino;
use super::layout::{Layout, BLOCKS_PER_GROUP, DESC_SIZE, INODE_SIZE, LOG_GROUPS_PER_FLEX};

pub const COMPAT: u32 = 0x4 | 0x8 | 0x20; // has_journal, ext_attr, dir_index
pub const INCOMPAT: u32 = 0x2 | 0x40 | 0x80 | 0x200; // filetype, extent, 64bit, flex_bg
/// sparse_super, large_file, huge_file, dir_nlink, extra_isize, metadata_csum
pub const RO_COMPAT: u32 = 0x1 | 0x2 | 0x8 | 0x20 | 0x40 | 0x400;
/// `s_first_ino`: the first inode that is not reserved.
pub const FIRST_INO: Ino = Ino::new(11);

/// Values of the superblock that are not geometry.
pub struct SbInfo<'a> {
    pub layout: &'a Layout,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub reserved_blocks: u64,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub hash_seed: [u8; 16],
    pub time: u32,
    /// `s_jnl_blocks`: the journal inode's `i_block`, then its size high and low words.
    pub jnl_blocks: [u32; 17],
}

/// Little-endian field writers for the on-disk structures.
pub(super) fn p16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub(super) fn p32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The 1024-byte superblock as stored in group `group`.
pub fn superblock(i: &SbInfo, group: u16) -> [u8; 1024] {
    let l = i.layout;
    let mut b = [0u8; 1024];
    p32(&mut b, 0x0, l.inodes() as u32);
    p32(&mut b, 0x4, l.blocks as u32);
    p32(&mut b, 0x8, i.reserved_blocks as u32);
    p32(&mut b, 0xC, i.free_blocks as u32);
    p32(&mut b, 0x10, i.free_inodes as u32);
    p32(&mut b, 0x14, 0); // s_first_data_block
    p32(&mut b, 0x18, 2); // 4 KiB blocks
    p32(&mut b, 0x1C, 2);
    p32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
    p32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
    p32(&mut b, 0x28, l.inodes_per_group);
    p32(&mut b, 0x30, i.time); // s_wtime
    p16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count: -1
    p16(&mut b, 0x38, 0xEF53);
    p16(&mut b, 0x3A, 1); // clean
    p16(&mut b, 0x3C, 1); // errors: continue
    p32(&mut b, 0x40, i.time); // s_lastcheck
    p32(&mut b, 0x4C, 1); // dynamic revision
    p32(&mut b, 0x54, FIRST_INO.get());
    p16(&mut b, 0x58, INODE_SIZE as u16);
    p16(&mut b, 0x5A, group);
    p32(&mut b, 0x5C, COMPAT);
    p32(&mut b, 0x60, INCOMPAT);
    p32(&mut b, 0x64, RO_COMPAT);
    b[0x68..0x78].copy_from_slice(&i.uuid);
    b[0x78..0x88].copy_from_slice(&i.label);
    p32(&mut b, 0xE0, 8); // s_journal_inum
    b[0xEC..0xFC].copy_from_slice(&i.hash_seed);
    b[0xFC] = 1; // half_md4
    b[0xFD] = 1; // s_jnl_backup_type: inode blocks
    p16(&mut b, 0xFE, DESC_SIZE as u16);
    p32(&mut b, 0x100, 0x4 | 0x8); // default mount options: user_xattr, acl
    p32(&mut b, 0x108, i.time); // s_mkfs_time
    for (k, w) in i.jnl_blocks.iter().enumerate() {
        p32(&mut b, 0x10C + 4 * k, *w);
    }
    p32(&mut b, 0x150, (l.blocks >> 32) as u32);
    p32(&mut b, 0x154, (i.reserved_blocks >> 32) as u32);
    p32(&mut b, 0x158, (i.free_blocks >> 32) as u32);
    p16(&mut b, 0x15C, 32); // s_min_extra_isize
    p16(&mut b, 0x15E, 32); // s_want_extra_isize
    p32(&mut b, 0x160, 1); // signed directory hash
    b[0x174] = LOG_GROUPS_PER_FLEX as u8;
    b[0x175] = 1; // crc32c
    let c = csum::raw(!0, &b[..0x3FC]);
    p32(&mut b, 0x3FC, c);
    b
}

/// Counts for one group descriptor.
pub struct GroupInfo {
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub itable_unused: u32,
    pub flags: u16,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

pub const INODE_UNINIT: u16 = 0x1;
pub const ITABLE_ZEROED: u16 = 0x4;

pub fn group_desc(l: &Layout, g: u64, gi: &GroupInfo, fs_seed: u32) -> [u8; 64] {
    let m = l.meta[g as usize];
    let mut b = [0u8; 64];
    p32(&mut b, 0x0, m.block_bitmap as u32);
    p32(&mut b, 0x4, m.inode_bitmap as u32);
    p32(&mut b, 0x8, m.inode_table as u32);
    p16(&mut b, 0xC, gi.free_blocks as u16);
    p16(&mut b, 0xE, gi.free_inodes as u16);
    p16(&mut b, 0x10, gi.used_dirs as u16);
    p16(&mut b, 0x12, gi.flags);
    p16(&mut b, 0x18, gi.block_bitmap_csum as u16);
    p16(&mut b, 0x1A, gi.inode_bitmap_csum as u16);
    p16(&mut b, 0x1C, gi.itable_unused as u16);
    p32(&mut b, 0x20, (m.block_bitmap >> 32) as u32);
    p32(&mut b, 0x24, (m.inode_bitmap >> 32) as u32);
    p32(&mut b, 0x28, (m.inode_table >> 32) as u32);
    p16(&mut b, 0x2C, (gi.free_blocks >> 16) as u16);
    p16(&mut b, 0x2E, (gi.free_inodes >> 16) as u16);
    p16(&mut b, 0x30, (gi.used_dirs >> 16) as u16);
    p16(&mut b, 0x32, (gi.itable_unused >> 16) as u16);
    p16(&mut b, 0x38, (gi.block_bitmap_csum >> 16) as u16);
    p16(&mut b, 0x3A, (gi.inode_bitmap_csum >> 16) as u16);
    let c = csum::raw(csum::raw(fs_seed, &(g as u32).to_le_bytes()), &b);
    p16(&mut b, 0x1E, c as u16);
    b
}

/// A clean jbd2 (v2) journal superblock for an internal journal of `blocks` blocks.
pub fn journal_superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let be = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    be(&mut b, 0x0, 0xC03B_3998);
    be(&mut b, 0x4, 4); // superblock v2
    be(&mut b, 0xC, 4096);
    be(&mut b, 0x10, blocks);
    be(&mut b, 0x14, 1); // s_first
    be(&mut b, 0x18, 1); // s_sequence
    b[0x30..0x40].copy_from_slice(uuid);
    be(&mut b, 0x40, 1); // s_nr_users
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_fields_sit_at_their_offsets() {
        let l = Layout::new(100_000, 1000).unwrap();
        let info = SbInfo {
            layout: &l,
            free_blocks: 5,
            free_inodes: 6,
            reserved_blocks: 0,
            uuid: [9; 16],
            label: *b"root\0\0\0\0\0\0\0\0\0\0\0\0",
            hash_seed: [3; 16],
            time: 1234,
            jnl_blocks: [0; 17],
        };
        let b = superblock(&info, 0);
        assert_eq!(&b[0x38..0x3A], &[0x53, 0xEF]);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 100_000);
        assert_eq!(&b[0x78..0x7C], b"root");
        assert_eq!(csum::raw(!0, &b[..0x3FC]).to_le_bytes(), b[0x3FC..]);
        assert_eq!(b[0x174], 4);
    }
}
