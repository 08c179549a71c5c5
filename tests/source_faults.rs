//! Network faults a real registry does not produce on demand: a loopback HTTP server that
//! answers 503/429, cuts blob bodies short, honours Range requests and redirects blob downloads
//! to a storage server on another host. Checks retries with backoff, resume with Range,
//! truncated blobs (and the next run resuming what they left), that credentials are not sent
//! to the storage host, and a docker-archive in the Docker 25 format (OCI layout inside the tar).

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use d2v::source::{open_layer, resolve, SourceError, SourceOptions};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// How the server misbehaves for one path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Answer 503 (with Retry-After: 0) this many times first.
    Unavailable(u32),
    /// Answer 429 this many times first.
    TooMany(u32),
    /// Send the headers of the full body but only half of it, then close, this many times.
    CutShort(u32),
    /// Always cut the body short.
    AlwaysCut,
    /// Always answer 403 (the credentials are fine but may not pull this).
    Forbidden,
    /// Read the request and send nothing, until the client hangs up.
    Silent,
    /// Send the headers and half the body, then nothing until the client hangs up.
    Stall,
    /// Send the headers and half the body, then one byte a second.
    Trickle,
    /// Send the status line, then a header that never ends, a byte every half second.
    TrickleHeaders,
}

#[derive(Default)]
struct Server {
    files: BTreeMap<String, (Vec<u8>, &'static str)>,
    faults: BTreeMap<String, Fault>,
    /// When set, every path but /v2/ wants this Authorization header (basic challenge).
    require_auth: Option<String>,
    /// (method, path, range header) of every request.
    log: Vec<(String, String, Option<String>)>,
    /// Paths answered with `307 Temporary Redirect` to this location (after the auth check),
    /// as registries send blob downloads to a storage service or CDN.
    redirects: BTreeMap<String, String>,
    /// Refuse requests carrying an Authorization header with 400, as a storage service does
    /// for a pre-signed URL ("only one auth mechanism allowed").
    reject_auth: bool,
    /// The Authorization header of every request (None: not sent).
    auth_seen: Vec<Option<String>>,
}

fn serve(server: Arc<Mutex<Server>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let server = server.clone();
            std::thread::spawn(move || {
                // A TLS ClientHello (d2v tries https first): hang up like a plain-HTTP server would.
                let mut first_byte = [0u8; 1];
                if s.peek(&mut first_byte).unwrap_or(0) == 1 && first_byte[0] == 0x16 {
                    return;
                }
                let mut r = BufReader::new(s.try_clone().unwrap());
                let head = testkit::http::read_request_head(&mut r).unwrap_or_default();
                let range = head.header("range").map(str::to_string);
                let authz = head.header("authorization").map(str::to_string);
                let (method, path) = (head.method, head.path);
                let (file, fault, denied, redirect, refused) = {
                    let mut sv = server.lock().unwrap();
                    sv.log.push((method.clone(), path.clone(), range.clone()));
                    sv.auth_seen.push(authz.clone());
                    let denied =
                        path != "/v2/" && sv.require_auth.is_some() && sv.require_auth != authz;
                    let redirect = sv.redirects.get(&path).cloned();
                    let refused = sv.reject_auth && authz.is_some();
                    let fault = sv.faults.get(&path).copied();
                    let next = match fault {
                        Some(Fault::Unavailable(n)) if n > 1 => Some(Fault::Unavailable(n - 1)),
                        Some(Fault::TooMany(n)) if n > 1 => Some(Fault::TooMany(n - 1)),
                        Some(Fault::CutShort(n)) if n > 1 => Some(Fault::CutShort(n - 1)),
                        Some(
                            f @ (Fault::AlwaysCut
                            | Fault::Forbidden
                            | Fault::Silent
                            | Fault::Stall
                            | Fault::Trickle
                            | Fault::TrickleHeaders),
                        ) => Some(f),
                        _ => None,
                    };
                    match next {
                        Some(f) => sv.faults.insert(path.clone(), f),
                        None => sv.faults.remove(&path),
                    };
                    (
                        sv.files.get(&path).cloned(),
                        fault,
                        denied,
                        redirect,
                        refused,
                    )
                };
                let reply =
                    |s: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]| {
                        let _ =
                            write!(s, "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n");
                        if method != "HEAD" {
                            let _ = s.write_all(body);
                        }
                    };
                if fault == Some(Fault::Silent) {
                    let _ = s.read(&mut [0u8; 1]); // until the client hangs up
                    return;
                }
                if denied {
                    reply(
                        &mut s,
                        "401 Unauthorized",
                        "WWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n",
                        b"",
                    );
                    return;
                }
                if let Some(location) = redirect {
                    reply(
                        &mut s,
                        "307 Temporary Redirect",
                        &format!("Location: {location}\r\nContent-Length: 0\r\n"),
                        b"",
                    );
                    return;
                }
                if refused {
                    let body = b"only one auth mechanism allowed";
                    reply(
                        &mut s,
                        "400 Bad Request",
                        &format!("Content-Length: {}\r\n", body.len()),
                        body,
                    );
                    return;
                }
                match (file, fault) {
                    (_, Some(Fault::Unavailable(_))) => reply(
                        &mut s,
                        "503 Service Unavailable",
                        "Retry-After: 0\r\nContent-Length: 0\r\n",
                        b"",
                    ),
                    (_, Some(Fault::Forbidden)) => {
                        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
                        reply(
                            &mut s,
                            "403 Forbidden",
                            &format!("Content-Length: {}\r\n", body.len()),
                            body,
                        )
                    }
                    (_, Some(Fault::TooMany(_))) => reply(
                        &mut s,
                        "429 Too Many Requests",
                        "Content-Length: 0\r\n",
                        b"",
                    ),
                    (None, _) => reply(&mut s, "404 Not Found", "Content-Length: 2\r\n", b"{}"),
                    (Some((body, ct)), fault) => {
                        let from = range
                            .as_deref()
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.strip_suffix('-'))
                            .and_then(|r| r.parse::<usize>().ok())
                            .filter(|f| *f < body.len());
                        let (status, part, extra) = match from {
                            Some(f) => (
                                "206 Partial Content",
                                &body[f..],
                                format!(
                                    "Content-Range: bytes {f}-{}/{}\r\n",
                                    body.len() - 1,
                                    body.len()
                                ),
                            ),
                            None => ("200 OK", &body[..], String::new()),
                        };
                        let digest = sha(&body);
                        let headers = format!(
                            "Content-Type: {ct}\r\nDocker-Content-Digest: {digest}\r\nContent-Length: {}\r\n{extra}",
                            part.len()
                        );
                        if fault == Some(Fault::TrickleHeaders) {
                            let _ = write!(s, "HTTP/1.1 {status}\r\nX-Slow: ");
                            while s.write_all(b"a").is_ok() {
                                std::thread::sleep(std::time::Duration::from_millis(500));
                            }
                        } else if matches!(fault, Some(Fault::Stall | Fault::Trickle)) {
                            let _ = write!(
                                s,
                                "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n"
                            );
                            let _ = s.write_all(&part[..part.len() / 2]);
                            if fault == Some(Fault::Stall) {
                                let _ = s.read(&mut [0u8; 1]); // until the client hangs up
                            }
                            for b in &part[part.len() / 2..] {
                                std::thread::sleep(std::time::Duration::from_secs(1));
                                if s.write_all(&[*b]).is_err() {
                                    break;
                                }
                            }
                        } else if matches!(fault, Some(Fault::CutShort(_)) | Some(Fault::AlwaysCut))
                            && method == "GET"
                        {
                            let _ = write!(
                                s,
                                "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n"
                            );
                            let _ = s.write_all(&part[..part.len() / 2]);
                            let _ = s.shutdown(std::net::Shutdown::Both);
                        } else {
                            reply(&mut s, status, &headers, part);
                        }
                    }
                }
            });
        }
    });
    port
}

