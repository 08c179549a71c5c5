//! Tar archives of images: `oci-archive:` (an OCI layout in a tar) and `docker-archive:`
//! (`docker save`, `skopeo copy … docker-archive:`, kaniko `--tar-path`: manifest.json, config
//! and layer tars, or since Docker 25 an OCI layout with manifest.json beside it).
//!
//! The archive is read in place ([`super::in_place`]): loading walks its tar headers only
//! (seeking over the data) and records where each member's bytes are; manifests and configs
//! are read from there when asked for, and a layer is streamed from its offset by
//! [`open_layer`](super::open_layer), its digest checked as it goes. Only uncompressed tar
//! archives are read (as before: a compressed one is refused as not a tar archive).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::cache::sha256_digest;
use super::fetcher::{Fetcher, Location};
use super::in_place::{check_bytes, digest_at, read_at};
use super::layer::sniff;
use super::manifest::{
    Compression, Descriptor, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST,
    MAX_CONFIG, MAX_MANIFEST, OCI_LAYER_ZSTD,
};
use super::reference::{check_digest, Reference};
use super::SourceError;

/// Where a member's bytes are in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    offset: u64,
    size: u64,
}

/// An archive whose members were found, not read.
pub(crate) struct Imported {
    path: PathBuf,
    /// Regular members by name (a link member as the member it names).
    files: BTreeMap<String, Member>,
    /// Members by digest: `blobs/sha256/<hex>` by their names, a docker archive's config and
    /// layers once [`Imported::docker_manifest`] found theirs.
    blobs: BTreeMap<String, Member>,
}

/// `a/b/../c` → `a/c` (archive member paths; nothing above the root).
fn resolve_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn norm(name: &str) -> String {
    let mut s = name;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_start_matches('/').to_string()
}

/// The member a link member `name` points to (a symlink's target is relative to its directory).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Option<String> {
    let target = entry.link_name_bytes()?;
    let t = String::from_utf8_lossy(&target);
    let base = match (
        entry.header().entry_type().is_symlink(),
        name.rsplit_once('/'),
    ) {
        (true, Some((dir, _))) => format!("{dir}/"),
        _ => String::new(),
    };
    Some(resolve_path(&format!("{base}{t}")))
}

/// Gives each link member the file it names (a few hops at most).
fn follow_links(files: &mut BTreeMap<String, Member>, links: &BTreeMap<String, String>) {
    for (name, target) in links {
        let mut target = target;
        for _ in 0..8 {
            match links.get(target) {
                Some(next) => target = next,
                None => break,
            }
        }
        if let Some(f) = files.get(target).copied() {
            files.insert(name.clone(), f);
        }
    }
}

/// One image of a docker archive's manifest.json.
#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl DockerEntry {
    fn tags(&self) -> Vec<String> {
        self.repo_tags.clone().unwrap_or_default()
    }
}

/// The image `reference` names (a tag, normalised or not, or `@N` for the Nth), or the only
/// one; else why not.
fn choose<'a>(
    entries: &'a [DockerEntry],
    reference: Option<&str>,
) -> Result<&'a DockerEntry, String> {
    let Some(r) = reference else {
        if entries.len() == 1 {
            return Ok(&entries[0]);
        }
        let all: Vec<String> = entries.iter().flat_map(DockerEntry::tags).collect();
        return Err(format!(
            "the archive holds {} images: choose one with docker-archive:FILE:REF ({})",
            entries.len(),
            all.join(", ")
        ));
    };
    let want = Reference::parse(r).ok().map(|x| x.to_string());
    let by_index = r.strip_prefix('@').and_then(|n| n.parse::<usize>().ok());
    entries
        .iter()
        .enumerate()
        .find(|(i, e)| {
            Some(*i) == by_index
                || e.tags().iter().any(|t| {
                    t == r
                        || Reference::parse(t).ok().map(|x| x.to_string()) == want && want.is_some()
                })
        })
        .map(|(_, e)| e)
        .ok_or_else(|| format!("no image {r:?} in manifest.json"))
}

/// The digest a member's name carries: `blobs/sha256/<hex>`, or a file named `<hex>` or
/// `sha256:<hex>` with or without extensions (kaniko's layers are `<hex>.tar.gz`).
fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let base = base.strip_prefix("sha256:").unwrap_or(base);
    let d = format!("sha256:{}", base.split('.').next()?);
    check_digest(&d).ok()?;
    Some(d)
}

