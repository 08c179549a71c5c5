//! A synchronous OCI distribution client on `ureq`: /v2/ ping, anonymous, basic and bearer
//! (WWW-Authenticate challenge) auth, retries with backoff for 429/5xx/connection resets,
//! and blob downloads that resume with a Range request.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::ProgressBar;

use super::auth::{self, Creds};
use super::cache::Cache;
use super::manifest::{Descriptor, ACCEPT, MAX_MANIFEST};
use super::reference::Reference;
use super::resolve::Fetcher;
use super::{tls, SourceError, SourceOptions};

const ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
struct State {
    /// `https://host:port` or `http://host:port`, once pinged.
    base: Option<String>,
    auth: Option<Auth>,
    token: Option<String>,
}

pub(crate) struct Client {
    r: Reference,
    opts: SourceOptions,
    cache: Cache,
    agent: ureq::Agent,
    creds: Option<Creds>,
    state: Mutex<State>,
}

/// Whether `host[:port]` is a loopback address, where plain HTTP is allowed.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Parses `Bearer realm="...",service="..."` / `Basic realm="..."`.
fn parse_challenge(h: &str) -> Option<Auth> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = std::collections::BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, v)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (v[..end].trim().to_string(), &v[end..])
        };
        params.insert(k, val);
        s = after.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Auth::Basic),
        "bearer" => Some(Auth::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The registry's own error message from a JSON error body, shortened.
fn detail(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(4096).read_to_string(&mut body);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let msg = v["errors"][0]["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| v["details"].as_str().map(str::to_string));
    match msg {
        Some(m) => format!(": {}", m.chars().take(200).collect::<String>()),
        None => String::new(),
    }
}

fn backoff(attempt: u32, retry_after: Option<&str>) {
    let secs = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| s.min(10));
    let d = secs
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250 << attempt.min(5)));
    std::thread::sleep(d);
}

fn transport_is_tls(t: &ureq::Transport) -> bool {
    let m = t.to_string().to_ascii_lowercase();
    m.contains("certificate")
        || m.contains("tls")
        || m.contains("handshake")
        || m.contains("unknownissuer")
}

