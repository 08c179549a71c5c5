//! Synthetic app images of a given amount of file data for `cargo xtask bench scale` (see
//! [`crate::bench_size`]), generated once into `target/bench/size/NAME/oci` with deterministic
//! content.
//!
//! An image is the app-busybox fixture's layer (busybox httpd, its entrypoint) followed by
//! `layers` gzip data layers holding `data` bytes of regular files between them: in each
//! layer a third of the bytes pseudo-random (incompressible, [`fill`]), a third text from a
//! small vocabulary (compressible), a third zeros; three big files (one of each kind, 1/16 of
//! the layer each), small files of 32 KiB − 7 and 64 KiB + 7 bytes alternately in directories
//! of 100, and two scrap directories of four 4 KiB files. Every layer but the first deletes
//! some of the layer below it: every 64th small file (file whiteouts), the scrap directory
//! `cache/` (a directory whiteout) and the contents of `tmp/` (an opaque directory, which gets
//! one new file). The same layout also holds the kernel-linuxkit fixture under the tag
//! `kernel`, for `--kernel-from`, so one `--cache-dir` (the layout itself) serves both.

use crate::bench_scale::{fill, header};
use crate::util::{step, Result};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use testkit::fixtures::apps::AppFixture;
use testkit::oci::{self, Compression, ImageSpec, WrittenLayer};

/// Bumped when the generated images change, so stale ones are regenerated.
const GENERATOR: &str = "bench scale images v1";

/// The two sizes of small files, alternating (mean 48 KiB; not block multiples).
const SMALL: [u64; 2] = [32 * 1024 - 7, 64 * 1024 + 7];
/// Files in each scrap directory (`cache/`, `tmp/`) and their size.
const SCRAP_FILES: u64 = 4;
const SCRAP_SIZE: u64 = 4096;
/// Every this many small files of a layer, one is deleted by the next layer (index ≡ 5).
const WHITEOUT_EVERY: u64 = 64;
const FILES_PER_DIR: u64 = 100;
/// Bytes generated per seed: a big file is a sequence of chunks seeded one by one.
const CHUNK: usize = 1 << 20;

/// What a file holds: a third of the data each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Random,
    Text,
    Zero,
}

pub(crate) const KINDS: [Kind; 3] = [Kind::Random, Kind::Text, Kind::Zero];

impl Kind {
    fn fill(self, seed: u64, buf: &mut [u8]) {
        match self {
            Kind::Random => fill(seed, buf),
            Kind::Text => fill_text(seed, buf),
            Kind::Zero => buf.fill(0),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Random => "random",
            Kind::Text => "text",
            Kind::Zero => "zero",
        }
    }
}

const WORDS: [&str; 32] = [
    "the",
    "image",
    "layer",
    "kernel",
    "disk",
    "block",
    "inode",
    "extent",
    "group",
    "file",
    "directory",
    "tree",
    "stream",
    "grain",
    "deflate",
    "manifest",
    "config",
    "digest",
    "of",
    "and",
    "to",
    "a",
    "root",
    "boot",
    "partition",
    "table",
    "sector",
    "write",
    "read",
    "cache",
    "virtual",
    "machine",
];

/// Fills `buf` with words of [`WORDS`] picked by the bytes of `fill(seed)`, a space or (one
/// in eight) a newline after each: text that deflates to about a third.
pub(crate) fn fill_text(seed: u64, buf: &mut [u8]) {
    // Every word and its separator take at least 3 bytes.
    let mut picks = vec![0u8; buf.len() / 3 + 1];
    fill(seed, &mut picks);
    let mut text = picks.iter().flat_map(|&p| {
        let sep: &[u8] = if p >> 5 == 7 { b"\n" } else { b" " };
        WORDS[usize::from(p & 31)].as_bytes().iter().chain(sep)
    });
    for b in buf.iter_mut() {
        *b = *text.next().expect("enough picks");
    }
}

/// A file's content as a reader, generated chunk by chunk.
pub(crate) struct Content {
    kind: Kind,
    seed: u64,
    chunk: u64,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Content {
    pub(crate) fn new(kind: Kind, seed: u64, len: u64) -> Content {
        Content {
            kind,
            seed,
            chunk: 0,
            left: len,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Content {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.left == 0 {
                return Ok(0);
            }
            let n = self.left.min(CHUNK as u64) as usize;
            self.buf.resize(n, 0);
            let seed = (self.seed << 16).wrapping_add(self.chunk);
            self.kind.fill(seed, &mut self.buf);
            (self.chunk, self.left, self.pos) = (self.chunk + 1, self.left - n as u64, 0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..][..n]);
        self.pos += n;
        Ok(n)
    }
}

/// One synthetic image: `data` bytes of files over `layers` data layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Synth {
    pub(crate) data: u64,
    pub(crate) layers: u64,
}

/// Regular files and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Count {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

impl Synth {
    pub(crate) fn gib(gib: u64, layers: u64) -> Synth {
        Synth {
            data: gib << 30,
            layers,
        }
    }

