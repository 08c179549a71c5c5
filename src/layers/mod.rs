//! Layer application: one OCI layer (a decompressed tar stream) applied onto the staging tree,
//! following the OCI image spec's changeset rules (image-spec `layer.md`).
//!
//! - `.wh.NAME` deletes NAME from the lower layers; `.wh..wh..opq` hides the lower layers'
//!   children of its directory. Whiteouts never hide entries of their own layer, wherever they
//!   sit in the tar: the paths this layer wrote are tracked and spared (see [`whiteout`]).
//! - An entry replaces an earlier one of another type; a directory entry over a directory keeps
//!   the children and takes the new metadata; missing parents are created (0755, root).
//! - Hardlinks name the target's inode in the tree as it is when the link is read, so they work
//!   within a layer, to lower-layer files and to symlinks, and survive deletion of the original.
//! - Paths with `..` are refused. Symlinks are data, never followed outside the tree: a
//!   symlink in a *parent* component of an entry, whiteout or hardlink target is resolved
//!   inside the tree (chroot-like, as umoci, containerd and Docker do, so that `lib/x` over a
//!   usr-merged `lib -> usr/lib` lands in `usr/lib/x`); an entry's own last component is never
//!   followed: the entry replaces a symlink found there.

mod ending;
mod special;
mod whiteout;
mod xattrs;

pub use ending::Unterminated;
pub use special::{SpecialLimit, SpecialTooLarge, MAX_SPECIAL};
pub use xattrs::DroppedXattrs;

use crate::text::printable;
use std::io::{self, Read};

use crate::tree::{components, show, FileData, Inode, Kind, Metadata, Timestamp, Tree, TreeError};

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

/// Why a layer could not be applied to the staging tree.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// `error` is shown through [`printable`]: the tar reader quotes raw header bytes. Built
    /// by [`read_error`], which keeps the cause's own text printable too.
    #[error("{}", read_error_text(layer, error))]
    Read {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The error of the tar or decompression stream.
        #[source]
        error: io::Error,
    },
    /// An entry with a `..` component, or one that escapes the image root through a symlink.
    #[error("layer {layer}: entry {path:?} has a '..' component or escapes the image root; refusing to apply this layer")]
    UnsafePath {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The entry's path as the tar has it.
        path: String,
    },
    /// The staging tree refused an entry.
    #[error("layer {layer}: entry {path:?}: {source}")]
    Tree {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The entry's path.
        path: String,
        /// The tree's error.
        source: TreeError,
    },
    /// Too many levels of symbolic links while resolving an entry's path.
    #[error("layer {layer}: entry {path:?}: too many levels of symbolic links in the image while resolving it")]
    SymlinkLoop {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The entry's path.
        path: String,
    },
    /// A tar entry type d2v does not apply.
    #[error("layer {layer}: entry {path:?}: unsupported tar entry type {kind:?}")]
    Unsupported {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The entry's path.
        path: String,
        /// The tar type flag.
        kind: char,
    },
    /// A sparse file in GNU tar's PAX formats: its sparse map and data only GNU tar puts back
    /// together (Go's archive/tar, Docker and containerd do not write these).
    #[error(
        "layer {layer}: entry {path:?} is a sparse file in GNU tar's PAX format (GNU.sparse.* \
         records), which d2v does not read: rebuild the layer without tar's --sparse, or with \
         --format=gnu"
    )]
    PaxSparse {
        /// The layer as named to `apply_layer`.
        layer: String,
        /// The file's path (`GNU.sparse.name` when given).
        path: String,
    },
    /// The stream ends inside an entry's header or data.
    #[error(
        "layer {layer}: {what}: the layer is truncated (a broken image: rebuild or re-push it)"
    )]
    Truncated {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// Where it ends, naming the entry.
        what: String,
        /// The tar reader's error.
        #[source]
        error: io::Error,
    },
    /// A malformed tar or PAX header.
    #[error("layer {layer}: entry {path:?}: bad header: {what}")]
    BadHeader {
        /// The layer as named to `apply_layer` (d2v names it by its digest).
        layer: String,
        /// The entry's path.
        path: String,
        /// What is wrong.
        what: String,
    },
}

