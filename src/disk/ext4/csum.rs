//! CRC32C as ext4 uses it: the raw Castagnoli CRC register without the final inversion
//! (`ext4_chksum`), seeded per filesystem and per inode.

use super::ino::Ino;

/// `ext4_chksum(crc, data)`: continues the raw CRC32C register `crc` over `data`.
pub fn raw(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The filesystem checksum seed: `ext4_chksum(~0, uuid)`.
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    raw(!0, uuid)
}

/// The per-inode seed: the filesystem seed continued over the inode number and generation.
pub fn inode_seed(fs_seed: u32, ino: Ino, generation: u32) -> u32 {
    raw(
        raw(fs_seed, &ino.get().to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C catalogue check value: crc32c("123456789") = 0xE3069283
        // (initial ~0, final inversion), i.e. !raw(~0, ..).
        assert_eq!(!raw(!0, b"123456789"), 0xE306_9283);
        // RFC 3720 B.4: 32 bytes of zeros give 0x8A9136AA.
        assert_eq!(!raw(!0, &[0u8; 32]), 0x8A91_36AA);
    }

    #[test]
    fn raw_is_composable() {
        let whole = raw(7, b"hello world");
        assert_eq!(raw(raw(7, b"hello "), b"world"), whole);
    }
}
