//! Directory entry names: raw bytes (Linux names need not be UTF-8), kept inside the entry
//! when short (most are), so a name costs no allocation of its own.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Names up to this many bytes are stored inline.
const INLINE: usize = 22;

/// One directory entry's name; 24 bytes, like a `Vec<u8>`, but without a heap block for
/// names of up to 22 bytes. Compares, orders and hashes as its bytes.
#[derive(Clone)]
pub(crate) struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Name {
    pub(crate) fn new(bytes: &[u8]) -> Name {
        if bytes.len() <= INLINE {
            let mut b = [0u8; INLINE];
            b[..bytes.len()].copy_from_slice(bytes);
            Name(Repr::Inline(bytes.len() as u8, b))
        } else {
            Name(Repr::Heap(bytes.into()))
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(len, b) => &b[..*len as usize],
            Repr::Heap(b) => b,
        }
    }
}

impl Deref for Name {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<&[u8]> for Name {
    fn from(b: &[u8]) -> Name {
        Name::new(b)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn short_and_long_names_keep_their_bytes() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
        for len in [0, 1, 21, 22, 23, 255] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let n = Name::new(&bytes);
            assert_eq!(n.as_bytes(), &bytes[..], "{len}");
            assert_eq!(&*n, &bytes[..]);
            assert!(matches!(n.0, Repr::Inline(..)) == (len <= INLINE));
        }
    }

    #[test]
    fn orders_like_bytes_inline_or_not() {
        let long = [b'a'; 30];
        let mut names: Vec<&[u8]> = vec![b"b", b"a", &long, b"a\xff", b"", b"ab"];
        let mut ns: Vec<Name> = names.iter().map(|n| Name::new(n)).collect();
        names.sort();
        ns.sort();
        let back: Vec<&[u8]> = ns.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(back, names);
        let mut m = BTreeMap::new();
        m.insert(Name::new(&long), 1);
        m.insert(Name::new(b"x"), 2);
        assert_eq!(m.get(&long[..]), Some(&1));
        assert_eq!(m.get(&b"x"[..]), Some(&2));
        assert_eq!(m.get(&b"y"[..]), None);
    }
}