impl Client {
    pub fn new(r: &Reference, opts: &SourceOptions, cache: Cache) -> Result<Client, SourceError> {
        let tls = tls::client_config(opts.tls_verify, opts.cert_dir.as_deref(), &r.registry)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("d2v/", env!("CARGO_PKG_VERSION")))
            .build();
        let creds = auth::lookup(&r.registry, &r.repository, opts)?;
        Ok(Client {
            r: r.clone(),
            opts: opts.clone(),
            cache,
            agent,
            creds,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn net_err(&self, what: &str, t: &ureq::Transport) -> SourceError {
        if transport_is_tls(t) {
            SourceError::Tls {
                registry: self.r.registry.clone(),
                why: t.to_string(),
            }
        } else {
            SourceError::Network {
                what: what.to_string(),
                registry: self.r.registry.clone(),
                why: t.to_string(),
            }
        }
    }

    /// Pings `/v2/` (https first; plain http for loopback or --tls-verify=false) and learns the
    /// auth scheme.
    fn ensure_base(&self) -> Result<String, SourceError> {
        if let Some(b) = self.lock().base.clone() {
            return Ok(b);
        }
        let host = self.r.endpoint();
        let what = format!("{} (/v2/ ping)", self.r.registry);
        let http_ok = is_loopback(host) || !self.opts.tls_verify;
        let mut first_err = None;
        for scheme in ["https", "http"] {
            if scheme == "http" && !http_ok {
                break;
            }
            let base = format!("{scheme}://{host}");
            let mut attempt = 0;
            let res = loop {
                match self.agent.get(&format!("{base}/v2/")).call() {
                    Err(ureq::Error::Transport(t))
                        if attempt + 1 < ATTEMPTS
                            && !transport_is_tls(&t)
                            && scheme == "https"
                            && !http_ok =>
                    {
                        attempt += 1;
                        backoff(attempt, None);
                    }
                    Err(ureq::Error::Status(s, _))
                        if (s == 429 || s >= 500) && attempt + 1 < ATTEMPTS =>
                    {
                        attempt += 1;
                        backoff(attempt, None);
                    }
                    other => break other,
                }
            };
            let auth = match res {
                Ok(_) => Auth::Anonymous,
                Err(ureq::Error::Status(401, resp)) => {
                    let h = resp.header("www-authenticate").unwrap_or("");
                    parse_challenge(h).ok_or_else(|| SourceError::Http {
                        what: what.clone(),
                        status: 401,
                        detail: format!(
                            " with an unsupported WWW-Authenticate challenge {:?}",
                            h.split(' ').next().unwrap_or("")
                        ),
                    })?
                }
                Err(ureq::Error::Status(s, resp)) => {
                    if scheme == "http" {
                        break; // an HTTPS port answering plain HTTP: report the HTTPS error
                    }
                    return Err(SourceError::Http {
                        what,
                        status: s,
                        detail: detail(resp),
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    if first_err.is_none() {
                        first_err = Some(self.net_err(&what, &t));
                    }
                    continue;
                }
            };
            let mut st = self.lock();
            st.base = Some(base.clone());
            st.auth = Some(auth);
            return Ok(base);
        }
        Err(first_err.unwrap_or(SourceError::PlainHttp {
            what,
            registry: self.r.registry.clone(),
        }))
    }

    /// Gets a bearer token for pulling this repository.
    fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, SourceError> {
        let what = format!("{} token from {realm}", self.r.registry);
        let scope = format!("repository:{}:pull", self.r.repository);
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            pct(&scope)
        );
        if let Some(s) = service {
            url.push_str(&format!("&service={}", pct(s)));
        }
        if url.starts_with("http://") && self.opts.tls_verify {
            let host = url[7..].split('/').next().unwrap_or("");
            if !is_loopback(host) {
                return Err(SourceError::PlainHttp {
                    what,
                    registry: host.to_string(),
                });
            }
        }
        let mut attempt = 0;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(c) = &self.creds {
                req = req.set("Authorization", &c.basic_header());
            }
            match req.call() {
                Ok(resp) => {
                    let mut body = Vec::new();
                    resp.into_reader()
                        .take(1 << 20)
                        .read_to_end(&mut body)
                        .map_err(|e| SourceError::Network {
                            what: what.clone(),
                            registry: self.r.registry.clone(),
                            why: e.to_string(),
                        })?;
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let tok = v["token"]
                        .as_str()
                        .or(v["access_token"].as_str())
                        .filter(|t| !t.is_empty());
                    return tok.map(str::to_string).ok_or_else(|| SourceError::Http {
                        what,
                        status: 200,
                        detail: " without a token in its JSON answer".into(),
                    });
                }
                Err(ureq::Error::Status(401 | 403, _)) => {
                    return Err(SourceError::Unauthorized {
                        what,
                        registry: self.r.registry.clone(),
                        hint: self.auth_hint(),
                    })
                }
                Err(ureq::Error::Status(s, r))
                    if (s == 429 || s >= 500) && attempt + 1 < ATTEMPTS =>
                {
                    attempt += 1;
                    backoff(attempt, r.header("retry-after"));
                }
                Err(ureq::Error::Status(s, r)) => {
                    return Err(SourceError::Http {
                        what,
                        status: s,
                        detail: detail(r),
                    })
                }
                Err(ureq::Error::Transport(t))
                    if attempt + 1 < ATTEMPTS && !transport_is_tls(&t) =>
                {
                    attempt += 1;
                    backoff(attempt, None);
                }
                Err(ureq::Error::Transport(t)) => return Err(self.net_err(&what, &t)),
            }
        }
    }

    fn auth_hint(&self) -> String {
        if self.creds.is_some() {
            " (the credentials d2v found were rejected)".into()
        } else {
            " (d2v found no credentials for it)".into()
        }
    }

    /// The Authorization header for the next request (fetching a token when needed).
    fn authorization(&self, refresh: bool) -> Result<Option<String>, SourceError> {
        let (auth, token) = {
            let st = self.lock();
            (st.auth.clone(), st.token.clone())
        };
        match auth {
            None | Some(Auth::Anonymous) => Ok(None),
            Some(Auth::Basic) => Ok(self.creds.as_ref().map(Creds::basic_header)),
            Some(Auth::Bearer { realm, service }) => {
                if let (Some(t), false) = (token, refresh) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.fetch_token(&realm, service.as_deref())?;
                self.lock().token = Some(t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// Sends a request with auth, retrying 429/5xx/transport errors; maps error statuses.
    fn send(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
        range: Option<u64>,
        what: &str,
    ) -> Result<ureq::Response, SourceError> {
        let base = self.ensure_base()?;
        let url = format!("{base}/v2/{}/{path}", self.r.repository);
        let mut attempt = 0;
        let mut refreshed = false;
        let mut authz = self.authorization(false)?;
        loop {
            let mut req = self.agent.request(method, &url);
            if let Some(a) = &authz {
                req = req.set("Authorization", a);
            }
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(r) = range {
                req = req.set("Range", &format!("bytes={r}-"));
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) => {
                    let bearer = matches!(self.lock().auth, Some(Auth::Bearer { .. }));
                    if bearer && !refreshed {
                        refreshed = true;
                        authz = self.authorization(true)?;
                        continue;
                    }
                    drop(resp);
                    return Err(SourceError::Unauthorized {
                        what: what.to_string(),
                        registry: self.r.registry.clone(),
                        hint: self.auth_hint(),
                    });
                }
                Err(ureq::Error::Status(403, _)) => {
                    return Err(SourceError::Forbidden {
                        what: what.to_string(),
                        registry: self.r.registry.clone(),
                    })
                }
                Err(ureq::Error::Status(404, resp)) => {
                    let d = detail(resp);
                    let hint = if d.is_empty() {
                        String::new()
                    } else {
                        format!(" (registry says{d})")
                    };
                    return Err(SourceError::NotFound {
                        what: what.to_string(),
                        hint,
                    });
                }
                Err(ureq::Error::Status(s, resp))
                    if (s == 429 || s >= 500) && attempt + 1 < ATTEMPTS =>
                {
                    attempt += 1;
                    backoff(attempt, resp.header("retry-after"));
                }
                Err(ureq::Error::Status(s, resp)) => {
                    return Err(SourceError::Http {
                        what: what.to_string(),
                        status: s,
                        detail: detail(resp),
                    })
                }
                Err(ureq::Error::Transport(t))
                    if attempt + 1 < ATTEMPTS && !transport_is_tls(&t) =>
                {
                    attempt += 1;
                    backoff(attempt, None);
                }
                Err(ureq::Error::Transport(t)) => return Err(self.net_err(what, &t)),
            }
        }
    }

    fn manifest_what(&self, reference: &str) -> String {
        format!(
            "{}/{}{}{reference}",
            self.r.registry,
            self.r.repository,
            if reference.contains(':') { "@" } else { ":" }
        )
    }
}

impl Fetcher for Client {
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let what = self.manifest_what(reference);
        let path = format!("manifests/{reference}");
        if reference.starts_with("sha256:") {
            if let Some(b) = self.cache.read_small(reference, MAX_MANIFEST)? {
                return Ok((b, None));
            }
        } else {
            // A tag: ask for its digest first; the manifest may already be cached.
            let resp = self.send("HEAD", &path, Some(ACCEPT), None, &what)?;
            if let Some(d) = resp
                .header("docker-content-digest")
                .filter(|d| d.starts_with("sha256:"))
            {
                if let Some(b) = self.cache.read_small(d, MAX_MANIFEST)? {
                    return Ok((b, resp.header("content-type").map(str::to_string)));
                }
            }
        }
        let resp = self.send("GET", &path, Some(ACCEPT), None, &what)?;
        if resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > MAX_MANIFEST)
        {
            return Err(SourceError::TooLarge {
                what,
                limit: MAX_MANIFEST,
            });
        }
        let ct = resp.header("content-type").map(str::to_string);
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| SourceError::Network {
                what: what.clone(),
                registry: self.r.registry.clone(),
                why: e.to_string(),
            })?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(SourceError::TooLarge {
                what,
                limit: MAX_MANIFEST,
            });
        }
        Ok((body, ct))
    }

    fn blob(&self, d: &Descriptor, what: &str, bar: &ProgressBar) -> Result<PathBuf, SourceError> {
        if let Some(p) = self.cache.get(&d.digest, Some(d.size))? {
            bar.set_position(d.size);
            return Ok(p);
        }
        let mut w = self.cache.writer()?;
        let path = format!("blobs/{}", d.digest);
        let mut failures = 0;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let from = (!w.is_empty()).then(|| w.len());
            let resp = self.send("GET", &path, None, from, what)?;
            let resumed = resp.status() == 206
                && resp
                    .header("content-range")
                    .and_then(|c| c.strip_prefix("bytes "))
                    .and_then(|c| c.split('-').next())
                    == Some(&w.len().to_string());
            if !resumed && !w.is_empty() {
                w.restart().map_err(|e| SourceError::Io {
                    path: self.cache.dir().into(),
                    source: e,
                })?;
            }
            let mut body = resp.into_reader();
            let res = loop {
                match body.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        w.write_all(&buf[..n]).map_err(|e| SourceError::Io {
                            path: self.cache.dir().into(),
                            source: e,
                        })?;
                        bar.set_position(w.len());
                        if w.len() > d.size {
                            break Ok(()); // commit reports the size mismatch
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(SourceError::SizeMismatch {
                            what: format!("{what} (download kept failing: {e})"),
                            digest: d.digest.clone(),
                            expected: d.size,
                            got: w.len(),
                        });
                    }
                    backoff(failures, None);
                }
            }
        }
        w.commit(
            Some((&d.digest, d.size)),
            &format!("{what} from {}", self.r.registry),
        )?;
        self.cache.path(&d.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        for h in [
            "localhost:5000",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Auth::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#
            ),
            Some(Auth::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://x/t, service=s"),
            Some(Auth::Bearer {
                realm: "http://x/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"s\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(pct("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
