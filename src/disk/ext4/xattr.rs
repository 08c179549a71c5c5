//! Extended attributes: the in-inode area after `i_extra_isize` and the one xattr block an
//! inode may point at (`i_file_acl`). POSIX ACLs are converted from the xattr (VFS) format to
//! ext4's compact on-disk format.

use super::{csum, Ext4Error};

pub const MAGIC: u32 = 0xEA02_0000;
/// Bytes available in a 256-byte inode after the 32 extra bytes and the 4-byte magic.
pub const INLINE_SPACE: usize = 256 - 160 - 4;
const BLOCK_HEADER: usize = 32;
const BLOCK: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Entry {
    fn entry_len(&self) -> usize {
        (16 + self.name.len()).next_multiple_of(4)
    }
    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }
    fn space(&self) -> usize {
        self.entry_len() + self.value_len()
    }
    fn key(&self) -> (u8, usize, &[u8]) {
        (self.index, self.name.len(), &self.name)
    }
    /// The attribute's name as the tree has it (`user.x`, `system.posix_acl_access`).
    fn full_name(&self) -> String {
        let prefix: &[u8] = match self.index {
            2 => b"system.posix_acl_access",
            3 => b"system.posix_acl_default",
            i => PREFIXES.iter().find(|p| p.1 == i).map_or(&b""[..], |p| p.0),
        };
        String::from_utf8_lossy(&[prefix, &self.name[..]].concat()).into_owned()
    }
}

/// Name prefixes and their ext4 name index. Other `system.` names are refused: index 7 is
/// ext4's own `system.data` (inline data), which the kernel would misread.
const PREFIXES: [(&[u8], u8); 3] = [(b"user.", 1), (b"trusted.", 4), (b"security.", 6)];

fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    match name {
        b"system.posix_acl_access" => return Some((2, b"")),
        b"system.posix_acl_default" => return Some((3, b"")),
        _ => {}
    }
    PREFIXES
        .iter()
        .find_map(|(p, i)| name.strip_prefix(*p).map(|rest| (*i, rest)))
}

/// VFS ACL (version 2, 8-byte entries) to ext4 ACL (version 1; 4-byte entries for the
/// owner, group, mask and other tags, 8-byte ones for named users and groups).
fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) || value[..4] != 2u32.to_le_bytes() {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => out.extend_from_slice(&e[..4]),
            0x02 | 0x08 => out.extend_from_slice(e),
            _ => return None,
        }
    }
    Some(out)
}

/// Entries in on-disk order: name index, name length, name.
pub fn prepare(xattrs: &crate::tree::Xattrs, path: &str) -> Result<Vec<Entry>, Ext4Error> {
    let mut out = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        let bad = |why: &str| Ext4Error::Xattr {
            path: path.to_string(),
            name: String::from_utf8_lossy(name).into_owned(),
            why: why.to_string(),
        };
        let (index, suffix) = split_name(name).ok_or_else(|| bad("unsupported namespace"))?;
        if suffix.len() > 255 || (suffix.is_empty() && index != 2 && index != 3) {
            return Err(bad("name is empty or longer than 255 bytes"));
        }
        let value = if index == 2 || index == 3 {
            acl_to_disk(value).ok_or_else(|| bad("malformed POSIX ACL"))?
        } else {
            value.clone()
        };
        out.push(Entry {
            index,
            name: suffix.to_vec(),
            value,
        });
    }
    out.sort_by(|a, b| a.key().cmp(&b.key()));
    Ok(out)
}

/// Splits entries between the inode (first fit, in order) and the xattr block; fails when the
/// block would overflow (ext4 without `ea_inode` keeps every value in one block).
pub fn split(entries: Vec<Entry>, path: &str) -> Result<(Vec<Entry>, Vec<Entry>), Ext4Error> {
    let (mut inline, mut block) = (Vec::new(), Vec::new());
    let mut left = INLINE_SPACE - 4;
    for e in entries {
        if e.space() <= left {
            left -= e.space();
            inline.push(e);
        } else {
            block.push(e);
        }
    }
    let need: usize = block.iter().map(Entry::space).sum::<usize>() + BLOCK_HEADER + 4;
    if need > BLOCK {
        let largest = block.iter().max_by_key(|e| e.value.len());
        return Err(Ext4Error::XattrsTooLarge {
            path: path.to_string(),
            name: largest.map(Entry::full_name).unwrap_or_default(),
            len: largest.map_or(0, |e| e.value.len()),
            bytes: need,
            max: BLOCK,
        });
    }
    Ok((inline, block))
}

