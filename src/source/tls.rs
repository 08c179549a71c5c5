//! TLS for registries: webpki roots plus the system's CA bundle plus `--cert-dir` CAs
//! (`*.crt`, as in containers' certs.d), or no verification with `--tls-verify=false`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::SourceError;

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The `*.crt` files to trust for `registry`: `cert_dir/*.crt`, `cert_dir/<registry>/*.crt`,
/// and the system-wide `/etc/containers/certs.d/<registry>/` and `/etc/docker/certs.d/<registry>/`.
fn ca_files(cert_dir: Option<&Path>, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = cert_dir {
        dirs.push(d.to_path_buf());
        dirs.push(d.join(registry));
    }
    dirs.push(Path::new("/etc/containers/certs.d").join(registry));
    dirs.push(Path::new("/etc/docker/certs.d").join(registry));
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut v: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

pub(crate) fn client_config(
    verify: bool,
    cert_dir: Option<&Path>,
    registry: &str,
) -> Result<Arc<ClientConfig>, SourceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Tls {
            registry: registry.to_string(),
            why: e.to_string(),
        })?;
    if !verify {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
        ));
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
        let certs = CertificateDer::pem_file_iter(&f).map_err(|e| SourceError::Tls {
            registry: registry.to_string(),
            why: format!("cannot read CA file {}: {e}", f.display()),
        })?;
        for c in certs {
            let c = c.map_err(|e| SourceError::Tls {
                registry: registry.to_string(),
                why: format!("bad certificate in {}: {e}", f.display()),
            })?;
            roots.add(c).map_err(|e| SourceError::Tls {
                registry: registry.to_string(),
                why: format!("unusable CA certificate in {}: {e}", f.display()),
            })?;
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
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
