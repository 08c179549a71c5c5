//! Byte-slice helpers shared by the stages.

/// Whether `b` is all zeros: 64 bytes at a time as eight words (the compiler vectorises the
/// inner fold), stopping at the first 64 that are not.
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    let words_zero = chunks.all(|c| {
        c.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
        }) == 0
    });
    words_zero && chunks.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_check() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 1000]));
        for i in [0, 1, 63, 64, 255, 256, 257, 959, 960, 999] {
            let mut b = [0u8; 1000];
            b[i] = 0x80;
            assert!(!is_zero(&b), "{i}");
        }
    }
}