    /// `1g-4l` (`base` without data layers): the directory under target/bench/size/, and the image's name in the tables.
    pub(crate) fn name(&self) -> String {
        if self.layers == 0 {
            return "base".into();
        }
        let gib = self.data as f64 / (1u64 << 30) as f64;
        format!("{gib}g-{}l", self.layers)
    }

    /// Size of each of a layer's three big files, and its number of small files (even).
    fn plan(&self) -> (u64, u64) {
        let per_layer = self.data / self.layers.max(1);
        let big = per_layer / 16 / 4096 * 4096;
        let rest = per_layer.saturating_sub(3 * big + 2 * SCRAP_FILES * SCRAP_SIZE);
        (big, rest / (SMALL[0] + SMALL[1]) * 2)
    }

    /// Small files of a layer that the next layer deletes.
    fn whited_out(&self) -> impl Iterator<Item = u64> {
        (5..self.plan().1).step_by(WHITEOUT_EVERY as usize)
    }

    /// The files of all data layers, whiteouts not applied.
    pub(crate) fn in_layers(&self) -> Count {
        let (big, small) = self.plan();
        let files = 3 + small + 2 * SCRAP_FILES;
        let bytes = 3 * big + small / 2 * (SMALL[0] + SMALL[1]) + 2 * SCRAP_FILES * SCRAP_SIZE;
        Count {
            files: files * self.layers,
            bytes: bytes * self.layers,
        }
    }

    /// The files of the flattened image (data layers only): what the whiteouts leave, plus
    /// the new file of each opaque directory.
    pub(crate) fn in_tree(&self) -> Count {
        let all = self.in_layers();
        let lower = self.layers.saturating_sub(1);
        let gone = self.whited_out().count() as u64;
        let gone_bytes: u64 = self.whited_out().map(|i| SMALL[(i % 2) as usize]).sum();
        Count {
            files: all.files - lower * (gone + 2 * SCRAP_FILES - 1),
            bytes: all.bytes - lower * (gone_bytes + (2 * SCRAP_FILES - 1) * SCRAP_SIZE),
        }
    }
}

fn layer_dir(l: u64) -> String {
    format!("data/l{l:02}")
}

fn small_path(l: u64, i: u64) -> String {
    format!("{}/d{:04}/f{i:06}", layer_dir(l), i / FILES_PER_DIR)
}

fn seed(l: u64, file: u64) -> u64 {
    (l << 32) | file
}

/// Writes data layer `l` of `s` (see the module docs) as a tar into `out`.
pub(crate) fn write_layer_tar<W: Write>(s: &Synth, l: u64, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    let dir = |b: &mut tar::Builder<W>, path: &str| {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, io::empty())
    };
    let file = |b: &mut tar::Builder<W>, path: &str, kind, seed, len| {
        let mut h = header(tar::EntryType::Regular, 0o644, len);
        b.append_data(&mut h, path, Content::new(kind, seed, len))
    };
    if l > 0 {
        let p = layer_dir(l - 1);
        for i in s.whited_out() {
            let (d, f) = small_path(l - 1, i)
                .rsplit_once('/')
                .map(|(d, f)| (d.to_string(), f.to_string()))
                .unwrap();
            file(&mut b, &format!("{d}/.wh.{f}"), Kind::Zero, 0, 0)?;
        }
        file(&mut b, &format!("{p}/.wh.cache"), Kind::Zero, 0, 0)?;
        dir(&mut b, &format!("{p}/tmp/"))?;
        file(&mut b, &format!("{p}/tmp/.wh..wh..opq"), Kind::Zero, 0, 0)?;
        file(
            &mut b,
            &format!("{p}/tmp/new"),
            Kind::Text,
            seed(l, u32::MAX as u64),
            SCRAP_SIZE,
        )?;
    }
    let d = layer_dir(l);
    dir(&mut b, &format!("{d}/"))?;
    for (n, scrap) in ["cache", "tmp"].iter().enumerate() {
        dir(&mut b, &format!("{d}/{scrap}/"))?;
        for i in 0..SCRAP_FILES {
            let s = seed(l, (1 << 31) + n as u64 * SCRAP_FILES + i);
            file(
                &mut b,
                &format!("{d}/{scrap}/f{i}"),
                Kind::Text,
                s,
                SCRAP_SIZE,
            )?;
        }
    }
    let (big, small) = s.plan();
    for (k, kind) in KINDS.into_iter().enumerate() {
        let s = seed(l, (1 << 30) + k as u64);
        file(&mut b, &format!("{d}/big-{}", kind.name()), kind, s, big)?;
    }
    for i in 0..small {
        if i % FILES_PER_DIR == 0 {
            dir(&mut b, &format!("{d}/d{:04}/", i / FILES_PER_DIR))?;
        }
        let kind = KINDS[(i % 3) as usize];
        file(
            &mut b,
            &small_path(l, i),
            kind,
            seed(l, i),
            SMALL[(i % 2) as usize],
        )?;
    }
    Ok(b.into_inner()?)
}

