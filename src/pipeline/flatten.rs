//! The flatten: the source resolved (every blob downloaded and verified) and its layers
//! applied in order to the staging tree; for a build, with the files it does not read early
//! left in their layers ([`Spilled::Early`]) and read again from the blob files held open
//! ([`Reread`]).

use std::io;
use std::sync::Arc;

use super::{source_options, Error, Log, Stage};
use crate::cli::SourceArgs;
use crate::layers;
use crate::source::{self, Image, SourceOptions};
use crate::tree::{LayerStreams, Spill, Tree};

/// What the blob cache holds, and what to do when its filesystem is full.
const CACHE_FULL: (&str, &str) = (
    "the blob cache (downloaded image blobs)",
    "free some space there or give another --cache-dir (a download that stopped is kept in \
     its tmp/ and resumed by the next run)",
);

/// What the staging tree's spill file holds, and what to do when its filesystem is full.
const SPILL_FULL: (&str, &str) = (
    "the staging tree's file data (a temporary file)",
    "d2v keeps the image's unpacked files there while it works: set TMPDIR to a directory \
     on a filesystem with more free space",
);

/// Resolves the source (downloading and verifying every blob) and applies its layers in order;
/// and the warnings about its layers (logged here, returned for `--json`).
pub(crate) fn flatten(
    source: &str,
    src: &SourceArgs,
    json: bool,
    log: &Log,
) -> Result<(Image, Tree, Vec<String>), Error> {
    flatten_with(source, src, json, log, Spilled::All)
}

/// What the staging tree's spill file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spilled {
    /// Every file's bytes: for a tree read whole, in any order (export, a kernel image).
    All,
    /// Only the files the build reads before the root's data pass ([`Kept`]); the
    /// others are left in their layers and read again in the data pass, so the temporary
    /// disk does not grow with the image.
    Early,
}

/// Resolves the source and applies its layers like [`flatten`], the spill holding what
/// `spilled` says.
pub(crate) fn flatten_with(
    source: &str,
    src: &SourceArgs,
    json: bool,
    log: &Log,
    spilled: Spilled,
) -> Result<(Image, Tree, Vec<String>), Error> {
    let options = source_options(src, json)?;
    let image = log
        .time(Stage::Pull, || source::resolve(source, &options))
        .map_err(|e| cache_full_or(&options, Error::from(e)))?;
    log.step(format!(
        "image {} ({})",
        image.reference, image.manifest_digest
    ));
    if let Some(from) = &image.pulled_from {
        log.step(format!("pulled from {from} (registries configuration)"));
    }
    for w in &image.warnings {
        log.step(format!("warning: {w}"));
    }
    let mut tree = match spilled {
        Spilled::All => Tree::in_temp().map_err(Error::Spill)?,
        Spilled::Early => {
            let streams = Arc::new(Reread::new(&image.layers)?);
            let file = tempfile::tempfile().map_err(|e| Error::Spill(e.into()))?;
            Tree::new(Spill::deferring(file, streams))
        }
    };
    let budget = source::Budget::new(options.limits);
    let warnings = log.time(Stage::Flatten, || {
        apply_layers(&image, &mut tree, &budget, json)
    })?;
    tree.shrink_to_fit();
    for w in &warnings {
        log.step(format!("warning: {w}"));
    }
    log.step(format!("applied {} layers", image.layers.len()));
    Ok((image, tree, warnings))
}

/// `e`, or when the disk is full, that the blob cache's filesystem is (only a registry's
/// blobs are written: a local source is read in place).
fn cache_full_or(options: &SourceOptions, e: Error) -> Error {
    if !e.is_storage_full() {
        return e;
    }
    let dir = options
        .cache_dir
        .clone()
        .unwrap_or_else(source::cache::default_dir);
    e.or_no_space(CACHE_FULL.0, dir, CACHE_FULL.1)
}

