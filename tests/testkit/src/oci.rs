//! OCI image layout WRITER for tests and fixtures: a layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) from a list of layer tars, each compressed with gzip, zstd
//! or not at all, plus an image config (diff_ids, entrypoint, cmd, env) and a manifest.
//! Several images may go into one layout under different tags. Output is deterministic: no
//! timestamps, gzip headers without mtime or name, sorted JSON keys.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

#[derive(Debug, Clone)]
pub enum LayerSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<(LayerSource, Compression)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub architecture: String,
    pub os: String,
    /// The config's `User`.
    pub user: Option<String>,
    /// `org.opencontainers.image.ref.name` of the manifest in index.json.
    pub tag: Option<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            layers: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            architecture: "amd64".into(),
            os: "linux".into(),
            user: None,
            tag: None,
        }
    }
}

impl ImageSpec {
    pub fn new() -> ImageSpec {
        ImageSpec::default()
    }
    pub fn layer(mut self, tar: Vec<u8>, c: Compression) -> ImageSpec {
        self.layers.push((LayerSource::Bytes(tar), c));
        self
    }
    pub fn layer_file(mut self, path: impl Into<PathBuf>, c: Compression) -> ImageSpec {
        self.layers.push((LayerSource::File(path.into()), c));
        self
    }
    pub fn tag(mut self, tag: &str) -> ImageSpec {
        self.tag = Some(tag.into());
        self
    }
    pub fn entrypoint(mut self, args: &[&str]) -> ImageSpec {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn cmd(mut self, args: &[&str]) -> ImageSpec {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn user(mut self, user: &str) -> ImageSpec {
        self.user = Some(user.into());
        self
    }

    pub fn env(mut self, vars: &[&str]) -> ImageSpec {
        self.env = vars.iter().map(|s| s.to_string()).collect();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    /// `sha256:…` of the blob as stored (compressed).
    pub digest: String,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WrittenImage {
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// The manifest's descriptor as an index lists it (media type, digest, size, platform).
    pub descriptor: Value,
    pub config_digest: String,
    pub layers: Vec<WrittenLayer>,
}

/// Writes `image` into the OCI layout at `dir` (created if needed; an existing layout gains
/// one more manifest, replacing any with the same tag).
pub fn write_image(dir: &Path, image: &ImageSpec) -> io::Result<WrittenImage> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let mut layers = Vec::new();
    for (source, c) in &image.layers {
        let mut input: Box<dyn Read> = match source {
            LayerSource::Bytes(b) => Box::new(&b[..]),
            LayerSource::File(p) => Box::new(BufReader::new(File::open(p)?)),
        };
        layers.push(write_layer(dir, &mut input, *c)?);
    }
    write_image_of_layers(dir, image, layers)
}

/// Writes the config, manifest and index entry of an image whose layers are already in the
/// layout at `dir` (written by [`write_layer`], in order); `image.layers` is not read.
pub fn write_image_of_layers(
    dir: &Path,
    image: &ImageSpec,
    layers: Vec<WrittenLayer>,
) -> io::Result<WrittenImage> {
    let config = json!({
        "architecture": image.architecture,
        "os": image.os,
        "config": exec_config(image),
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| json!({"created_by": "d2v testkit"})).collect::<Vec<_>>(),
    });
    let (config_digest, config_size) = write_blob(dir, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = write_blob(dir, &serde_json::to_vec(&manifest)?)?;
    let descriptor = json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": manifest_size,
        "platform": {"architecture": image.architecture, "os": image.os}});
    add_to_index(dir, descriptor.clone(), image.tag.as_deref())?;
    Ok(WrittenImage {
        manifest_digest,
        manifest_size,
        descriptor,
        config_digest,
        layers,
    })
}

/// Writes an image index of `images` (a multi-platform image, in that order) into the layout
/// at `dir`, listed in index.json as `tag`; returns the index's digest.
pub fn write_index(dir: &Path, images: &[&WrittenImage], tag: &str) -> io::Result<String> {
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": images.iter().map(|i| i.descriptor.clone()).collect::<Vec<_>>()});
    let (digest, size) = write_blob(dir, &serde_json::to_vec(&index)?)?;
    let desc = json!({"mediaType": INDEX_MEDIA_TYPE, "digest": digest, "size": size});
    add_to_index(dir, desc, Some(tag))?;
    Ok(digest)
}

/// Lists the descriptor `desc` (of any blob already in the layout, even a malformed one) in
/// the layout's index.json, as `tag` (replacing what had that tag) or untagged; writes the
/// `oci-layout` file too.
pub fn add_to_index(dir: &Path, mut desc: Value, tag: Option<&str>) -> io::Result<()> {
    fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&index_path) {
        Ok(b) => {
            let v: Value = serde_json::from_slice(&b)?;
            v["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if let Some(tag) = tag {
        manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        desc["annotations"] = json!({ REF_NAME: tag });
    }
    manifests.push(desc);
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests});
    atomic_write(&index_path, &serde_json::to_vec_pretty(&index)?)
}

/// The config's `config` object; empty lists are left out (null in Docker's terms).
fn exec_config(image: &ImageSpec) -> Value {
    let mut c = serde_json::Map::new();
    for (key, list) in [
        ("Entrypoint", &image.entrypoint),
        ("Cmd", &image.cmd),
        ("Env", &image.env),
    ] {
        if !list.is_empty() {
            c.insert(key.into(), json!(list));
        }
    }
    if let Some(u) = &image.user {
        c.insert("User".into(), json!(u));
    }
    Value::Object(c)
}

