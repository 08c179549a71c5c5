//! Tar archives of images: `oci-archive:` (an OCI layout in a tar) and `docker-archive:`
//! (`docker save`, `skopeo copy … docker-archive:`, kaniko `--tar-path`: manifest.json, config
//! and layer tars, or since Docker 25 an OCI layout with manifest.json beside it).
//!
//! The archive is read once: every regular file is hashed into the blob cache as it streams
//! by, and small JSON files are kept in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::cache::Cache;
use super::fetcher::Fetcher;
use super::layer::sniff;
use super::manifest::{
    Compression, Descriptor, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST,
    MAX_MANIFEST, OCI_LAYER_ZSTD,
};
use super::reference::Reference;
use super::SourceError;

/// An archive whose files are in the cache.
pub(crate) struct Imported {
    path: PathBuf,
    cache: Cache,
    /// Archive member name → (digest, size).
    files: BTreeMap<String, (String, u64)>,
    /// Small JSON members by name.
    small: BTreeMap<String, Vec<u8>>,
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

/// Stores the regular member `name` of the archive at `path` in the cache (checked against
/// its name under `blobs/sha256/`): its digest and size, and its bytes when it is a small JSON
/// member to keep in memory.
fn store_member<R: Read>(
    path: &Path,
    cache: &Cache,
    name: &str,
    entry: &mut tar::Entry<'_, R>,
) -> Result<(String, u64, Option<Vec<u8>>), SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = entry.size();
    let json = name.ends_with(".json") || name == "repositories" || name == "oci-layout";
    let keep = size <= MAX_MANIFEST && (json || name.starts_with("blobs/"));
    let mut w = cache.writer()?;
    let mut head = Vec::new();
    if keep {
        entry.read_to_end(&mut head).map_err(io)?;
        std::io::Write::write_all(&mut w, &head).map_err(io)?;
    } else {
        std::io::copy(entry, &mut w).map_err(io)?;
    }
    let expect = name
        .strip_prefix("blobs/sha256/")
        .map(|h| (format!("sha256:{h}"), size));
    let what = format!("{} member {name}", path.display());
    let (digest, len) = w.commit(expect.as_ref().map(|(d, s)| (d.as_str(), *s)), &what)?;
    Ok((digest, len, (keep && json).then_some(head)))
}

/// Gives each link member the file it names (a few hops at most).
fn follow_links(files: &mut BTreeMap<String, (String, u64)>, links: &BTreeMap<String, String>) {
    for (name, target) in links {
        let mut target = target;
        for _ in 0..8 {
            match links.get(target) {
                Some(next) => target = next,
                None => break,
            }
        }
        if let Some(f) = files.get(target).cloned() {
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

impl Imported {
    pub fn load(path: &Path, cache: &Cache) -> Result<Imported, SourceError> {
        let f = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
        let mut files = BTreeMap::new();
        let mut small = BTreeMap::new();
        let mut links = BTreeMap::new();
        let corrupt = |e: std::io::Error| SourceError::Layout {
            path: path.to_path_buf(),
            why: format!(
                "not a tar archive, or a corrupt one ({}); expected what `docker save` or \
                 `skopeo copy` writes",
                crate::text::printable(&e.to_string())
            ),
        };
        for entry in ar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let name = norm(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                // `docker save` links duplicate layers to the first copy.
                if let Some(target) = link_target(&entry, &name) {
                    links.insert(name, target);
                }
            } else if kind.is_file() {
                let (digest, len, kept) = store_member(path, cache, &name, &mut entry)?;
                if let Some(bytes) = kept {
                    small.insert(name.clone(), bytes);
                }
                files.insert(name, (digest, len));
            }
        }
        follow_links(&mut files, &links);
        Ok(Imported {
            path: path.to_path_buf(),
            cache: cache.clone(),
            files,
            small,
        })
    }

    /// A small JSON member (`index.json`, `manifest.json`).
    pub fn small(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.small
            .get(name)
            .cloned()
            .ok_or_else(|| SourceError::Layout {
                path: self.path.clone(),
                why: format!(
                    "{name} is missing: not {} archive",
                    if name == "index.json" {
                        "an OCI"
                    } else {
                        "a docker"
                    }
                ),
            })
    }

    /// Turns a docker archive's manifest.json entry into a Docker schema2 manifest stored in the
    /// cache; returns its digest and the entry's first `RepoTags` name.
    pub fn docker_manifest(
        &self,
        path: &Path,
        reference: Option<&str>,
    ) -> Result<(String, Option<String>), SourceError> {
        let bad = |why: String| SourceError::Layout {
            path: path.to_path_buf(),
            why,
        };
        let bytes = self.small("manifest.json")?;
        let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest.json is not valid: {e}")))?;
        let entry = choose(&entries, reference).map_err(bad)?;
        let member = |name: &str| {
            self.files.get(&norm(name)).cloned().ok_or_else(|| {
                bad(format!(
                    "manifest.json names {name}, which is not in the archive"
                ))
            })
        };
        let (cdigest, csize) = member(&entry.config)?;
        let mut layers = Vec::new();
        for l in &entry.layers {
            let (digest, size) = member(l)?;
            let media_type = self.layer_media_type(&digest)?;
            layers
                .push(serde_json::json!({"mediaType": media_type, "size": size, "digest": digest}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": csize, "digest": cdigest},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
        let digest = self
            .cache
            .put_bytes(&bytes, None, &format!("{} manifest", path.display()))?;
        Ok((digest, entry.tags().into_iter().next()))
    }

    /// A docker archive's layer media type, from its first bytes (the archive does not say).
    fn layer_media_type(&self, digest: &str) -> Result<&'static str, SourceError> {
        let p = self.cache.path(digest)?;
        let mut head = [0u8; 4];
        let n = File::open(&p)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| SourceError::Io { path: p, source: e })?;
        Ok(match sniff(&head[..n]) {
            Compression::None => DOCKER_LAYER_TAR,
            Compression::Gzip => DOCKER_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        })
    }
}

impl Fetcher for Imported {
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), SourceError> {
        self.cache
            .read_small(reference, MAX_MANIFEST)?
            .map(|b| (b, None))
            .ok_or_else(|| SourceError::Layout {
                path: self.path.clone(),
                why: format!("manifest {reference} is not in the archive"),
            })
    }

    fn blob(&self, d: &Descriptor, what: &str, bar: &ProgressBar) -> Result<PathBuf, SourceError> {
        if let Some(p) = self.cache.get(&d.digest, Some(d.size))? {
            bar.set_position(d.size);
            return Ok(p);
        }
        match self.cache.get(&d.digest, None)? {
            Some(p) => Err(SourceError::SizeMismatch {
                what: what.to_string(),
                digest: d.digest.clone(),
                expected: d.size,
                got: std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0),
            }),
            None => Err(SourceError::Layout {
                path: self.path.clone(),
                why: format!("{what}: blob {} is not in the archive", d.digest),
            }),
        }
    }
}