struct Img {
    server: Arc<Mutex<Server>>,
    host: String,
    layer_path: String,
    config_path: String,
    layer_tar: Vec<u8>,
}

impl Img {
    /// The Range header (if any) of each GET of the layer blob so far, in order.
    fn layer_get_ranges(&self) -> Vec<Option<String>> {
        let sv = self.server.lock().unwrap();
        sv.log
            .iter()
            .filter(|(m, p, _)| m == "GET" && *p == self.layer_path)
            .map(|(_, _, r)| r.clone())
            .collect()
    }
}

fn image() -> Img {
    let layer_tar: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&layer_tar).unwrap();
    let gz = e.finish().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(&layer_tar)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&gz), "size": gz.len()}],
    }))
    .unwrap();
    let mut sv = Server::default();
    sv.files
        .insert("/v2/".into(), (b"{}".to_vec(), "application/json"));
    sv.files.insert(
        "/v2/t/app/manifests/v1".into(),
        (manifest, "application/vnd.oci.image.manifest.v1+json"),
    );
    let config_path = format!("/v2/t/app/blobs/{}", sha(&config));
    let layer_path = format!("/v2/t/app/blobs/{}", sha(&gz));
    sv.files
        .insert(config_path.clone(), (config, "application/octet-stream"));
    sv.files
        .insert(layer_path.clone(), (gz, "application/octet-stream"));
    let server = Arc::new(Mutex::new(sv));
    let port = serve(server.clone());
    Img {
        server,
        host: format!("127.0.0.1:{port}"),
        layer_path,
        config_path,
        layer_tar,
    }
}

