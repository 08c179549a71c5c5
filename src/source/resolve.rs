//! From a source string to a verified [`Image`]: manifest → (index → platform) → config →
//! layers, a registry's layers fetched concurrently into the cache, a local source's found
//! where they are (the cache is not even opened for those).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::ProgressBar;

use super::cache::{sha256_digest, Cache};
use super::fetcher::{Fetcher, Location, Root};
use super::in_place::check_bytes;
use super::manifest::{
    layer_compression, parse_manifest, select_platform, Descriptor, ImageConfig, Parsed, Platform,
    MAX_CONFIG, MAX_MANIFEST,
};
use super::reference::{check_digest, parse_source, Reference, Transport};
use super::{archive, layout, registry, Image, Layer, SourceError, SourceOptions};

/// Resolves `source` to an image whose manifest and config are verified and whose layer
/// blobs are verified in the cache (a registry) or found in place (a local source).
pub fn resolve(source: &str, opts: &SourceOptions) -> Result<Image, SourceError> {
    match parse_source(source)? {
        Transport::Registry(r) => {
            let cache_dir = opts
                .cache_dir
                .clone()
                .unwrap_or_else(super::cache::default_dir);
            let cache = Cache::open(&cache_dir)?;
            from_registry(&r, opts, &cache).map(|i| named(i, Some(r.to_string())))
        }
        Transport::OciDir { dir, tag } => {
            let src = layout::OciDir::open(&dir)?;
            let what = tagged("oci", &dir, tag.as_deref());
            let root = src.root(tag.as_deref(), &opts.platform)?;
            run(&src, opts, what, root).map(|i| named(i, tag))
        }
        Transport::OciArchive { file, tag } => {
            let src = archive::Imported::load(&file)?;
            let what = tagged("oci-archive", &file, tag.as_deref());
            let index = src.small("index.json")?;
            let root = layout::root_from_index(&index, &file, tag.as_deref(), &opts.platform)?;
            run(&src, opts, what, root).map(|i| named(i, tag))
        }
        Transport::Dir { dir } => {
            let src = layout::OciDir::open_skopeo(&dir)?;
            let what = format!("dir:{}", dir.display());
            let root = Root::Reference(layout::DIR_MANIFEST.into(), None);
            run(&src, opts, what, root)
        }
        Transport::DockerArchive { file, reference } => {
            let mut src = archive::Imported::load(&file)?;
            let what = format!("docker-archive:{}", file.display());
            let (manifest, repo_tag) = src.docker_manifest(reference.as_deref())?;
            run(&src, opts, what, Root::Inline(manifest)).map(|i| named(i, reference.or(repo_tag)))
        }
    }
}

/// `TRANSPORT:PATH[:TAG]`, how errors name a layout or archive.
fn tagged(transport: &str, path: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{transport}:{}:{t}", path.display()),
        None => format!("{transport}:{}", path.display()),
    }
}

/// `image` with its [`Image::name`].
fn named(mut image: Image, name: Option<String>) -> Image {
    image.name = name;
    image
}

/// Pulls `r` from the first place the registries configuration gives that serves it (its
/// mirrors, then its registry or `location`), noting where it came from and what failed first.
fn from_registry(r: &Reference, opts: &SourceOptions, cache: &Cache) -> Result<Image, SourceError> {
    let endpoints = opts.registries.endpoints(r)?;
    let warnings = super::auth::exposed_auth_files(opts);
    let mut failures = Vec::new();
    let last = endpoints.len() - 1;
    for (i, ep) in endpoints.into_iter().enumerate() {
        let insecure;
        let opts = if ep.insecure {
            insecure = SourceOptions {
                tls_verify: false,
                ..opts.clone()
            };
            &insecure
        } else {
            opts
        };
        let e = &ep.reference;
        let got = registry::Client::new(e, opts, cache.clone()).and_then(|client| {
            let root = Root::Reference(e.manifest_ref().to_string(), e.digest.clone());
            run(&client, opts, r.to_string(), root)
        });
        match got {
            Ok(mut img) => {
                if e != r {
                    img.pulled_from =
                        Some(format!("{e}{}", if ep.mirror { " (mirror)" } else { "" }));
                }
                img.endpoint_failures = failures;
                img.warnings = warnings;
                return Ok(img);
            }
            Err(err) if i < last => {
                // Name the place tried, unless the message already does.
                let msg = err.to_string();
                failures.push(if msg.contains(&e.registry) {
                    msg
                } else {
                    format!("{e}: {msg}")
                });
            }
            Err(err) if failures.is_empty() => return Err(err),
            Err(err) => {
                return Err(SourceError::MirrorsFailed {
                    last: Box::new(err),
                    tried: failures,
                })
            }
        }
    }
    unreachable!("endpoints() returns at least the registry itself")
}

