//! Images in a directory: OCI image layouts (`oci:DIR[:TAG]`: `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`) and skopeo's directory transport (`dir:DIR`: `manifest.json`, blobs as
//! `<hex>`; with `skopeo copy --all`, `manifest.json` is the index and each platform's manifest
//! is `<hex>.manifest.json`).
//!
//! Blobs are read where they are ([`super::in_place`]): the config is checked when read, a
//! layer's size now and its digest as it is read.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::fetcher::{Fetcher, Location, Root};
use super::in_place::check_bytes;
use super::manifest::{Descriptor, Platform, MAX_CONFIG, MAX_MANIFEST};
use super::reference::check_digest;
use super::SourceError;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(serde::Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Chooses where to start in a layout's `index.json`: the entry tagged `tag`; without a tag the
/// only entry, or the index itself when its entries are per-platform manifests.
pub(crate) fn root_from_index(
    index: &[u8],
    path: &Path,
    tag: Option<&str>,
    _want: &Platform,
) -> Result<Root, SourceError> {
    let err = |why: String| SourceError::Layout {
        path: path.to_path_buf(),
        why,
    };
    let idx: Index =
        serde_json::from_slice(index).map_err(|e| err(format!("index.json is not valid: {e}")))?;
    if let Some(t) = tag {
        let found: Vec<&Descriptor> = idx
            .manifests
            .iter()
            .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            .collect();
        return match found.as_slice() {
            [d] => Ok(Root::Descriptor((*d).clone())),
            [] => {
                let tags: Vec<&str> = idx
                    .manifests
                    .iter()
                    .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
                    .collect();
                Err(err(format!(
                    "no image tagged {t:?} in index.json (tags: {})",
                    tags.join(", ")
                )))
            }
            _ if found.iter().all(|d| d.platform.is_some()) => {
                let list: Vec<Descriptor> = found.into_iter().cloned().collect();
                Ok(Root::Inline(
                    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": list}))
                        .unwrap_or_default(),
                ))
            }
            _ => Err(err(format!("several images are tagged {t:?}"))),
        };
    }
    match idx.manifests.as_slice() {
        [] => Err(err("index.json lists no images".into())),
        [d] => Ok(Root::Descriptor(d.clone())),
        list if list.iter().all(|d| d.platform.is_some()) => Ok(Root::Inline(index.to_vec())),
        _ => Err(err(
            "index.json lists several images: name one with :TAG".into()
        )),
    }
}

/// How a directory stores an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// OCI image layout: `blobs/sha256/<hex>`, manifests are blobs.
    Oci,
    /// skopeo's `dir:`: `<hex>`, manifests `manifest.json` / `<hex>.manifest.json`.
    Skopeo,
}

/// The manifest reference of a `dir:` directory's top manifest.
pub(crate) const DIR_MANIFEST: &str = "manifest.json";

/// An image directory: an OCI layout or a skopeo `dir:`.
pub(crate) struct OciDir {
    dir: PathBuf,
    naming: Naming,
}

impl OciDir {
    pub fn open(dir: &Path) -> Result<OciDir, SourceError> {
        if !dir.join("index.json").is_file() {
            return Err(SourceError::Layout {
                path: dir.to_path_buf(),
                why: "not an OCI layout: index.json is missing".into(),
            });
        }
        Ok(OciDir {
            dir: dir.to_path_buf(),
            naming: Naming::Oci,
        })
    }

    /// A directory written by `skopeo copy … dir:DIR`.
    pub fn open_skopeo(dir: &Path) -> Result<OciDir, SourceError> {
        if !dir.join(DIR_MANIFEST).is_file() {
            let why = if dir.join("index.json").is_file() {
                "manifest.json is missing; this is an OCI layout: use oci:DIR"
            } else {
                "not a skopeo dir: image (manifest.json is missing)"
            };
            return Err(SourceError::Layout {
                path: dir.to_path_buf(),
                why: why.into(),
            });
        }
        Ok(OciDir {
            dir: dir.to_path_buf(),
            naming: Naming::Skopeo,
        })
    }

    pub fn root(&self, tag: Option<&str>, want: &Platform) -> Result<Root, SourceError> {
        let p = self.dir.join("index.json");
        let bytes = read_limited(&p, MAX_MANIFEST)?;
        root_from_index(&bytes, &self.dir, tag, want)
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, SourceError> {
        let hex = check_digest(digest)?;
        Ok(match self.naming {
            Naming::Oci => self.dir.join("blobs/sha256").join(hex),
            Naming::Skopeo => self.dir.join(hex),
        })
    }

    fn manifest_path(&self, reference: &str) -> Result<PathBuf, SourceError> {
        if self.naming == Naming::Oci {
            return self.blob_path(reference);
        }
        if reference == DIR_MANIFEST {
            return Ok(self.dir.join(DIR_MANIFEST));
        }
        let own = self
            .dir
            .join(format!("{}.manifest.json", check_digest(reference)?));
        if own.is_file() {
            Ok(own)
        } else {
            self.blob_path(reference)
        }
    }
}

pub(crate) fn read_limited(p: &Path, max: u64) -> Result<Vec<u8>, SourceError> {
    let f = File::open(p).map_err(|e| SourceError::Io {
        path: p.to_path_buf(),
        source: e,
    })?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SourceError::Io {
            path: p.to_path_buf(),
            source: e,
        })?;
    if buf.len() as u64 > max {
        return Err(SourceError::TooLarge {
            what: p.display().to_string(),
            limit: max,
        });
    }
    Ok(buf)
}

impl Fetcher for OciDir {
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), SourceError> {
        Ok((
            read_limited(&self.manifest_path(reference)?, MAX_MANIFEST)?,
            None,
        ))
    }

    fn config(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError> {
        let src = self.blob_path(&d.digest)?;
        let bytes = read_limited(&src, MAX_CONFIG).map_err(|e| missing(e, &src, what))?;
        check_bytes(
            &bytes,
            &d.digest,
            Some(d.size),
            &format!("{what} ({})", src.display()),
        )?;
        Ok(bytes)
    }

    fn blob(&self, d: &Descriptor, what: &str, bar: &ProgressBar) -> Result<Location, SourceError> {
        let src = self.blob_path(&d.digest)?;
        let m = std::fs::metadata(&src).map_err(|source| {
            let e = SourceError::Io {
                path: src.clone(),
                source,
            };
            missing(e, &src, what)
        })?;
        if !m.is_file() || m.len() != d.size {
            return Err(SourceError::SizeMismatch {
                what: format!("{what} ({})", src.display()),
                digest: d.digest.clone(),
                expected: d.size,
                got: m.len(),
            });
        }
        bar.set_position(d.size);
        Ok(Location {
            path: src,
            offset: 0,
            in_place: true,
        })
    }
}

/// `e`, or when it is a missing file, that the blob `what` is missing from the directory.
fn missing(e: SourceError, src: &Path, what: &str) -> SourceError {
    match e {
        SourceError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            SourceError::Layout {
                path: src.to_path_buf(),
                why: format!(
                    "{what} is missing from the image directory (an incomplete copy?); copy \
                     the image again, e.g. with skopeo copy"
                ),
            }
        }
        e => e,
    }
}