/// The first layer of a resolved image, decompressed.
fn first_layer(got: &d2v::source::Image) -> Vec<u8> {
    let mut out = Vec::new();
    open_layer(&got.layers[0])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn opts(dir: &std::path::Path) -> SourceOptions {
    SourceOptions {
        cache_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn retries_and_range_resume() {
    let img = image();
    {
        let mut sv = img.server.lock().unwrap();
        sv.faults.insert("/v2/".into(), Fault::Unavailable(1));
        sv.faults.insert(img.config_path.clone(), Fault::TooMany(2));
        sv.faults.insert(img.layer_path.clone(), Fault::CutShort(2));
    }
    let tmp = tempfile::tempdir().unwrap();
    let got = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap();
    assert_eq!(first_layer(&got), img.layer_tar);

    let layer_gets = img.layer_get_ranges();
    assert_eq!(layer_gets.len(), 3, "{layer_gets:?}");
    assert_eq!(layer_gets[0], None);
    // Each retry resumes where the previous body stopped.
    let r1 = layer_gets[1]
        .clone()
        .expect("second GET has a Range header");
    let r2 = layer_gets[2].clone().expect("third GET has a Range header");
    let log = img.server.lock().unwrap().log.clone();
    let off = |r: &str| {
        r.trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<u64>()
            .unwrap()
    };
    assert!(off(&r1) > 0 && off(&r2) > off(&r1), "{r1} {r2}");
    let config_gets = log
        .iter()
        .filter(|(m, p, _)| m == "GET" && *p == img.config_path)
        .count();
    assert_eq!(config_gets, 3, "two 429s then the config");
}

#[test]
fn repository_challenge_after_an_anonymous_ping() {
    // /v2/ answers 200 to anyone, but the repository wants basic auth.
    let img = image();
    img.server.lock().unwrap().require_auth = Some("Basic dTpw".into()); // u:p
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("{}/t/app:v1", img.host);
    let e = resolve(&src, &opts(tmp.path())).unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e}");
    let o = SourceOptions {
        creds: Some("u:p".into()),
        ..opts(tmp.path())
    };
    let got = resolve(&src, &o).unwrap();
    d2v::source::verify_layer(&got.layers[0]).unwrap();
}

/// A registry that wants basic auth and redirects the layer download to a storage server on
/// another host (`localhost` instead of `127.0.0.1`) that refuses any Authorization header,
/// as Docker Hub, ghcr.io and ECR do with pre-signed URLs. `cut` makes the storage server cut
/// the body short once, so the resumed download goes through the redirect again.
fn redirected_download(cut: bool) {
    let img = image();
    let mut cdn = Server {
        reject_auth: true,
        ..Server::default()
    };
    let blob_path = "/cdn/layer?X-Signature=abc".to_string();
    let gz = img.server.lock().unwrap().files[&img.layer_path].clone();
    cdn.files.insert(blob_path.clone(), gz);
    if cut {
        cdn.faults.insert(blob_path.clone(), Fault::CutShort(1));
    }
    let cdn = Arc::new(Mutex::new(cdn));
    let cdn_port = serve(cdn.clone());
    {
        let mut sv = img.server.lock().unwrap();
        sv.require_auth = Some("Basic dTpw".into()); // u:p
        sv.redirects.insert(
            img.layer_path.clone(),
            format!("http://localhost:{cdn_port}{blob_path}"),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let o = SourceOptions {
        creds: Some("u:p".into()),
        ..opts(tmp.path())
    };
    let got = resolve(&format!("{}/t/app:v1", img.host), &o).unwrap();
    assert_eq!(first_layer(&got), img.layer_tar);

    let cdn = cdn.lock().unwrap();
    let gets: Vec<_> = cdn.log.iter().filter(|(m, ..)| m == "GET").collect();
    assert_eq!(gets.len(), if cut { 2 } else { 1 }, "{gets:?}");
    assert!(gets.iter().all(|(_, p, _)| *p == blob_path), "{gets:?}");
    assert!(
        cdn.auth_seen.iter().all(Option::is_none),
        "credentials sent to another host: {:?}",
        cdn.auth_seen
    );
    if cut {
        let range = gets[1]
            .2
            .as_deref()
            .expect("the resumed GET has a Range header");
        assert!(
            range.starts_with("bytes=") && range != "bytes=0-",
            "{range}"
        );
    }
    // The registry itself got the layer request with the credentials.
    let reg = img.server.lock().unwrap();
    let authed = reg
        .log
        .iter()
        .zip(&reg.auth_seen)
        .any(|((m, p, _), a)| m == "GET" && *p == img.layer_path && a.is_some());
    assert!(authed, "{:?}", reg.log);
}

#[test]
fn redirected_blob_download_drops_credentials_for_the_other_host() {
    redirected_download(false);
}

#[test]
fn redirected_blob_download_resumes_through_the_redirect() {
    redirected_download(true);
}

#[test]
fn truncated_blob_gives_up_with_a_clear_error() {
    let img = image();
    img.server
        .lock()
        .unwrap()
        .faults
        .insert(img.layer_path.clone(), Fault::AlwaysCut);
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap_err();
    assert!(matches!(e, SourceError::SizeMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(img.layer_path.rsplit('/').next().unwrap()) && msg.contains("layer 1"),
        "{msg}"
    );
    // Nothing in the cache; what arrived is kept, for the next run to resume from.
    let hex = img.layer_path.rsplit(':').next().unwrap();
    assert!(!tmp.path().join("blobs/sha256").join(hex).exists());
    let partial = tmp.path().join("tmp").join(format!("{hex}.partial"));
    let kept = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        kept > 0,
        "no partial download kept at {}",
        partial.display()
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        1
    );

    // The next run (the server healthy again) asks only for the rest.
    img.server.lock().unwrap().faults.clear();
    img.server.lock().unwrap().log.clear();
    let got = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap();
    assert_eq!(first_layer(&got), img.layer_tar);
    assert_eq!(img.layer_get_ranges(), [Some(format!("bytes={kept}-"))]);
    assert!(!partial.exists(), "the partial file became the blob");
}

#[test]
fn wrong_bytes_in_a_partial_download_are_fetched_again() {
    // A partial file whose bytes are not the blob's (a disk error, another tool): the resumed
    // download fails its digest check, and d2v downloads the whole blob once more.
    let img = image();
    let tmp = tempfile::tempdir().unwrap();
    let hex = img.layer_path.rsplit(':').next().unwrap().to_string();
    std::fs::create_dir_all(tmp.path().join("tmp")).unwrap();
    std::fs::write(
        tmp.path().join("tmp").join(format!("{hex}.partial")),
        vec![0xAAu8; 1000],
    )
    .unwrap();
    let got = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap();
    assert_eq!(first_layer(&got), img.layer_tar);
    assert_eq!(
        img.layer_get_ranges(),
        [Some("bytes=1000-".to_string()), None]
    );

    // A partial file as long as the blob or longer: no Range past its end is asked for.
    for extra in [0usize, 10] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("tmp")).unwrap();
        let gz = img.server.lock().unwrap().files[&img.layer_path].0.clone();
        let mut partial = gz.clone();
        partial.extend(std::iter::repeat_n(0u8, extra));
        std::fs::write(
            tmp.path().join("tmp").join(format!("{hex}.partial")),
            &partial,
        )
        .unwrap();
        img.server.lock().unwrap().log.clear();
        let got = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap();
        assert_eq!(first_layer(&got), img.layer_tar);
        let want: Vec<Option<String>> = if extra == 0 { vec![] } else { vec![None] };
        assert_eq!(
            img.layer_get_ranges(),
            want,
            "partial {extra} bytes too long"
        );
    }
}

#[test]
fn access_denied_names_the_registry_and_is_not_retried() {
    let img = image();
    img.server
        .lock()
        .unwrap()
        .faults
        .insert("/v2/t/app/manifests/v1".into(), Fault::Forbidden);
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap_err();
    assert!(matches!(e, SourceError::Forbidden { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("access denied (403)") && msg.contains(&img.host),
        "{msg}"
    );
    let tries = img
        .server
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(_, p, _)| p == "/v2/t/app/manifests/v1")
        .count();
    assert_eq!(tries, 1, "a 403 is final");
}

#[test]
fn persistent_server_errors_are_reported() {
    let img = image();
    img.server
        .lock()
        .unwrap()
        .faults
        .insert(img.config_path.clone(), Fault::Unavailable(100));
    let tmp = tempfile::tempdir().unwrap();
    let e = resolve(&format!("{}/t/app:v1", img.host), &opts(tmp.path())).unwrap_err();
    assert!(matches!(e, SourceError::Http { status: 503, .. }), "{e}");
    assert!(e.to_string().contains("config"), "{e}");
}

#[test]
fn two_processes_share_the_cache() {
    // Two d2v processes (this test binary re-run as `child_resolve`) fill one cache at once.
    let img = image();
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("{}/t/app:v1", img.host);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--ignored", "--exact", "child_resolve", "--nocapture"])
                .env("D2V_CHILD_SRC", &src)
                .env("D2V_CHILD_CACHE", tmp.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let children: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in children {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let layer = img
        .layer_path
        .rsplit('/')
        .next()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert!(tmp.path().join("blobs/sha256").join(layer).is_file());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0
    );
}

/// The child half of `two_processes_share_the_cache`.
#[test]
#[ignore = "run as a child process by two_processes_share_the_cache"]
fn child_resolve() {
    // Run on its own (e.g. with --include-ignored) it has nothing to do.
    let Ok(src) = std::env::var("D2V_CHILD_SRC") else {
        return;
    };
    let cache = std::env::var("D2V_CHILD_CACHE").unwrap();
    let img = resolve(&src, &opts(std::path::Path::new(&cache))).unwrap();
    d2v::source::verify_layer(&img.layers[0]).unwrap();
}

/// Appends regular files (mode 0644) to an archive being built.
fn append_files<const N: usize>(
    b: &mut tar::Builder<std::fs::File>,
    files: [(String, Vec<u8>); N],
) {
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &name, &data[..]).unwrap();
    }
}

/// Resolves the docker-archive `f`, with its blob cache under `tmp`, which it never makes:
/// the layers are read in place, at their offsets in `f`.
fn resolve_archive(f: &std::path::Path, tmp: &std::path::Path) -> d2v::source::Image {
    let img = resolve(
        &format!("docker-archive:{}", f.display()),
        &opts(&tmp.join("c")),
    )
    .unwrap();
    assert!(img.layers.iter().all(|l| l.path == f && l.offset > 0));
    assert!(!tmp.join("c").exists());
    img
}

/// The image has one layer, of `media_type`, whose stream is `tar`.
fn check_only_layer(img: &d2v::source::Image, media_type: &str, tar: &[u8]) {
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].media_type, media_type);
    let mut out = Vec::new();
    open_layer(&img.layers[0])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, tar);
}

