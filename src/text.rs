//! Text from untrusted input (tar headers, archive members) made safe to show in messages.
//! Shared by the stages that quote such text (layers, the archive readers).

/// `s` without control or non-ASCII characters, shortened: error messages quote text from
/// untrusted input (tar headers), which must not dump binary garbage on a terminal.
pub fn printable(s: &str) -> String {
    const MAX: usize = 400;
    let mut out: String = s
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX)
        .collect();
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_hides_binary_bytes() {
        assert_eq!(printable("bad \u{1}\u{ff}x\n"), "bad ??x?");
        assert_eq!(printable(&"a".repeat(500)).len(), 403);
    }
}
