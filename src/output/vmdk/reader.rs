//! A streamOptimized reader for tests, written from the spec independently of the writer: it
//! shares no code with it (own constants, own parsing), reads the footer → grain directory →
//! grain tables → grains, and separately walks the stream marker by marker.

use std::io::Read;

const S: usize = 512;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[derive(Debug)]
pub struct Hdr {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_size: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub gtes_per_gt: u32,
    pub gd_offset: u64,
    pub overhead: u64,
    pub compress: u16,
}

pub fn parse_header(b: &[u8]) -> Result<Hdr, String> {
    if &b[0..4] != b"KDMV" {
        return Err(format!("bad magic {:?}", &b[0..4]));
    }
    if &b[73..77] != b"\n \r\n" {
        return Err("newline detection bytes wrong".into());
    }
    Ok(Hdr {
        version: u32_at(b, 4),
        flags: u32_at(b, 8),
        capacity: u64_at(b, 12),
        grain_size: u64_at(b, 20),
        desc_offset: u64_at(b, 28),
        desc_size: u64_at(b, 36),
        gtes_per_gt: u32_at(b, 44),
        gd_offset: u64_at(b, 56),
        overhead: u64_at(b, 64),
        compress: u16::from_le_bytes([b[77], b[78]]),
    })
}

pub struct Disk {
    pub header: Hdr,
    pub footer: Hdr,
    pub descriptor: String,
    /// The virtual disk's bytes (capacity × 512).
    pub data: Vec<u8>,
    /// Grains present.
    pub grains: u64,
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Parse a whole streamOptimized file held in memory.
pub fn read(f: &[u8]) -> Result<Disk, String> {
    if !f.len().is_multiple_of(S) || f.len() < 4 * S {
        return Err(format!(
            "file size {} is not a whole number of sectors",
            f.len()
        ));
    }
    let header = parse_header(&f[..S])?;
    if header.gd_offset != u64::MAX {
        return Err("header gdOffset should be GD_AT_END".into());
    }
    let n = f.len();
    let (fm, foot, eos) = (&f[n - 3 * S..n - 2 * S], &f[n - 2 * S..n - S], &f[n - S..]);
    if u64_at(eos, 0) != 0 || u32_at(eos, 8) != 0 || u32_at(eos, 12) != 0 {
        return Err("no end-of-stream marker".into());
    }
    if u64_at(fm, 0) != 1 || u32_at(fm, 8) != 0 || u32_at(fm, 12) != 3 {
        return Err("no footer marker".into());
    }
    let footer = parse_header(foot)?;
    let d =
        &f[header.desc_offset as usize * S..(header.desc_offset + header.desc_size) as usize * S];
    let descriptor = String::from_utf8(d.iter().copied().take_while(|&c| c != 0).collect())
        .map_err(|e| e.to_string())?;

    let (data, grains) = grains(f, &footer)?;
    walk(f, &header)?;
    Ok(Disk {
        header,
        footer,
        descriptor,
        data,
        grains,
    })
}

/// The disk's bytes from the grain directory and tables the footer points at, and how many
/// grains were present.
fn grains(f: &[u8], footer: &Hdr) -> Result<(Vec<u8>, u64), String> {
    let gs = footer.grain_size as usize * S;
    let cap = footer.capacity as usize * S;
    let ngrains = cap.div_ceil(gs);
    let per = footer.gtes_per_gt as usize;
    let ngts = ngrains.div_ceil(per);
    let gd_at = footer.gd_offset as usize * S;
    // The GD marker precedes the GD.
    let gdm = &f[gd_at - S..gd_at];
    if u32_at(gdm, 8) != 0
        || u32_at(gdm, 12) != 2
        || u64_at(gdm, 0) != (ngts * 4).div_ceil(S) as u64
    {
        return Err("bad grain directory marker".into());
    }
    let mut data = vec![0u8; cap];
    let mut grains = 0;
    for t in 0..ngts {
        let gt_sector = u32_at(f, gd_at + 4 * t) as usize;
        if gt_sector == 0 {
            continue;
        }
        let gtm = &f[(gt_sector - 1) * S..gt_sector * S];
        if u32_at(gtm, 8) != 0 || u32_at(gtm, 12) != 1 || u64_at(gtm, 0) != (per * 4 / S) as u64 {
            return Err(format!("bad grain table marker for GT {t}"));
        }
        for e in 0..per {
            let g = t * per + e;
            let sector = u32_at(f, gt_sector * S + 4 * e) as usize;
            if sector == 0 {
                continue;
            }
            if g >= ngrains {
                return Err(format!("GTE for grain {g} beyond capacity"));
            }
            let m = sector * S;
            let lba = u64_at(f, m);
            let size = u32_at(f, m + 8) as usize;
            if lba != (g * gs / S) as u64 {
                return Err(format!("grain {g}: marker LBA {lba}"));
            }
            if size == 0 {
                return Err(format!("grain {g}: zero-size grain marker"));
            }
            let plain = inflate(&f[m + 12..m + 12 + size])?;
            let want = gs.min(cap - g * gs);
            if plain.len() < want || plain.len() > gs {
                return Err(format!("grain {g}: inflated to {} bytes", plain.len()));
            }
            data[g * gs..g * gs + want].copy_from_slice(&plain[..want]);
            grains += 1;
        }
    }
    Ok((data, grains))
}

/// Walk the stream from the end of the overhead: only markers, each followed by its block, until
/// the end-of-stream marker in the last sector.
fn walk(f: &[u8], h: &Hdr) -> Result<(), String> {
    let mut p = h.overhead as usize * S;
    loop {
        if p + S > f.len() {
            return Err("stream ran past the end of the file".into());
        }
        let val = u64_at(f, p);
        let size = u32_at(f, p + 8) as usize;
        if size != 0 {
            p += (12 + size).div_ceil(S) * S;
            continue;
        }
        match u32_at(f, p + 12) {
            0 => {
                return if p + S == f.len() {
                    Ok(())
                } else {
                    Err("data after end-of-stream".into())
                };
            }
            1..=3 => p += S + val as usize * S,
            t => return Err(format!("unknown marker type {t} at byte {p}")),
        }
    }
}
