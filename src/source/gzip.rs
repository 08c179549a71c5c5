//! A layer's gzip stream (RFC 1952): one or more members, each a header, raw deflate data and
//! an 8-byte trailer (CRC-32, ISIZE), inflated by zlib-rs.
//!
//! The trailer's CRC-32 is not computed: the layer's `diff_id`, the SHA-256 of the same
//! decompressed bytes, is checked over the whole stream ([`super::layer`]), so a CRC adds
//! nothing to what is verified but a pass over every byte on the inflating thread, which
//! bounds the flatten (5 % of the inflate of the systemd fixture's layer). ISIZE (the member's
//! length mod 2³²) is checked, so a stream cut at a deflate block's end is still an error
//! here, before the digest.

use std::io::{self, BufRead, Read};

use flate2::bufread::DeflateDecoder;

/// Header flags (RFC 1952, 2.3.1).
const FHCRC: u8 = 1 << 1;
const FEXTRA: u8 = 1 << 2;
const FNAME: u8 = 1 << 3;
const FCOMMENT: u8 = 1 << 4;
const RESERVED: u8 = 0xe0;

/// The decompressed bytes of every member of a gzip stream read from `R`.
pub(crate) struct Members<R> {
    state: State<R>,
}

enum State<R> {
    /// At a member's header.
    Header(R),
    /// Inside a member's deflate data; its decompressed bytes so far.
    Body(Box<DeflateDecoder<R>>, u64),
    /// After the last member.
    Done,
    /// An error was returned; later reads return nothing.
    Failed,
}

impl<R: BufRead> Members<R> {
    /// The stream read from `r`, which must start with a member.
    pub(crate) fn new(r: R) -> Members<R> {
        Members {
            state: State::Header(r),
        }
    }

    fn step(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Header(mut r) => {
                header(&mut r)?;
                self.state = State::Body(Box::new(DeflateDecoder::new(r)), 0);
                Ok(None)
            }
            State::Body(mut d, len) => {
                let n = d.read(buf)?;
                if n > 0 {
                    self.state = State::Body(d, len + n as u64);
                    return Ok(Some(n));
                }
                let mut r = d.into_inner();
                trailer(&mut r, len)?;
                self.state = match r.fill_buf()?.is_empty() {
                    true => State::Done,
                    false => State::Header(r),
                };
                Ok(None)
            }
            State::Done => {
                self.state = State::Done;
                Ok(Some(0))
            }
            State::Failed => Ok(Some(0)),
        }
    }
}

impl<R: BufRead> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = self.step(buf)? {
                return Ok(n);
            }
        }
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {why}"))
}

fn header_cut_short() -> io::Error {
    invalid("a member's header is cut short")
}

/// Reads a member's header: magic, method 8 (deflate), no reserved flag, then the optional
/// fields the flags announce.
fn header(r: &mut impl BufRead) -> io::Result<()> {
    let mut fixed = [0u8; 10];
    r.read_exact(&mut fixed).map_err(|_| header_cut_short())?;
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(invalid("not a gzip member (bad magic bytes)"));
    }
    if fixed[2] != 8 {
        return Err(invalid("compression method is not deflate"));
    }
    let flags = fixed[3];
    if flags & RESERVED != 0 {
        return Err(invalid("reserved header flags are set"));
    }
    if flags & FEXTRA != 0 {
        let mut xlen = [0u8; 2];
        r.read_exact(&mut xlen).map_err(|_| header_cut_short())?;
        skip(r, u16::from_le_bytes(xlen) as u64)?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let mut field = Vec::new();
            r.read_until(0, &mut field)?;
            if field.last() != Some(&0) {
                return Err(header_cut_short());
            }
        }
    }
    if flags & FHCRC != 0 {
        skip(r, 2)?;
    }
    Ok(())
}

fn skip(r: &mut impl BufRead, n: u64) -> io::Result<()> {
    match io::copy(&mut r.take(n), &mut io::sink())? {
        got if got == n => Ok(()),
        _ => Err(header_cut_short()),
    }
}

/// Reads a member's trailer and checks its ISIZE against the `len` bytes inflated.
fn trailer(r: &mut impl BufRead, len: u64) -> io::Result<()> {
    let mut t = [0u8; 8];
    r.read_exact(&mut t)
        .map_err(|_| invalid("the stream is cut short (no member trailer)"))?;
    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    if isize != len as u32 {
        return Err(invalid(&format!(
            "a member inflates to {len} bytes but its trailer says {isize} (mod 2^32)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], build: flate2::GzBuilder) -> Vec<u8> {
        let mut w = build.write(Vec::new(), flate2::Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn inflate(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Members::new(io::BufReader::with_capacity(7, bytes)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn members_with_every_optional_header_field_read_as_one_stream() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let plain = gz(&a, flate2::GzBuilder::new());
        let full = gz(
            b"second member",
            flate2::GzBuilder::new()
                .filename("layer.tar")
                .comment("a comment")
                .extra(vec![1, 2, 3])
                .mtime(7),
        );
        let empty = gz(b"", flate2::GzBuilder::new());
        let mut want = a.clone();
        want.extend_from_slice(b"second member");
        let stream = [plain.clone(), full, empty].concat();
        assert_eq!(inflate(&stream).unwrap(), want);
        assert_eq!(inflate(&plain).unwrap(), a);
        // The header CRC (FHCRC): two bytes after the other fields, skipped.
        let mut hcrc = plain.clone();
        hcrc[3] |= FHCRC;
        hcrc.splice(10..10, [0xab, 0xcd]);
        assert_eq!(inflate(&hcrc).unwrap(), a);
    }

    #[test]
    fn broken_streams_are_errors() {
        let data = vec![7u8; 100_000];
        let good = gz(&data, flate2::GzBuilder::new());
        let err = |b: &[u8]| inflate(b).unwrap_err().to_string();
        // Cut in the trailer, in the deflate data, in the header.
        assert!(err(&good[..good.len() - 3]).contains("cut short"));
        assert!(inflate(&good[..good.len() / 2]).is_err());
        assert!(err(&good[..5]).contains("header is cut short"));
        // A wrong ISIZE.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 4] ^= 1;
        assert!(err(&bad).contains("trailer says"), "{}", err(&bad));
        // Bytes after the last member that are not a member.
        let trailing = [good.clone(), b"junk after the stream".to_vec()].concat();
        assert!(err(&trailing).contains("magic"));
        // Another method, reserved flags, garbage deflate data.
        let mut m = good.clone();
        m[2] = 7;
        assert!(err(&m).contains("not deflate"));
        let mut f = good.clone();
        f[3] = 0x20;
        assert!(err(&f).contains("reserved"));
        let mut g = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        g.extend_from_slice(&[0xff; 64]);
        assert!(inflate(&g).is_err());
    }

    #[test]
    fn the_crc_is_left_to_the_diff_id() {
        // A wrong CRC-32 with the right bytes: the layer's SHA-256 decides, not the CRC.
        let mut b = gz(b"content", flate2::GzBuilder::new());
        let n = b.len();
        b[n - 8] ^= 0xff;
        assert_eq!(inflate(&b).unwrap(), b"content");
    }
}
