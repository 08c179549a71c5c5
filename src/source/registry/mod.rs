//! A synchronous OCI distribution client on `ureq`: /v2/ ping, anonymous, basic and bearer
//! (WWW-Authenticate challenge) auth, retries with backoff for 429/5xx/connection resets,
//! and blob downloads that resume with a Range request.

mod fetch;
mod token;

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use super::auth::{self, Creds};
use super::cache::Cache;
use super::reference::Reference;
use super::{tls, SourceError, SourceOptions, TlsError};
use token::parse_challenge;

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

fn backoff(attempt: u32, retry_after: Option<&str>) {
    let secs = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| s.min(10));
    let d = secs
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250 << attempt.min(5)));
    std::thread::sleep(d);
}

/// How TLS failed, when TLS is behind a transport error.
#[derive(Debug, PartialEq)]
enum TlsFailure<'a> {
    /// rustls refused the connection: a certificate, an alert from the server, the protocol.
    Rustls(&'a rustls::Error),
    /// The server hung up during the handshake (as a plain-HTTP server does on a ClientHello).
    HungUp,
}

impl TlsFailure<'_> {
    /// The server's alert when it wants a client certificate, or refuses ours.
    fn wants_client_certificate(&self) -> bool {
        use rustls::AlertDescription as A;
        matches!(
            self,
            TlsFailure::Rustls(rustls::Error::AlertReceived(
                A::BadCertificate | A::CertificateRequired | A::CertificateUnknown
            ))
        )
    }
}

/// The TLS failure behind `t`, if any: a `rustls::Error` among its causes, or the connection
/// ending while connecting (connecting reads nothing but the TLS handshake).
fn tls_failure(t: &ureq::Transport) -> Option<TlsFailure<'_>> {
    if let Some(e) = crate::error::causes(t).find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return Some(TlsFailure::Rustls(e));
    }
    let hung_up = t.kind() == ureq::ErrorKind::ConnectionFailed
        && crate::error::causes(t).any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                )
            })
        });
    hung_up.then_some(TlsFailure::HungUp)
}

/// A resolver failure another attempt may cure (getaddrinfo's EAI_AGAIN). std reports
/// getaddrinfo's failures by their text alone (no error kind, no code), so this reads it.
fn dns_is_temporary(t: &ureq::Transport) -> bool {
    crate::error::causes(t).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.to_string().contains("Temporary failure"))
    })
}

/// Transport errors that another attempt cannot cure: TLS failures, a host name that does not
/// exist (a temporary resolver failure is retried), refused proxy credentials, bad URLs.
fn transport_is_final(t: &ureq::Transport) -> bool {
    use ureq::ErrorKind as K;
    tls_failure(t).is_some()
        || match t.kind() {
            K::Dns => !dns_is_temporary(t),
            K::ProxyUnauthorized | K::InvalidProxyUrl | K::InvalidUrl | K::UnknownScheme => true,
            _ => false,
        }
}

impl Client {
    pub fn new(r: &Reference, opts: &SourceOptions, cache: Cache) -> Result<Client, SourceError> {
        let tls = tls::client_config(opts.tls_verify, opts.cert_dir.as_deref(), &r.registry)?;
        let mut agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(120))
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

    /// The error of a request whose transport failed: TLS, or the registry out of reach.
    fn net_err(&self, what: &str, t: ureq::Transport) -> SourceError {
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
        resp.into_reader()
            .take(limit)
            .read_to_end(&mut body)
            .map_err(|e| SourceError::Network {
                what: what.to_string(),
                registry: self.r.registry.clone(),
                source: Box::new(e),
                via: String::new(),
            })?;
        Ok(body)
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
                            && !transport_is_final(&t)
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
                        first_err = Some(self.net_err(&what, t));
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
                    // A token may have expired, or this repository wants another scheme than
                    // the /v2/ ping said: follow its challenge once.
                    let challenge = resp.header("www-authenticate").and_then(parse_challenge);
                    let changed = {
                        let mut st = self.lock();
                        match challenge {
                            Some(c) if st.auth.as_ref() != Some(&c) => {
                                st.auth = Some(c);
                                st.token = None;
                                true
                            }
                            _ => false,
                        }
                    };
                    let bearer = matches!(self.lock().auth, Some(Auth::Bearer { .. }));
                    let can_auth = bearer || (changed && self.creds.is_some());
                    if can_auth && !refreshed {
                        refreshed = true;
                        authz = self.authorization(true)?;
                        continue;
                    }
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
                    if attempt + 1 < ATTEMPTS && !transport_is_final(&t) =>
                {
                    attempt += 1;
                    backoff(attempt, None);
                }
                Err(ureq::Error::Transport(t)) => return Err(self.net_err(what, t)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// The transport error of an `https` GET to a local server that answers each connection
    /// with `reply` and hangs up.
    fn https_failure(reply: &'static [u8]) -> ureq::Transport {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(reply);
            }
        });
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls::client_config(true, None, "127.0.0.1").unwrap())
            .build();
        match agent.get(&format!("https://127.0.0.1:{port}/v2/")).call() {
            Err(ureq::Error::Transport(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    /// A transport error carrying `e` as its cause.
    fn transport(e: std::io::Error) -> ureq::Transport {
        match ureq::Error::from(e) {
            ureq::Error::Transport(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_failures_are_told_by_their_cause() {
        // A plain-HTTP server on the https port: rustls cannot read its answer.
        let t = https_failure(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(
            matches!(tls_failure(&t), Some(TlsFailure::Rustls(_))),
            "{t}"
        );
        assert!(transport_is_final(&t));
        // A server that hangs up on the ClientHello.
        let t = https_failure(b"");
        assert_eq!(tls_failure(&t), Some(TlsFailure::HungUp), "{t}");
        assert!(transport_is_final(&t));
        // An alert asking for a client certificate, inside the io::Error rustls returns.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let t = transport(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        let tls = tls_failure(&t).unwrap();
        assert!(tls.wants_client_certificate(), "{t}");
        // Other alerts are TLS failures too, but not about a client certificate.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let t = transport(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(!tls_failure(&t).unwrap().wants_client_certificate());
    }

    #[test]
    fn connection_failures_without_tls_are_retried() {
        // Nothing listens on the port: refused, not TLS, worth another attempt.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = match ureq::get(&format!("https://127.0.0.1:{port}/v2/")).call() {
            Err(ureq::Error::Transport(t)) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(tls_failure(&t), None, "{t}");
        assert!(!transport_is_final(&t), "{t}");
        // A connection cut while reading an answer, even one whose text says "TLS".
        let t = transport(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "TLS certificate handshake",
        ));
        assert_eq!(tls_failure(&t), None, "{t}");
        assert!(!transport_is_final(&t));
    }

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
