//! FAT directory entries (Microsoft FAT specification, "FAT Directory Structure" and "FAT
//! Long Directory Entries"): the 32-byte short entry, the long-name entries before it, the
//! short ("8.3") names d2v generates for long names, and DOS time stamps.

use std::collections::HashSet;

/// Size of one directory entry.
pub(super) const ENTRY: usize = 32;
pub(super) const ATTR_VOLUME_ID: u8 = 0x08;
pub(super) const ATTR_DIRECTORY: u8 = 0x10;
pub(super) const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0f;
/// UTF-16 code units in one long-name entry.
const LFN_CHARS: usize = 13;
/// Where in a long-name entry its 13 code units go.
const LFN_SLOTS: [usize; LFN_CHARS] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// A DOS date and time (local time in the spec; d2v writes UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DosTime {
    pub(super) year: u16,
    pub(super) month: u16,
    pub(super) day: u16,
    pub(super) hour: u16,
    pub(super) min: u16,
    pub(super) sec: u16,
}

impl DosTime {
    /// The on-disk date: bits 15–9 years since 1980, 8–5 month, 4–0 day.
    fn date(&self) -> u16 {
        ((self.year - 1980) << 9) | (self.month << 5) | self.day
    }

    /// The on-disk time: bits 15–11 hours, 10–5 minutes, 4–0 seconds / 2.
    fn time(&self) -> u16 {
        (self.hour << 11) | (self.min << 5) | (self.sec / 2)
    }
}

/// A Unix time as a DOS time stamp (UTC), clamped to `SOURCE_DATE_EPOCH` when set and to
/// FAT's range 1980-01-01..2107-12-31.
pub(super) fn dos_time(mut secs: i64) -> DosTime {
    if let Some(sde) = crate::ids::source_date_epoch() {
        secs = secs.min(sde);
    }
    let secs = secs.clamp(315_532_800, 4_354_819_199);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::ids::civil_from_days(days);
    DosTime {
        year: y as u16,
        month: m as u16,
        day: d as u16,
        hour: (rem / 3600) as u16,
        min: (rem / 60 % 60) as u16,
        sec: (rem % 60) as u16,
    }
}

/// The fields of one short directory entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Short {
    pub(super) name: [u8; 11],
    pub(super) attr: u8,
    pub(super) created: DosTime,
    pub(super) modified: DosTime,
    pub(super) first_cluster: u32,
    pub(super) size: u32,
}

impl Short {
    /// The 32 bytes of the entry. The access date is the modification date.
    pub(super) fn bytes(&self) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        e[..11].copy_from_slice(&self.name);
        e[11] = self.attr;
        e[14..16].copy_from_slice(&self.created.time().to_le_bytes());
        e[16..18].copy_from_slice(&self.created.date().to_le_bytes());
        e[18..20].copy_from_slice(&self.modified.date().to_le_bytes());
        e[20..22].copy_from_slice(&((self.first_cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.modified.time().to_le_bytes());
        e[24..26].copy_from_slice(&self.modified.date().to_le_bytes());
        e[26..28].copy_from_slice(&(self.first_cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&self.size.to_le_bytes());
        e
    }
}

/// The volume label entry of the root directory.
pub(super) fn volume_label(label: [u8; 11]) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..11].copy_from_slice(&label);
    e[11] = ATTR_VOLUME_ID;
    e
}

/// The checksum of a short name that each of its long-name entries carries.
pub(super) fn checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// How many long-name entries `name` needs (0: it is stored as its short name alone).
pub(super) fn lfn_count(name: &str, short: &[u8; 11]) -> usize {
    if exact_short(name).as_ref() == Some(short) {
        0
    } else {
        name.encode_utf16().count().div_ceil(LFN_CHARS)
    }
}

