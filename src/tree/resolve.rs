//! Symlink resolution confined to the image root, as if the tree were chroot'ed, the way
//! `umoci` (securejoin), containerd (`fs.RootPath`) and Docker (chrooted extraction) resolve
//! paths in an image: symlinks are followed inside the tree only — an absolute target starts
//! again at the image root and `..` at the root stays at the root, so a link can never name
//! anything outside the image. The host filesystem is never involved. The last component is
//! followed only when asked.

use super::{Dir, FileData, InodeId, Kind, Tree, ROOT};

/// Most symlinks followed in one resolution: securejoin's limit (Linux gives up after 40).
/// Either way, more means a loop.
const MAX_LINKS: usize = 255;

/// Too many symlinks while resolving a path (they loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many levels of symbolic links")]
pub(crate) struct SymlinkLoop;

/// Where a path leads inside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The resolved path from the image root, without a leading `/`, components joined by
    /// `/`. Components that do not exist are kept as written (a tar entry creates them).
    pub(crate) path: Vec<u8>,
    /// The inode the path names; `None` when a component is missing or not a directory.
    pub(crate) id: Option<InodeId>,
}

impl Tree {
    /// Resolves `path` (relative or absolute, from the image root), following symlinks in
    /// every component but the last (and in the last too when `follow_last`). `.` and empty
    /// components are skipped; `..` goes up one resolved component and stops at the root.
    pub(crate) fn resolve_path(
        &self,
        path: &[u8],
        follow_last: bool,
    ) -> Result<Resolved, SymlinkLoop> {
        let mut todo: Vec<Vec<u8>> = Vec::new();
        push_components(&mut todo, path);
        // Each resolved component with its inode (`None` once something is missing).
        let mut resolved: Vec<(Vec<u8>, Option<InodeId>)> = Vec::new();
        let mut all_found = true;
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == b".." {
                resolved.pop();
                continue;
            }
            let dir = resolved.last().map_or(Some(ROOT), |r| r.1);
            let child = dir.and_then(|d| self.dir_entries(d)?.get(c.as_slice()).copied());
            if let Some(id) = child {
                if let Kind::Symlink(target) = &self.inode(id).kind {
                    if !todo.is_empty() || follow_last {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(SymlinkLoop);
                        }
                        if target.starts_with(b"/") {
                            resolved.clear();
                        }
                        push_components(&mut todo, target);
                        continue;
                    }
                }
            }
            all_found &= child.is_some();
            resolved.push((c, child));
        }
        let id = match resolved.last() {
            _ if !all_found => None,
            Some(last) => last.1,
            None => Some(ROOT),
        };
        let names: Vec<&[u8]> = resolved.iter().map(|r| r.0.as_slice()).collect();
        Ok(Resolved {
            path: names.join(&b'/'),
            id,
        })
    }

    /// The inode `path` names, following symlinks as [`Tree::resolve_path`] does. `None` when
    /// a component is missing, not a directory, or links loop.
    pub(crate) fn resolve(&self, path: &[u8], follow_last: bool) -> Option<InodeId> {
        self.resolve_path(path, follow_last).ok()?.id
    }

    /// The data of the regular file `path` names, all symlinks followed; `None` when it names
    /// nothing or something else.
    pub(crate) fn resolve_file(&self, path: &[u8]) -> Option<&FileData> {
        match &self.inode(self.resolve(path, true)?).kind {
            Kind::File(data) => Some(data),
            _ => None,
        }
    }

    /// The directory `path` names, all symlinks followed; `None` when it names nothing or
    /// something else.
    pub(crate) fn resolve_dir(&self, path: &[u8]) -> Option<&Dir> {
        match &self.inode(self.resolve(path, true)?).kind {
            Kind::Dir(dir) => Some(dir),
            _ => None,
        }
    }

    /// The first `max` bytes of the regular file `path` (symlinks followed inside the tree);
    /// `None` when it is not a readable regular file.
    pub(crate) fn read_head(&self, path: &[u8], max: u64) -> Option<Vec<u8>> {
        let fd = self.resolve_file(path)?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(self.spill.reader(fd), max),
            &mut buf,
        )
        .ok()?;
        Some(buf)
    }

    /// [`Tree::read_head`] as text (invalid UTF-8 replaced).
    pub(crate) fn read_text(&self, path: &[u8], max: u64) -> Option<String> {
        let buf = self.read_head(path, max)?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Pushes `path`'s components onto `todo` so that the first is popped first; `.` and empty
/// components are dropped, `..` kept (handled by the caller).
fn push_components(todo: &mut Vec<Vec<u8>>, path: &[u8]) {
    for c in path.split(|&b| b == b'/').rev() {
        if !c.is_empty() && c != b"." {
            todo.push(c.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SymlinkLoop;
    use crate::tree::testing::{add_file_with, add_symlink as link};
    use crate::tree::{Inode, Metadata, Tree};

    #[test]
    fn links_resolve_inside_the_root_only() {
        let mut t = Tree::in_temp().unwrap();
        let file = add_file_with(&mut t, "boot/vmlinuz-6.1", b"k", Metadata::default());
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

    #[test]
    fn paths_keep_missing_components_and_loops_are_errors() {
        let mut t = Tree::in_temp().unwrap();
        let dir = t
            .insert(b"usr/lib", Inode::dir(Metadata::default()))
            .unwrap();
        link(&mut t, "lib", "usr/lib");
        link(&mut t, "up", "../../usr");
        link(&mut t, "a", "b");
        link(&mut t, "b", "/a");
        let r = t.resolve_path(b"lib/new/x", false).unwrap();
        assert_eq!((r.path.as_slice(), r.id), (&b"usr/lib/new/x"[..], None));
        let r = t.resolve_path(b"/up/./lib/", true).unwrap();
        assert_eq!((r.path.as_slice(), r.id), (&b"usr/lib"[..], Some(dir)));
        // The last component is followed only when asked.
        assert_eq!(t.resolve_path(b"lib", false).unwrap().path, b"lib");
        assert_eq!(t.resolve_path(b"a/x", false), Err(SymlinkLoop));
        assert_eq!(t.resolve_path(b"a", false).unwrap().path, b"a");
        // `..` past a missing component comes back, but nothing is named there.
        let r = t.resolve_path(b"gone/../usr", true).unwrap();
        assert_eq!((r.path.as_slice(), r.id), (&b"usr"[..], None));
    }
}
