//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, started by the tests, the demo
//! and the benchmarks: plain HTTP anonymous, TLS with a test CA + htpasswd basic auth, or
//! bearer tokens from a token issuer run here (RS256 JWTs signed with `openssl dgst`, cert in
//! `rootcertbundle`).
//!
//! Every request the registry serves is counted from its access log, so a test can assert
//! that a second pull downloads nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::require_tool;
use crate::token_issuer::start_token_issuer;

/// Which registry to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP, anonymous pull and push.
    Plain,
    /// TLS with a certificate from a test CA ([`Registry::ca_dir`]) and htpasswd basic auth.
    TlsBasic,
    /// Plain HTTP with `auth: token:`; tokens from an issuer run by the harness. Anonymous
    /// tokens may only pull repositories under `public/`; wrong credentials get 401.
    Token,
    /// TLS that requires a client certificate signed by the test CA (mutual TLS), no other
    /// auth: [`Registry::client_cert_dir`] holds the CA and a client pair, [`Registry::ca_dir`]
    /// the CA alone.
    TlsClientCert,
}

pub const USER: &str = "d2vtest";
pub const PASSWORD: &str = "s3cret-pw";
/// The OAuth2 refresh token (docker's "identity token") the token issuer accepts.
pub const IDENTITY_TOKEN: &str = "d2v-test-refresh-token";

/// One request the registry or the token issuer answered: `GET /v2/x/blobs/sha256:.. 200`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

