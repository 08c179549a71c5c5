//! The 256-byte inode (with 32 extra bytes: nanosecond times, creation time, checksum high
//! half) and the extent tree in `i_block` plus extent blocks.

use super::ino::Ino;
use super::sb::{p16, p32};
use super::{csum, xattr};
use crate::tree::Timestamp;

pub const EXTENTS_FL: u32 = 0x8_0000;
pub const INDEX_FL: u32 = 0x1000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// Entries per extent block: (4096 - 12-byte header - 4-byte tail) / 12.
const PER_BLOCK: usize = 340;
pub const MAX_LEN: u64 = 32768;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub len: u16,
    pub phys: u64,
}

/// Extent blocks needed per level, from the leaves up (empty when the inode holds them all).
pub fn tree_shape(n: usize) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = n;
    while cur > 4 {
        cur = cur.div_ceil(PER_BLOCK);
        shape.push(cur);
    }
    shape
}

fn header(b: &mut [u8], entries: usize, max: usize, depth: u16) {
    b[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
    b[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    b[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    b[6..8].copy_from_slice(&depth.to_le_bytes());
}

/// One 12-byte entry: a leaf extent (`depth == 0`) or an index entry.
fn entry(b: &mut [u8], depth: u16, logical: u32, len: u16, phys: u64) {
    b[0..4].copy_from_slice(&logical.to_le_bytes());
    if depth == 0 {
        b[4..6].copy_from_slice(&len.to_le_bytes());
        b[6..8].copy_from_slice(&((phys >> 32) as u16).to_le_bytes());
        b[8..12].copy_from_slice(&(phys as u32).to_le_bytes());
    } else {
        b[4..8].copy_from_slice(&(phys as u32).to_le_bytes());
        b[8..10].copy_from_slice(&((phys >> 32) as u16).to_le_bytes());
    }
}

/// `i_block` and the extent blocks (at `blocks`, as many as `tree_shape` says, leaves first).
pub fn encode_tree(
    extents: &[Extent],
    blocks: &[u64],
    seed: u32,
) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    // Current level: (first logical block, len, phys) of each entry.
    let mut level: Vec<(u32, u16, u64)> =
        extents.iter().map(|e| (e.logical, e.len, e.phys)).collect();
    let mut depth = 0u16;
    let mut out = Vec::new();
    let mut next_block = blocks.iter();
    while level.len() > 4 {
        let mut up = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let phys = *next_block
                .next()
                .expect("extent blocks allocated per tree_shape");
            let mut b = vec![0u8; 4096];
            header(&mut b, chunk.len(), PER_BLOCK, depth);
            for (i, &(l, n, p)) in chunk.iter().enumerate() {
                entry(&mut b[12 + i * 12..24 + i * 12], depth, l, n, p);
            }
            let c = csum::raw(seed, &b[..4092]);
            b[4092..].copy_from_slice(&c.to_le_bytes());
            out.push((phys, b));
            up.push((chunk[0].0, 0, phys));
        }
        level = up;
        depth += 1;
    }
    let mut ib = [0u8; 60];
    header(&mut ib, level.len(), 4, depth);
    for (i, &(l, n, p)) in level.iter().enumerate() {
        entry(&mut ib[12 + i * 12..24 + i * 12], depth, l, n, p);
    }
    (ib, out)
}

/// Everything an inode records.
#[derive(Debug, Clone)]
pub struct InodeRec {
    /// `st_mode`: type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub block: [u8; 60],
    /// Allocated space in 512-byte sectors.
    pub sectors: u64,
    pub file_acl: u64,
    pub time: Timestamp,
    pub xattrs: Vec<xattr::Entry>,
}

impl Default for InodeRec {
    fn default() -> Self {
        InodeRec {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            flags: 0,
            block: [0; 60],
            sectors: 0,
            file_acl: 0,
            time: Timestamp::default(),
            xattrs: Vec::new(),
        }
    }
}

/// The seconds ext4's 32 bits and two epoch bits hold: 1901-12-13 to 2446-05-10.
const MIN_SEC: i64 = -(1 << 31);
const MAX_SEC: i64 = (1 << 34) - (1 << 31) - 1;

/// `i_*time` and `i_*time_extra`; a time outside ext4's range is clamped to it, as the kernel
/// clamps it (a layer's PAX `mtime` may say any number).
fn time_parts(t: Timestamp) -> (u32, u32) {
    let sec = t.sec.clamp(MIN_SEC, MAX_SEC);
    let lo = sec as i32;
    let epoch = ((sec - lo as i64) >> 32) as u32 & 3;
    (lo as u32, (t.nsec.min(999_999_999) << 2) | epoch)
}

impl InodeRec {
    pub fn encode(&self, ino: Ino, fs_seed: u32) -> [u8; 256] {
        let mut b = [0u8; 256];
        let (sec, extra) = time_parts(self.time);
        p16(&mut b, 0x0, self.mode);
        p16(&mut b, 0x2, self.uid as u16);
        p32(&mut b, 0x4, self.size as u32);
        for at in [0x8, 0xC, 0x10, 0x90] {
            p32(&mut b, at, sec);
        }
        for at in [0x84, 0x88, 0x8C, 0x94] {
            p32(&mut b, at, extra);
        }
        p16(&mut b, 0x18, self.gid as u16);
        p16(&mut b, 0x1A, self.links);
        p32(&mut b, 0x1C, self.sectors as u32);
        p32(&mut b, 0x20, self.flags);
        b[0x28..0x64].copy_from_slice(&self.block);
        p32(&mut b, 0x68, self.file_acl as u32);
        p32(&mut b, 0x6C, (self.size >> 32) as u32);
        p16(&mut b, 0x74, (self.sectors >> 32) as u16);
        p16(&mut b, 0x76, (self.file_acl >> 32) as u16);
        p16(&mut b, 0x78, (self.uid >> 16) as u16);
        p16(&mut b, 0x7A, (self.gid >> 16) as u16);
        p16(&mut b, 0x80, 32);
        xattr::encode_inline(&self.xattrs, &mut b[160..]);
        let c = csum::raw(csum::inode_seed(fs_seed, ino, 0), &b);
        p16(&mut b, 0x7C, c as u16);
        p16(&mut b, 0x82, (c >> 16) as u16);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(tree_shape(4).is_empty());
        assert_eq!(tree_shape(5), [1]);
        assert_eq!(tree_shape(340 * 4), [4]);
        assert_eq!(tree_shape(340 * 4 + 1), [5, 1]);
    }

    #[test]
    fn timestamps_carry_epoch_bits_and_nanoseconds() {
        assert_eq!(time_parts(Timestamp { sec: 1, nsec: 5 }), (1, 20));
        // 2038-01-19 + 1 s: past i32, so epoch bit 1 and the low word wraps.
        assert_eq!(
            time_parts(Timestamp {
                sec: 1 << 31,
                nsec: 0
            }),
            (1 << 31, 1)
        );
        assert_eq!(time_parts(Timestamp { sec: -1, nsec: 0 }), (u32::MAX, 0));
        // Past the range (a PAX mtime can say anything; fuzz input
        // testdata/fuzz/layer_entries/mtime-out-of-range): clamped to its ends.
        let at = |sec| time_parts(Timestamp { sec, nsec: 0 });
        assert_eq!(at(i64::MAX), at(MAX_SEC));
        assert_eq!(at(MAX_SEC), (i32::MAX as u32, 3));
        assert_eq!(at(i64::MIN), at(MIN_SEC));
        assert_eq!(at(MIN_SEC), (i32::MIN as u32, 0));
    }

    #[test]
    fn deep_tree_indexes_children() {
        let ext: Vec<Extent> = (0..400)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                phys: 1000 + i as u64 * 2,
            })
            .collect();
        let (ib, blocks) = encode_tree(&ext, &[7, 8], 3);
        assert_eq!(blocks.len(), 2);
        assert_eq!(u16::from_le_bytes([ib[6], ib[7]]), 1); // depth
        assert_eq!(u16::from_le_bytes([ib[2], ib[3]]), 2); // entries
        assert_eq!(u32::from_le_bytes(ib[24..28].try_into().unwrap()), 680); // second index: logical
    }
}
