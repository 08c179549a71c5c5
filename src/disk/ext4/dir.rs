//! Directory blocks: linear (one block, `filetype` entries plus the checksum tail) or, for
//! anything larger, a hashed tree (`dir_index`): a dx_root in block 0, optionally one level of
//! dx_node blocks, and leaf blocks holding the entries sorted by name hash.

use super::csum;
use super::hash::{dx_hash, HashVersion};
use super::ino::Ino;
use super::Ext4Error;

const BLOCK: usize = 4096;
/// Space for entries in a leaf block: the last 12 bytes hold the checksum tail.
const LEAF_SPACE: usize = BLOCK - 12;
const ROOT_LIMIT: usize = (BLOCK - 0x20) / 8 - 1;
const NODE_LIMIT: usize = (BLOCK - 8) / 8 - 1;

#[derive(Debug, Clone)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: Ino,
    pub ftype: u8,
}

pub struct HashCtx {
    pub seed: [u8; 16],
    pub version: HashVersion,
    pub signed: bool,
}

pub fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// One entry at `at`; `ino` `None` is inode 0, an entry naming nothing (the checksum tail).
fn put_entry(b: &mut [u8], at: usize, ino: Option<Ino>, rec: usize, name: &[u8], ftype: u8) {
    b[at..at + 4].copy_from_slice(&ino.map_or(0, Ino::get).to_le_bytes());
    b[at + 4..at + 6].copy_from_slice(&(rec as u16).to_le_bytes());
    b[at + 6] = name.len() as u8;
    b[at + 7] = ftype;
    b[at + 8..at + 8 + name.len()].copy_from_slice(name);
}

/// Seals a leaf block: the checksum tail (`inode 0, rec_len 12, file_type 0xDE`).
fn seal_leaf(b: &mut [u8], seed: u32) {
    put_entry(b, LEAF_SPACE, None, 12, b"", 0xDE);
    let c = csum::raw(seed, &b[..LEAF_SPACE]);
    b[BLOCK - 4..].copy_from_slice(&c.to_le_bytes());
}

/// Packs entries into leaf blocks; each block's last entry spans to the tail. Returns the
/// blocks and, for each, the index of its first entry.
fn pack(entries: &[DirEntry], seed: u32) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut blocks = Vec::new();
    let mut firsts = Vec::new();
    let mut b = vec![0u8; BLOCK];
    let mut at = 0;
    let mut last = None;
    for (i, e) in entries.iter().enumerate() {
        let rec = rec_len(e.name.len());
        if at + rec > LEAF_SPACE {
            finish(&mut b, last, LEAF_SPACE);
            seal_leaf(&mut b, seed);
            blocks.push(std::mem::replace(&mut b, vec![0u8; BLOCK]));
            at = 0;
        }
        if at == 0 {
            firsts.push(i);
        }
        put_entry(&mut b, at, Some(e.ino), rec, e.name, e.ftype);
        last = Some(at);
        at += rec;
    }
    finish(&mut b, last, LEAF_SPACE);
    seal_leaf(&mut b, seed);
    blocks.push(b);
    (blocks, firsts)
}

/// Stretches the entry at `last` to end at `end`.
fn finish(b: &mut [u8], last: Option<usize>, end: usize) {
    if let Some(at) = last {
        b[at + 4..at + 6].copy_from_slice(&((end - at) as u16).to_le_bytes());
    }
}

/// Writes a dx limit/count header and its entries at `at`, then the checksum tail.
fn put_dx(b: &mut [u8], at: usize, limit: usize, entries: &[(u32, u32)], seed: u32) {
    b[at..at + 2].copy_from_slice(&(limit as u16).to_le_bytes());
    b[at + 2..at + 4].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    for (i, &(hash, block)) in entries.iter().enumerate() {
        let p = at + i * 8;
        if i > 0 {
            b[p..p + 4].copy_from_slice(&hash.to_le_bytes());
        }
        b[p + 4..p + 8].copy_from_slice(&block.to_le_bytes());
    }
    let tail = at + limit * 8;
    let c = csum::raw(seed, &b[..at + entries.len() * 8]);
    let c = csum::raw(c, &[0u8; 8]);
    b[tail + 4..tail + 8].copy_from_slice(&c.to_le_bytes());
}

/// The blocks of a directory whose own inode is `dot` and parent `dotdot`, entries sorted by
/// name. Returns the blocks and whether the directory is hash-indexed.
pub fn build(
    dot: Ino,
    dotdot: Ino,
    entries: &[DirEntry],
    hash: &HashCtx,
    seed: u32,
) -> Result<(Vec<Vec<u8>>, bool), Ext4Error> {
    let mut all = vec![
        DirEntry {
            name: b".",
            ino: dot,
            ftype: 2,
        },
        DirEntry {
            name: b"..",
            ino: dotdot,
            ftype: 2,
        },
    ];
    all.extend_from_slice(entries);
    let linear: usize = all.iter().map(|e| rec_len(e.name.len())).sum();
    if linear <= LEAF_SPACE {
        return Ok((pack(&all, seed).0, false));
    }
    hashed_tree(dot, dotdot, entries, hash, seed).map(|blocks| (blocks, true))
}