impl Imported {
    /// Walks the archive's headers (seeking over the data) and records its members.
    pub fn load(path: &Path) -> Result<Imported, SourceError> {
        let f = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let mut ar = tar::Archive::new(BufReader::with_capacity(64 << 10, f));
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        let corrupt = |why: String| SourceError::Layout {
            path: path.to_path_buf(),
            why: format!(
                "not a tar archive, or a corrupt one ({}); expected what `docker save` or \
                 `skopeo copy` writes",
                crate::text::printable(&why)
            ),
        };
        for entry in ar.entries_with_seek().map_err(|e| corrupt(e.to_string()))? {
            let entry = entry.map_err(|e| corrupt(e.to_string()))?;
            let name = norm(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                // `docker save` links duplicate layers to the first copy.
                if let Some(target) = link_target(&entry, &name) {
                    links.insert(name, target);
                }
            } else if kind.is_file() {
                let m = Member {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                if m.offset.checked_add(m.size).is_none_or(|end| end > len) {
                    return Err(corrupt(format!("{name} ends past the end of the file")));
                }
                files.insert(name, m);
            }
        }
        follow_links(&mut files, &links);
        let blobs = files
            .iter()
            .filter_map(|(name, m)| {
                let hex = name.strip_prefix("blobs/sha256/")?;
                let d = format!("sha256:{hex}");
                check_digest(&d).ok()?;
                Some((d, *m))
            })
            .collect();
        Ok(Imported {
            path: path.to_path_buf(),
            files,
            blobs,
        })
    }

    /// The bytes of a member (at most `max`).
    fn read(&self, m: Member, max: u64) -> Result<Vec<u8>, SourceError> {
        read_at(&self.path, m.offset, m.size, max)
    }

    /// A small JSON member (`index.json`, `manifest.json`).
    pub fn small(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let m = self.files.get(name).ok_or_else(|| SourceError::Layout {
            path: self.path.clone(),
            why: format!(
                "{name} is missing: not {} archive",
                if name == "index.json" {
                    "an OCI"
                } else {
                    "a docker"
                }
            ),
        })?;
        self.read(*m, MAX_MANIFEST)
    }

    /// Turns a docker archive's manifest.json entry into a Docker schema2 manifest (its
    /// config's and layers' digests noted for the fetcher); returns it and the entry's first
    /// `RepoTags` name.
    pub fn docker_manifest(
        &mut self,
        reference: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let bad = |why: String| SourceError::Layout {
            path: self.path.clone(),
            why,
        };
        let bytes = self.small("manifest.json")?;
        let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest.json is not valid: {e}")))?;
        let entry = choose(&entries, reference).map_err(bad)?;
        let member = |name: &str| {
            self.files.get(&norm(name)).copied().ok_or_else(|| {
                bad(format!(
                    "manifest.json names {name}, which is not in the archive"
                ))
            })
        };
        let cm = member(&entry.config)?;
        let config = self.read(cm, MAX_CONFIG)?;
        let cdigest = sha256_digest(&config);
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap_or_default();
        let mut found = vec![(cdigest.clone(), cm)];
        let mut layers = Vec::new();
        for (i, l) in entry.layers.iter().enumerate() {
            let m = member(l)?;
            let diff_id = config["rootfs"]["diff_ids"][i].as_str();
            let (digest, media_type) = self.layer_identity(l, m, diff_id)?;
            layers.push(
                serde_json::json!({"mediaType": media_type, "size": m.size, "digest": digest}),
            );
            found.push((digest, m));
        }
        self.blobs.extend(found);
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": cm.size, "digest": cdigest},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
        Ok((bytes, entry.tags().into_iter().next()))
    }

    /// A docker archive layer's digest and media type, which the archive does not state: the
    /// media type is what its first bytes show; the digest of an uncompressed layer is its
    /// `diff_id`, of a compressed one the digest its name carries (kaniko, Docker 25), both
    /// checked as the layer is read. Otherwise (a compressed layer named by neither, which no
    /// writer d2v knows makes) the member is hashed here: read twice, but still in place.
    fn layer_identity(
        &self,
        name: &str,
        m: Member,
        diff_id: Option<&str>,
    ) -> Result<(String, &'static str), SourceError> {
        let head = self.read(
            Member {
                size: m.size.min(4),
                ..m
            },
            4,
        )?;
        let compression = sniff(&head);
        let media_type = match compression {
            Compression::None => DOCKER_LAYER_TAR,
            Compression::Gzip => DOCKER_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        };
        let diff_id = diff_id.filter(|d| check_digest(d).is_ok());
        // A compressed layer named by its diff_id is not named by its own digest.
        let named = digest_in_name(name)
            .filter(|d| compression == Compression::None || Some(d.as_str()) != diff_id);
        let digest = match (compression, diff_id, named) {
            (Compression::None, Some(d), _) => d.to_string(),
            (_, _, Some(d)) => d,
            _ => digest_at(&self.path, m.offset, m.size)?,
        };
        Ok((digest, media_type))
    }

    /// The member holding blob `d`, or why not.
    fn blob_member(&self, d: &Descriptor, what: &str) -> Result<Member, SourceError> {
        let m = self
            .blobs
            .get(&d.digest)
            .ok_or_else(|| SourceError::Layout {
                path: self.path.clone(),
                why: format!("{what}: blob {} is not in the archive", d.digest),
            })?;
        if m.size != d.size {
            return Err(SourceError::SizeMismatch {
                what: what.to_string(),
                digest: d.digest.clone(),
                expected: d.size,
                got: m.size,
            });
        }
        Ok(*m)
    }
}

impl Fetcher for Imported {
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), SourceError> {
        match self.blobs.get(reference) {
            Some(m) => Ok((self.read(*m, MAX_MANIFEST)?, None)),
            None => Err(SourceError::Layout {
                path: self.path.clone(),
                why: format!("manifest {reference} is not in the archive"),
            }),
        }
    }

    fn config(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError> {
        let bytes = self.read(self.blob_member(d, what)?, MAX_CONFIG)?;
        check_bytes(&bytes, &d.digest, Some(d.size), what)?;
        Ok(bytes)
    }

    fn blob(&self, d: &Descriptor, what: &str, bar: &ProgressBar) -> Result<Location, SourceError> {
        let m = self.blob_member(d, what)?;
        bar.set_position(d.size);
        Ok(Location {
            path: self.path.clone(),
            offset: m.offset,
            in_place: true,
        })
    }
}
