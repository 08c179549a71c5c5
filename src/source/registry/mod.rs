//! A synchronous OCI distribution client on `ureq`: /v2/ ping, anonymous, basic and bearer
//! (WWW-Authenticate challenge) auth, retries with backoff for 429/5xx/connection resets
//! (one loop for every request and download: [`retry`]), and blob downloads that resume with
//! a Range request. A registry that stalls is given up on after `--registry-timeout` ([`pace`]).

mod fetch;
pub(super) mod pace;
mod retry;
mod token;

use std::io::Read;
use std::sync::Mutex;

use super::auth::{self, Creds};
use super::cache::Cache;
use super::reference::Reference;
use super::{tls, SourceError, SourceOptions, TlsError};
use retry::{classify, retry, retry_counting, tls_failure, Failure};
use token::parse_challenge;

/// For d2v::fuzzing: whether a `WWW-Authenticate` value parses as a challenge, and the token
/// of a token endpoint's answer.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_auth(header: &str, body: &[u8]) -> (bool, Option<String>) {
    (
        token::parse_challenge(header).is_some(),
        token::token_of(body),
    )
}

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
    /// The proxy every request goes through (credentials redacted), for messages.
    proxy: Option<String>,
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

/// The auth scheme a 401 answer's WWW-Authenticate challenge asks for.
fn challenge(resp: &ureq::Response, what: &str) -> Result<Auth, SourceError> {
    let h = resp.header("www-authenticate").unwrap_or("");
    parse_challenge(h).ok_or_else(|| SourceError::Http {
        what: what.to_string(),
        status: 401,
        detail: format!(
            " with an unsupported WWW-Authenticate challenge {:?}",
            h.split(' ').next().unwrap_or("")
        ),
    })
}