/// The fixtures an image is made of.
pub(crate) struct Parts<'a> {
    /// app-busybox: its layer comes first, its config is the image's.
    pub(crate) app: &'a AppFixture,
    /// kernel-linuxkit: copied into the layout as tag `kernel`.
    pub(crate) kernel: &'a AppFixture,
}

/// The OCI layout of image `s` under `dir` (tag `latest`; the kernel image as `kernel`).
pub(crate) fn layout(dir: &Path, s: &Synth) -> PathBuf {
    dir.join(s.name()).join("oci")
}

/// Generates the image `s` under `dir/NAME/` unless it is there already; returns its layout.
pub(crate) fn ensure(dir: &Path, s: &Synth, parts: &Parts) -> Result<PathBuf> {
    let base = dir.join(s.name());
    let layout = layout(dir, s);
    let stamp = base.join("stamp");
    let want = format!(
        "{GENERATOR}\n{}\n{}\n",
        parts.app.manifest_digest, parts.kernel.manifest_digest
    );
    if fs::read_to_string(&stamp).ok().as_deref() == Some(&want) {
        println!("[{}] {} up to date", s.name(), base.display());
        return Ok(layout);
    }
    step(&format!(
        "bench input: image {} ({} data layers, {} bytes of files) into {}",
        s.name(),
        s.layers,
        s.in_layers().bytes,
        base.display()
    ));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let mut layers = vec![copy_layer(parts.app, &layout)?];
    layers.extend(write_data_layers(&layout, s)?);
    let c = &parts.app.config;
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let spec = ImageSpec::new()
        .entrypoint(&strs(&c.entrypoint))
        .cmd(&strs(&c.cmd))
        .env(&strs(&c.env))
        .tag("latest");
    oci::write_image_of_layers(&layout, &spec, layers)?;
    copy_image(
        &parts.kernel.oci_layout,
        &parts.kernel.tag,
        &layout,
        "kernel",
    )?;
    fs::write(&stamp, want)?;
    Ok(layout)
}

/// The fixture's (only) layer blob, copied as it is.
fn copy_layer(app: &AppFixture, layout: &Path) -> Result<WrittenLayer> {
    let [l] = &app.layers[..] else {
        crate::bail!("{}: expected one layer", app.name);
    };
    let path = oci::blob_path(layout, &l.digest);
    fs::create_dir_all(path.parent().unwrap())?;
    fs::copy(oci::blob_path(&app.oci_layout, &l.digest), &path)?;
    Ok(WrittenLayer {
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        size: l.size,
        media_type: l.media_type.clone(),
        path,
    })
}

/// Copies the image tagged `tag` in layout `from` (manifest, config, layers) into layout
/// `to` as `new_tag`.
fn copy_image(from: &Path, tag: &str, to: &Path, new_tag: &str) -> Result<()> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(from.join("index.json"))?)?;
    let Some(mut desc) = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][oci::REF_NAME] == tag)
        .cloned()
    else {
        crate::bail!("{}: no image tagged {tag}", from.display());
    };
    let img = oci::read_image(from, Some(tag))?;
    let mut digests = vec![img.manifest_digest.clone()];
    digests.push(
        img.manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .into(),
    );
    for l in img.manifest["layers"].as_array().into_iter().flatten() {
        digests.push(l["digest"].as_str().unwrap_or_default().into());
    }
    for d in digests {
        fs::copy(oci::blob_path(from, &d), oci::blob_path(to, &d))?;
    }
    desc.as_object_mut().map(|o| o.remove("annotations"));
    Ok(oci::add_to_index(to, desc, Some(new_tag))?)
}

/// Writes the data layers (gzip) into the layout, on as many threads as there are cores.
fn write_data_layers(layout: &Path, s: &Synth) -> Result<Vec<WrittenLayer>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let next = AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| -> Result<()> {
        let hs: Vec<_> = (0..workers.min(s.layers))
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    loop {
                        let l = next.fetch_add(1, Ordering::Relaxed);
                        if l >= s.layers {
                            return Ok(());
                        }
                        let w = write_data_layer(layout, s, l)?;
                        done.lock().unwrap().push((l, w));
                    }
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().expect("layer thread"))
    })?;
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(l, _)| *l);
    Ok(done.into_iter().map(|(_, w)| w).collect())
}