pub struct Registry {
    pub kind: Kind,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Configuration, certificates and storage.
    dir: PathBuf,
    /// Removes `dir` on drop, when [`Registry::start`] made it.
    _temp: Option<tempfile::TempDir>,
    child: Child,
    log: Arc<Mutex<Vec<Request>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    token_stop: Option<Arc<AtomicBool>>,
    token_port: Option<u16>,
    /// The bearer tokens the token issuer handed out.
    issued: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `openssl ARGS` in `dir` (the plain registry needs none: the demo's machine may lack it).
fn openssl(dir: &Path, args: &[&str]) {
    require_tool("openssl", "openssl");
    run(Command::new("openssl").args(args).current_dir(dir));
}

/// `"GET /v2/ HTTP/1.1" 200` in an Apache combined log line.
fn parse_access(line: &str) -> Option<Request> {
    let q1 = line.find('"')?;
    let rest = &line[q1 + 1..];
    let q2 = rest.find('"')?;
    let mut req = rest[..q2].split(' ');
    let method = req.next()?.to_string();
    let path = req.next()?.to_string();
    if !path.starts_with('/') {
        return None;
    }
    let status = rest[q2 + 1..].split_whitespace().next()?.parse().ok()?;
    Some(Request {
        method,
        path,
        status,
    })
}

impl Registry {
    /// Starts a registry of `kind` with storage in a fresh temporary directory.
    pub fn start(kind: Kind) -> Registry {
        let temp = tempfile::Builder::new()
            .prefix("d2v-registry")
            .tempdir()
            .expect("temp dir");
        Registry::serve(kind, temp.path().to_path_buf(), Some(temp))
    }

    /// Starts a registry of `kind` whose configuration and storage are in `dir` (emptied
    /// first, left in place), and says where: for large images (the demo's, the benchmarks'),
    /// which a temporary directory on tmpfs would hold in memory.
    pub fn start_in(kind: Kind, dir: &Path) -> Registry {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let reg = Registry::serve(kind, dir.to_path_buf(), None);
        println!("registry on {} (storage {})", reg.host, dir.display());
        reg
    }

    fn serve(kind: Kind, dir: PathBuf, temp: Option<tempfile::TempDir>) -> Registry {
        require_tool("docker-registry", "docker-registry");
        let d = dir.as_path();
        let log = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let mut extra = String::new();
        let mut token_stop = None;
        let mut token_port = None;
        match kind {
            Kind::Plain => {}
            Kind::TlsBasic => {
                require_tool("htpasswd", "apache2-utils");
                make_tls(d);
                let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
                std::fs::write(d.join("htpasswd"), line).unwrap();
                extra = format!(
                    "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\nauth:\n  htpasswd:\n    realm: d2v-test\n    path: {0}/htpasswd\n",
                    d.display()
                );
            }
            Kind::TlsClientCert => {
                make_tls(d);
                make_client_cert(d);
                extra = format!(
                    "  tls:\n    certificate: {0}/server.crt\n    key: {0}/server.key\n    clientcas:\n      - {0}/ca.crt\n",
                    d.display()
                );
            }
            Kind::Token => {
                openssl(
                    d,
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.crt",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=d2v-token-issuer",
                    ],
                );
                let stop = Arc::new(AtomicBool::new(false));
                let tport = start_token_issuer(d, stop.clone(), log.clone(), issued.clone());
                token_stop = Some(stop);
                token_port = Some(tport);
                extra = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: d2v-test-registry\n    issuer: d2v-test-issuer\n    rootcertbundle: {}/token.crt\n",
                    d.display()
                );
            }
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        // The port is chosen before the registry binds it: on a clash, try another.
        for _ in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: d2v-test-secret\n{extra}",
                d.display()
            );
            std::fs::write(d.join("config.yml"), config).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(d.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start docker-registry");
            for (pipe, is_err) in [
                (
                    Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                    false,
                ),
                (Box::new(child.stderr.take().unwrap()), true),
            ] {
                let log = log.clone();
                let errs = stderr.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        if let Some(r) = parse_access(&line) {
                            log.lock().unwrap().push(r);
                        } else if is_err {
                            errs.lock().unwrap().push(line);
                        }
                    }
                });
            }
            let t0 = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry {
                        kind,
                        host,
                        dir,
                        _temp: temp,
                        child,
                        log,
                        stderr,
                        token_stop,
                        token_port,
                        issued,
                    };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // exited: most likely the port was taken meanwhile
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "docker-registry did not listen on {host}: {:?}",
                    stderr.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "docker-registry would not start: {:?}",
            stderr.lock().unwrap()
        );
    }

    /// Starts a registry of `kind` holding the image `spec` (which must have a tag) as
    /// `repo_tag`: written to the OCI layout `layout`, then pushed from there.
    pub fn with_image(
        kind: Kind,
        layout: &Path,
        spec: &crate::oci::ImageSpec,
        repo_tag: &str,
    ) -> (Registry, crate::oci::WrittenImage) {
        let tag = spec.tag.as_deref().expect("an ImageSpec with a tag");
        let image = crate::oci::write_image(layout, spec)
            .unwrap_or_else(|e| panic!("write {}: {e}", layout.display()));
        let reg = Registry::start(kind);
        reg.push(&format!("oci:{}:{tag}", layout.display()), repo_tag);
        (reg, image)
    }

    /// The registry's own log lines (not the access log), for failure messages.
    pub fn server_log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// A directory with `ca.crt` (the test CA) for `--cert-dir`; for the TLS kinds.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// A directory with `ca.crt` and the client pair `client.cert`/`client.key` (as in
    /// containers-certs.d) for `--cert-dir`; [`Kind::TlsClientCert`] only.
    pub fn client_cert_dir(&self) -> PathBuf {
        self.dir.join("client-certs")
    }

    /// `USER:PASS` when the registry needs credentials.
    pub fn creds(&self) -> Option<String> {
        matches!(self.kind, Kind::TlsBasic | Kind::Token).then(|| format!("{USER}:{PASSWORD}"))
    }

    /// The bearer tokens the token issuer has handed out so far ([`Kind::Token`] only).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// The token issuer's port ([`Kind::Token`] only).
    pub fn token_port(&self) -> Option<u16> {
        self.token_port
    }

    /// Pushes `src` (any skopeo source, e.g. `oci:/dir:tag`) to `REPO:TAG` on this registry,
    /// all platforms.
    pub fn push(&self, src: &str, repo_tag: &str) {
        require_tool("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
        ]);
        if let Some(c) = self.creds() {
            cmd.arg("--dest-creds").arg(c);
        }
        if self.kind == Kind::TlsClientCert {
            cmd.arg("--dest-cert-dir").arg(self.client_cert_dir());
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.host));
        cmd.env("REGISTRY_AUTH_FILE", self.dir.join("skopeo-auth.json"));
        run(&mut cmd);
    }

    /// The manifest digest the registry serves for `REPO:TAG`, as skopeo sees it.
    pub fn digest(&self, repo_tag: &str) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = self.creds() {
            cmd.arg("--creds").arg(c);
        }
        if self.kind == Kind::TlsClientCert {
            cmd.arg("--cert-dir").arg(self.client_cert_dir());
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host));
        cmd.env("REGISTRY_AUTH_FILE", self.dir.join("skopeo-auth.json"));
        let raw = run(&mut cmd);
        format!("sha256:{}", sha256_hex(&raw))
    }

    /// Requests answered so far (registry and token issuer), after the log settles.
    pub fn requests(&self) -> Vec<Request> {
        let mut last = usize::MAX;
        for _ in 0..20 {
            let n = self.log.lock().unwrap().len();
            if n == last {
                break;
            }
            last = n;
            std::thread::sleep(Duration::from_millis(100));
        }
        self.log.lock().unwrap().clone()
    }

    /// Forgets the requests counted so far.
    pub fn clear_requests(&self) {
        let _ = self.requests();
        self.log.lock().unwrap().clear();
    }

    /// Where the registry stores a blob's bytes (to tamper with it in a test).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// What [`stop_at_exit`] stops: the pid of each registry given to [`Registry::until_exit`]