/// The long-name entries for `name`, in on-disk order (the last part first, flagged 0x40),
/// followed by nothing: the short entry comes after them.
pub(super) fn lfn_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; ENTRY]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let n = lfn_count(name, short);
    let sum = checksum(short);
    (1..=n)
        .rev()
        .map(|ord| {
            let mut e = [0u8; ENTRY];
            e[0] = ord as u8 | if ord == n { 0x40 } else { 0 };
            e[11] = ATTR_LONG_NAME;
            e[13] = sum;
            for (k, &at) in LFN_SLOTS.iter().enumerate() {
                let i = (ord - 1) * LFN_CHARS + k;
                // The name ends with one 0x0000, then 0xFFFF padding.
                let unit = match i.cmp(&units.len()) {
                    std::cmp::Ordering::Less => units[i],
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 0xffff,
                };
                e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

/// Characters a short name may hold besides upper-case letters and digits.
const SHORT_EXTRA: &[u8] = b"!#$%&'()-@^_`{}~";

fn short_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_EXTRA.contains(&c)
}

/// `name` as a short name when it already is one (upper case, 1–8 characters, an optional
/// dot and 1–3 characters), so it needs no long-name entries.
fn exact_short(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max: usize| s.len() <= max && s.bytes().all(short_char);
    if base.is_empty() || !ok(base, 8) || !ok(ext, 3) || (name.ends_with('.')) {
        return None;
    }
    let mut short = [b' '; 11];
    short[..base.len()].copy_from_slice(base.as_bytes());
    short[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(short)
}

/// The short names of one directory, unique in it.
#[derive(Debug, Default)]
pub(super) struct ShortNames {
    taken: HashSet<[u8; 11]>,
}

impl ShortNames {
    /// Reserves the names that are their own short names (call first, for every entry, so
    /// that a generated `NAME~1` never takes one of them).
    pub(super) fn reserve_exact(&mut self, name: &str) {
        if let Some(s) = exact_short(name) {
            self.taken.insert(s);
        }
    }

    /// The short name for `name`: itself when it is one, else a basis of its upper-cased
    /// valid characters with the lowest free numeric tail (`KERNEL~1.IMG`). A directory holds
    /// at most 65 536 entries, so the tail never passes `~65536`.
    pub(super) fn assign(&mut self, name: &str) -> [u8; 11] {
        if let Some(s) = exact_short(name) {
            return s;
        }
        let clean = |s: &str| -> Vec<u8> {
            s.bytes()
                .map(|c| c.to_ascii_uppercase())
                .filter(|&c| c != b' ' && c != b'.')
                .map(|c| if short_char(c) { c } else { b'_' })
                .collect()
        };
        let trimmed = name.trim_start_matches('.');
        let (base, ext) = match trimmed.rsplit_once('.') {
            Some((b, e)) if !b.is_empty() => (clean(b), clean(e)),
            _ => (clean(trimmed), Vec::new()),
        };
        let base = if base.is_empty() { b"_".to_vec() } else { base };
        for n in 1u32.. {
            let tail = format!("~{n}");
            let keep = 8usize.saturating_sub(tail.len()).min(base.len());
            let mut short = [b' '; 11];
            short[..keep].copy_from_slice(&base[..keep]);
            short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
            let e = ext.len().min(3);
            short[8..8 + e].copy_from_slice(&ext[..e]);
            if self.taken.insert(short) {
                return short;
            }
        }
        unreachable!("a directory holds at most 65 536 entries")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &[u8; 11]) -> &str {
        std::str::from_utf8(x).unwrap()
    }

    #[test]
    fn exact_short_names_need_no_long_entries() {
        let mut names = ShortNames::default();
        for n in ["EFI", "BOOTX64.EFI", "A-B_C.TX"] {
            names.reserve_exact(n);
            let short = names.assign(n);
            assert_eq!(lfn_count(n, &short), 0, "{n}");
        }
        assert_eq!(s(&names.assign("BOOTX64.EFI")), "BOOTX64 EFI");
    }

    #[test]
    fn other_names_get_a_numeric_tail_and_long_entries() {
        let mut names = ShortNames::default();
        names.reserve_exact("GRUB~1");
        assert_eq!(s(&names.assign("grub")), "GRUB~2     ");
        assert_eq!(s(&names.assign("grub.cfg")), "GRUB~1  CFG");
        assert_eq!(s(&names.assign("Grub.Cfg.x")), "GRUBCF~1X  ");
        assert_eq!(
            s(&names.assign("vmlinuz-6.1.0-13-cloud-amd64")),
            "VMLINU~10-1"
        );
        assert_eq!(s(&names.assign(".hidden")), "HIDDEN~1   ");
        assert_eq!(s(&names.assign("a+b")), "A_B~1      ");
        for n in 1..=10 {
            let short = names.assign("initrd.img");
            let want = if n < 10 {
                format!("INITRD~{n}IMG")
            } else {
                "INITR~10IMG".to_string()
            };
            assert_eq!(s(&short), want);
        }
    }

    /// The spec's example checksum loop, and a 26-character name in two entries: the last
    /// part first with bit 6 set, its name ended by 0x0000 and padded with 0xFFFF.
    #[test]
    fn long_entries_follow_the_spec() {
        let short = *b"THEQUI~1FOX";
        let mut sum: u8 = 0;
        for &b in &short {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(b);
        }
        assert_eq!(checksum(&short), sum);
        let name = "The quick brown.fox";
        let lfn = lfn_entries(name, &short);
        assert_eq!(lfn.len(), 2);
        assert_eq!(lfn[0][0], 0x42);
        assert_eq!(lfn[1][0], 0x01);
        for e in &lfn {
            assert_eq!((e[11], e[12], e[13]), (0x0f, 0, sum));
            assert_eq!(&e[26..28], &[0, 0]);
        }
        let units = |e: &[u8; 32]| -> Vec<u16> {
            LFN_SLOTS
                .iter()
                .map(|&at| u16::from_le_bytes([e[at], e[at + 1]]))
                .collect()
        };
        let mut all = units(&lfn[1]);
        all.extend(units(&lfn[0]));
        let want: Vec<u16> = name.encode_utf16().collect();
        assert_eq!(&all[..19], &want[..]);
        assert_eq!(all[19], 0);
        assert!(all[20..].iter().all(|&u| u == 0xffff));
    }

    #[test]
    fn short_entries_hold_cluster_halves_size_and_times() {
        let t = dos_time(951_914_096); // 2000-03-01 12:34:56 UTC
        let e = Short {
            name: *b"KERNEL  IMG",
            attr: ATTR_ARCHIVE,
            created: t,
            modified: t,
            first_cluster: 0x0012_3456,
            size: 70_000,
        }
        .bytes();
        assert_eq!(&e[..11], b"KERNEL  IMG");
        assert_eq!(u16::from_le_bytes([e[20], e[21]]), 0x0012);
        assert_eq!(u16::from_le_bytes([e[26], e[27]]), 0x3456);
        assert_eq!(u32::from_le_bytes([e[28], e[29], e[30], e[31]]), 70_000);
        if crate::ids::source_date_epoch().is_none() {
            let date = u16::from_le_bytes([e[24], e[25]]);
            assert_eq!((date >> 9, (date >> 5) & 15, date & 31), (20, 3, 1));
            let time = u16::from_le_bytes([e[22], e[23]]);
            assert_eq!(
                (time >> 11, (time >> 5) & 63, (time & 31) * 2),
                (12, 34, 56)
            );
        }
    }
}