/// One data layer: the tar generated on one thread, compressed into the layout on this one.
fn write_data_layer(layout: &Path, s: &Synth, l: u64) -> Result<WrittenLayer> {
    let (mut reader, writer) = io::pipe()?;
    let s = *s;
    let gen = std::thread::spawn(move || -> Result<()> {
        let w = write_layer_tar(&s, l, BufWriter::with_capacity(1 << 20, writer))?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    });
    let written = oci::write_layer(layout, &mut reader, Compression::Gzip);
    drop(reader);
    gen.join().expect("tar thread")?;
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn kinds_are_deterministic_and_compress_as_intended() {
        for kind in KINDS {
            let (mut a, mut b, mut c) =
                (vec![1u8; 1 << 16], vec![2u8; 1 << 16], vec![3u8; 1 << 16]);
            kind.fill(7, &mut a);
            kind.fill(7, &mut b);
            kind.fill(8, &mut c);
            assert_eq!(a, b, "{kind:?}");
            assert_eq!(a == c, kind == Kind::Zero, "{kind:?}");
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&a).unwrap();
            let ratio = z.finish().unwrap().len() as f64 / a.len() as f64;
            let want = match kind {
                Kind::Random => 0.99..1.01,
                Kind::Text => 0.2..0.5,
                Kind::Zero => 0.0..0.01,
            };
            assert!(want.contains(&ratio), "{kind:?}: {ratio}");
        }
        let mut t = vec![0u8; 1000];
        fill_text(1, &mut t);
        let t = String::from_utf8(t).unwrap();
        assert!(t
            .split([' ', '\n'])
            .all(|w| w.is_empty() || WORDS.iter().any(|x| x.starts_with(w))));
        assert!(t.contains('\n'));
    }

    #[test]
    fn content_is_the_chunks_in_order() {
        let mut got = Vec::new();
        let len = CHUNK as u64 * 2 + 5;
        Content::new(Kind::Random, 3, len)
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got.len() as u64, len);
        let mut want = vec![0u8; CHUNK];
        fill(3 << 16 | 1, &mut want);
        assert_eq!(got[CHUNK..2 * CHUNK], want);
    }

    /// Applies the layers' whiteouts like an overlay would: path → size of what is left.
    fn flatten(s: &Synth) -> BTreeMap<String, u64> {
        let mut tree: BTreeMap<String, u64> = BTreeMap::new();
        for l in 0..s.layers {
            let tar = write_layer_tar(s, l, Vec::new()).unwrap();
            assert_eq!(
                tar,
                write_layer_tar(s, l, Vec::new()).unwrap(),
                "deterministic"
            );
            for e in tar::Archive::new(&tar[..]).entries().unwrap() {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let (dir, name) = path.trim_end_matches('/').rsplit_once('/').unwrap();
                if name == ".wh..wh..opq" {
                    assert!(tree.keys().any(|k| k.starts_with(&format!("{dir}/"))));
                    tree.retain(|k, _| !k.starts_with(&format!("{dir}/")));
                } else if let Some(gone) = name.strip_prefix(".wh.") {
                    let gone = format!("{dir}/{gone}");
                    let before = tree.len();
                    tree.retain(|k, _| *k != gone && !k.starts_with(&format!("{gone}/")));
                    assert!(tree.len() < before, "{gone} was not there");
                } else if e.header().entry_type().is_file() {
                    tree.insert(path, e.header().size().unwrap());
                }
            }
        }
        tree
    }

    #[test]
    fn layers_hold_the_counted_files_and_whiteouts_delete_what_is_counted() {
        for s in [
            Synth {
                data: 3 << 20,
                layers: 3,
            },
            Synth {
                data: 1 << 20,
                layers: 1,
            },
        ] {
            let tree = flatten(&s);
            let got = Count {
                files: tree.len() as u64,
                bytes: tree.values().sum(),
            };
            assert_eq!(got, s.in_tree(), "{s:?}");
            assert!(s.in_tree().bytes <= s.in_layers().bytes && s.in_layers().bytes <= s.data);
        }
        // Sizes of the bench: the data is within 1 % of the nominal size, > 100 000 files at 8 GiB.
        for gib in [1, 8] {
            let s = Synth::gib(gib, 4);
            assert!(s.in_layers().bytes as f64 > 0.99 * s.data as f64);
            assert!(s.in_tree().bytes as f64 > 0.98 * s.data as f64);
        }
        assert!(Synth::gib(8, 4).in_tree().files > 100_000);
        assert_eq!(Synth::gib(1, 60).name(), "1g-60l");
    }
}