/// Applies the image's layers, bottom first, to the staging tree, their decompressed bytes
/// counted against `budget`: a layer past one of its limits fails with that limit. Returns
/// the warnings about them (a layer read as Go reads it, see [`layers::Unterminated`]).
fn apply_layers(
    image: &Image,
    tree: &mut Tree,
    budget: &Arc<source::Budget>,
    json: bool,
) -> Result<Vec<String>, Error> {
    let count = image.layers.len();
    let mut warnings = Vec::new();
    let kept = Kept::new(&image.config.config);
    for (i, layer) in image.layers.iter().enumerate() {
        let bar = crate::progress::bar(!json, layer.size, format!("apply layer {}/{count}", i + 1));
        let r = source::open_layer_with(layer, Some(bar.clone()), budget)?;
        let mut r = layers::SpecialLimit::new(r, &layer.digest);
        let deferral = layers::Deferral {
            index: i,
            keep: &|p: &[u8]| kept.keeps(p),
        };
        let deferral = tree.spill().defers().then_some(&deferral);
        let applied = layers::apply_layer_deferring(tree, &mut r, &layer.digest, deferral);
        let note = applied.map_err(|e| {
            let e = mismatch_or(layer, &mut r, Error::from(e));
            limit_or(budget, &r, e).or_no_space(SPILL_FULL.0, std::env::temp_dir(), SPILL_FULL.1)
        })?;
        warnings.extend(note.warnings());
        // Read to the end so the uncompressed digest (diff_id) is checked.
        io::copy(&mut r, &mut io::sink()).map_err(|source| {
            let e = Error::LayerStream {
                layer: layer.digest.clone(),
                source,
            };
            limit_or(budget, &r, e)
        })?;
        bar.finish();
        crate::interrupt::pause_point("flatten");
    }
    Ok(warnings)
}

/// The files the build reads before the root's data pass, whose bytes must so be in the
/// spill (any other file read early is read from its layer then, [`Spill::early_reads`]:
/// correct, only slower).
struct Kept {
    /// The file names of the init candidates: the architecture check reads their first
    /// bytes, wherever their directory is (a symlinked `sbin` is resolved by the time a path
    /// is matched).
    names: Vec<&'static [u8]>,
    /// The file name of the image's program (its entrypoint, else its command), which the
    /// app checks read: files whose names begin with it are kept (`python3` is often a link
    /// to `python3.11`).
    program: Option<Vec<u8>>,
}

impl Kept {
    /// Directories read early: the guest fixes and checks (`/etc`), the kernel and its
    /// initramfs, modules and their indexes (`/boot`, `/lib/modules`), GRUB's modules and
    /// Secure Boot's shim and signed GRUB (`/usr/lib/grub`, `/usr/lib/shim`), networkd's
    /// shipped configuration.
    const DIRS: [&[u8]; 7] = [
        b"boot/",
        b"etc/",
        b"lib/modules/",
        b"usr/lib/modules/",
        b"usr/lib/grub/",
        b"usr/lib/shim/",
        b"usr/lib/systemd/network/",
    ];

    /// What a build of an image with config `c` reads early.
    fn new(c: &source::ContainerConfig) -> Kept {
        let program = (c.entrypoint.iter().chain(&c.cmd))
            .find_map(|v| v.first())
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty());
        Kept {
            names: vec![b"init", b"systemd", b"openrc-init", b"busybox"],
            program: program.map(|p| p.as_bytes().to_vec()),
        }
    }

    /// Whether the file at `path` (in the tree, no leading `/`) is kept in the spill.
    fn keeps(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        Self::DIRS.iter().any(|d| path.starts_with(d))
            || path == b"usr/lib/os-release"
            || self.names.contains(&name)
            || self.program.as_ref().is_some_and(|p| name.starts_with(p))
    }
}

/// The image's layers read again in the root's data pass ([`LayerStreams`]): each blob file
/// held open from before the flatten ([`source::HeldLayer`]).
struct Reread(Vec<source::HeldLayer>);

impl Reread {
    fn new(layers: &[source::Layer]) -> Result<Reread, Error> {
        Ok(Reread(source::HeldLayer::open_all(layers)?))
    }
}

