//! A directory's entries: name → inode, in byte order of the names. Most directories are
//! small, so up to [`SMALL`] entries live in one sorted vector (32 bytes an entry, no node
//! overhead); larger directories switch to a B-tree, which keeps inserts cheap at any size.

use std::collections::{btree_map, BTreeMap};

use super::{InodeId, Name};

/// Entries kept in the sorted vector; one more and the directory becomes a B-tree.
const SMALL: usize = 128;

#[derive(Debug, Clone)]
pub(crate) struct Entries(Repr);

#[derive(Debug, Clone)]
enum Repr {
    Small(Vec<(Name, InodeId)>),
    Large(BTreeMap<Name, InodeId>),
}

impl Default for Entries {
    fn default() -> Entries {
        Entries(Repr::Small(Vec::new()))
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl Entries {
    fn find(v: &[(Name, InodeId)], name: &[u8]) -> Result<usize, usize> {
        v.binary_search_by(|(n, _)| n.as_bytes().cmp(name))
    }

    pub(crate) fn get(&self, name: &[u8]) -> Option<&InodeId> {
        match &self.0 {
            Repr::Small(v) => Self::find(v, name).ok().map(|i| &v[i].1),
            Repr::Large(m) => m.get(name),
        }
    }

    pub(crate) fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `id`; returns the inode it named before.
    pub(crate) fn insert(&mut self, name: Name, id: InodeId) -> Option<InodeId> {
        if let Repr::Small(v) = &mut self.0 {
            match Self::find(v, &name) {
                Ok(i) => return Some(std::mem::replace(&mut v[i].1, id)),
                Err(i) if v.len() < SMALL => {
                    v.insert(i, (name, id));
                    return None;
                }
                Err(_) => {
                    let m: BTreeMap<Name, InodeId> = std::mem::take(v).into_iter().collect();
                    self.0 = Repr::Large(m);
                }
            }
        }
        match &mut self.0 {
            Repr::Large(m) => m.insert(name, id),
            Repr::Small(_) => unreachable!("converted above"),
        }
    }

    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<InodeId> {
        match &mut self.0 {
            Repr::Small(v) => Self::find(v, name).ok().map(|i| v.remove(i).1),
            Repr::Large(m) => m.remove(name),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0 = Repr::Small(Vec::new());
    }

    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees spare capacity of a small directory.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Repr::Small(v) = &mut self.0 {
            v.shrink_to_fit();
        }
    }

    /// The entries in byte order of their names.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::Small(v) => Iter::Small(v.iter()),
            Repr::Large(m) => Iter::Large(m.iter()),
        }
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &Name> {
        self.iter().map(|(n, _)| n)
    }
}

pub(crate) enum Iter<'a> {
    Small(std::slice::Iter<'a, (Name, InodeId)>),
    Large(btree_map::Iter<'a, Name, InodeId>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Name, &'a InodeId);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(n, id)| (n, id)),
            Iter::Large(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next_back().map(|(n, id)| (n, id)),
            Iter::Large(i) => i.next_back(),
        }
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = (&'a Name, &'a InodeId);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same operations on `Entries` and on a `BTreeMap` give the same contents, in the
    /// same order, on both sides of the small/large switch.
    #[test]
    fn behaves_like_a_sorted_map_small_and_large() {
        let mut e = Entries::default();
        let mut m: BTreeMap<Vec<u8>, InodeId> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..4000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let name = format!("n{}", x % 600).into_bytes();
            if x.is_multiple_of(5) {
                assert_eq!(e.remove(&name), m.remove(&name), "step {step}");
            } else {
                assert_eq!(
                    e.insert(Name::new(&name), InodeId(step)),
                    m.insert(name, InodeId(step))
                );
            }
            assert_eq!(e.len(), m.len());
            if step % 97 == 0 {
                let got: Vec<(Vec<u8>, InodeId)> =
                    e.iter().map(|(n, &i)| (n.to_vec(), i)).collect();
                let want: Vec<(Vec<u8>, InodeId)> =
                    m.iter().map(|(n, &i)| (n.clone(), i)).collect();
                assert_eq!(got, want, "step {step}");
                let back: Vec<Vec<u8>> = e.iter().rev().map(|(n, _)| n.to_vec()).collect();
                let want_back: Vec<Vec<u8>> = m.keys().rev().cloned().collect();
                assert_eq!(back, want_back);
            }
        }
        assert!(matches!(e.0, Repr::Large(_)), "grew past SMALL");
        for (n, &i) in &m {
            assert_eq!(e.get(n), Some(&i));
        }
        assert_eq!(e.get(b"absent"), None);
    }

    #[test]
    fn equality_ignores_the_representation() {
        let mut small = Entries::default();
        let mut large = Entries::default();
        for i in 0..=SMALL as u32 {
            large.insert(Name::new(format!("{i:04}").as_bytes()), InodeId(i));
        }
        for i in 0..=SMALL as u32 {
            large.remove(format!("{i:04}").as_bytes());
        }
        large.insert(Name::new(b"a"), InodeId(1));
        small.insert(Name::new(b"a"), InodeId(1));
        assert!(matches!(large.0, Repr::Large(_)) && matches!(small.0, Repr::Small(_)));
        assert_eq!(small, large);
        small.clear();
        assert!(small.is_empty() && small != large);
    }
}
