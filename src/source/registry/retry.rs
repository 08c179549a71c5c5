//! The one retry loop of the registry client, for requests (the `/v2/` ping, manifests,
//! tokens, blobs) and for blob bodies cut short: up to [`ATTEMPTS`] attempts with a backoff
//! between them (or what the server's `Retry-After` asks), and what another attempt may cure,
//! told from the typed error: a 429 or 5xx answer, a transport error that is not TLS, not a
//! host name that does not exist, not refused proxy credentials.

use std::time::Duration;

/// Attempts at one request or download, the first included.
const ATTEMPTS: u32 = 5;

/// Why an attempt failed: for good, or in a way another attempt may cure. The error is boxed:
/// failures are rare and `ureq::Error` is large.
pub(super) enum Failure<E> {
    /// Worth another attempt, after the backoff or the server's `Retry-After` (seconds).
    Transient {
        error: Box<E>,
        retry_after: Option<String>,
    },
    Final(Box<E>),
}

impl<E> Failure<E> {
    /// Worth another attempt after the backoff.
    pub(super) fn transient(error: E) -> Failure<E> {
        Failure::Transient {
            error: Box::new(error),
            retry_after: None,
        }
    }

    /// Not worth another attempt.
    pub(super) fn fatal(error: E) -> Failure<E> {
        Failure::Final(Box::new(error))
    }
}

/// Runs `attempt` until it succeeds, fails for good or has failed [`ATTEMPTS`] times,
/// sleeping between attempts; the error is the last attempt's.
pub(super) fn retry<T, E>(attempt: impl FnMut() -> Result<T, Failure<E>>) -> Result<T, E> {
    retry_counting(&mut 0, attempt)
}

/// [`retry`], counting failures in `failed`: a caller that starts over after an error (a
/// request sent again with a new token) keeps to [`ATTEMPTS`] all told.
pub(super) fn retry_counting<T, E>(
    failed: &mut u32,
    mut attempt: impl FnMut() -> Result<T, Failure<E>>,
) -> Result<T, E> {
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Failure::Transient { retry_after, .. }) if *failed + 1 < ATTEMPTS => {
                *failed += 1;
                backoff(*failed, retry_after.as_deref());
            }
            Err(Failure::Transient { error, .. } | Failure::Final(error)) => return Err(*error),
        }
    }
}

/// 250 ms doubling with each failure (up to 8 s), or `Retry-After` seconds (up to 10).
fn backoff(failed: u32, retry_after: Option<&str>) {
    let secs = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| s.min(10));
    let d = secs
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250 << failed.min(5)));
    std::thread::sleep(d);
}

/// A failed request as [`retry`] sees it: 429 and 5xx answers (with their `Retry-After`) and
/// the transport errors [`transport_is_final`] does not name are worth another attempt.
pub(super) fn classify(e: ureq::Error) -> Failure<ureq::Error> {
    match e {
        ureq::Error::Status(s, ref resp) if s == 429 || s >= 500 => Failure::Transient {
            retry_after: resp.header("retry-after").map(str::to_string),
            error: Box::new(e),
        },
        ureq::Error::Transport(ref t) if !transport_is_final(t) => Failure::transient(e),
        e => Failure::fatal(e),
    }
}

/// How TLS failed, when TLS is behind a transport error.
#[derive(Debug, PartialEq)]
pub(super) enum TlsFailure<'a> {
    /// rustls refused the connection: a certificate, an alert from the server, the protocol.
    Rustls(&'a rustls::Error),
    /// The server hung up during the handshake (as a plain-HTTP server does on a ClientHello).
    HungUp,
}

impl TlsFailure<'_> {
    /// The server's alert when it wants a client certificate, or refuses ours.
    pub(super) fn wants_client_certificate(&self) -> bool {
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
pub(super) fn tls_failure(t: &ureq::Transport) -> Option<TlsFailure<'_>> {
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

/// A registry that did not answer (connect or read) within `--registry-timeout`.
pub(super) fn timed_out(t: &ureq::Transport) -> bool {
    crate::error::causes(t).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// Transport errors that another attempt cannot cure: TLS failures, a host name that does not
/// exist (a temporary resolver failure is retried), refused proxy credentials, bad URLs, and a
/// registry that did not answer within `--registry-timeout` (waiting again and again would
/// keep d2v hanging: the user runs it again, or gives it more time).
fn transport_is_final(t: &ureq::Transport) -> bool {
    use ureq::ErrorKind as K;
    tls_failure(t).is_some()
        || timed_out(t)
        || match t.kind() {
            K::Dns => !dns_is_temporary(t),
            K::ProxyUnauthorized | K::InvalidProxyUrl | K::InvalidUrl | K::UnknownScheme => true,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tls;
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
    fn a_registry_that_timed_out_is_not_asked_again() {
        // Waiting --registry-timeout again and again would keep d2v hanging.
        let t = transport(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        ));
        assert!(timed_out(&t) && transport_is_final(&t), "{t}");
    }

    #[test]
    fn retry_stops_at_a_final_failure_or_after_the_attempts() {
        let again = |n: u32| Failure::Transient {
            error: Box::new(n),
            retry_after: Some("0".into()),
        };
        let mut n = 0;
        let r: Result<(), u32> = retry(|| {
            n += 1;
            Err(if n == 2 { Failure::fatal(n) } else { again(n) })
        });
        assert_eq!(r, Err(2));
        let mut n = 0;
        let r: Result<(), u32> = retry(|| {
            n += 1;
            Err(again(n))
        });
        assert_eq!(r, Err(ATTEMPTS));
        let mut n = 0;
        let r = retry(|| {
            n += 1;
            if n < 3 {
                Err(again(n))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r, Ok(3));
    }
}
