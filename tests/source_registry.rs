//! d2v's image sources against real tools: Debian's docker-registry (plain HTTP, TLS + basic
//! auth, bearer tokens), skopeo-made docker-archive and oci-archive files, and hand-made OCI
//! layouts (gzip, zstd and uncompressed layers, multi-platform indexes).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use d2v::source::{open_layer, resolve, Image, Platform, SourceError, SourceOptions};
use sha2::{Digest, Sha256};
use testkit::oci::{self, Compression, ImageSpec, WrittenImage};
use testkit::registry::{Kind, Registry};
use testkit::tar::Entry;

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A tar archive of regular files.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    testkit::tar::tar(
        &files
            .iter()
            .map(|(n, d)| Entry::file(n, d))
            .collect::<Vec<_>>(),
    )
}

/// What one hand-made image is made of: the layout's blobs and the layers' tars.
struct Made {
    image: WrittenImage,
    layer_tars: Vec<Vec<u8>>,
}

/// The image of `platform` (`os/arch`) whose layers are `layers` (tar contents, compressed as
/// given), as testkit's layout writer writes it.
fn spec(platform: &str, layers: &[(Vec<u8>, Compression)]) -> ImageSpec {
    let (os, arch) = platform.split_once('/').expect("os/arch");
    let mut spec = ImageSpec::new()
        .entrypoint(&["/bin/app"])
        .env(&["PATH=/usr/bin"]);
    (spec.os, spec.architecture) = (os.into(), arch.into());
    layers
        .iter()
        .fold(spec, |spec, (t, c)| spec.layer(t.clone(), *c))
}

/// Writes `spec(platform, layers)` into the OCI layout `dir`, as `tag` or untagged.
fn write(dir: &Path, platform: &str, layers: &[(Vec<u8>, Compression)], tag: Option<&str>) -> Made {
    let mut spec = spec(platform, layers);
    spec.tag = tag.map(str::to_string);
    Made {
        image: oci::write_image(dir, &spec).unwrap(),
        layer_tars: layers.iter().map(|(t, _)| t.clone()).collect(),
    }
}

/// A registry of `kind` serving [`three_layers`]`(salt)` as `repo_tag`, pushed from the OCI
/// layout `tmp/oci` (tag `v1`).
fn serve(kind: Kind, tmp: &Path, salt: &str, repo_tag: &str) -> (Registry, Made) {
    let layers = three_layers(salt);
    let spec = spec("linux/amd64", &layers).tag("v1");
    let (reg, image) = Registry::with_image(kind, &tmp.join("oci"), &spec, repo_tag);
    let layer_tars = layers.into_iter().map(|(t, _)| t).collect();
    (reg, Made { image, layer_tars })
}

fn three_layers(salt: &str) -> Vec<(Vec<u8>, Compression)> {
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    vec![
        (
            tar(&[
                ("etc/os-release", format!("ID=test-{salt}\n").as_bytes()),
                ("bin/big", &big),
            ]),
            Compression::Gzip,
        ),
        (tar(&[("etc/hostname", b"zstd-layer\n")]), Compression::Zstd),
        (
            tar(&[("srv/plain", b"uncompressed layer\n")]),
            Compression::None,
        ),
    ]
}

fn opts(cache: &Path) -> SourceOptions {
    SourceOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

fn read_layer(img: &Image, i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    open_layer(&img.layers[i])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Checks an image against what was made: diff_ids, layer streams.
fn check_image(img: &Image, made: &Made) {
    assert_eq!(img.layers.len(), made.layer_tars.len());
    for (i, t) in made.layer_tars.iter().enumerate() {
        assert_eq!(img.layers[i].diff_id, sha(t));
        assert_eq!(read_layer(img, i), *t, "layer {i}");
        assert!(img.layers[i].path.is_file());
    }
    assert_eq!(
        img.config.config.entrypoint.as_deref(),
        Some(&["/bin/app".to_string()][..])
    );
}

fn blob_gets(reg: &Registry) -> Vec<String> {
    reg.requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET" && (r.path.contains("/blobs/") || r.path.contains("/manifests/"))
        })
        .map(|r| r.path)
        .collect()
}