/// A reader whose errors are marked as coming from the layer stream, so a failed
/// [`Tree::store`] tells a corrupt layer from a failing spill file.
struct LayerReadSide<'a, R: Read>(&'a mut R);

#[derive(Debug)]
struct ReadSideError(io::Error);

impl std::fmt::Display for ReadSideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ReadSideError {}

impl<R: Read> Read for LayerReadSide<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), ReadSideError(e)))
    }
}

/// The text of [`LayerError::Read`]. The verifying reader's own errors (corrupt compression,
/// diff_id mismatch) already name the layer and say what is wrong: shown as they are.
fn read_error_text(layer: &str, error: &io::Error) -> String {
    let text = printable(&error.to_string());
    if text.starts_with(&format!("layer {layer}: ")) {
        text
    } else {
        format!(
            "layer {layer}: reading the tar stream failed (corrupt or truncated layer?): {text}"
        )
    }
}

/// [`LayerError::Read`] for `error`. Callers print an error's causes after its message (those
/// whose text it lacks): an `error` whose text [`printable`] has to change (raw header bytes
/// the tar reader quotes) is replaced by one of the same kind with the printable text, so that
/// neither line shows those bytes and the cause's text stays within the message.
fn read_error(layer: &str, error: io::Error) -> LayerError {
    let text = error.to_string();
    let shown = printable(&text);
    let error = if shown == text {
        error
    } else {
        io::Error::new(error.kind(), shown)
    };
    LayerError::Read {
        layer: layer.to_string(),
        error,
    }
}

/// What applying a layer read past, for warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The stream lacked its end-of-archive blocks.
    pub unterminated: Option<Unterminated>,
    /// Attributes no Linux filesystem stores were dropped.
    pub dropped_xattrs: Option<DroppedXattrs>,
}

impl Applied {
    /// The warnings to show, one per thing read past.
    pub fn warnings(&self) -> Vec<String> {
        let unterminated = self.unterminated.iter().map(ToString::to_string);
        unterminated
            .chain(self.dropped_xattrs.iter().map(ToString::to_string))
            .collect()
    }
}

/// Applies one layer's tar stream onto `tree`. `layer` names the layer in errors (its digest).
/// The stream is read to its end, so a verifying reader sees all of it. A stream that ends
/// without its end-of-archive blocks, right after the last entry's data, is read as Go's
/// `archive/tar` reads it, and attributes no Linux filesystem stores are dropped as Docker
/// drops them: [`Applied`] says so, for warnings.
pub fn apply_layer(
    tree: &mut Tree,
    tar: &mut dyn Read,
    layer: &str,
) -> Result<Applied, LayerError> {
    apply_layer_deferring(tree, tar, layer, None)
}

/// Which of a layer's files may be left in it ([`Tree::defer`]) rather than stored.
pub struct Deferral<'a> {
    /// The layer's index in the image (bottom 0), as the tree's spill reads it again.
    pub index: usize,
    /// Whether a file at this path (in the tree, no leading `/`) must be stored: one the
    /// build reads before the disk's data pass.
    pub keep: &'a dyn Fn(&[u8]) -> bool,
}

/// [`apply_layer`], leaving the regular files `deferral` allows in the layer when the tree's
/// spill defers (an old GNU sparse file is always stored: its bytes are not one run).
pub fn apply_layer_deferring(
    tree: &mut Tree,
    tar: &mut dyn Read,
    layer: &str,
    deferral: Option<&Deferral>,
) -> Result<Applied, LayerError> {
    let mut dropped = None;
    let unterminated = apply_entries(tree, tar, layer, deferral, &mut dropped)?;
    Ok(Applied {
        unterminated,
        dropped_xattrs: dropped,
    })
}

