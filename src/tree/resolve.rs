//! Symlink resolution confined to the image root, as if the tree were chroot'ed: absolute
//! targets start at the image root and `..` at the root stays at the root, so a link can never
//! name anything outside the image.

use super::{InodeId, Kind, Tree, ROOT};

/// Most symlinks followed in one resolution (Linux's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

impl Tree {
    /// The inode `path` names, following symlinks in every component (and in the last one
    /// when `follow_last`). `None` when a component is missing, not a directory, or links
    /// loop.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Option<InodeId> {
        let mut stack: Vec<InodeId> = vec![ROOT];
        let mut pending: Vec<Vec<u8>> = split_rev(path);
        let mut links = 0;
        while let Some(c) = pending.pop() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let Kind::Dir(d) = &self.inode(*stack.last()?).kind else {
                return None;
            };
            let id = *d.entries.get(&c)?;
            match &self.inode(id).kind {
                Kind::Symlink(target) if follow_last || !pending.is_empty() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.first() == Some(&b'/') {
                        stack.truncate(1);
                    }
                    pending.extend(split_rev(target));
                }
                _ => stack.push(id),
            }
        }
        stack.last().copied()
    }
}

fn split_rev(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::tree::{Inode, Kind, Metadata, Tree};

    fn link(t: &mut Tree, path: &str, target: &str) {
        let inode = Inode {
            meta: Metadata::default(),
            kind: Kind::Symlink(target.as_bytes().to_vec()),
        };
        t.insert(path.as_bytes(), inode).unwrap();
    }

    #[test]
    fn links_resolve_inside_the_root_only() {
        let mut t = Tree::in_temp().unwrap();
        let fd = t.store(&mut &b"k"[..]).unwrap();
        let file = t
            .insert(
                b"boot/vmlinuz-6.1",
                Inode {
                    meta: Metadata::default(),
                    kind: Kind::File(fd),
                },
            )
            .unwrap();
        link(&mut t, "boot/vmlinuz", "vmlinuz-6.1");
        link(&mut t, "vmlinuz", "boot/vmlinuz");
        link(&mut t, "boot/abs", "/boot/vmlinuz");
        link(&mut t, "boot/escape", "../../../../boot/vmlinuz-6.1");
        link(&mut t, "boot/loop", "loop");
        link(&mut t, "lib", "usr/lib");
        assert_eq!(t.resolve(b"vmlinuz", true), Some(file));
        assert_eq!(t.resolve(b"/boot/abs", true), Some(file));
        assert_eq!(t.resolve(b"boot/escape", true), Some(file));
        assert_eq!(t.resolve(b"boot/loop", true), None);
        assert_eq!(t.resolve(b"lib/x", true), None);
        assert_ne!(t.resolve(b"vmlinuz", false), Some(file));
    }
}