/// A hashed (htree) directory: its entries in leaves sorted by name hash, and the root block
/// (plus, for more leaves than the root indexes, one level of index nodes) pointing at them.
fn hashed_tree(
    dot: Ino,
    dotdot: Ino,
    entries: &[DirEntry],
    hash: &HashCtx,
    seed: u32,
) -> Result<Vec<Vec<u8>>, Ext4Error> {
    let mut hashed: Vec<(u32, u32, &DirEntry)> = entries
        .iter()
        .map(|e| {
            let (h, m) = dx_hash(e.name, hash.version, &hash.seed, hash.signed);
            (h, m, e)
        })
        .collect();
    hashed.sort_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));
    let sorted: Vec<DirEntry> = hashed.iter().map(|h| h.2.clone()).collect();
    let (leaves, firsts) = pack(&sorted, seed);
    // Hash of each leaf; the low bit marks a leaf continuing the previous one's hash.
    let leaf_hash: Vec<u32> = firsts
        .iter()
        .map(|&i| {
            let h = hashed[i].0;
            h | (i > 0 && hashed[i - 1].0 == h) as u32
        })
        .collect();
    let n = leaves.len();
    let levels = if n <= ROOT_LIMIT { 0 } else { 1 };
    let nodes = if levels == 0 {
        0
    } else {
        n.div_ceil(NODE_LIMIT)
    };
    if nodes > ROOT_LIMIT {
        return Err(Ext4Error::DirTooLarge {
            entries: entries.len(),
        });
    }
    let first_leaf = 1 + nodes;
    let leaf_refs: Vec<(u32, u32)> = (0..n)
        .map(|i| (leaf_hash[i], (first_leaf + i) as u32))
        .collect();
    let mut out = index_blocks(dot, dotdot, hash, levels, &leaf_refs, seed);
    out.extend(leaves);
    Ok(out)
}

/// The htree's root block (`.`, `..` and the dx_root) and, with `levels` 1, its index nodes;
/// `leaf_refs` are each leaf's (hash, block).
fn index_blocks(
    dot: Ino,
    dotdot: Ino,
    hash: &HashCtx,
    levels: u8,
    leaf_refs: &[(u32, u32)],
    seed: u32,
) -> Vec<Vec<u8>> {
    let mut root = vec![0u8; BLOCK];
    put_entry(&mut root, 0, Some(dot), 12, b".", 2);
    put_entry(&mut root, 12, Some(dotdot), BLOCK - 12, b"..", 2);
    root[0x1C] = hash.version as u8;
    root[0x1D] = 8;
    root[0x1E] = levels;
    if levels == 0 {
        put_dx(&mut root, 0x20, ROOT_LIMIT, leaf_refs, seed);
        return vec![root];
    }
    let chunks: Vec<&[(u32, u32)]> = leaf_refs.chunks(NODE_LIMIT).collect();
    let node_refs: Vec<(u32, u32)> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (c[0].0, (1 + i) as u32))
        .collect();
    put_dx(&mut root, 0x20, ROOT_LIMIT, &node_refs, seed);
    let mut out = vec![root];
    for c in chunks {
        let mut b = vec![0u8; BLOCK];
        b[4..6].copy_from_slice(&(BLOCK as u16).to_le_bytes());
        put_dx(&mut b, 8, NODE_LIMIT, c, seed);
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HashCtx {
        HashCtx {
            seed: [1; 16],
            version: HashVersion::HalfMd4,
            signed: true,
        }
    }

    #[test]
    fn small_directory_is_one_linear_block_with_tail() {
        let e = [DirEntry {
            name: b"a",
            ino: Ino::new(12),
            ftype: 1,
        }];
        let (b, idx) = build(Ino::new(2), Ino::new(2), &e, &ctx(), 5).unwrap();
        assert!(!idx);
        assert_eq!(b.len(), 1);
        // ".": rec_len 12; "..": 12; "a" spans to the tail at 4084.
        assert_eq!(u16::from_le_bytes([b[0][4], b[0][5]]), 12);
        assert_eq!(u16::from_le_bytes([b[0][28], b[0][29]]), (4084 - 24) as u16);
        assert_eq!(&b[0][4084..4092], &[0, 0, 0, 0, 12, 0, 0, 0xDE]);
    }

    #[test]
    fn large_directory_is_indexed_and_ordered_by_hash() {
        let names: Vec<Vec<u8>> = (0..5000)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let e: Vec<DirEntry> = names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n,
                ino: Ino::new(12 + i as u32),
                ftype: 1,
            })
            .collect();
        let (b, idx) = build(Ino::new(2), Ino::new(2), &e, &ctx(), 5).unwrap();
        assert!(idx);
        let count = u16::from_le_bytes([b[0][0x22], b[0][0x23]]) as usize;
        assert_eq!(count, b.len() - 1);
        assert_eq!(
            u16::from_le_bytes([b[0][0x20], b[0][0x21]]) as usize,
            ROOT_LIMIT
        );
    }
}
