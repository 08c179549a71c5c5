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
    /// Puts the blob in the cache (verified against digest and size) and returns its path.
    fn blob(
        &self,
        desc: &Descriptor,
        what: &str,
        bar: &ProgressBar,
    ) -> Result<PathBuf, SourceError>;
}

/// Where resolution starts.
pub(crate) enum Root {
    /// A tag or digest to ask the fetcher for; the digest when known.
    Reference(String, Option<String>),
    /// A descriptor (from an OCI layout's index.json).
    Descriptor(Descriptor),
    /// An index.json read from a layout, used as the index itself (several platforms, no tag).
    Index(Vec<u8>),
}