#[test]
fn plain_registry_pull_verify_and_cache_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::Plain, tmp.path(), "plain", "test/app:v1");
    reg.clear_requests();

    let cache = tmp.path().join("cache");
    let img = resolve(&format!("docker://{}/test/app:v1", reg.host), &opts(&cache)).unwrap();
    check_image(&img, &made);
    // skopeo may recompress layers when pushing: compare with what the registry serves.
    assert_eq!(img.manifest_digest, reg.digest("test/app:v1"));
    assert_eq!(img.reference, format!("{}/test/app:v1", reg.host));
    assert_eq!(img.platform.to_string(), "linux/amd64");
    let types: Vec<&str> = img.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert!(
        types.iter().any(|t| t.ends_with("gzip")) && types.iter().any(|t| t.ends_with("zstd")),
        "{types:?}"
    );
    for l in &img.layers {
        assert!(l.path.starts_with(&cache));
    }
    let first = blob_gets(&reg);
    assert_eq!(
        first.iter().filter(|p| p.contains("/blobs/")).count(),
        4,
        "config + 3 layers: {first:?}"
    );

    // A second pull of the same tag downloads nothing.
    reg.clear_requests();
    let again = resolve(&format!("{}/test/app:v1", reg.host), &opts(&cache)).unwrap();
    assert_eq!(again.manifest_digest, img.manifest_digest);
    let second = blob_gets(&reg);
    assert!(second.is_empty(), "second pull downloaded {second:?}");
    assert!(
        !reg.requests().is_empty(),
        "the tag is still checked with the registry"
    );

    // By digest: nothing at all is asked of the registry.
    reg.clear_requests();
    resolve(
        &format!("{}/test/app@{}", reg.host, img.manifest_digest),
        &opts(&cache),
    )
    .unwrap();
    assert_eq!(reg.requests(), vec![]);

    // A missing tag is a clear 404.
    let e = resolve(&format!("{}/test/app:nope", reg.host), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("test/app:nope"), "{e}");
    let e = resolve(&format!("{}/test/missing:v1", reg.host), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::NotFound { .. }), "{e}");
}