/// `docker-archive:FILE:NAME` is the same image as `docker-archive:FILE`.
fn check_same_by_name(
    img: &d2v::source::Image,
    f: &std::path::Path,
    name: &str,
    tmp: &std::path::Path,
) {
    let by_tag = resolve(
        &format!("docker-archive:{}:{name}", f.display()),
        &opts(&tmp.join("c")),
    )
    .unwrap();
    assert_eq!(by_tag.manifest_digest, img.manifest_digest);
    // The name is the archive's own (RepoTags), not the file's path.
    assert_eq!(img.name.as_deref(), Some(name));
    assert_eq!(by_tag.name.as_deref(), Some(name));
}

/// A Docker 25+ `docker save` archive: an OCI layout plus manifest.json naming blobs/sha256/...
#[test]
fn docker_archive_with_oci_layout_inside() {
    let layer_tar = {
        let mut v = vec![0u8; 512];
        v[..5].copy_from_slice(b"hello");
        v.resize(2048, 0);
        v
    };
    let ld = sha(&layer_tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}
    }))
    .unwrap();
    let cd = sha(&config);
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{}", &cd[7..]),
        "RepoTags": ["app:1"],
        "Layers": [format!("blobs/sha256/{}", &ld[7..])],
    }]))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("save.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&f).unwrap());
    append_files(
        &mut b,
        [
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (format!("blobs/sha256/{}", &ld[7..]), layer_tar.clone()),
            (format!("blobs/sha256/{}", &cd[7..]), config),
            ("manifest.json".to_string(), manifest_json),
        ],
    );
    b.finish().unwrap();
    drop(b);
    let img = resolve_archive(&f, tmp.path());
    check_only_layer(
        &img,
        "application/vnd.docker.image.rootfs.diff.tar",
        &layer_tar,
    );
    check_same_by_name(&img, &f, "app:1", tmp.path());
    let e = resolve(
        &format!("docker-archive:{}:other:2", f.display()),
        &opts(&tmp.path().join("c")),
    )
    .unwrap_err();
    assert!(e.to_string().contains("other:2"), "{e}");
}

