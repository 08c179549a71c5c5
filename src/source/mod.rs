//! Image sources: registries (`docker://REF` or `REF`), OCI layouts (`oci:DIR[:TAG]`),
//! OCI archives (`oci-archive:FILE[:TAG]`), docker archives (`docker-archive:FILE`) and
//! skopeo's directories (`dir:DIR`).
//!
//! [`resolve`] reads the manifest (choosing a platform from an index) and the config, and
//! returns an [`Image`] whose layers say where their blobs are. A registry's blobs are
//! verified against digest and size while they are stored in the content-addressed `cache`;
//! a local source's (layout, archive, `dir:`) are read where they are, never copied
//! (`in_place`). [`open_layer`] turns a layer into a decompressed tar stream that checks the
//! blob's digest (when read in place) and the config's `diff_id` as it reads.

pub(crate) mod archive;
pub(crate) mod auth;
pub(crate) mod cache;
mod fetcher;
mod gzip;
mod held;
mod in_place;
pub(crate) mod layer;
pub(crate) mod layout;
mod limits;
pub(crate) mod manifest;
pub mod proxy;
mod readahead;
pub mod reference;
pub mod registries;
pub(crate) mod registry;
mod resolve;
mod tls;

use std::path::PathBuf;

pub(crate) use held::HeldLayer;
pub(crate) use layer::open_layer_with;
pub use layer::{open_layer, verify_layer};
pub use limits::{Budget, LimitExceeded, Limits, DEFAULT_MAX_EXPANSION};
pub use manifest::{ContainerConfig, ImageConfig, Platform};
pub use resolve::resolve;
pub use tls::TlsError;

/// How to reach and verify a source. `Debug` never shows the password of `creds`.
#[derive(Clone)]
pub struct SourceOptions {
    /// The platform to pick from a multi-platform image (default `linux/amd64`, never the host's).
    pub platform: Platform,
    /// Blob cache directory for registries (local sources are read in place); `None` means
    /// `$XDG_CACHE_HOME/d2v` or `~/.cache/d2v`.
    pub cache_dir: Option<PathBuf>,
    /// `USER:PASS` for the registry (`--creds`).
    pub creds: Option<String>,
    /// A containers-auth.json / docker config.json (`--authfile`); else `REGISTRY_AUTH_FILE`,
    /// then `~/.docker/config.json`.
    pub authfile: Option<PathBuf>,
    /// A directory of `*.crt` CA certificates trusted in addition to the system's (`--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// Verify TLS certificates (default true). False also allows plain HTTP to any registry.
    pub tls_verify: bool,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Concurrent layer downloads (default 3).
    pub jobs: usize,
    /// A registry that sends fewer than 1 KiB in this long (or does not answer, or cannot be
    /// reached in this long) has stalled: d2v gives up (`--registry-timeout`, default 60 s).
    pub registry_timeout: std::time::Duration,
    /// HTTP(S) proxies for registries; the command line reads them from the environment
    /// (`HTTPS_PROXY`, `NO_PROXY`, ...). Default: none.
    pub proxy: proxy::ProxyConfig,
    /// Mirrors, rewritten locations, insecure and blocked registries
    /// (containers-registries.conf); the command line reads the usual files. Default: none.
    pub registries: registries::RegistriesConf,
    /// How much the layers may decompress to (`--max-expansion`, `--max-image-size`).
    pub limits: Limits,
}

impl std::fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let creds = self.creds.as_ref().map(|c| match c.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>"),
            None => "<redacted>".to_string(),
        });
        f.debug_struct("SourceOptions")
            .field("platform", &self.platform.to_string())
            .field("cache_dir", &self.cache_dir)
            .field("creds", &creds)
            .field("authfile", &self.authfile)
            .field("cert_dir", &self.cert_dir)
            .field("tls_verify", &self.tls_verify)
            .field("progress", &self.progress)
            .field("jobs", &self.jobs)
            .field("registry_timeout", &self.registry_timeout)
            .field("proxy", &self.proxy)
            .field("registries", &self.registries.files)
            .field("limits", &self.limits)
            .finish()
    }
}

