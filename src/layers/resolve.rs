//! Path resolution inside the tree, as `umoci` (securejoin), containerd (`fs.RootPath`) and
//! Docker (chrooted extraction) do it: symlinks met in the *parent* components of an entry's
//! path are followed, always inside the tree — an absolute target starts again at the tree's
//! root and `..` stops at the root, so nothing ever leaves the image. The host filesystem is
//! never involved. The last component is followed only when asked (directories of whiteouts).

use crate::tree::{InodeId, Kind, Tree, ROOT};

/// Linux gives up after 40 symlinks in one lookup; securejoin after 255. Either way, a loop.
const MAX_LINKS: usize = 255;

/// Too many symlinks while resolving (a loop).
#[derive(Debug)]
pub struct SymlinkLoop;

/// Resolves normalized `path` (no `..`, no leading `/`) to the path it names inside the tree,
/// following symlinks in every component but the last (and in the last too if `follow_last`).
/// Components that do not exist are kept as they are (they will be created).
pub fn resolve(tree: &Tree, path: &[u8], follow_last: bool) -> Result<Vec<u8>, SymlinkLoop> {
    let mut todo: Vec<Vec<u8>> = Vec::new();
    push_components(&mut todo, path);
    let mut resolved: Vec<(Vec<u8>, Option<InodeId>)> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == b".." {
            resolved.pop();
            continue;
        }
        let dir = resolved.last().map_or(Some(ROOT), |r| r.1);
        let child = dir.and_then(|d| match &tree.inode(d).kind {
            Kind::Dir(entries) => entries.entries.get(&c).copied(),
            _ => None,
        });
        if let Some(id) = child {
            if let Kind::Symlink(target) = &tree.inode(id).kind {
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
        resolved.push((c, child));
    }
    let names: Vec<&[u8]> = resolved.iter().map(|r| r.0.as_slice()).collect();
    Ok(names.join(&b'/'))
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