#[test]
fn platform_selection_from_an_index() {
    let reg = Registry::start(Kind::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let lay = tmp.path().join("oci");
    let amd = write(
        &lay,
        "linux/amd64",
        &[(tar(&[("arch", b"amd64\n")]), Compression::Gzip)],
        None,
    );
    let arm = write(
        &lay,
        "linux/arm64",
        &[(tar(&[("arch", b"arm64\n")]), Compression::Zstd)],
        None,
    );
    oci::write_index(&lay, &[&arm.image, &amd.image], "multi").unwrap();
    reg.push(&format!("oci:{}:multi", lay.display()), "test/multi:1");
    let cache = tmp.path().join("cache");
    let src = format!("{}/test/multi:1", reg.host);

    let img = resolve(&src, &opts(&cache)).unwrap();
    check_image(&img, &amd);
    assert_eq!(img.manifest_digest, amd.image.manifest_digest);
    assert!(img.index_digest.is_some());
    let mut avail: Vec<String> = img
        .platforms_available
        .iter()
        .map(|p| p.to_string())
        .collect();
    avail.sort();
    assert_eq!(avail, ["linux/amd64", "linux/arm64"]);

    let o = SourceOptions {
        platform: Platform::parse("linux/arm64/v8").unwrap(),
        ..opts(&cache)
    };
    let img = resolve(&src, &o).unwrap();
    check_image(&img, &arm);

    let o = SourceOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..opts(&cache)
    };
    let e = resolve(&src, &o).unwrap_err();
    assert!(matches!(e, SourceError::NoPlatform { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/arm64") && msg.contains("linux/amd64"),
        "{msg}"
    );

    // The same index read straight from the layout directory.
    let img = resolve(&format!("oci:{}:multi", lay.display()), &opts(&cache)).unwrap();
    check_image(&img, &amd);
}

/// containers-registries.conf mirrors against real registries: the mirror that has the image
/// serves it (the registry the reference names is never asked), a mirror without it is passed
/// over (and reported) for the next place, and a blocked registry is refused.
#[test]
fn registries_conf_mirrors_and_blocked_registries() {
    use d2v::source::registries::RegistriesConf;
    let mirror = Registry::start(Kind::Plain);
    let empty = Registry::start(Kind::Plain);
    let origin = Registry::start(Kind::Plain);
    let tmp = tempfile::tempdir().unwrap();
    let lay = tmp.path().join("oci");
    let made = write(&lay, "linux/amd64", &three_layers("mirror"), Some("v1"));
    let oci = format!("oci:{}:v1", lay.display());
    mirror.push(&oci, "cache/team/app:v1");
    origin.push(&oci, "team/app:v1");
    let with = |text: &str| SourceOptions {
        registries: {
            let mut c = RegistriesConf::default();
            c.add(text, Path::new("test-registries.conf")).unwrap();
            c
        },
        ..opts(&tmp.path().join("cache"))
    };

    // The mirror has it: served from there, under the mirror's path prefix.
    let conf = format!(
        "[[registry]]\nlocation = \"{o}\"\n[[registry.mirror]]\nlocation = \"{m}/cache\"\n",
        o = origin.host,
        m = mirror.host
    );
    origin.clear_requests();
    let img = resolve(&format!("{}/team/app:v1", origin.host), &with(&conf)).unwrap();
    check_image(&img, &made);
    assert_eq!(img.reference, format!("{}/team/app:v1", origin.host));
    assert_eq!(
        img.pulled_from.as_deref(),
        Some(format!("{}/cache/team/app:v1 (mirror)", mirror.host).as_str())
    );
    assert!(img.endpoint_failures.is_empty());
    let asked = origin.requests();
    assert!(
        asked.is_empty(),
        "the registry the reference names was asked: {asked:?}"
    );

    // A mirror without the image: passed over, reported, and the registry itself serves it.
    let conf = format!(
        "[[registry]]\nlocation = \"{o}\"\n[[registry.mirror]]\nlocation = \"{e}\"\n",
        o = origin.host,
        e = empty.host
    );
    let img = resolve(&format!("{}/team/app:v1", origin.host), &with(&conf)).unwrap();
    check_image(&img, &made);
    assert_eq!(img.pulled_from, None);
    assert_eq!(
        img.endpoint_failures.len(),
        1,
        "{:?}",
        img.endpoint_failures
    );
    assert!(
        img.endpoint_failures[0].starts_with(&format!("{}/team/app:v1: ", empty.host)),
        "{:?}",
        img.endpoint_failures
    );

    // Nowhere has it: the error names the registry's failure and the mirror's before it.
    let e = resolve(&format!("{}/team/other:v1", origin.host), &with(&conf)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SourceError::MirrorsFailed { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{}/team/other:v1", empty.host))
            && msg.contains(&format!("{}/team/other", origin.host)),
        "{msg}"
    );

    // A location rewrite: the reference names a registry that does not exist.
    let conf = format!(
        "[[registry]]\nprefix = \"registry.invalid/team\"\nlocation = \"{o}/team\"\n",
        o = origin.host
    );
    let img = resolve("registry.invalid/team/app:v1", &with(&conf)).unwrap();
    check_image(&img, &made);
    assert_eq!(
        img.pulled_from.as_deref(),
        Some(format!("{}/team/app:v1", origin.host).as_str())
    );

    let conf = format!(
        "[[registry]]\nlocation = \"{o}\"\nblocked = true\n",
        o = origin.host
    );
    let e = resolve(&format!("{}/team/app:v1", origin.host), &with(&conf)).unwrap_err();
    assert!(matches!(e, SourceError::Blocked { .. }), "{e}");
    assert!(e.to_string().contains("test-registries.conf"), "{e}");
}

#[test]
fn tls_registry_with_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::TlsBasic, tmp.path(), "tls", "secure/app:v1");
    let src = format!("docker://{}/secure/app:v1", reg.host);
    let cache = tmp.path().join("cache");

    // Verified TLS with the test CA, and the right credentials.
    let o = SourceOptions {
        cert_dir: Some(reg.ca_dir()),
        creds: reg.creds(),
        ..opts(&cache)
    };
    let img = resolve(&src, &o).unwrap();
    check_image(&img, &made);

    // Credentials from an auth file (docker config.json format) work too.
    let authfile = tmp.path().join("auth.json");
    let b64 = base64_std(reg.creds().unwrap().as_bytes());
    std::fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host),
    )
    .unwrap();
    let o2 = SourceOptions {
        cert_dir: Some(reg.ca_dir()),
        authfile: Some(authfile),
        ..opts(&tmp.path().join("c2"))
    };
    check_image(&resolve(&src, &o2).unwrap(), &made);

    // No credentials: 401, and the message says what to do.
    let o = SourceOptions {
        cert_dir: Some(reg.ca_dir()),
        authfile: Some(tmp.path().join("none.json")),
        ..opts(&cache)
    };
    std::fs::write(tmp.path().join("none.json"), "{}").unwrap();
    let e = resolve(&src, &o).unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("--creds"), "{e}");

    // Wrong password: 401, and the secret is never printed.
    let o = SourceOptions {
        cert_dir: Some(reg.ca_dir()),
        creds: Some("d2vtest:wrong-pw-xyz".into()),
        ..opts(&cache)
    };
    let e = resolve(&src, &o).unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong-pw-xyz"));

    // Without the CA the certificate is refused; --tls-verify=false gets through.
    let o = SourceOptions {
        creds: reg.creds(),
        ..opts(&cache)
    };
    let e = resolve(&src, &o).unwrap_err();
    assert!(matches!(e, SourceError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("--cert-dir"), "{e}");
    assert!(
        has_cause::<ureq::Transport>(&e) && has_cause::<rustls::Error>(&e),
        "{e:?}"
    );
    let o = SourceOptions {
        creds: reg.creds(),
        tls_verify: false,
        ..opts(&tmp.path().join("c3"))
    };
    check_image(&resolve(&src, &o).unwrap(), &made);
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn bearer_token_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::Token, tmp.path(), "token", "private/app:v1");
    let src = format!("{}/private/app:v1", reg.host);
    let cache = tmp.path().join("cache");
    reg.clear_requests();

    let o = SourceOptions {
        creds: reg.creds(),
        ..opts(&cache)
    };
    let img = resolve(&src, &o).unwrap();
    check_image(&img, &made);
    let reqs = reg.requests();
    let tokens: Vec<_> = reqs.iter().filter(|r| r.method == "TOKEN").collect();
    assert_eq!(tokens.len(), 1, "one token for the whole pull: {reqs:?}");
    assert!(
        tokens[0].path.contains("repository%3Aprivate%2Fapp%3Apull"),
        "{:?}",
        tokens[0]
    );
    assert!(reqs
        .iter()
        .any(|r| r.method == "GET" && r.path.contains("/blobs/") && r.status == 200));

    // Anonymous: the issuer hands out a token without access, and the registry says 401.
    let e = resolve(&src, &opts(&tmp.path().join("c2"))).unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("private/app"), "{e}");
    let o = SourceOptions {
        creds: Some("d2vtest:nope".into()),
        ..opts(&tmp.path().join("c2"))
    };
    let e = resolve(&src, &o).unwrap_err();
    assert!(e.to_string().contains("rejected"), "{e}");

    // Anonymous bearer flow (as on Docker Hub): a public repository pulls without credentials.
    let lay = tmp.path().join("oci");
    reg.push(&format!("oci:{}:v1", lay.display()), "public/app:v1");
    reg.clear_requests();
    let img = resolve(
        &format!("{}/public/app:v1", reg.host),
        &opts(&tmp.path().join("c3")),
    )
    .unwrap();
    check_image(&img, &made);
    assert_eq!(
        reg.requests()
            .iter()
            .filter(|r| r.method == "TOKEN")
            .count(),
        1
    );
}