/// `--registry-timeout`'s default.
pub const DEFAULT_REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            platform: Platform::default(),
            cache_dir: None,
            creds: None,
            authfile: None,
            cert_dir: None,
            tls_verify: true,
            progress: false,
            jobs: 3,
            registry_timeout: DEFAULT_REGISTRY_TIMEOUT,
            proxy: proxy::ProxyConfig::default(),
            registries: registries::RegistriesConf::default(),
            limits: Limits::default(),
        }
    }
}

/// A resolved image: its manifest and config verified, every layer blob found (verified in
/// the cache, or in place in a local source, checked as it is read).
#[derive(Debug, Clone)]
pub struct Image {
    /// The normalised source (`docker.io/library/debian:12`, `oci:/dir:tag`, ...).
    pub reference: String,
    /// The image's name as its source gives it, without any path of the build host: the
    /// registry reference, the tag of an OCI layout or archive (`oci:DIR:TAG`: `TAG`, which
    /// may be a whole reference), a docker archive's `RepoTags` entry (the one asked for, else
    /// its first); `None` for `dir:` and untagged layouts.
    pub name: Option<String>,
    /// Digest of the platform-specific image manifest (seed for deterministic IDs).
    pub manifest_digest: String,
    /// Digest of the index or manifest list the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    /// Digest of the image config blob.
    pub config_digest: String,
    /// The image config (OCI image configuration / Docker container config).
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// The platform of the chosen manifest.
    pub platform: Platform,
    /// Platforms the source offers (one entry for a single-platform image).
    pub platforms_available: Vec<Platform>,
    /// Where the image was pulled from when the registries configuration sent d2v elsewhere
    /// (a mirror, a rewritten location); the failures of the places tried before it.
    pub pulled_from: Option<String>,
    /// How each of those places failed.
    pub endpoint_failures: Vec<String>,
    /// What the user should fix though it did not stop the pull: an auth file other users
    /// may read.
    pub warnings: Vec<String>,
}

/// One layer blob: verified in the cache, or where a local source has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    pub(crate) size: u64,
    /// The blob's media type (`application/vnd.oci.image.layer.v1.tar+gzip`, ...).
    pub media_type: String,
    /// Digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// The file holding the blob: the verified blob in the cache, or a local source's blob
    /// file or archive.
    pub path: PathBuf,
    /// Where the blob starts in `path` (0 but for a member of an archive).
    pub offset: u64,
    /// Read in place from a local source: its digest is checked as it is read.
    pub(crate) in_place: bool,
}

