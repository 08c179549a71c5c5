//! The little HTTP/1.1 the harness's loopback servers need: reading a request's head.

use std::io::BufRead;

/// A request line and its headers.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Header names and trimmed values, in order.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The value of header `name` (case-insensitive; the last one when repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request's head from `r`: an error only when the request line cannot be read;
/// headers end at an empty line, end of stream or a read error.
pub fn read_request_head(r: &mut impl BufRead) -> std::io::Result<RequestHead> {
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut head = RequestHead::default();
    let mut parts = first.split(' ');
    head.method = parts.next().unwrap_or("").to_string();
    head.path = parts.next().unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            head.headers.push((k.to_string(), v.trim().to_string()));
        }
    }
    Ok(head)
}