fn apply_entries(
    tree: &mut Tree,
    tar: &mut dyn Read,
    layer: &str,
    deferral: Option<&Deferral>,
    dropped: &mut Option<DroppedXattrs>,
) -> Result<Option<Unterminated>, LayerError> {
    let read_err = |error| read_error(layer, error);
    let mut ours = whiteout::Ours::for_layer_onto(tree);
    let track = ending::Track::default();
    let mut last = None;
    {
        let mut archive = tar::Archive::new(track.reader(&mut *tar));
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(error) => return stream_ended(layer, &track, last.as_ref(), error),
            };
            last = Some(ending::Last {
                path: show(&entry.path_bytes()),
                data: entry.raw_file_position(),
                size: entry.size(),
            });
            apply_entry(tree, &mut entry, layer, deferral, &mut ours, dropped)?;
        }
    }
    io::copy(tar, &mut io::sink()).map_err(read_err)?;
    // Ended cleanly: at the end of the stream (not at end-of-archive blocks) after an entry?
    Ok(match (track.end(), last) {
        (Some(end), Some(last)) => ending::ending(layer, end, Some(&last)).short(),
        _ => None,
    })
}

/// The tar reader failed with `error`: a layer that ended in the padding after its last
/// entry's data is read to there; one that ended elsewhere is cut; otherwise `error` stands.
fn stream_ended(
    layer: &str,
    track: &ending::Track,
    last: Option<&ending::Last>,
    error: io::Error,
) -> Result<Option<Unterminated>, LayerError> {
    let Some(end) = track.end() else {
        return Err(read_error(layer, error));
    };
    match ending::ending(layer, end, last) {
        ending::Ending::Short(note) => Ok(Some(note)),
        ending::Ending::Cut(what) => Err(LayerError::Truncated {
            layer: layer.to_string(),
            what,
            error,
        }),
    }
}

/// The layer and the entry's path, as errors name them.
struct At<'a> {
    layer: &'a str,
    path: String,
}

impl At<'_> {
    fn unsafe_path(&self) -> LayerError {
        LayerError::UnsafePath {
            layer: self.layer.to_string(),
            path: self.path.clone(),
        }
    }
    fn bad(&self, what: String) -> LayerError {
        LayerError::BadHeader {
            layer: self.layer.to_string(),
            path: self.path.clone(),
            what,
        }
    }
    fn tree(&self, source: TreeError) -> LayerError {
        LayerError::Tree {
            layer: self.layer.to_string(),
            path: self.path.clone(),
            source,
        }
    }
    fn symlink_loop(&self) -> LayerError {
        LayerError::SymlinkLoop {
            layer: self.layer.to_string(),
            path: self.path.clone(),
        }
    }
}

/// Applies one tar entry: a whiteout removes, anything else is added at its path (parent
/// symlinks resolved inside the tree) with its metadata.
fn apply_entry<R: Read>(
    tree: &mut Tree,
    entry: &mut tar::Entry<'_, R>,
    layer: &str,
    deferral: Option<&Deferral>,
    ours: &mut whiteout::Ours,
    dropped: &mut Option<DroppedXattrs>,
) -> Result<(), LayerError> {
    let raw_path = entry.path_bytes().into_owned();
    let at = At {
        layer,
        path: show(&raw_path),
    };
    let path = normalize(&raw_path).ok_or_else(|| at.unsafe_path())?;
    if entry.header().entry_type().is_pax_global_extensions() {
        return Ok(());
    }
    let (dir, name) = split_last(&path);
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        return apply_whiteout(tree, &at, dir, name, hidden, ours);
    }
    let path = tree
        .resolve_path(&path, false)
        .map_err(|_| at.symlink_loop())?
        .path;
    let (mut meta, dev) = metadata(entry, &at)?;
    let unstorable: Vec<Vec<u8>> = (meta.xattrs.iter())
        .filter(|(name, _)| !xattrs::storable(name))
        .map(|(name, _)| name.clone())
        .collect();
    for name in unstorable {
        DroppedXattrs::note(dropped, layer, &at.path, &name);
        meta.xattrs.remove(&name);
    }
    let Some(kind) = kind(tree, entry, &at, &path, dev, deferral, ours)? else {
        return Ok(());
    };
    tree.insert(&path, Inode { meta, kind })
        .map_err(|e| at.tree(e))?;
    ours.insert(&path);
    Ok(())
}