#[test]
fn identity_token_from_the_auth_file() {
    // What `docker login` stores for a registry handing out OAuth2 refresh tokens (`az acr
    // login`): a user without a password and an `identitytoken`. d2v must trade the token for
    // a bearer token with a refresh_token grant, never send it as a password.
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::Token, tmp.path(), "identity", "private/idt:v1");
    let src = format!("{}/private/idt:v1", reg.host);
    let authfile = |token: &str| {
        let f = tmp.path().join(format!("config-{token}.json"));
        let auth = base64_std(b"00000000-0000-0000-0000-000000000000:");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{auth}","identitytoken":"{token}"}}}}}}"#,
                reg.host
            ),
        )
        .unwrap();
        f
    };
    reg.clear_requests();
    let o = SourceOptions {
        authfile: Some(authfile(testkit::registry::IDENTITY_TOKEN)),
        ..opts(&tmp.path().join("c1"))
    };
    let img = resolve(&src, &o).unwrap();
    check_image(&img, &made);
    let reqs = reg.requests();
    let grants = reqs.iter().filter(|r| r.method == "TOKEN-REFRESH").count();
    assert_eq!(grants, 1, "one refresh_token grant for the pull: {reqs:?}");
    assert!(
        !reqs.iter().any(|r| r.method == "TOKEN"),
        "no GET token request with basic auth: {reqs:?}"
    );

    // A revoked or wrong identity token: a clear 401, not a retry loop.
    let o = SourceOptions {
        authfile: Some(authfile("not-the-token")),
        ..opts(&tmp.path().join("c2"))
    };
    let e = resolve(&src, &o).unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("rejected") && !msg.contains("not-the-token"),
        "{msg}"
    );
}

