//! Deterministic identifiers: every UUID/GUID and time stamp d2v writes is derived from the
//! image's manifest digest (or a user's override), never from randomness or the wall clock,
//! so the same input gives the same bytes.

use sha2::{Digest, Sha256};

/// A 16-byte identifier derived from `seed` (normally the image manifest digest) and `purpose`
/// (what the ID is for, e.g. `"gpt-disk"`, `"ext4-uuid"`), formatted as an RFC 9562 version 8
/// (custom) UUID so tools that check the version bits accept it.
pub(crate) fn derive_uuid(seed: &str, purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"d2v\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(seed.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x80; // version 8
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    u
}

/// Arbitrary bytes derived from `seed` and `purpose` (hash seeds, serial numbers, CIDs).
pub(crate) fn derive_bytes(seed: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"d2v-bytes\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(seed.as_bytes());
    h.finalize().into()
}

/// The canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (big-endian byte order).
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The on-disk byte order of a GPT/EFI GUID for the UUID whose text form is `uuid_string(u)`:
/// the first three fields little-endian.
pub(crate) fn guid_bytes(u: &[u8; 16]) -> [u8; 16] {
    let mut g = *u;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// `SOURCE_DATE_EPOCH` if set to a valid integer.
pub(crate) fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// algorithm): for the time stamps d2v writes in formats that store dates, not seconds.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_versioned_and_distinct_per_purpose() {
        let a = derive_uuid("sha256:abc", "gpt-disk");
        assert_eq!(a, derive_uuid("sha256:abc", "gpt-disk"));
        assert_ne!(a, derive_uuid("sha256:abc", "ext4-uuid"));
        assert_ne!(a, derive_uuid("sha256:abd", "gpt-disk"));
        assert_eq!(a[6] >> 4, 8);
        assert_eq!(a[8] >> 6, 0b10);
    }

    #[test]
    fn guid_byte_order_matches_uefi() {
        // UEFI spec example: the EFI System Partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B
        // is stored as 28 73 2A C1 1F F8 D2 11 BA 4B 00 A0 C9 3E C9 3B.
        let u: [u8; 16] = hex::decode("c12a7328f81f11d2ba4b00a0c93ec93b")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            hex::encode(guid_bytes(&u)),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
        assert_eq!(uuid_string(&u), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }
}