/// `dir/.wh.hidden`: removes `hidden` (or, for `.wh..wh..opq`, what lower layers put in `dir`).
fn apply_whiteout(
    tree: &mut Tree,
    at: &At,
    dir: &[u8],
    name: &[u8],
    hidden: &[u8],
    ours: &mut whiteout::Ours,
) -> Result<(), LayerError> {
    let dir = tree
        .resolve_path(dir, true)
        .map_err(|_| at.symlink_loop())?
        .path;
    if name == OPAQUE_WHITEOUT {
        return whiteout::opaque(tree, &dir, ours).map_err(|e| at.tree(e));
    }
    if hidden.starts_with(WHITEOUT_PREFIX) {
        return Ok(()); // other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err(at.unsafe_path());
    }
    whiteout::whiteout(tree, &join(&dir, hidden), ours).map_err(|e| at.tree(e))
}

/// Device numbers from PAX records (`SCHILY.devmajor`, `SCHILY.devminor`) that override the
/// header's octal fields.
type DevOverride = [Option<u32>; 2];

/// The entry's metadata: the header's mode, owner and mtime, then its PAX records.
fn metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    at: &At,
) -> Result<(Metadata, DevOverride), LayerError> {
    let header = entry.header();
    let header_mtime = Timestamp {
        sec: header.mtime().map_err(|e| at.bad(format!("mtime: {e}")))? as i64,
        nsec: 0,
    };
    let id = |v: std::io::Result<u64>, raw: &[u8], what: &str| -> Result<u32, LayerError> {
        // An all-NUL field reads as 0, as Go's archive/tar (and so most image tools) read it.
        let v = if raw.iter().all(|&b| b == 0) {
            Ok(0)
        } else {
            v
        };
        u32::try_from(v.map_err(|e| at.bad(format!("{what}: {e}")))?)
            .map_err(|_| at.bad(format!("{what} does not fit 32 bits")))
    };
    let old = header.as_old();
    let mut meta = Metadata {
        mode: header.mode().map_err(|e| at.bad(format!("mode: {e}")))? & 0o7777,
        uid: id(header.uid(), &old.uid, "uid")?,
        gid: id(header.gid(), &old.gid, "gid")?,
        mtime: header_mtime,
        xattrs: Default::default(),
    };
    let mut dev = [None, None];
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| at.bad(format!("PAX header: {e}")))?
    {
        let mut sparse = None;
        for ext in exts {
            let ext = ext.map_err(|e| at.bad(format!("PAX record: {e}")))?;
            if let Some(k) = ext.key_bytes().strip_prefix(b"GNU.sparse.") {
                let named = (k == b"name").then(|| show(ext.value_bytes()));
                sparse = named.or(sparse).or_else(|| Some(at.path.clone()));
                continue;
            }
            pax_record(
                ext.key_bytes(),
                ext.value_bytes(),
                header_mtime,
                &mut meta,
                &mut dev,
            )
            .map_err(|what| at.bad(what))?;
        }
        if let Some(path) = sparse {
            return Err(LayerError::PaxSparse {
                layer: at.layer.to_string(),
                path,
            });
        }
    }
    Ok((meta, dev))
}

/// One PAX record: `mtime`, `SCHILY.xattr.*` and star's device numbers; others are ignored.
/// An error says what was wrong.
fn pax_record(
    key: &[u8],
    value: &[u8],
    header_mtime: Timestamp,
    meta: &mut Metadata,
    dev: &mut DevOverride,
) -> Result<(), String> {
    // POSIX pax: a record with an empty value deletes the keyword (umoci drops empty xattrs
    // the same way: tests/conformance_umoci.rs).
    if value.is_empty() {
        if key == b"mtime" {
            meta.mtime = header_mtime;
        } else if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
            meta.xattrs.remove(xattr);
        }
    } else if key == b"mtime" {
        meta.mtime = parse_pax_time(value).ok_or_else(|| format!("PAX mtime {:?}", show(value)))?;
    } else if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
        meta.xattrs.insert(xattr.to_vec(), value.to_vec());
    } else if key == b"SCHILY.devmajor" || key == b"SCHILY.devminor" {
        // star's records for device numbers beyond the octal fields (export writes them)
        let v = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("PAX {}", show(key)))?;
        dev[(key == b"SCHILY.devminor") as usize] = Some(v);
    }
    Ok(())
}