#[test]
fn registry_through_an_http_proxy() {
    // A TLS registry with basic auth, reachable only as registry.test (a name that resolves
    // nowhere but in the proxy, which maps it to loopback; the certificate names it): the pull
    // must tunnel through the proxy, with the proxy's credentials.
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::TlsBasic, tmp.path(), "proxied", "team/app:v1");
    let port = reg.host.rsplit(':').next().unwrap();
    let src = format!("registry.test:{port}/team/app:v1");
    let proxy = testkit::proxy::Proxy::start(&[("registry.test", "127.0.0.1")], Some("pu:ppw"));
    let via = |cache: &str, no_proxy: &[&str], proxy_creds: &str| SourceOptions {
        creds: reg.creds(),
        cert_dir: Some(reg.ca_dir()),
        proxy: d2v::source::proxy::ProxyConfig {
            https: Some(proxy.url(Some(proxy_creds))),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..opts(&tmp.path().join(cache))
    };

    let img = resolve(&src, &via("c1", &["other.example"], "pu:ppw")).unwrap();
    check_image(&img, &made);
    let seen = proxy.requests();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| r.method == "CONNECT" && r.target == format!("registry.test:{port}")),
        "every connection tunnels to the registry: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r
            .proxy_authorization
            .as_deref()
            .and_then(|a| a.split_once(' '))
            .is_some_and(
                |(scheme, creds)| scheme.eq_ignore_ascii_case("basic") && creds == "cHU6cHB3"
            )), // pu:ppw
        "every CONNECT carries the proxy credentials: {seen:?}"
    );

    // Wrong proxy credentials: an error that names the proxy, never its password, at once
    // (another attempt would be refused the same way).
    let before = proxy.requests().len();
    let e = resolve(&src, &via("c2", &[], "pu:nope")).unwrap_err();
    assert_eq!(proxy.requests().len(), before + 1, "{:?}", proxy.requests());
    let msg = e.to_string();
    assert!(
        msg.contains("through the proxy http://<credentials>@127.0.0.1"),
        "{msg}"
    );
    assert!(!msg.contains("nope") && !msg.contains("pu:"), "{msg}");

    // NO_PROXY: reached directly, where the name does not resolve.
    let before = proxy.requests().len();
    let e = resolve(&src, &via("c3", &["other.example", ".test"], "pu:ppw")).unwrap_err();
    assert!(matches!(e, SourceError::Network { .. }), "{e}");
    assert!(has_cause::<ureq::Transport>(&e), "{e:?}");
    assert!(!e.to_string().contains("through the proxy"), "{e}");
    assert_eq!(
        proxy.requests().len(),
        before,
        "a NO_PROXY host went through the proxy"
    );

    // The loopback address never goes through the proxy (here a dead one).
    let o = SourceOptions {
        creds: reg.creds(),
        cert_dir: Some(reg.ca_dir()),
        proxy: d2v::source::proxy::ProxyConfig {
            https: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
        ..opts(&tmp.path().join("c4"))
    };
    let img = resolve(&format!("{}/team/app:v1", reg.host), &o).unwrap();
    check_image(&img, &made);
}

