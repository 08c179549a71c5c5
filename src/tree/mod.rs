//! The staging tree: the flattened image filesystem, held in memory as an inode table
//! with file contents spilled to a temporary file.
//!
//! Names and link targets are raw bytes (Linux paths need not be UTF-8). Directory entries
//! point at inodes, so hardlinks are simply several entries naming one inode. Every consumer
//! (export, ext4, FAT) walks the tree in the same deterministic order: depth-first, entries
//! sorted by their name bytes.

mod entries;
mod id;
mod name;
mod resolve;
mod spill;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod walk;

pub(crate) use entries::Entries;
pub use id::PerInode;
pub use id::{InodeId, ROOT};
pub(crate) use name::Name;
pub use spill::ConsumingReader;
pub use spill::FileData;
pub use spill::Spill;
pub use spill::{LayerCursor, LayerStreams};
pub use walk::Walk;
pub use walk::WalkEntry;

use std::collections::BTreeMap;

/// A point in time as stored in tar PAX headers and ext4: seconds since the epoch and nanoseconds.
/// Packed to 12 bytes (one is in every inode of the staging tree).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(4))]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds (0 to 999 999 999).
    pub nsec: u32,
}

/// Ownership, permission bits and extended attributes of an inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (`0o7777`); never the file type.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Extended attributes by full name (`security.capability`, `user.foo`, ...).
    pub xattrs: Xattrs,
}

/// Extended attributes by full name, in name order. Boxed, since most inodes have none: then
/// they take 8 bytes of the inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes, not 24, in every inode
pub struct Xattrs(Option<Box<BTreeMap<Vec<u8>, Vec<u8>>>>);

impl Xattrs {
    /// No attributes.
    pub fn new() -> Xattrs {
        Xattrs(None)
    }

    /// Sets attribute `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        self.0
            .get_or_insert_with(Default::default)
            .insert(name, value)
    }

    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        let map = self.0.as_mut()?;
        let old = map.remove(name);
        if map.is_empty() {
            self.0 = None; // never an empty map: keeps `==` meaningful
        }
        old
    }

    /// The value of attribute `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Vec<u8>> {
        self.0.as_ref()?.get(name)
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// The attributes as (name, value), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl<'a> IntoIterator for &'a Xattrs {
    type Item = (&'a Vec<u8>, &'a Vec<u8>);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// What an inode is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Boxed: directories are few, and this keeps every other inode small.
    Dir(Box<Dir>),
    /// A regular file: where its contents are in the spill file.
    File(FileData),
    /// A symbolic link: its target.
    Symlink(Box<[u8]>),
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits of this kind, as in `stat(2)`, tar and ext4.
    pub(crate) fn format_bits(&self) -> u32 {
        match self {
            Kind::Dir(_) => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDevice { .. } => 0o020000,
            Kind::BlockDevice { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Kind::Dir(_))
    }
}

/// A directory: its entries by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dir {
    pub(crate) entries: Entries,
}

/// One inode of the staging tree; hard links share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Ownership, permissions, time and extended attributes.
    pub meta: Metadata,
    /// The file type and what belongs to it.
    pub kind: Kind,
}

impl Inode {
    /// An empty directory with `meta`.
    pub fn dir(meta: Metadata) -> Inode {
        Inode {
            meta,
            kind: Kind::Dir(Box::default()),
        }
    }

    /// `st_mode`: file type bits and permission bits.
    pub(crate) fn st_mode(&self) -> u32 {
        self.kind.format_bits() | (self.meta.mode & 0o7777)
    }
}

/// Errors from operations on the tree; paths are shown lossily.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A path with a `..` component, or one that escapes the root.
    #[error("path {0:?} is unsafe: it has a '..' component or escapes the image root")]
    UnsafePath(String),
    /// A parent component of a path is not a directory.
    #[error("path {0:?}: a parent component is not a directory")]
    NotADirectory(String),
    /// A hard link whose target does not exist.
    #[error("hardlink {link:?} points at {target:?}, which does not exist")]
    MissingLinkTarget {
        /// The hard link's path.
        link: String,
        /// The path it points at.
        target: String,
    },
    /// A hard link to a directory.
    #[error("hardlink {link:?} points at directory {target:?}")]
    LinkToDirectory {
        /// The hard link's path.
        link: String,
        /// The directory it points at.
        target: String,
    },
    /// Reading or writing the spill file failed.
    #[error("spill file: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Splits a tar-style path into its components: `./` prefixes, repeated and trailing slashes