/// kaniko's `--tar-path` (go-containerregistry's `tarball.Write`): the config named by its
/// digest (`sha256:<hex>`, a colon in the member name), each layer stored compressed as
/// `<hex of the compressed digest>.tar.gz`, manifest.json last.
#[test]
fn kaniko_tarball_with_gzip_layers_named_by_digest() {
    let layer_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/app", &b"kaniko"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&layer_tar).unwrap();
        e.finish().unwrap()
    };
    let (diff_id, blob) = (sha(&layer_tar), sha(&gz));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .unwrap();
    let cd = sha(&config);
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": cd,
        "RepoTags": ["registry.example/app:ci"],
        "Layers": [format!("{}.tar.gz", &blob[7..])],
    }]))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&f).unwrap());
    append_files(
        &mut b,
        [
            (cd.clone(), config),
            (format!("{}.tar.gz", &blob[7..]), gz.clone()),
            ("manifest.json".to_string(), manifest_json),
        ],
    );
    b.finish().unwrap();
    drop(b);
    let img = resolve_archive(&f, tmp.path());
    assert_eq!(img.config_digest, cd);
    assert_eq!(img.layers[0].digest, blob);
    assert_eq!(img.layers[0].diff_id, diff_id);
    check_only_layer(
        &img,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        &layer_tar,
    );
    check_same_by_name(&img, &f, "registry.example/app:ci", tmp.path());
}