#[test]
fn client_certificate_registry() {
    // Mutual TLS: the registry accepts only clients with a certificate from its CA.
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::TlsClientCert, tmp.path(), "mtls", "team/app:v1");
    let src = format!("{}/team/app:v1", reg.host);
    let with = |dir: PathBuf, cache: &str| SourceOptions {
        cert_dir: Some(dir),
        ..opts(&tmp.path().join(cache))
    };

    // The CA alone: the handshake fails, and the message says what is missing.
    let e = resolve(&src, &with(reg.ca_dir(), "c1")).unwrap_err();
    assert!(matches!(e, SourceError::Tls { .. }), "{e}");
    assert!(has_cause::<rustls::Error>(&e), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("client certificate") && msg.contains(".cert"),
        "{msg}"
    );

    // The CA and client.cert/client.key, as containers-certs.d lays them out.
    let img = resolve(&src, &with(reg.client_cert_dir(), "c2")).unwrap();
    check_image(&img, &made);

    // A certificate without its key is named.
    let lonely = tmp.path().join("lonely");
    std::fs::create_dir_all(&lonely).unwrap();
    for f in ["ca.crt", "client.cert"] {
        std::fs::copy(reg.client_cert_dir().join(f), lonely.join(f)).unwrap();
    }
    let e = resolve(&src, &with(lonely.clone(), "c3")).unwrap_err();
    assert!(e.to_string().contains("client.key"), "{e}");
}

#[test]
fn tampered_blob_in_registry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, made) = serve(Kind::Plain, tmp.path(), "tamper", "test/tamper:v1");
    // Flip one byte in the middle of the second layer (same length, so only the digest tells).
    let victim = &made.image.layers[1].digest;
    let p = reg.blob_data(victim);
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&p, &b).unwrap();

    let cache = tmp.path().join("cache");
    let e = resolve(&format!("{}/test/tamper:v1", reg.host), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(victim.as_str()) && msg.contains("layer 2"),
        "{msg}"
    );
    assert!(
        !cache.join("blobs/sha256").join(&victim[7..]).exists(),
        "unverified blob cached"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("tmp")).unwrap().count(),
        0,
        "temp files left"
    );

    // A manifest changed in the registry's storage: the served bytes no longer match the
    // digest the registry announces for the tag.
    let md = reg.digest("test/tamper:v1");
    let p = reg.blob_data(&md);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("config.v1+json"));
    std::fs::write(&p, text.replacen("config.v1+json", "config.v9+json", 1)).unwrap();
    let e = resolve(
        &format!("{}/test/tamper:v1", reg.host),
        &opts(&tmp.path().join("c2")),
    )
    .unwrap_err();
    assert!(matches!(e, SourceError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&md), "{e}");
}