impl Client {
    pub fn new(r: &Reference, opts: &SourceOptions, cache: Cache) -> Result<Client, SourceError> {
        let tls = tls::client_config(opts.tls_verify, opts.cert_dir.as_deref(), &r.registry)?;
        let mut agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(opts.registry_timeout)
            .timeout_read(opts.registry_timeout)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("d2v/", env!("CARGO_PKG_VERSION")));
        // One agent per registry, so one proxy: the https one (registries speak https; a
        // plain-http registry is only tried for loopback, which is never proxied, or with
        // --tls-verify=false). Token servers and blob redirects go through it too.
        let proxy = opts.proxy.for_url("https", &r.registry);
        if let Some(p) = proxy {
            let bad = |why: String| SourceError::BadProxy {
                proxy: super::proxy::redact(p),
                why,
            };
            if !p.contains("://") || p.starts_with("http://") {
                agent = agent.proxy(ureq::Proxy::new(p).map_err(|e| bad(e.to_string()))?);
            } else {
                return Err(bad("d2v speaks to HTTP proxies only (http://...)".into()));
            }
        }
        let agent = agent.build();
        let creds = auth::lookup(&r.registry, &r.repository, opts)?;
        Ok(Client {
            r: r.clone(),
            opts: opts.clone(),
            cache,
            agent,
            creds,
            proxy: proxy.map(super::proxy::redact),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A registry that stalled (`how`), as the error says it.
    fn stalled(&self, what: &str, how: String) -> SourceError {
        SourceError::Stalled {
            what: what.to_string(),
            registry: self.r.registry.clone(),
            how,
            seconds: self.opts.registry_timeout.as_secs(),
        }
    }

    /// The error of a request whose transport failed: TLS, a registry that did not answer in
    /// time, or one out of reach.
    fn net_err(&self, what: &str, t: ureq::Transport) -> SourceError {
        if let Some(stall) = pace::stall_of_transport(&t) {
            return self.stalled(what, stall.0.clone());
        }
        if retry::timed_out(&t) {
            let secs = self.opts.registry_timeout.as_secs();
            return self.stalled(what, format!("did not answer in {secs} s"));
        }
        if let Some(tls) = tls_failure(&t) {
            let hint = if tls.wants_client_certificate() {
                format!(
                    " (the registry refused the client certificate, or wants one: give it as \
                     NAME.cert with NAME.key, PEM, in --cert-dir or \
                     /etc/containers/certs.d/{}/)",
                    self.r.registry
                )
            } else {
                String::new()
            };
            SourceError::Tls {
                registry: self.r.registry.clone(),
                source: TlsError::Handshake {
                    source: Box::new(t),
                    hint,
                },
            }
        } else {
            let via = match &self.proxy {
                Some(p) => format!(
                    " (through the proxy {p} from HTTPS_PROXY/ALL_PROXY; hosts listed in \
                     NO_PROXY are reached directly)"
                ),
                None => String::new(),
            };
            SourceError::Network {
                what: what.to_string(),
                registry: self.r.registry.clone(),
                source: Box::new(t),
                via,
            }
        }
    }

    /// A response body, at most `limit` bytes of it; a read failure is a network error.
    fn read_body(
        &self,
        resp: ureq::Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, SourceError> {
        let mut body = Vec::new();
        self.paced(resp)
            .take(limit)
            .read_to_end(&mut body)
            .map_err(|e| self.body_err(what, e))?;
        Ok(body)
    }

    /// `resp`'s body, held to the low-speed rule.
    fn paced(&self, resp: ureq::Response) -> pace::Paced<Box<dyn Read + Send + Sync>> {
        pace::Paced::new(resp.into_reader(), self.opts.registry_timeout)
    }

    /// The error of a body that could not be read: it stalled, or the network failed.
    fn body_err(&self, what: &str, e: std::io::Error) -> SourceError {
        match pace::stall_of(&e) {
            Some(stall) => self.stalled(what, stall.0.clone()),
            None => SourceError::Network {
                what: what.to_string(),
                registry: self.r.registry.clone(),
                source: Box::new(e),
                via: String::new(),
            },
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
            let auth = match self.ping(&base, http_ok).map_err(|e| *e) {
                Ok(_) => Auth::Anonymous,
                Err(ureq::Error::Status(401, resp)) => challenge(&resp, &what)?,
                // An HTTPS port answering plain HTTP: report the HTTPS error.
                Err(ureq::Error::Status(..)) if scheme == "http" => break,
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(SourceError::Http {
                        what,
                        status,
                        detail: detail(resp),
                    })
                }
                // A plain-HTTP registry that took the connection but did not answer: that
                // stall, not the https attempt's error, is what went wrong.
                Err(ureq::Error::Transport(t)) if scheme == "http" && retry::timed_out(&t) => {
                    return Err(self.net_err(&what, t));
                }
                Err(ureq::Error::Transport(t)) => {
                    first_err.get_or_insert_with(|| self.net_err(&what, t));
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

    /// `GET base/v2/`, retried. With plain HTTP to fall back on (`http_ok`) a transport
    /// failure is left to that at once; the ping's 429/5xx wait for the backoff alone.
    fn ping(&self, base: &str, http_ok: bool) -> Result<ureq::Response, Box<ureq::Error>> {
        retry(|| {
            let sent = self.call(self.agent.get(&format!("{base}/v2/")));
            sent.map_err(|e| match classify(*e) {
                Failure::Transient { error, .. }
                    if http_ok && matches!(*error, ureq::Error::Transport(_)) =>
                {
                    Failure::Final(error)
                }
                Failure::Transient { error, .. } => Failure::transient(*error),
                f => f,
            })
        })
        .map_err(Box::new)
    }

    /// Sends `req`, its response head bounded by [`pace::call_within`].
    fn call(&self, req: ureq::Request) -> Result<ureq::Response, Box<ureq::Error>> {
        self.call_with(move || req.call().map_err(Box::new))
    }

    /// Sends a request (`send`), its response head bounded by [`pace::call_within`].
    fn call_with(
        &self,
        send: impl FnOnce() -> Result<ureq::Response, Box<ureq::Error>> + Send + 'static,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        pace::call_within(2 * self.opts.registry_timeout, send)
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
        let (mut refreshed, mut failed) = (false, 0);
        let mut authz = self.authorization(false)?;
        loop {
            let sent = retry_counting(&mut failed, || {
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
                self.call(req).map_err(|e| classify(*e))
            });
            match sent {
                Ok(resp) => return Ok(resp),
                // A token may have expired, or this repository wants another scheme than the
                // /v2/ ping said: follow its challenge once.
                Err(ureq::Error::Status(401, resp))
                    if self.follow_challenge(&resp) && !refreshed =>
                {
                    refreshed = true;
                    authz = self.authorization(true)?;
                }
                Err(e) => return Err(self.request_err(what, e)),
            }
        }
    }

    /// Takes up the scheme a 401 answer's challenge asks for when it is not the one in use
    /// (forgetting the token); whether asking again with credentials or a token may succeed.
    fn follow_challenge(&self, resp: &ureq::Response) -> bool {
        let challenge = resp.header("www-authenticate").and_then(parse_challenge);
        let mut st = self.lock();
        let changed = match challenge {
            Some(c) if st.auth.as_ref() != Some(&c) => {
                st.auth = Some(c);
                st.token = None;
                true
            }
            _ => false,
        };
        let bearer = matches!(st.auth, Some(Auth::Bearer { .. }));
        bearer || (changed && self.creds.is_some())
    }

    /// The error of a request that failed for good: by its status, or its transport error.
    fn request_err(&self, what: &str, e: ureq::Error) -> SourceError {
        let what = what.to_string();
        let registry = self.r.registry.clone();
        match e {
            ureq::Error::Status(401, _) => SourceError::Unauthorized {
                what,
                registry,
                hint: self.auth_hint(),
            },
            ureq::Error::Status(403, _) => SourceError::Forbidden { what, registry },
            ureq::Error::Status(404, resp) => {
                let d = detail(resp);
                let hint = if d.is_empty() {
                    String::new()
                } else {
                    format!(" (registry says{d})")
                };
                SourceError::NotFound { what, hint }
            }
            ureq::Error::Status(status, resp) => SourceError::Http {
                what,
                status,
                detail: detail(resp),
            },
            ureq::Error::Transport(t) => self.net_err(&what, t),
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
}
