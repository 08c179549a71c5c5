//! Directory-index name hashes (`half_md4` and `tea`), as the htree in a directory's index
//! blocks stores them. The superblock's `s_def_hash_version` names the one in use and
//! `s_flags` says whether name bytes are read as signed or unsigned chars.

/// The hash function of a directory index (`s_def_hash_version`, `dx_root.hash_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashVersion {
    /// `half_md4`, the default of mke2fs.
    HalfMd4 = 1,
    /// `tea`.
    Tea = 2,
}

/// Packs up to `num * 4` bytes of `msg` into `num` words, padding with a word built from the
/// full name length (`str2hashbuf`).
fn str2hashbuf(msg: &[u8], num: usize, signed: bool) -> [u32; 8] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let take = msg.len().min(num * 4);
    let mut w = 0;
    for (i, &b) in msg[..take].iter().enumerate() {
        let c = if signed {
            b as i8 as i32 as u32
        } else {
            b as u32
        };
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < num {
        out[w] = val;
    }
    out
}

fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s)
        };
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    for i in [0, 4] {
        round!(f, a, b, c, d, x[i], 3);
        round!(f, d, a, b, c, x[i + 1], 7);
        round!(f, c, d, a, b, x[i + 2], 11);
        round!(f, b, c, d, a, x[i + 3], 19);
    }
    for i in [1, 0] {
        round!(g, a, b, c, d, x[i].wrapping_add(K2), 3);
        round!(g, d, a, b, c, x[i + 2].wrapping_add(K2), 5);
        round!(g, c, d, a, b, x[i + 4].wrapping_add(K2), 9);
        round!(g, b, c, d, a, x[i + 6].wrapping_add(K2), 13);
    }
    for i in [3, 1] {
        round!(h, a, b, c, d, x[i].wrapping_add(K3), 3);
        round!(h, d, a, b, c, x[i + 4].wrapping_add(K3), 9);
        round!(h, c, d, a, b, x[i - 1].wrapping_add(K3), 11);
        round!(h, b, c, d, a, x[i + 3].wrapping_add(K3), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea(buf: &mut [u32; 4], x: &[u32; 8]) {
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (x[0], x[1], x[2], x[3]);
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(0x9E37_79B9);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// The (major, minor) hash of `name` with the 16-byte `seed` (all zero means the default
/// MD4 start values). The major hash has its low bit clear, as the htree requires.
pub fn dx_hash(name: &[u8], version: HashVersion, seed: &[u8; 16], signed: bool) -> (u32, u32) {
    let mut buf = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&b| b != 0) {
        for (i, w) in buf.iter_mut().enumerate() {
            *w = u32::from_le_bytes(seed[i * 4..i * 4 + 4].try_into().unwrap());
        }
    }
    let (hash, minor) = match version {
        HashVersion::HalfMd4 => {
            let mut p = name;
            loop {
                half_md4(&mut buf, &str2hashbuf(p, 8, signed));
                if p.len() <= 32 {
                    break;
                }
                p = &p[32..];
            }
            (buf[1], buf[2])
        }
        HashVersion::Tea => {
            let mut p = name;
            loop {
                tea(&mut buf, &str2hashbuf(p, 4, signed));
                if p.len() <= 16 {
                    break;
                }
                p = &p[16..];
            }
            (buf[0], buf[1])
        }
    };
    let mut hash = hash & !1;
    if hash == 0x7fff_ffff << 1 {
        hash = (0x7fff_ffff - 1) << 1;
    }
    (hash, minor)
}