/// The classic `docker save` layout: `<id>/layer.tar` per layer, `<hex>.json` config, and a
/// repeated layer stored once with a symlink to it.
#[test]
fn docker_save_legacy_layout_with_linked_duplicate_layer() {
    let mut layer = vec![0u8; 512];
    layer[..4].copy_from_slice(b"same");
    layer.resize(2048, 0);
    let mut other = vec![0u8; 512];
    other[..5].copy_from_slice(b"other");
    other.resize(2048, 0);
    let ids = [sha(&layer), sha(&other), sha(&layer)];
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}
    }))
    .unwrap();
    let cname = format!("{}.json", &sha(&config)[7..]);
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": cname, "RepoTags": ["legacy:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("legacy.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&f).unwrap());
    append_files(
        &mut b,
        [
            ("aaa/layer.tar".to_string(), layer.clone()),
            ("bbb/layer.tar".to_string(), other.clone()),
            (cname, config),
            ("manifest.json".to_string(), manifest_json),
        ],
    );
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
    drop(b);
    let img = resolve_archive(&f, tmp.path());
    assert_eq!(img.layers.len(), 3);
    for (l, want) in img.layers.iter().zip([&layer, &other, &layer]) {
        let mut out = Vec::new();
        open_layer(l).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(&out, want);
    }
    assert_eq!(img.layers[0].digest, img.layers[2].digest);
}