/// and the temporary directory it removes.
static AT_EXIT: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());

impl Registry {
    /// This registry for the rest of the test process (held by a `static` its tests share).
    /// A `static` is never dropped, so the registry would outlive the process, serving its
    /// temporary storage: instead it is killed and the storage removed when the process
    /// exits (`atexit`; the test harness ends with `exit`).
    pub fn until_exit(self) -> &'static Registry {
        let reg: &'static Registry = Box::leak(Box::new(self));
        let mut all = AT_EXIT.lock().unwrap();
        if all.is_empty() {
            // SAFETY: registers a plain `extern "C" fn` that captures nothing.
            unsafe { libc::atexit(stop_at_exit) };
        }
        let temp = reg._temp.as_ref().map(|t| t.path().to_path_buf());
        all.push((reg.child.id(), temp));
        reg
    }
}

extern "C" fn stop_at_exit() {
    let all = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    for (pid, temp) in all.iter() {
        // SAFETY: kill(2) on our own child's pid; it cannot have been reaped (nobody waits).
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        if let Some(dir) = temp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let (Some(stop), Some(port)) = (&self.token_stop, self.token_port) {
            stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", port));
        }
    }
}

/// A test CA and a server certificate for 127.0.0.1/localhost (and `registry.test`, a name
/// only [`crate::proxy::Proxy`] resolves) signed by it; `certs/ca.crt`.
fn make_tls(d: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=d2v test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(d, &a);
    key_and_csr(d, "server", "/CN=127.0.0.1");
    sign_with_ca(
        d,
        "server",
        "server.crt",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    std::fs::create_dir_all(d.join("certs")).unwrap();
    std::fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).unwrap();
}

/// `NAME.key` (EC P-256) and a request `NAME.csr` for `subject`.
fn key_and_csr(d: &Path, name: &str, subject: &str) {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    );
}

/// Signs `NAME.csr` with the test CA into `out`, with the X.509 extensions `ext` (config lines).
fn sign_with_ca(d: &Path, name: &str, out: &str, ext: &str) {
    let (csr, ext_file) = (format!("{name}.csr"), format!("{name}-ext.cnf"));
    std::fs::write(d.join(&ext_file), ext).unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            out,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    );
}

/// A client certificate signed by the test CA of [`make_tls`]: `client-certs/` holds it as
/// `client.cert` with `client.key`, and the CA as `ca.crt`.
fn make_client_cert(d: &Path) {
    key_and_csr(d, "client", "/CN=d2v test client");
    sign_with_ca(
        d,
        "client",
        "client.cert",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let dir = d.join("client-certs");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(d.join(f), dir.join(f)).unwrap();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(b).unwrap();
    let out = child.wait_with_output().unwrap().stdout;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's and benchmarks' registry: storage in the given directory, emptied first and
    /// left after the registry is gone; a pushed image's blobs land there.
    #[test]
    fn start_in_keeps_its_storage_in_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("registry");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale"), "from an earlier run").unwrap();
        let layout = tmp.path().join("oci");
        let tar = crate::tar::tar(&[crate::tar::Entry::file("hello", "world")]);
        let image = crate::oci::write_image(
            &layout,
            &crate::oci::ImageSpec::new()
                .layer(tar, crate::oci::Compression::Gzip)
                .tag("v1"),
        )
        .unwrap();
        let reg = Registry::start_in(Kind::Plain, &dir);
        assert!(!dir.join("stale").exists(), "the directory was not emptied");
        reg.push(&format!("oci:{}:v1", layout.display()), "demo:latest");
        let blob = reg.blob_data(&image.layers[0].digest);
        assert!(
            blob.starts_with(&dir) && blob.is_file(),
            "{}",
            blob.display()
        );
        drop(reg);
        assert!(blob.is_file(), "the storage went with the registry");
    }

    #[test]
    fn access_log_lines() {
        let l = r#"127.0.0.1 - - [27/Nov/2026:05:00:00 +0000] "GET /v2/a/blobs/sha256:ab HTTP/1.1" 200 1234 "" "d2v/0.1.0""#;
        assert_eq!(
            parse_access(l),
            Some(Request {
                method: "GET".into(),
                path: "/v2/a/blobs/sha256:ab".into(),
                status: 200
            })
        );
        assert_eq!(
            parse_access(r#"time="x" level=info msg="listening on 127.0.0.1:5000""#),
            None
        );
    }
}
