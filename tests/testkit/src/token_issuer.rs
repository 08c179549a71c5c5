//! A bearer-token issuer for the registry's `auth: token:`: RS256 JWTs signed with
//! `openssl dgst -sign`, the issuer's certificate in `x5c` and in the registry's `rootcertbundle`.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::http::read_request_head;
use crate::registry::{Request, IDENTITY_TOKEN, PASSWORD, USER};
use std::io::Read;

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `GET /token?service=..&scope=repository:NAME:ACTIONS` on 127.0.0.1:`port`: valid
/// basic credentials get the requested access, no credentials get pull access to `public/*`
/// only, wrong credentials get 401. Also the OAuth2 form `POST /token` with
/// `grant_type=refresh_token`: [`IDENTITY_TOKEN`] gets the requested access, any other 401
/// (logged as method `TOKEN-REFRESH`). Every token handed out is added to `issued`.
pub(crate) fn start_token_issuer(
    d: &Path,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    issued: Arc<Mutex<Vec<String>>>,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
    let port = listener.local_addr().unwrap().port();
    let pem = std::fs::read_to_string(d.join("token.crt")).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key = d.join("token.key");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let Ok(head) = read_request_head(&mut r) else {
                continue;
            };
            let authz = head.header("authorization").map(str::to_string);
            let path = head.path.clone();
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            );
            let refresh = head.method == "POST";
            let (query, granted) = if refresh {
                // The form body: grant_type, refresh_token, scope, service, client_id.
                let len = head
                    .header("content-length")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let form = String::from_utf8_lossy(&body).into_owned();
                let field = |k: &str| {
                    form.split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .map(pct_decode)
                };
                let ok = field("grant_type").as_deref() == Some("refresh_token")
                    && field("refresh_token").as_deref() == Some(IDENTITY_TOKEN);
                (form, ok)
            } else {
                let q = path
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .to_string();
                let ok = authz.is_none() || authz.as_deref() == Some(want.as_str());
                (q, ok)
            };
            let anonymous = !refresh && authz.is_none();
            let (status, body) = if !granted {
                (
                    401,
                    r#"{"details":"invalid or missing credentials"}"#.to_string(),
                )
            } else {
                let mut access = Vec::new();
                for kv in query.split('&') {
                    if let Some(v) = kv.strip_prefix("scope=") {
                        let v = pct_decode(v);
                        let parts: Vec<&str> = v.split(':').collect();
                        if parts.len() == 3 {
                            let mut actions: Vec<&str> = parts[2].split(',').collect();
                            if anonymous {
                                // Like Docker Hub: anonymous pulls of public repositories only.
                                actions.retain(|a| *a == "pull" && parts[1].starts_with("public/"));
                            }
                            access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}));
                        }
                    }
                }
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
                let claims = serde_json::json!({
                    "iss": "d2v-test-issuer", "sub": USER, "aud": "d2v-test-registry",
                    "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", access.len()),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut child = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("openssl dgst");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())
                    .unwrap();
                let sig = child.wait_with_output().unwrap().stdout;
                let jwt = format!("{signing_input}.{}", b64url(&sig));
                issued.lock().unwrap().push(jwt.clone());
                (
                    200,
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600})
                        .to_string(),
                )
            };
            log.lock().unwrap().push(Request {
                method: if refresh { "TOKEN-REFRESH" } else { "TOKEN" }.into(),
                path: path.clone(),
                status,
            });
            let reason = if status == 200 { "OK" } else { "Unauthorized" };
            let _ = write!(
                s,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            pct_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
    }
}