/// `--registry-timeout 2` for the stall tests.
fn opts_timeout(dir: &std::path::Path) -> SourceOptions {
    SourceOptions {
        registry_timeout: std::time::Duration::from_secs(2),
        ..opts(dir)
    }
}

/// Resolves the image with the layer download misbehaving as `fault`: d2v must give up, once
/// (no retry), within a few seconds of `--registry-timeout 2`, naming the layer's digest and
/// the flag. The bytes that arrived stay in the partial file; its size is returned.
fn gives_up_on(img: &Img, fault: Fault, tmp: &std::path::Path) -> u64 {
    img.server
        .lock()
        .unwrap()
        .faults
        .insert(img.layer_path.clone(), fault);
    let t = std::time::Instant::now();
    let e = resolve(&format!("{}/t/app:v1", img.host), &opts_timeout(tmp)).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, SourceError::Stalled { .. }), "{fault:?}: {e}");
    let msg = e.to_string();
    let digest = img.layer_path.rsplit('/').next().unwrap();
    assert!(
        msg.contains(digest) && msg.contains("--registry-timeout 2") && msg.contains("again"),
        "{fault:?}: {msg}"
    );
    // Bounded by the timeout (a stall is not retried), not by the 2 minutes of old.
    assert!(
        took < std::time::Duration::from_secs(8),
        "{fault:?}: {took:?}"
    );
    assert_eq!(img.layer_get_ranges().len(), 1, "{fault:?}: retried");
    let hex = img.layer_path.rsplit(':').next().unwrap();
    assert!(!tmp.join("blobs/sha256").join(hex).exists());
    let partial = tmp.join("tmp").join(format!("{hex}.partial"));
    std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_registry_that_answers_nothing_is_given_up_after_the_timeout() {
    let img = image();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(gives_up_on(&img, Fault::Silent, tmp.path()), 0);
    // Silent from the first request on (the /v2/ ping): given up on as soon.
    let img = image();
    img.server
        .lock()
        .unwrap()
        .faults
        .insert("/v2/".into(), Fault::Silent);
    let t = std::time::Instant::now();
    let e = resolve(&format!("{}/t/app:v1", img.host), &opts_timeout(tmp.path())).unwrap_err();
    assert!(matches!(e, SourceError::Stalled { .. }), "{e}");
    assert!(e.to_string().contains("did not answer in 2 s"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        t.elapsed()
    );
}

/// Response headers a byte every half second: each read is within `--registry-timeout`, but
/// the whole head is not, and d2v gives up on it.
#[test]
fn a_registry_that_trickles_its_headers_is_given_up() {
    let img = image();
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(gives_up_on(&img, Fault::TrickleHeaders, tmp.path()), 0);
    let e = resolve_error_after(&img, Fault::TrickleHeaders, tmp.path());
    assert!(
        e.contains("did not finish its response headers in 4 s"),
        "{e}"
    );
}

/// The error of a resolve with the layer download misbehaving as `fault`.
fn resolve_error_after(img: &Img, fault: Fault, tmp: &std::path::Path) -> String {
    img.server
        .lock()
        .unwrap()
        .faults
        .insert(img.layer_path.clone(), fault);
    resolve(&format!("{}/t/app:v1", img.host), &opts_timeout(tmp))
        .unwrap_err()
        .to_string()
}

#[test]
fn stalled_and_trickling_downloads_give_up_and_the_next_run_resumes() {
    for fault in [Fault::Stall, Fault::Trickle] {
        let img = image();
        let tmp = tempfile::tempdir().unwrap();
        let kept = gives_up_on(&img, fault, tmp.path());
        assert!(kept > 0, "{fault:?}: no partial download kept");
        // The next run, the registry healthy again, asks only for the rest.
        img.server.lock().unwrap().faults.clear();
        img.server.lock().unwrap().log.clear();
        let got = resolve(&format!("{}/t/app:v1", img.host), &opts_timeout(tmp.path())).unwrap();
        assert_eq!(first_layer(&got), img.layer_tar);
        assert_eq!(img.layer_get_ranges(), [Some(format!("bytes={kept}-"))]);
    }
}