fn fetch_manifest(
    f: &dyn Fetcher,
    reference: &str,
    expect: Option<(&str, Option<u64>)>,
    what: &str,
) -> Result<(Vec<u8>, Option<String>, String), SourceError> {
    let (bytes, ct) = f.manifest(reference)?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(SourceError::TooLarge {
            what: what.to_string(),
            limit: MAX_MANIFEST,
        });
    }
    if let Some((want, size)) = expect {
        check_bytes(&bytes, want, size, what)?;
    }
    let digest = sha256_digest(&bytes);
    Ok((bytes, ct, digest))
}

/// From the root to a verified image: the manifest (chosen from an index for the platform),
/// the config, the layers checked against it and fetched.
fn run(
    f: &dyn Fetcher,
    opts: &SourceOptions,
    what: String,
    root: Root,
) -> Result<Image, SourceError> {
    let want = &opts.platform;
    let m = manifest_for_platform(f, &what, want, root)?;
    f.keep_manifest(&m.bytes, &m.digest)?;

    let cwhat = format!("{what} config {}", m.config.digest);
    let config = fetch_config(f, &m.config, &cwhat)?;
    // The config says which platform the image is for; old images may leave it out.
    let declared = !config.os.is_empty() && !config.architecture.is_empty();
    let platform = if declared {
        Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        }
    } else {
        m.platform.clone().unwrap_or_else(|| want.clone())
    };
    let mut platforms_available = m.platforms_available;
    if m.index_digest.is_none() {
        if declared && !want.matches(&platform) {
            return Err(SourceError::NoPlatform {
                what: what.clone(),
                want: want.to_string(),
                available: platform.to_string(),
            });
        }
        platforms_available = vec![platform.clone()];
    }
    let diff_ids = &config.rootfs.diff_ids;
    check_layers(&m.layers, diff_ids, &cwhat)?;

    let found = fetch_layers(f, opts, &what, &m.layers)?;
    let layers = m
        .layers
        .iter()
        .zip(diff_ids)
        .zip(found)
        .map(|((d, id), at)| Layer {
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
            diff_id: id.clone(),
            path: at.path,
            offset: at.offset,
            in_place: at.in_place,
        })
        .collect();
    Ok(Image {
        reference: what,
        name: None,
        manifest_digest: m.digest,
        index_digest: m.index_digest,
        config_digest: m.config.digest.clone(),
        config,
        layers,
        platform,
        platforms_available,
        pulled_from: None,
        endpoint_failures: Vec::new(),
        warnings: Vec::new(),
    })
}

/// The image manifest resolution arrived at, and the index it was chosen from, if any.
struct Manifest {
    bytes: Vec<u8>,
    digest: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
    index_digest: Option<String>,
    /// The platforms the index offers (empty without an index).
    platforms_available: Vec<Platform>,
    /// The platform the index gives the chosen manifest.
    platform: Option<Platform>,
}