/// What the entry is; a regular file's data goes into the spill file. `None` for a hard link,
/// which is made here (it has no inode of its own).
fn kind<R: Read>(
    tree: &mut Tree,
    entry: &mut tar::Entry<'_, R>,
    at: &At,
    path: &[u8],
    dev: DevOverride,
    deferral: Option<&Deferral>,
    ours: &mut whiteout::Ours,
) -> Result<Option<Kind>, LayerError> {
    let device = |e: &tar::Entry<'_, R>| -> Result<(u32, u32), LayerError> {
        let h = e.header();
        let major = h
            .device_major()
            .map_err(|e| at.bad(format!("device major: {e}")))?;
        let minor = h
            .device_minor()
            .map_err(|e| at.bad(format!("device minor: {e}")))?;
        Ok((
            dev[0].unwrap_or(major.unwrap_or(0)),
            dev[1].unwrap_or(minor.unwrap_or(0)),
        ))
    };
    let link_name = |e: &tar::Entry<'_, R>| -> Vec<u8> {
        e.link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default()
    };
    use tar::EntryType as T;
    Ok(Some(match entry.header().entry_type() {
        T::Regular | T::Continuous => {
            let defer = deferral.filter(|d| !(d.keep)(path)).map(|d| d.index);
            Kind::File(store(tree, entry, at, defer)?)
        }
        // tar reads an old GNU sparse file whole, its holes as zeros: stored, since its bytes
        // are not one run of the stream.
        T::GNUSparse => Kind::File(store(tree, entry, at, None)?),
        T::Directory => Kind::Dir(Default::default()),
        T::Symlink => Kind::Symlink(link_name(entry).into()),
        T::Char => {
            let (major, minor) = device(entry)?;
            Kind::CharDevice { major, minor }
        }
        T::Block => {
            let (major, minor) = device(entry)?;
            Kind::BlockDevice { major, minor }
        }
        T::Fifo => Kind::Fifo,
        T::Link => {
            let target = normalize(&link_name(entry)).ok_or_else(|| at.unsafe_path())?;
            let target = tree
                .resolve_path(&target, false)
                .map_err(|_| at.symlink_loop())?
                .path;
            if target != path {
                // (a link to itself changes nothing)
                tree.hardlink(path, &target).map_err(|e| at.tree(e))?;
                ours.insert(path);
            }
            return Ok(None);
        }
        other => {
            return Err(LayerError::Unsupported {
                layer: at.layer.to_string(),
                path: at.path.clone(),
                kind: other.as_byte() as char,
            })
        }
    }))
}

/// A regular file's data into the spill file, or left in layer `defer` if given.
fn store<R: Read>(
    tree: &mut Tree,
    entry: &mut tar::Entry<'_, R>,
    at: &At,
    defer: Option<usize>,
) -> Result<FileData, LayerError> {
    let pos = entry.raw_file_position();
    let data = &mut LayerReadSide(entry);
    let stored = match defer {
        Some(layer) => tree.defer(data, layer, pos),
        None => tree.store(data),
    };
    stored.map_err(|e| match e {
        // The layer stream failed (corrupt compression, diff_id), not the spill file.
        TreeError::Io(io) if io.get_ref().is_some_and(|r| r.is::<ReadSideError>()) => {
            read_error(at.layer, io)
        }
        e => at.tree(e),
    })
}

/// The path's components joined by `/` (no leading `./` or `/`); `None` if it has `..`.
pub(crate) fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let comps = components(path).ok()?;
    Some(comps.join(&b'/'))
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Parses a PAX time (`1700000000`, `1700000000.5`, `-1.25`) into seconds and nanoseconds,
/// the nanoseconds always counting forward from `sec`.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let sec: i64 = int.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nsec += (d - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    Some(if !neg {
        Timestamp { sec, nsec }
    } else if nsec == 0 {
        Timestamp { sec: -sec, nsec: 0 }
    } else {
        Timestamp {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

#[cfg(test)]
mod tests;
