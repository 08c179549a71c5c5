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

mod whiteout;

use crate::text::printable;
use std::io::{self, Read};

use crate::tree::{components, show, Inode, Kind, Metadata, Timestamp, Tree, TreeError};

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// `error` is shown through [`printable`]: the tar reader quotes raw header bytes.
    #[error("{}", read_error_text(layer, error))]
    Read { layer: String, error: io::Error },
    #[error("layer {layer}: entry {path:?} has a '..' component or escapes the image root; refusing to apply this layer")]
    UnsafePath { layer: String, path: String },
    #[error("layer {layer}: entry {path:?}: {source}")]
    Tree {
        layer: String,
        path: String,
        source: TreeError,
    },
    #[error("layer {layer}: entry {path:?}: too many levels of symbolic links in the image while resolving it")]
    SymlinkLoop { layer: String, path: String },
    #[error("layer {layer}: entry {path:?}: unsupported tar entry type {kind:?}")]
    Unsupported {
        layer: String,
        path: String,
        kind: char,
    },
    #[error("layer {layer}: entry {path:?}: bad header: {what}")]
    BadHeader {
        layer: String,
        path: String,
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

/// Applies one layer's tar stream onto `tree`. `layer` names the layer in errors (its digest).
/// The stream is read to its end, so a verifying reader sees all of it.
pub fn apply_layer(tree: &mut Tree, tar: &mut dyn Read, layer: &str) -> Result<(), LayerError> {
    let read_err = |error| LayerError::Read {
        layer: layer.to_string(),
        error,
    };
    let mut ours = whiteout::Ours::for_layer_onto(tree);
    {
        let mut archive = tar::Archive::new(&mut *tar);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            apply_entry(tree, &mut entry, layer, &mut ours)?;
        }
    }
    io::copy(tar, &mut io::sink()).map_err(read_err)?;
    Ok(())
}

fn apply_entry<R: Read>(
    tree: &mut Tree,
    entry: &mut tar::Entry<'_, R>,
    layer: &str,
    ours: &mut whiteout::Ours,
) -> Result<(), LayerError> {
    let raw_path = entry.path_bytes().into_owned();
    let err_path = show(&raw_path);
    let unsafe_path = || LayerError::UnsafePath {
        layer: layer.to_string(),
        path: err_path.clone(),
    };
    let bad = |what: String| LayerError::BadHeader {
        layer: layer.to_string(),
        path: err_path.clone(),
        what,
    };
    let tree_err = |source| LayerError::Tree {
        layer: layer.to_string(),
        path: err_path.clone(),
        source,
    };
    let path = normalize(&raw_path).ok_or_else(unsafe_path)?;
    let etype = entry.header().entry_type();
    if etype.is_pax_global_extensions() {
        return Ok(());
    }
    let symlink_loop = || LayerError::SymlinkLoop {
        layer: layer.to_string(),
        path: err_path.clone(),
    };

    let (dir, name) = split_last(&path);
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        let dir = tree
            .resolve_path(dir, true)
            .map_err(|_| symlink_loop())?
            .path;
        if name == OPAQUE_WHITEOUT {
            return whiteout::opaque(tree, &dir, ours).map_err(tree_err);
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            return Ok(()); // other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(unsafe_path());
        }
        return whiteout::whiteout(tree, &join(&dir, hidden), ours).map_err(tree_err);
    }
    let path = tree
        .resolve_path(&path, false)
        .map_err(|_| symlink_loop())?
        .path;

    let header = entry.header();
    let header_mtime = Timestamp {
        sec: header.mtime().map_err(|e| bad(format!("mtime: {e}")))? as i64,
        nsec: 0,
    };
    let mut meta = Metadata {
        mode: header.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777,
        uid: u32::try_from(header.uid().map_err(|e| bad(format!("uid: {e}")))?)
            .map_err(|_| bad("uid does not fit 32 bits".into()))?,
        gid: u32::try_from(header.gid().map_err(|e| bad(format!("gid: {e}")))?)
            .map_err(|_| bad("gid does not fit 32 bits".into()))?,
        mtime: header_mtime,
        xattrs: Default::default(),
    };
    let mut dev_override: [Option<u32>; 2] = [None, None];
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| bad(format!("PAX header: {e}")))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| bad(format!("PAX record: {e}")))?;
            let key = ext.key_bytes();
            // POSIX pax: a record with an empty value deletes the keyword (umoci drops empty
            // xattrs the same way: tests/conformance_umoci.rs).
            if ext.value_bytes().is_empty() {
                if key == b"mtime" {
                    meta.mtime = header_mtime;
                } else if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.remove(xattr);
                }
            } else if key == b"mtime" {
                meta.mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| bad(format!("PAX mtime {:?}", show(ext.value_bytes()))))?;
            } else if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs
                    .insert(xattr.to_vec(), ext.value_bytes().to_vec());
            } else if key == b"SCHILY.devmajor" || key == b"SCHILY.devminor" {
                // star's records for device numbers beyond the octal fields (export writes them)
                let v = std::str::from_utf8(ext.value_bytes())
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| bad(format!("PAX {}", show(key))))?;
                dev_override[(key == b"SCHILY.devminor") as usize] = Some(v);
            }
        }
    }

    let device = |e: &tar::Entry<'_, R>| -> Result<(u32, u32), LayerError> {
        let h = e.header();
        let major = h
            .device_major()
            .map_err(|e| bad(format!("device major: {e}")))?
            .unwrap_or(0);
        let minor = h
            .device_minor()
            .map_err(|e| bad(format!("device minor: {e}")))?
            .unwrap_or(0);
        Ok((
            dev_override[0].unwrap_or(major),
            dev_override[1].unwrap_or(minor),
        ))
    };
    let link_name = |e: &tar::Entry<'_, R>| -> Vec<u8> {
        e.link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default()
    };

    use tar::EntryType as T;
    let kind = match etype {
        T::Regular | T::Continuous => {
            Kind::File(tree.store(&mut LayerReadSide(entry)).map_err(|e| match e {
                // The layer stream failed (corrupt compression, diff_id), not the spill file.
                TreeError::Io(io) if io.get_ref().is_some_and(|r| r.is::<ReadSideError>()) => {
                    LayerError::Read {
                        layer: layer.to_string(),
                        error: io,
                    }
                }
                e => tree_err(e),
            })?)
        }
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
            let target = normalize(&link_name(entry)).ok_or_else(unsafe_path)?;
            let target = tree
                .resolve_path(&target, false)
                .map_err(|_| symlink_loop())?
                .path;
            if target == path {
                return Ok(()); // a link to itself changes nothing
            }
            tree.hardlink(&path, &target).map_err(tree_err)?;
            ours.insert(&path);
            return Ok(());
        }
        other => {
            return Err(LayerError::Unsupported {
                layer: layer.to_string(),
                path: err_path.clone(),
                kind: other.as_byte() as char,
            })
        }
    };
    tree.insert(&path, Inode { meta, kind }).map_err(tree_err)?;
    ours.insert(&path);
    Ok(())
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
