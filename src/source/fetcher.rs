//! What every transport (registry, OCI layout, archives, `dir:`) gives the resolver: a
//! [`Fetcher`] of manifests and blobs, and the [`Root`] resolution starts from. A leaf module:
//! the transports implement it and `resolve` drives it, so neither imports the other.

use std::path::PathBuf;

use indicatif::ProgressBar;

use super::manifest::Descriptor;
use super::SourceError;

/// Where manifests and blobs come from.
pub(crate) trait Fetcher: Sync {
    /// Manifest bytes and content type for a tag or digest (≤
    /// [`MAX_MANIFEST`](super::manifest::MAX_MANIFEST), unverified).
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), SourceError>;
    /// The config blob's bytes (its size already checked against
    /// [`MAX_CONFIG`](super::manifest::MAX_CONFIG)), verified against digest and size.
    fn config(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError>;
    /// Where a layer blob can be read: a registry's is downloaded into the cache (verified);
    /// a local source's is found in place, its size checked, its digest left to
    /// [`open_layer`](super::open_layer) to check while it reads it.
    fn blob(
        &self,
        desc: &Descriptor,
        what: &str,
        bar: &ProgressBar,
    ) -> Result<Location, SourceError>;
    /// Keeps the verified manifest `bytes` (digest `digest`) for a later run: a registry's
    /// cache does, so resolving by digest needs no network; a local source keeps nothing.
    fn keep_manifest(&self, bytes: &[u8], digest: &str) -> Result<(), SourceError> {
        let _ = (bytes, digest);
        Ok(())
    }
}

/// Where a blob's bytes are: `size` bytes from `offset` in `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The file: a blob in the cache, a blob file of a layout, or an archive.
    pub path: PathBuf,
    /// Where the blob starts in it (0 but for a member of an archive).
    pub offset: u64,
    /// Read in place from a local source: the digest is still to be checked while reading.
    /// A blob in the cache was checked when it was stored.
    pub in_place: bool,
}

impl Location {
    /// A verified blob in the cache.
    pub fn cached(path: PathBuf) -> Location {
        Location {
            path,
            offset: 0,
            in_place: false,
        }
    }
}

/// Where resolution starts.
pub(crate) enum Root {
    /// A tag or digest to ask the fetcher for; the digest when known.
    Reference(String, Option<String>),
    /// A descriptor (from an OCI layout's index.json).
    Descriptor(Descriptor),
    /// A manifest or index held in memory, used as it is: an index.json read from a layout
    /// (several platforms, no tag), or the manifest made from a docker archive's manifest.json.
    Inline(Vec<u8>),
}