/// The root's manifest; when it is an index, the manifest in it for `want`, verified against
/// the index's descriptor.
fn manifest_for_platform(
    f: &dyn Fetcher,
    what: &str,
    want: &Platform,
    root: Root,
) -> Result<Manifest, SourceError> {
    let (bytes, ct, digest) = match root {
        Root::Reference(r, d) => fetch_manifest(f, &r, d.as_deref().map(|d| (d, None)), what)?,
        Root::Descriptor(d) => fetch_manifest(
            f,
            &d.digest,
            Some((&d.digest, Some(d.size))),
            &format!("{what} manifest {}", d.digest),
        )?,
        Root::Inline(b) => {
            let d = sha256_digest(&b);
            (b, None, d)
        }
    };
    let list = match parse_manifest(&bytes, ct.as_deref(), what)? {
        Parsed::Image { config, layers } => {
            return Ok(Manifest {
                bytes,
                digest,
                config,
                layers,
                index_digest: None,
                platforms_available: Vec::new(),
                platform: None,
            })
        }
        Parsed::Index(list) => list,
    };
    let platforms_available: Vec<Platform> =
        list.iter().filter_map(|d| d.platform.clone()).collect();
    let chosen = select_platform(&list, want).ok_or_else(|| SourceError::NoPlatform {
        what: what.to_string(),
        want: want.to_string(),
        available: if platforms_available.is_empty() {
            "none declared".into()
        } else {
            platforms_available
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })?;
    let cwhat = format!("{what} manifest for {want} ({})", chosen.digest);
    check_digest(&chosen.digest)?;
    let (mbytes, mct, mdigest) = fetch_manifest(
        f,
        &chosen.digest,
        Some((&chosen.digest, Some(chosen.size))),
        &cwhat,
    )?;
    match parse_manifest(&mbytes, mct.as_deref(), &cwhat)? {
        Parsed::Image { config, layers } => Ok(Manifest {
            bytes: mbytes,
            digest: mdigest,
            config,
            layers,
            index_digest: Some(digest),
            platforms_available,
            platform: chosen.platform.clone(),
        }),
        Parsed::Index(_) => Err(SourceError::BadManifest {
            what: cwhat,
            why: "nested indexes are not supported".into(),
        }),
    }
}

/// The image config, fetched (at most [`MAX_CONFIG`] bytes), verified and parsed.
fn fetch_config(
    f: &dyn Fetcher,
    desc: &Descriptor,
    cwhat: &str,
) -> Result<ImageConfig, SourceError> {
    if desc.size > MAX_CONFIG {
        return Err(SourceError::TooLarge {
            what: cwhat.to_string(),
            limit: MAX_CONFIG,
        });
    }
    let cbytes = f.config(desc, cwhat)?;
    serde_json::from_slice(&cbytes).map_err(|e| SourceError::BadManifest {
        what: cwhat.to_string(),
        why: format!("config is not valid JSON: {e}"),
    })
}

/// Every layer has a diff_id, valid digests and a media type d2v reads.
fn check_layers(
    layers: &[Descriptor],
    diff_ids: &[String],
    cwhat: &str,
) -> Result<(), SourceError> {
    if diff_ids.len() != layers.len() {
        return Err(SourceError::DiffIds {
            what: cwhat.to_string(),
            why: format!(
                "{} diff_ids for {} layers; the image is inconsistent",
                diff_ids.len(),
                layers.len()
            ),
        });
    }
    for (d, id) in layers.iter().zip(diff_ids) {
        check_digest(&d.digest)?;
        check_digest(id)?;
        if layer_compression(&d.media_type).is_none() {
            return Err(SourceError::LayerFormat {
                layer: d.digest.clone(),
                why: format!(
                    "unsupported media type {:?} (d2v reads tar, tar+gzip and tar+zstd layers)",
                    d.media_type
                ),
            });
        }
    }
    Ok(())
}

fn fetch_layers(
    f: &dyn Fetcher,
    opts: &SourceOptions,
    what: &str,
    descs: &[Descriptor],
) -> Result<Vec<Location>, SourceError> {
    let multi = crate::progress::multi(opts.progress);
    let style = crate::progress::bytes_style();
    let results: Vec<Mutex<Option<Result<Location, SourceError>>>> =
        descs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let jobs = opts.jobs.clamp(1, 16).min(descs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(d) = descs.get(i) else { break };
                let short = d.digest.get(7..19).unwrap_or(&d.digest);
                let bar = multi.add(
                    ProgressBar::new(d.size)
                        .with_style(style.clone())
                        .with_prefix(short.to_string()),
                );
                let lwhat = format!("{what} layer {} ({})", i + 1, d.digest);
                let r = f.blob(d, &lwhat, &bar);
                bar.finish();
                let failed = r.is_err();
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                if failed {
                    // Stop handing out work; running downloads finish.
                    next.store(descs.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(descs.len());
    for (i, r) in results.into_iter().enumerate() {
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(r) => out.push(r?),
            None => {
                return Err(SourceError::Layout {
                    path: PathBuf::from(what),
                    why: format!(
                        "layer {} was not fetched because another layer failed",
                        i + 1
                    ),
                })
            }
        }
    }
    Ok(out)
}
