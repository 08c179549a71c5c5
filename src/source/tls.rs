//! TLS for registries: webpki roots plus the system's CA bundle plus `--cert-dir` CAs
//! (`*.crt`, as in containers' certs.d), or no verification with `--tls-verify=false`; and a
//! client certificate for registries that want one (mutual TLS): a `NAME.cert` with its
//! `NAME.key` in the same directories (containers-certs.d(5)), the first pair by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::SourceError;

/// What failed about TLS: the handshake with the registry, or the configuration d2v builds
/// from the certificate files. Each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The connection's transport error (a `ureq::Transport`; boxed as `dyn Error` so that
    /// the cause chain holds the transport error itself), and `hint`, empty or what to do
    /// about a client certificate.
    #[error("{source}{hint}")]
    Handshake {
        /// The transport error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Empty, or what to do about a client certificate.
        hint: String,
    },
    /// rustls refused the protocol versions d2v asks for.
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
    /// A client certificate `NAME.cert` without its `NAME.key`.
    #[error("client certificate {} has no key {} beside it", cert.display(), key.display())]
    NoClientKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file looked for.
        key: PathBuf,
    },
    /// A client certificate file that cannot be read as PEM.
    #[error("cannot read client certificate {}: {source}", path.display())]
    ClientCertificate {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A client certificate file with no certificate in it.
    #[error("no certificate in {}", path.display())]
    NoClientCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A client key file that cannot be read as PEM.
    #[error("cannot read client key {}: {source}", path.display())]
    ClientKey {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// rustls refused the client certificate or key.
    #[error("unusable client certificate or key: {0}")]
    ClientAuth(#[source] rustls::Error),
    /// A CA file (`*.crt`) that cannot be read as PEM.
    #[error("cannot read CA file {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A CA file with a malformed certificate.
    #[error("bad certificate in {}: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        source: pem::Error,
    },
    /// A CA certificate rustls cannot use as a trust anchor.
    #[error("unusable CA certificate in {}: {source}", path.display())]
    UnusableCa {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// `.map_err(tls_err(registry))?`: a [`TlsError`] about `registry`.
fn tls_err(registry: &str) -> impl Fn(TlsError) -> SourceError + '_ {
    move |source| SourceError::Tls {
        registry: registry.to_string(),
        source,
    }
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Where certificates for `registry` are looked for: `cert_dir`, `cert_dir/<registry>`, and
/// the system-wide `/etc/containers/certs.d/<registry>/` and `/etc/docker/certs.d/<registry>/`.
fn cert_dirs(cert_dir: Option<&Path>, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = cert_dir {
        dirs.push(d.to_path_buf());
        dirs.push(d.join(registry));
    }
    dirs.push(Path::new("/etc/containers/certs.d").join(registry));
    dirs.push(Path::new("/etc/docker/certs.d").join(registry));
    dirs
}

/// The files of `dir` ending in `.EXT`, by name.
fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// The `*.crt` files to trust for `registry`.
fn ca_files(cert_dir: Option<&Path>, registry: &str) -> Vec<PathBuf> {
    cert_dirs(cert_dir, registry)
        .iter()
        .flat_map(|d| files_with(d, "crt"))
        .collect()
}

/// The client certificate chain and key for `registry`: the first `NAME.cert` (with its
/// `NAME.key`) of the first directory holding one.
fn client_pair(
    cert_dir: Option<&Path>,
    registry: &str,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, SourceError> {
    let bad = tls_err(registry);
    for d in cert_dirs(cert_dir, registry) {
        let Some(cert) = files_with(&d, "cert").into_iter().next() else {
            continue;
        };
        let key = cert.with_extension("key");
        if !key.is_file() {
            return Err(bad(TlsError::NoClientKey { cert, key }));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .and_then(|certs| certs.collect())
            .map_err(|source| {
                bad(TlsError::ClientCertificate {
                    path: cert.clone(),
                    source,
                })
            })?;
        if chain.is_empty() {
            return Err(bad(TlsError::NoClientCertificate { path: cert }));
        }
        let key = PrivateKeyDer::from_pem_file(&key)
            .map_err(|source| bad(TlsError::ClientKey { path: key, source }))?;
        return Ok(Some((chain, key)));
    }
    Ok(None)
}

pub(crate) fn client_config(
    verify: bool,
    cert_dir: Option<&Path>,
    registry: &str,
) -> Result<Arc<ClientConfig>, SourceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(registry)(TlsError::Protocols(e)))?;
    let client = client_pair(cert_dir, registry)?;
    let tls_err = tls_err(registry);
    let client_auth = |e| tls_err(TlsError::ClientAuth(e));
    if !verify {
        let b = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)));
        return Ok(Arc::new(match client {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).map_err(client_auth)?,
            None => b.with_no_client_auth(),
        }));
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for b in SYSTEM_BUNDLES {
        if let Ok(certs) = CertificateDer::pem_file_iter(b) {
            for c in certs.flatten() {
                let _ = roots.add(c);
            }
        }
    }
    for f in ca_files(cert_dir, registry) {
        let certs = CertificateDer::pem_file_iter(&f).map_err(|source| {
            tls_err(TlsError::CaFile {
                path: f.clone(),
                source,
            })
        })?;
        for c in certs {
            let c = c.map_err(|source| {
                tls_err(TlsError::BadCa {
                    path: f.clone(),
                    source,
                })
            })?;
            roots.add(c).map_err(|source| {
                tls_err(TlsError::UnusableCa {
                    path: f.clone(),
                    source,
                })
            })?;
        }
    }
    let b = builder.with_root_certificates(roots);
    Ok(Arc::new(match client {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).map_err(client_auth)?,
        None => b.with_no_client_auth(),
    }))
}

/// Accepts any certificate (`--tls-verify=false`); signatures are still checked so the
/// handshake itself is sound.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