impl LayerStreams for Reread {
    fn open(&self, index: usize) -> io::Result<Box<dyn io::Read + Send>> {
        self.0[index].reread().map_err(io::Error::other)
    }
}

/// For a layer read in place whose tar stream failed: the blob's digest mismatch, if reading
/// the stream to its end finds one (corrupt bytes that still inflate reach the tar reader
/// before the digest check at the end; the mismatch is the cause), else `e`. A blob from the
/// cache was verified before it was read: `e` as it is.
fn mismatch_or(layer: &source::Layer, stream: &mut impl io::Read, e: Error) -> Error {
    if !layer.in_place {
        return e;
    }
    let Err(drained) = io::copy(stream, &mut io::sink()) else {
        return e;
    };
    match drained
        .into_inner()
        .map(|i| i.downcast::<source::SourceError>())
    {
        Some(Ok(m))
            if matches!(
                *m,
                source::SourceError::InPlaceMismatch { .. }
                    | source::SourceError::SizeMismatch { .. }
            ) =>
        {
            Error::Source(*m)
        }
        _ => e,
    }
}

/// The limit a layer's stream went past (`--max-expansion`, `--max-image-size`, a special tar
/// entry's size), if it went past one, rather than `e`, how the tar reader saw the failure.
fn limit_or<R: io::Read>(
    budget: &source::Budget,
    stream: &layers::SpecialLimit<R>,
    e: Error,
) -> Error {
    match (budget.exceeded(), stream.exceeded()) {
        (Some(limit), _) => Error::Source(limit.into()),
        (None, Some(special)) => Error::LayerHeader(special.clone()),
        (None, None) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_layer_is_read_again_from_the_file_the_flatten_read_unless_it_was_written_to() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("blob");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let layer = source::Layer {
            digest: "sha256:aa".into(),
            size: 4096,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: "sha256:aa".into(),
            path: path.clone(),
            offset: 0,
            in_place: true,
        };
        let reread = Reread::new(std::slice::from_ref(&layer)).unwrap();
        let head = |reread: &Reread| {
            let mut head = [0u8; 16];
            reread.open(0)?.read_exact(&mut head)?;
            io::Result::Ok(head)
        };
        assert_eq!(head(&reread).unwrap(), [7u8; 16]);
        // Another build stores a blob under the same name (a rename over it), then a prune
        // removes it: the file held open is read all the same.
        let other = d.path().join("blob.tmp");
        std::fs::write(&other, vec![8u8; 4096]).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(head(&reread).unwrap(), [7u8; 16]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(head(&reread).unwrap(), [7u8; 16]);
        // A write into the file itself is refused, naming the layer.
        std::thread::sleep(std::time::Duration::from_millis(20));
        writer.write_all(&[9u8; 16]).unwrap();
        let e = head(&reread).expect_err("refused");
        let cause = e
            .get_ref()
            .and_then(|c| c.downcast_ref::<source::SourceError>());
        assert!(
            matches!(cause, Some(source::SourceError::BlobChanged { layer, .. }) if layer == "sha256:aa"),
            "{e}"
        );
    }

    #[test]
    fn kept_paths_are_what_the_build_reads_early() {
        let kept = Kept::new(&source::ContainerConfig {
            entrypoint: Some(vec!["/usr/local/bin/python3".into()]),
            ..Default::default()
        });
        for p in [
            "etc/passwd",
            "boot/vmlinuz-6.1",
            "usr/lib/modules/6.1/kernel/a.ko",
            "usr/lib/grub/i386-pc/normal.mod",
            "usr/lib/os-release",
            "usr/lib/systemd/systemd",
            "usr/bin/python3.11",
        ] {
            assert!(kept.keeps(p.as_bytes()), "{p}");
        }
        for p in [
            "usr/share/doc/x",
            "usr/lib/os-release.d",
            "etcx/a",
            "usr/bin/perl",
        ] {
            assert!(!kept.keeps(p.as_bytes()), "{p}");
        }
    }
}