fn skopeo(args: &[&str]) {
    testkit::require_tool("skopeo", "skopeo");
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// skopeo's directory transport: `skopeo copy … dir:DIR` (one image), and `--all` (the index
/// as manifest.json, each platform's manifest as `<hex>.manifest.json`).
#[test]
fn dir_made_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let lay = tmp.path().join("oci");
    let mut layers = three_layers("dir");
    layers[1].1 = Compression::Gzip;
    let made = write(&lay, "linux/amd64", &layers, Some("v1"));
    let arm = write(
        &lay,
        "linux/arm64",
        &[(tar(&[("arch", b"arm64\n")]), Compression::Zstd)],
        None,
    );
    oci::write_index(&lay, &[&arm.image, &made.image], "multi").unwrap();
    let cache = tmp.path().join("cache");

    let one = tmp.path().join("one");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", lay.display()),
        &format!("dir:{}", one.display()),
    ]);
    let img = resolve(&format!("dir:{}", one.display()), &opts(&cache)).unwrap();
    check_image(&img, &made);
    assert_eq!(img.manifest_digest, made.image.manifest_digest);

    let all = tmp.path().join("all");
    skopeo(&[
        "copy",
        "--all",
        &format!("oci:{}:multi", lay.display()),
        &format!("dir:{}", all.display()),
    ]);
    let img = resolve(&format!("dir:{}", all.display()), &opts(&cache)).unwrap();
    check_image(&img, &made);
    assert!(img.index_digest.is_some());
    let o = SourceOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..opts(&cache)
    };
    let img = resolve(&format!("dir:{}", all.display()), &o).unwrap();
    check_image(&img, &arm);

    // An OCI layout given as dir: is named for what it is.
    let e = resolve(&format!("dir:{}", lay.display()), &opts(&cache)).unwrap_err();
    assert!(e.to_string().contains("use oci:DIR"), "{e}");
    // A blob missing from the directory is named.
    let layer = made.image.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::remove_file(one.join(&layer)).unwrap();
    let e = resolve(
        &format!("dir:{}", one.display()),
        &opts(&tmp.path().join("cache2")),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(&layer) && e.to_string().contains("missing"),
        "{e}"
    );
    // Read in place: nothing went into the cache.
    assert!(!cache.exists());
}

#[test]
fn docker_and_oci_archives_made_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let lay = tmp.path().join("oci");
    // skopeo writes no zstd layers into docker archives: gzip and uncompressed only.
    let mut layers = three_layers("archive");
    layers[1].1 = Compression::Gzip;
    let made = write(&lay, "linux/amd64", &layers, Some("v1"));
    let oci = format!("oci:{}:v1", lay.display());
    let da = tmp.path().join("img.docker.tar");
    let oa = tmp.path().join("img.oci.tar");
    skopeo(&[
        "copy",
        &oci,
        &format!("docker-archive:{}:test/app:v1", da.display()),
    ]);
    skopeo(&["copy", &oci, &format!("oci-archive:{}:v1", oa.display())]);
    let cache = tmp.path().join("cache");

    let img = resolve(&format!("docker-archive:{}", da.display()), &opts(&cache)).unwrap();
    check_image(&img, &made);
    // Deterministic: the synthesized manifest digest is the same on a second read.
    let again = resolve(&format!("docker-archive:{}", da.display()), &opts(&cache)).unwrap();
    assert_eq!(again.manifest_digest, img.manifest_digest);
    let by_tag = resolve(
        &format!("docker-archive:{}:test/app:v1", da.display()),
        &opts(&cache),
    )
    .unwrap();
    assert_eq!(by_tag.manifest_digest, img.manifest_digest);

    let img = resolve(&format!("oci-archive:{}:v1", oa.display()), &opts(&cache)).unwrap();
    check_image(&img, &made);
    let untagged = resolve(&format!("oci-archive:{}", oa.display()), &opts(&cache)).unwrap();
    assert_eq!(untagged.manifest_digest, img.manifest_digest);
    let e = resolve(&format!("oci-archive:{}:nope", oa.display()), &opts(&cache)).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    // Read in place: the layers are the archives' members, the cache was never made.
    assert_eq!(img.layers[0].path, oa);
    assert!(img.layers[0].offset > 0);
    assert!(!cache.exists());
}

