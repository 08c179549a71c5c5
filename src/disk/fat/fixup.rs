//! Repairs for two things `fatfs` 0.3.6 gets wrong on FAT32, applied after it unmounts:
//!
//! - every new directory starts with long-name entries for `.` and `..` before the short
//!   entries (fsck.fat: "Expected a valid '.' entry in this slot"), and `..` of a directory in
//!   the root names the root cluster instead of 0 (FAT spec: `..` of a first-level directory
//!   is 0). Each directory's first cluster is rewritten as `.`, `..`, two deleted slots.
//! - the FSInfo free-cluster count is left unknown; it is set from the FAT.
//!
//! Only the on-disk structures of the FAT spec are read; nothing is reused from `fatfs`.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::Window;

const ENTRY: usize = 32;
const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0f;
const DELETED: u8 = 0xe5;

struct Geometry {
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    clusters: u32,
    root_cluster: u32,
    fsinfo_offset: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn read_at(w: &mut Window, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    w.seek(SeekFrom::Start(pos))?;
    w.read_exact(buf)
}

fn write_at(w: &mut Window, pos: u64, buf: &[u8]) -> io::Result<()> {
    w.seek(SeekFrom::Start(pos))?;
    w.write_all(buf)
}

fn geometry(w: &mut Window) -> io::Result<Geometry> {
    let mut bs = [0u8; 512];
    read_at(w, 0, &mut bs)?;
    let sector = u16_at(&bs, 11) as u64;
    let cluster_bytes = sector * bs[13] as u64;
    let reserved = u16_at(&bs, 14) as u64;
    let fats = bs[16] as u64;
    let total = u32_at(&bs, 32) as u64;
    let fat_sectors = u32_at(&bs, 36) as u64;
    let data_sector = reserved + fats * fat_sectors;
    Ok(Geometry {
        cluster_bytes,
        fat_offset: reserved * sector,
        data_offset: data_sector * sector,
        clusters: ((total - data_sector) * sector / cluster_bytes) as u32,
        root_cluster: u32_at(&bs, 44),
        fsinfo_offset: u16_at(&bs, 48) as u64 * sector,
    })
}

impl Geometry {
    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + (c as u64 - 2) * self.cluster_bytes
    }
}

fn next_cluster(w: &mut Window, g: &Geometry, c: u32) -> io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    read_at(w, g.fat_offset + 4 * c as u64, &mut b)?;
    let n = u32::from_le_bytes(b) & 0x0fff_ffff;
    Ok((2..g.clusters + 2).contains(&n).then_some(n))
}

/// The directory's contents, following its cluster chain.
fn read_chain(w: &mut Window, g: &Geometry, first: u32) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut c = Some(first);
    while let Some(cur) = c {
        if out.len() as u64 > 64 * 1024 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "directory cluster chain loops",
            ));
        }
        let start = out.len();
        out.resize(start + g.cluster_bytes as usize, 0);
        read_at(w, g.cluster_offset(cur), &mut out[start..])?;
        c = next_cluster(w, g, cur)?;
    }
    Ok(out)
}

fn first_cluster(e: &[u8]) -> u32 {
    (u16_at(e, 20) as u32) << 16 | u16_at(e, 26) as u32
}

/// Applies the repairs to the FAT32 filesystem in `w`, and records in the boot sector
/// (BPB_HiddSec) that the volume starts `hidden_sectors` into the disk.
pub fn repair(w: &mut Window, hidden_sectors: u32) -> io::Result<()> {
    let g = geometry(w)?;
    let mut bs = [0u8; 512];
    read_at(w, 0, &mut bs)?;
    let backup = u16_at(&bs, 50) as u64 * u16_at(&bs, 11) as u64;
    for pos in [0, backup] {
        write_at(w, pos + 28, &hidden_sectors.to_le_bytes())?;
    }
    // Directories to visit: (first cluster, is the root, parent's first cluster).
    let mut todo = vec![(g.root_cluster, true, 0u32)];
    while let Some((cluster, is_root, parent)) = todo.pop() {
        if !is_root {
            fix_dot_entries(
                w,
                &g,
                cluster,
                if parent == g.root_cluster { 0 } else { parent },
            )?;
        }
        let data = read_chain(w, &g, cluster)?;
        for e in data.chunks(ENTRY) {
            if e[0] == 0 {
                break;
            }
            if e[0] == DELETED || e[11] == ATTR_LFN || e[0] == b'.' || e[11] & ATTR_DIR == 0 {
                continue;
            }
            todo.push((first_cluster(e), false, cluster));
        }
    }
    set_free_count(w, &g)
}

fn fix_dot_entries(w: &mut Window, g: &Geometry, cluster: u32, parent: u32) -> io::Result<()> {
    let pos = g.cluster_offset(cluster);
    let mut head = [0u8; 4 * ENTRY];
    read_at(w, pos, &mut head)?;
    let is_dot = |e: &[u8], name: &[u8; 11]| &e[..11] == name && e[11] & ATTR_DIR != 0;
    let (dot, dotdot) = (b".          ", b"..         ");
    if is_dot(&head[..ENTRY], dot) && is_dot(&head[ENTRY..2 * ENTRY], dotdot) {
        return Ok(()); // already in the FAT spec's shape
    }
    if !(is_dot(&head[ENTRY..2 * ENTRY], dot) && is_dot(&head[3 * ENTRY..], dotdot)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "new directory does not start with . and ..",
        ));
    }
    let mut fixed = [0u8; 4 * ENTRY];
    fixed[..ENTRY].copy_from_slice(&head[ENTRY..2 * ENTRY]);
    fixed[ENTRY..2 * ENTRY].copy_from_slice(&head[3 * ENTRY..]);
    fixed[ENTRY + 20..ENTRY + 22].copy_from_slice(&((parent >> 16) as u16).to_le_bytes());
    fixed[ENTRY + 26..ENTRY + 28].copy_from_slice(&(parent as u16).to_le_bytes());
    fixed[2 * ENTRY] = DELETED;
    fixed[3 * ENTRY] = DELETED;
    write_at(w, pos, &fixed)
}

fn set_free_count(w: &mut Window, g: &Geometry) -> io::Result<()> {
    let mut fat = vec![0u8; 4 * (g.clusters as usize + 2)];
    read_at(w, g.fat_offset, &mut fat)?;
    let free = fat
        .chunks(4)
        .skip(2)
        .filter(|e| u32_at(e, 0) & 0x0fff_ffff == 0)
        .count() as u32;
    let mut info = [0u8; 512];
    read_at(w, g.fsinfo_offset, &mut info)?;
    if &info[0..4] != b"RRaA" || &info[484..488] != b"rrAa" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "FSInfo sector signature missing",
        ));
    }
    info[488..492].copy_from_slice(&free.to_le_bytes());
    write_at(w, g.fsinfo_offset, &info)
}