/// Streams one layer into the layout, compressing it; returns its descriptor data.
pub fn write_layer(dir: &Path, input: &mut dyn Read, c: Compression) -> io::Result<WrittenLayer> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let tmp = tempfile_in(&blobs)?;
    let file = BufWriter::new(File::create(&tmp)?);
    let mut out = HashWriter {
        inner: file,
        hash: Sha256::new(),
        len: 0,
    };
    let mut diff = HashReader {
        inner: input,
        hash: Sha256::new(),
    };
    match c {
        Compression::None => {
            io::copy(&mut diff, &mut out)?;
        }
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut out, flate2::Compression::default());
            io::copy(&mut diff, &mut enc)?;
            enc.finish()?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(&mut out, 3)?;
            io::copy(&mut diff, &mut enc)?;
            enc.finish()?;
        }
    }
    out.inner.flush()?;
    let digest = format!("sha256:{}", hex::encode(out.hash.finalize()));
    let path = blobs.join(&digest[7..]);
    fs::rename(&tmp, &path)?;
    Ok(WrittenLayer {
        digest,
        diff_id: format!("sha256:{}", hex::encode(diff.hash.finalize())),
        size: out.len,
        media_type: c.media_type().into(),
        path,
    })
}

/// Stores `data` as a blob; returns its digest and size.
pub fn write_blob(dir: &Path, data: &[u8]) -> io::Result<(String, u64)> {
    let hex = hex::encode(Sha256::digest(data));
    let path = dir.join("blobs/sha256").join(&hex);
    fs::create_dir_all(path.parent().unwrap())?;
    atomic_write(&path, data)?;
    Ok((format!("sha256:{hex}"), data.len() as u64))
}

/// Path of a blob in the layout.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    dir.join("blobs").join(alg).join(hex)
}

fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tempfile_in(path.parent().unwrap())?;
    fs::write(&tmp, data)?;
    fs::rename(tmp, path)
}

fn tempfile_in(dir: &Path) -> io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    Ok(dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashReader<'a> {
    inner: &'a mut dyn Read,
    hash: Sha256,
}

impl Read for HashReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// An image read back from a layout by [`read_image`].
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config: Value,
    /// `(media type, blob path)` of each layer, bottom first.
    pub layers: Vec<(String, PathBuf)>,
}

/// A minimal reader for layouts this module (or skopeo/umoci) wrote: the manifest tagged
/// `tag` (or the only one), its config and its layers as `(media_type, blob path)`. For tests
/// until d2v's own source module reads layouts; no digest verification.
pub fn read_image(dir: &Path, tag: Option<&str>) -> io::Result<LayoutImage> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json"))?)?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let desc = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"][REF_NAME].as_str() == Some(t)),
        None if manifests.len() == 1 => manifests.first(),
        None => None,
    }
    .ok_or_else(|| bad(format!("{}: no manifest for tag {tag:?}", dir.display())))?;
    let digest = desc["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest descriptor without digest".into()))?;
    let manifest: Value = serde_json::from_slice(&fs::read(blob_path(dir, digest))?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest without config".into()))?;
    let config: Value = serde_json::from_slice(&fs::read(blob_path(dir, config_digest))?)?;
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
        let d = l["digest"]
            .as_str()
            .ok_or_else(|| bad("layer without digest".into()))?;
        layers.push((
            l["mediaType"].as_str().unwrap_or_default().to_string(),
            blob_path(dir, d),
        ));
    }
    Ok(LayoutImage {
        manifest_digest: digest.to_string(),
        manifest,
        config,
        layers,
    })
}

/// Opens a layer blob as a decompressed tar stream, by media type.
pub fn open_layer(media_type: &str, path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let f = BufReader::new(File::open(path)?);
    Ok(
        if media_type.ends_with("+gzip")
            || media_type.ends_with(".tar.gzip")
            || media_type.contains("rootfs.diff.tar.gzip")
        {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else if media_type.ends_with("+zstd") {
            Box::new(zstd::stream::read::Decoder::new(f)?)
        } else {
            Box::new(f)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("testkit-oci-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn layout_round_trips_and_is_deterministic() {
        let tar = crate::tar::tar(&[crate::tar::Entry::file("hello", "world")]);
        let spec = |tag| {
            ImageSpec::new()
                .layer(tar.clone(), Compression::Gzip)
                .layer(tar.clone(), Compression::Zstd)
                .layer(tar.clone(), Compression::None)
                .entrypoint(&["/bin/sh"])
                .tag(tag)
        };
        let (a, b) = (tmpdir("a"), tmpdir("b"));
        let wa = write_image(&a, &spec("v1")).unwrap();
        let wb = write_image(&b, &spec("v1")).unwrap();
        assert_eq!(wa.manifest_digest, wb.manifest_digest);
        write_image(&a, &spec("v2")).unwrap();
        let LayoutImage { config, layers, .. } = read_image(&a, Some("v1")).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/sh");
        assert_eq!(layers.len(), 3);
        let diff = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        for (i, (mt, path)) in layers.iter().enumerate() {
            let mut out = Vec::new();
            open_layer(mt, path).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar, "layer {i} {mt}");
            assert_eq!(config["rootfs"]["diff_ids"][i], diff.as_str());
            let blob = fs::read(path).unwrap();
            assert_eq!(
                path.file_name().unwrap().to_str().unwrap(),
                hex::encode(Sha256::digest(&blob))
            );
        }
        let index: Value =
            serde_json::from_slice(&fs::read(a.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