#[test]
fn bad_layouts_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");

    // An oversized manifest.
    let lay = tmp.path().join("big");
    let pad = "x".repeat(5 << 20);
    let m = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha(b"{}"), "size": 2}, "layers": [], "annotations": {"pad": pad}});
    let b = serde_json::to_vec(&m).unwrap();
    let (d, size) = oci::write_blob(&lay, &b).unwrap();
    let desc =
        serde_json::json!({"mediaType": oci::MANIFEST_MEDIA_TYPE, "digest": d, "size": size});
    oci::add_to_index(&lay, desc, Some("big")).unwrap();
    let e = resolve(&format!("oci:{}:big", lay.display()), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");

    // A schema1 manifest.
    let lay = tmp.path().join("s1");
    let b = br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[],"history":[]}"#;
    let (d, size) = oci::write_blob(&lay, b).unwrap();
    let desc = serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.v1+json", "digest": d, "size": size});
    oci::add_to_index(&lay, desc, Some("old")).unwrap();
    let e = resolve(&format!("oci:{}:old", lay.display()), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::Schema1 { .. }), "{e}");

    // A layer blob changed on disk after the manifest was written.
    let lay = tmp.path().join("bad");
    let made = write(&lay, "linux/amd64", &three_layers("bad"), Some("v1"));
    let p = oci::blob_path(&lay, &made.image.layers[2].digest);
    let mut b = std::fs::read(&p).unwrap();
    b[0] ^= 1;
    std::fs::write(&p, &b).unwrap();
    // Read in place, it is refused as it is read, by name.
    let img = resolve(&format!("oci:{}:v1", lay.display()), &opts(&cache)).unwrap();
    let e = d2v::source::verify_layer(&img.layers[2]).unwrap_err();
    assert!(e.to_string().contains(&made.image.layers[2].digest), "{e}");
    assert!(e.to_string().contains("diff_id"), "{e}");

    // Only an arm64 image, and linux/amd64 asked for (the default).
    let lay = tmp.path().join("arm");
    let made = write(
        &lay,
        "linux/arm64",
        &[(tar(&[("a", b"a")]), Compression::Gzip)],
        None,
    );
    let mut desc = made.image.descriptor.clone();
    desc.as_object_mut().unwrap().remove("platform");
    oci::add_to_index(&lay, desc, Some("v1")).unwrap();
    let e = resolve(&format!("oci:{}:v1", lay.display()), &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::NoPlatform { .. }), "{e}");

    // Missing layout, unknown transport.
    assert!(resolve(
        &format!("oci:{}", tmp.path().join("nothing").display()),
        &opts(&cache)
    )
    .is_err());
    let e = resolve("ftp://example.com/x", &opts(&cache)).unwrap_err();
    assert!(matches!(e, SourceError::UnknownTransport { .. }), "{e}");
}

/// Whether `e`'s causes hold a `T`, following `source()` and what an `io::Error` carries.
fn has_cause<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |&e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(carried) => Some(carried as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
    .any(|c| c.is::<T>())
}