/// Everything that can go wrong reading a source. Messages name the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An image reference that cannot be parsed.
    #[error("invalid image reference {reference:?}: {why}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// A source with a transport d2v does not know.
    #[error(
        "unknown transport {transport:?}: use docker://REF (or REF), oci:DIR[:TAG], \
         oci-archive:FILE[:TAG], docker-archive:FILE or dir:DIR"
    )]
    UnknownTransport {
        /// The transport as given.
        transport: String,
    },
    /// A digest other than `sha256:` and 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: d2v reads sha256:<64 lowercase hex digits> digests")]
    BadDigest {
        /// The digest as given.
        digest: String,
    },
    /// A platform not of the form `os/arch[/variant]`.
    #[error("invalid platform {platform:?}: write os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")]
    BadPlatform {
        /// The platform as given.
        platform: String,
    },
    /// A manifest or index that cannot be used.
    #[error("{what}: unusable manifest: {why}")]
    BadManifest {
        /// The manifest.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A Docker schema1 manifest, which d2v does not read.
    #[error(
        "{what} is a Docker schema1 manifest, which d2v does not read (it is deprecated); \
         re-push the image with a current docker or skopeo to convert it to schema2/OCI"
    )]
    Schema1 {
        /// The manifest.
        what: String,
    },
    /// A manifest or config larger than d2v reads.
    #[error("{what} is larger than {limit} bytes: refusing an oversized manifest or config")]
    TooLarge {
        /// The manifest or config.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The index has no manifest for the platform asked for.
    #[error("{what} has no image for platform {want}; available: {available} (choose one with --platform)")]
    NoPlatform {
        /// The index.
        what: String,
        /// The platform asked for.
        want: String,
        /// The platforms it has.
        available: String,
    },
    /// The registry answered 404.
    #[error("{what}: not found (404); check the repository name and tag{hint}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// More to tell the user (may be empty).
        hint: String,
    },
    /// The registry answered 401: credentials needed.
    #[error(
        "{what}: authentication required (401) by {registry}; pass --creds USER:PASS or an \
         --authfile, or log in with `docker login {registry}`{hint}"
    )]
    Unauthorized {
        /// What was asked for.
        what: String,
        /// The registry.
        registry: String,
        /// More to tell the user (may be empty).
        hint: String,
    },
    /// The registry answered 403.
    #[error("{what}: access denied (403) by {registry}; check that your account may pull this repository")]
    Forbidden {
        /// What was asked for.
        what: String,
        /// The registry.
        registry: String,
    },
    /// Another HTTP error status.
    #[error("{what}: the registry answered HTTP {status}{detail}")]
    Http {
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error text, if it sent one.
        detail: String,
    },
    /// `source` is the `ureq::Transport` of a request that failed, or the `io::Error` of a
    /// response body that could not be read; `via` names the proxy it went through, if any.
    #[error("{what}: cannot reach {registry}: {source}{via}")]
    Network {
        /// What was asked for.
        what: String,
        /// The registry.
        registry: String,
        /// The transport or read error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// The proxy it went through, if any (may be empty).
        via: String,
    },
    /// A registry that stopped answering or sending: gave up after `--registry-timeout`.
    #[error(
        "{what}: {registry} {how} (--registry-timeout {seconds}: at least {} bytes every \
         {seconds} s); gave up. A blob download that stopped is kept in the cache: run d2v again to resume it, or \
         raise --registry-timeout for a slow registry",
        registry::pace::MIN_BYTES
    )]
    Stalled {
        /// What was asked for (a blob names its digest).
        what: String,
        /// The registry.
        registry: String,
        /// What it did ("sent nothing for 2 s").
        how: String,
        /// `--registry-timeout`.
        seconds: u64,
    },
    /// A proxy setting from the environment that cannot be used.
    #[error(
        "proxy {proxy:?} (from the environment: HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) is not \
         usable: {why}; give it as http://[user:password@]host:port"
    )]
    BadProxy {
        /// The proxy as given.
        proxy: String,
        /// What is wrong with it.
        why: String,
    },
    /// A containers-registries.conf file that cannot be used.
    #[error("registries configuration {path}: {why}", path = .path.display())]
    RegistriesConf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The registries configuration blocks the reference.
    #[error(
        "{reference} is blocked by the registries configuration ({file}); pull it from another \
         registry, or change the [[registry]] table there that sets blocked = true",
        file = .file.display()
    )]
    Blocked {
        /// The reference.
        reference: String,
        /// The configuration file that blocks it.
        file: PathBuf,
    },
    /// The image's own location failed after its mirrors did.
    #[error("{last}; before it, the registries configuration's mirrors failed too: {}", tried.join("; "))]
    MirrorsFailed {
        /// The error of the last place tried.
        last: Box<SourceError>,
        /// How each mirror failed.
        tried: Vec<String>,
    },
    /// A TLS connection to a registry failed.
    #[error(
        "{registry}: TLS failed: {source}; if the registry uses a private CA pass --cert-dir DIR \
         with its ca.crt, or --tls-verify=false to skip verification"
    )]
    Tls {
        /// The registry.
        registry: String,
        /// Why.
        source: TlsError,
    },
    /// Plain HTTP to a registry that is not on a loopback address.
    #[error(
        "{what}: refusing plain HTTP to {registry}: only loopback registries may be reached without \
         TLS (or pass --tls-verify=false)"
    )]
    PlainHttp {
        /// What was asked for.
        what: String,
        /// The registry.
        registry: String,
    },
    /// A blob whose sha256 differs from its digest.
    #[error(
        "{what}: digest mismatch: expected {expected}, got {got}; the blob is corrupt or was \
         tampered with (the cache keeps only verified blobs; try again or report it to the image owner)"
    )]
    DigestMismatch {
        /// The blob.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        got: String,
    },
    /// A local source's blob whose bytes, read in place, differ from its digest.
    #[error(
        "{what}: digest mismatch: expected {expected}, got {got}; the blob is corrupt or was \
         changed after the image was written (d2v reads local images in place): copy or save \
         the image again"
    )]
    InPlaceMismatch {
        /// The blob and where it is.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        got: String,
    },
    /// A blob whose size differs from its descriptor's.
    #[error(
        "{}: size mismatch: expected {expected} bytes, got {got} (a truncated or corrupt blob; \
         from a registry, run again to retry the download; from a file or directory, copy or \
         save the image again)",
        named_with_digest(what, digest)
    )]
    SizeMismatch {
        /// The blob.
        what: String,
        /// Its digest.
        digest: String,
        /// The size in bytes it should have.
        expected: u64,
        /// The size it has.
        got: u64,
    },
    /// The config's `rootfs.diff_ids` do not match the layers.
    #[error("{what}: {why}")]
    DiffIds {
        /// The image.
        what: String,
        /// What is wrong.
        why: String,
    },
    /// A layer whose media type or compression d2v cannot read.
    #[error("layer {layer}: {why}")]
    LayerFormat {
        /// The layer.
        layer: String,
        /// What is wrong.
        why: String,
    },
    /// Credentials (`--creds`, an auth file, a credential helper) that cannot be used.
    #[error("credentials: {why}")]
    Credentials {
        /// What is wrong.
        why: String,
    },
    /// A source directory or archive (OCI layout, docker-archive, `dir:`), or the blob cache, that cannot be used.
    #[error("{path}: {why}")]
    Layout {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A layer decompresses to more than `--max-expansion` or `--max-image-size` allow.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// A layer's blob file was written to between the flatten and the disk's data pass, which
    /// reads it again.
    #[error("layer {layer}: its blob {} was written to while d2v was building from it; keep the source (or the blob cache) unchanged during a build, and run d2v again", path.display())]
    BlobChanged {
        /// The layer's digest.
        layer: String,
        /// The file that held it.
        path: PathBuf,
    },
    /// The image's layer blobs are in more files than the process may hold open (a build
    /// holds each from the flatten to the disk's data pass).
    #[error("the image's layers are in {files} layer blob files, which a build holds open from the flatten to the root's data pass, but the hard open-files limit is {limit}: raise it (`ulimit -n`, or LimitNOFILE= for a systemd service) and run d2v again")]
    OpenFilesLimit {
        /// The files holding the layers' blobs.
        files: u64,
        /// The limit in the way.
        limit: u64,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `what`, followed by `(digest)` unless `what` already names it.
fn named_with_digest(what: &str, digest: &str) -> String {
    if what.contains(digest) {
        what.to_string()
    } else {
        format!("{what} ({digest})")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_mismatch_names_the_digest_once() {
        let d = "sha256:00ff";
        let e = |what: &str| {
            super::SourceError::SizeMismatch {
                what: what.into(),
                digest: d.into(),
                expected: 2,
                got: 1,
            }
            .to_string()
        };
        assert_eq!(e("layer 1").matches(d).count(), 1, "{}", e("layer 1"));
        assert_eq!(e("layer 1 (sha256:00ff)").matches(d).count(), 1);
    }

    #[test]
    fn options_debug_hides_the_password() {
        let o = super::SourceOptions {
            creds: Some("bob:hunter2".into()),
            ..Default::default()
        };
        let d = format!("{o:?}");
        assert!(d.contains("bob") && !d.contains("hunter2"), "{d}");
    }
}
