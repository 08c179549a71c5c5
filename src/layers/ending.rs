//! Where a layer's tar stream ends, and whether that is an end d2v reads.
//!
//! umoci 0.4.7's `insert` writes layers that end right after the last file's data: no padding
//! to 512 bytes, no end-of-archive blocks. GNU tar and Python refuse them; Go's `archive/tar`
//! (podman, umoci, containerd, registries) reads them, so such images exist and run. d2v reads
//! them as Go does and says so ([`Unterminated`]). A stream that ends inside an entry's header
//! or data is still an error ([`Ending::Cut`]).
//!
//! The `tar` crate fails on a missing padding ("unexpected EOF during skip"); [`Tracked`]
//! counts the bytes it reads and notes where the stream ended, so that error can be told from
//! a cut by where the stream ended relative to the last entry's data.

use std::cell::Cell;
use std::io::{self, Read};

const BLOCK: u64 = 512;

/// The bytes read from a stream so far, and where it ended once it did.
#[derive(Default)]
pub(super) struct Track {
    pos: Cell<u64>,
    end: Cell<Option<u64>>,
}

/// A reader that counts into a [`Track`].
pub(super) struct Tracked<'a, R: ?Sized> {
    inner: &'a mut R,
    track: &'a Track,
}

impl Track {
    pub(super) fn reader<'a, R: Read + ?Sized>(&'a self, inner: &'a mut R) -> Tracked<'a, R> {
        Tracked { inner, track: self }
    }

    /// Where the stream ended, if it did.
    pub(super) fn end(&self) -> Option<u64> {
        self.end.get()
    }
}

impl<R: Read + ?Sized> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let pos = self.track.pos.get() + n as u64;
        self.track.pos.set(pos);
        if n == 0 && !buf.is_empty() {
            self.track.end.set(Some(pos));
        }
        Ok(n)
    }
}

/// The last entry read: its path (as errors show it) and where its data starts and ends.
pub(super) struct Last {
    pub(super) path: String,
    pub(super) data: u64,
    pub(super) size: u64,
}

impl Last {
    fn data_end(&self) -> u64 {
        self.data + self.size
    }
}

/// How a stream that ended early ended.
pub(super) enum Ending {
    /// Within the padding after the last entry's data: read as Go's `archive/tar` does.
    Short(Unterminated),
    /// Inside an entry's data or a header: what is cut, for the error.
    Cut(String),
}

impl Ending {
    /// The warning, if the stream ended in the last entry's padding.
    pub(super) fn short(self) -> Option<Unterminated> {
        match self {
            Ending::Short(note) => Some(note),
            Ending::Cut(_) => None,
        }
    }
}

/// Classifies a stream that ended at `end`, after `last` (`None`: before any entry).
pub(super) fn ending(layer: &str, end: u64, last: Option<&Last>) -> Ending {
    let Some(last) = last else {
        return Ending::Cut("the layer ends inside its first header".into());
    };
    let data_end = last.data_end();
    if end < data_end {
        return Ending::Cut(format!(
            "the layer ends inside the data of entry {:?} ({} of its {} bytes)",
            last.path,
            end.saturating_sub(last.data),
            last.size
        ));
    }
    if end <= data_end.next_multiple_of(BLOCK) {
        return Ending::Short(Unterminated {
            layer: layer.to_string(),
            path: last.path.clone(),
            padding: !end.is_multiple_of(BLOCK),
        });
    }
    Ending::Cut(format!(
        "the layer ends inside the header that follows entry {:?}",
        last.path
    ))
}

/// A layer read to its end though its tar stream lacks the end-of-archive blocks (and maybe
/// the padding of the last entry's data): the warning d2v gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    /// The layer as named to `apply_layer`.
    pub layer: String,
    /// The last entry.
    pub path: String,
    /// Whether the padding of its data to 512 bytes is missing too.
    pub padding: bool,
}

impl std::fmt::Display for Unterminated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer {}: the tar stream ends right after entry {:?}, without {}the end-of-archive \
             blocks (as umoci insert writes layers); read to there as Go's archive/tar reads it",
            self.layer,
            self.path,
            if self.padding {
                "the padding to 512 bytes and "
            } else {
                ""
            }
        )
    }
}