/// and `.` components are dropped; `..` anywhere is refused (tar paths are never resolved
/// through the tree, so `..` has no safe meaning).
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(TreeError::UnsafePath(show(path))),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The flattened filesystem.
pub struct Tree {
    inodes: Vec<Inode>,
    spill: Spill,
}

impl Tree {
    /// An empty tree: a root directory owned by root, mode 0755, file data spilled to `spill`.
    pub fn new(spill: Spill) -> Tree {
        let root = Inode::dir(Metadata {
            mode: 0o755,
            ..Metadata::default()
        });
        Tree {
            inodes: vec![root],
            spill,
        }
    }

    /// A tree whose spill file is an anonymous temporary file in `$TMPDIR`.
    pub fn in_temp() -> Result<Tree, TreeError> {
        Ok(Tree::new(Spill::temp()?))
    }

    /// The inode `id`.
    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id.index()]
    }

    pub(crate) fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id.index()]
    }

    /// Frees spare capacity of the inode table and of small directories (after the last layer).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.inodes.shrink_to_fit();
        for inode in &mut self.inodes {
            if let Kind::Dir(d) = &mut inode.kind {
                d.entries.shrink_to_fit();
            }
        }
    }

    /// Number of inode slots, including ones no longer reachable.
    pub fn inode_slots(&self) -> usize {
        self.inodes.len()
    }

    /// A table of `value` for every inode slot, indexed by [`InodeId`].
    pub(crate) fn per_inode<T: Clone>(&self, value: T) -> PerInode<T> {
        PerInode::new(self.inodes.len(), value)
    }

    /// The spill file holding the regular files' contents.
    pub fn spill(&self) -> &Spill {
        &self.spill
    }

    /// The spill file, for writing.
    pub fn spill_mut(&mut self) -> &mut Spill {
        &mut self.spill
    }

    /// Appends file contents to the spill file.
    pub fn store(&mut self, data: &mut dyn std::io::Read) -> Result<FileData, TreeError> {
        Ok(self.spill.append(data)?)
    }

    /// Reads file contents at `pos` of layer `layer`'s tar stream, leaving them there if the
    /// spill defers ([`Spill::defer`]), else stores them.
    pub(crate) fn defer(
        &mut self,
        data: &mut dyn std::io::Read,
        layer: usize,
        pos: u64,
    ) -> Result<FileData, TreeError> {
        Ok(self.spill.defer(data, layer, pos)?)
    }

    fn dir_entries(&self, id: InodeId) -> Option<&Entries> {
        match &self.inode(id).kind {
            Kind::Dir(d) => Some(&d.entries),
            _ => None,
        }
    }

    /// Whether the root directory has no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.dir_entries(ROOT).is_none_or(|e| e.is_empty())
    }

    /// Looks `path` up without following symlinks.
    pub fn lookup(&self, path: &[u8]) -> Option<InodeId> {
        let comps = components(path).ok()?;
        let mut cur = ROOT;
        for c in comps {
            cur = *self.dir_entries(cur)?.get(c)?;
        }
        Some(cur)
    }

    /// The directory holding `path`'s last component, creating missing parent directories
    /// (mode 0755, root-owned, mtime 0) on the way. A non-directory in the way is replaced
    /// by a directory when `replace` is set, else it is an error.
    fn parent_dir<'p>(
        &mut self,
        path: &'p [u8],
        replace: bool,
    ) -> Result<(InodeId, Option<&'p [u8]>), TreeError> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Ok((ROOT, None));
        };
        let mut cur = ROOT;
        for c in parents {
            let next = self.dir_entries(cur).and_then(|e| e.get(c).copied());
            cur = match next {
                Some(id) if self.inode(id).kind.is_dir() => id,
                Some(_) if !replace => return Err(TreeError::NotADirectory(show(path))),
                _ => {
                    let id = self.push(Inode::dir(Metadata {
                        mode: 0o755,
                        ..Metadata::default()
                    }));
                    self.set_entry(cur, c, id);
                    id
                }
            };
        }
        Ok((cur, Some(*last)))
    }

    fn push(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        InodeId::from_index(self.inodes.len() - 1)
    }

    fn set_entry(&mut self, dir: InodeId, name: &[u8], id: InodeId) {
        if let Kind::Dir(d) = &mut self.inode_mut(dir).kind {
            d.entries.insert(Name::new(name), id);
        }
    }

    /// Puts `inode` at `path`, as a tar entry does: missing parents are created; an existing
    /// entry of another type is replaced; an existing directory given a directory entry keeps
    /// its children and takes the new metadata. Returns the inode's id. `path` naming the root
    /// updates the root's metadata.
    pub fn insert(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, TreeError> {
        let (dir, last) = self.parent_dir(path, true)?;
        let Some(name) = last else {
            self.inode_mut(ROOT).meta = inode.meta;
            return Ok(ROOT);
        };
        if let (Kind::Dir(_), Some(&existing)) =
            (&inode.kind, self.dir_entries(dir).and_then(|e| e.get(name)))
        {
            if self.inode(existing).kind.is_dir() {
                self.inode_mut(existing).meta = inode.meta;
                return Ok(existing);
            }
        }
        let id = self.push(inode);
        self.set_entry(dir, name, id);
        Ok(id)
    }

    /// Makes `path` another name for the inode at `target` (a tar hardlink). Hardlinks to
    /// symlinks are allowed; to directories they are not.
    pub fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<InodeId, TreeError> {
        let id = self
            .lookup(target)
            .ok_or_else(|| TreeError::MissingLinkTarget {
                link: show(path),
                target: show(target),
            })?;
        if self.inode(id).kind.is_dir() {
            return Err(TreeError::LinkToDirectory {
                link: show(path),
                target: show(target),
            });
        }
        let (dir, last) = self.parent_dir(path, true)?;
        let name = last.ok_or_else(|| TreeError::UnsafePath(show(path)))?;
        self.set_entry(dir, name, id);
        Ok(id)
    }

    /// Removes the entry at `path` (and so everything below it). Returns whether it existed.
    pub(crate) fn remove(&mut self, path: &[u8]) -> Result<bool, TreeError> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Ok(false);
        };
        let mut cur = ROOT;
        for c in parents {
            match self.dir_entries(cur).and_then(|e| e.get(c)) {
                Some(&id) => cur = id,
                None => return Ok(false),
            }
        }
        match &mut self.inode_mut(cur).kind {
            Kind::Dir(d) => Ok(d.entries.remove(last).is_some()),
            _ => Ok(false),
        }
    }

    /// Removes every entry of the directory at `path`, keeping the directory itself.
    pub(crate) fn clear_dir(&mut self, path: &[u8]) -> Result<(), TreeError> {
        if let Some(id) = self.lookup(path) {
            if let Kind::Dir(d) = &mut self.inode_mut(id).kind {
                d.entries.clear();
            }
        }
        Ok(())
    }

    /// Walks every reachable entry depth-first, parents before children, entries of a
    /// directory in byte order of their names. The root itself comes first with an empty path.
    pub fn walk(&self) -> Walk<'_> {
        Walk::new(self)
    }

    /// Link counts as a filesystem would report them, indexed by inode id: for a non-directory
    /// the number of entries naming it; for a directory 2 + its subdirectories. Unreachable
    /// inodes have 0.
    pub fn link_counts(&self) -> PerInode<u32> {
        let mut counts = self.per_inode(0u32);
        counts[ROOT] = 2;
        for entry in self.walk().skip(1) {
            let inode = self.inode(entry.id);
            if inode.kind.is_dir() {
                counts[entry.id] += 2;
                counts[entry.parent] += 1;
            } else {
                counts[entry.id] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests;
