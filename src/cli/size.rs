//! Sizes on the command line: `512M`, `2G`, `1.5GiB`, `4096` (bytes).

/// Parses a size with an optional binary suffix (K, M, G, T; `iB`/`B` accepted) into bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "size {s:?}: unknown unit (use K, M, G or T, e.g. 512M or 4G)"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is not a number with an optional unit (e.g. 512M, 4G)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("size {s:?} must be a positive number"));
    }
    let bytes = (v * mult as f64).round();
    // `as` would saturate: refuse what does not fit in 64 bits instead.
    if bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10k"), Ok(10240));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("99999999T").is_err());
        assert!(parse_size("1e30").is_err());
        assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
    }
}