/// `ext2fs_ext_attr_hash_entry`: name bytes, then the value as little-endian words.
pub fn entry_hash(e: &Entry) -> u32 {
    let mut h = 0u32;
    for &c in &e.name {
        h = (h << 5) ^ (h >> 27) ^ c as u32;
    }
    let mut v = e.value.clone();
    v.resize(e.value_len(), 0);
    for w in v.chunks(4) {
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(w.try_into().unwrap());
    }
    h
}

/// Writes entries at `buf[first..]` with values packed downward from `buf.len()`; value
/// offsets are relative to `base`. Returns the entry hashes.
fn encode(entries: &[Entry], buf: &mut [u8], first: usize, base: usize) -> Vec<u32> {
    let mut at = first;
    let mut vend = buf.len();
    let mut hashes = Vec::new();
    for e in entries {
        let h = entry_hash(e);
        let voff = if e.value.is_empty() {
            0
        } else {
            vend -= e.value_len();
            buf[vend..vend + e.value.len()].copy_from_slice(&e.value);
            vend - base
        };
        buf[at] = e.name.len() as u8;
        buf[at + 1] = e.index;
        buf[at + 2..at + 4].copy_from_slice(&(voff as u16).to_le_bytes());
        buf[at + 8..at + 12].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        buf[at + 12..at + 16].copy_from_slice(&h.to_le_bytes());
        buf[at + 16..at + 16 + e.name.len()].copy_from_slice(&e.name);
        at += e.entry_len();
        hashes.push(h);
    }
    hashes
}

/// The in-inode area (`256 - 160` bytes, starting with the magic).
pub fn encode_inline(entries: &[Entry], area: &mut [u8]) {
    if entries.is_empty() {
        return;
    }
    area[..4].copy_from_slice(&MAGIC.to_le_bytes());
    encode(entries, area, 4, 4);
}

/// An xattr block at block number `blocknr`, with its hash and checksum.
///
/// At most this many inodes share one xattr block (the kernel's `EXT4_XATTR_REFCOUNT_MAX`).
pub const MAX_REFS: u32 = 1024;

/// `refs`: how many inodes point at this block.
pub fn encode_block(entries: &[Entry], blocknr: u64, refs: u32, fs_seed: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&refs.to_le_bytes()); // h_refcount
    b[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
    let hashes = encode(entries, &mut b, BLOCK_HEADER, 0);
    let h = hashes.iter().fold(0u32, |h, &e| (h << 16) ^ (h >> 16) ^ e);
    b[12..16].copy_from_slice(&h.to_le_bytes());
    let c = csum::raw(csum::raw(fs_seed, &blocknr.to_le_bytes()), &b);
    b[16..20].copy_from_slice(&c.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_indexes_and_acls_are_converted() {
        let mut x = crate::tree::Xattrs::new();
        x.insert(b"security.capability".to_vec(), vec![1, 2, 3]);
        x.insert(b"user.a".to_vec(), vec![]);
        // VFS ACL: version 2, USER_OBJ rw-, USER 1000 r--, GROUP_OBJ r--, MASK r--, OTHER ---.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        x.insert(b"system.posix_acl_access".to_vec(), acl);
        let e = prepare(&x, "/f").unwrap();
        assert_eq!(e.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 6]);
        assert_eq!(e[1].value.len(), 4 + 4 + 8 + 4 + 4 + 4);
        for bad in ["weird.x", "system.data", "user."] {
            let mut y = x.clone();
            y.insert(bad.as_bytes().to_vec(), vec![]);
            assert!(
                matches!(prepare(&y, "/f"), Err(Ext4Error::Xattr { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn big_values_go_to_the_block_and_too_big_fails() {
        let e = |n: &str, len| Entry {
            index: 1,
            name: n.into(),
            value: vec![7; len],
        };
        let (i, b) = split(vec![e("a", 10), e("b", 100), e("c", 20)], "/f").unwrap();
        assert_eq!((i.len(), b.len()), (2, 1));
        let err = split(vec![e("a", 10), e("big", 5000)], "/f").unwrap_err();
        assert!(
            matches!(&err, Ext4Error::XattrsTooLarge { name, len: 5000, .. } if name == "user.big"),
            "{err:?}"
        );
    }
}
