//! Bearer tokens: the WWW-Authenticate challenge and the token endpoint (a GET with basic
//! auth or none, or for an identity token an OAuth2 `refresh_token` grant POSTed as a form).

use super::retry::{classify, retry, Failure};
use super::{detail, is_loopback, Auth, Client};
use crate::source::auth::Creds;
use crate::source::SourceError;

/// Parses `Bearer realm="...",service="..."` / `Basic realm="..."`.
pub(super) fn parse_challenge(h: &str) -> Option<Auth> {
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

/// The token of a token endpoint's JSON answer: `token`, else `access_token`; `None` when
/// the answer is not JSON or the token is missing or empty.
pub(super) fn token_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["token"]
        .as_str()
        .or(v["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
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

impl Client {
    /// Gets a bearer token for pulling this repository.
    fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String, SourceError> {
        let what = format!(
            "{}/{} (token from {realm})",
            self.r.registry, self.r.repository
        );
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
        let resp = retry(|| self.ask_token(realm, &url, &scope, service)).map_err(|e| match e {
            ureq::Error::Status(401 | 403, _) => SourceError::Unauthorized {
                what: what.clone(),
                registry: self.r.registry.clone(),
                hint: self.auth_hint(),
            },
            ureq::Error::Status(status, r) => SourceError::Http {
                what: what.clone(),
                status,
                detail: detail(r),
            },
            ureq::Error::Transport(t) => self.net_err(&what, t),
        })?;
        let body = self.read_body(resp, 1 << 20, &what)?;
        token_of(&body).ok_or_else(|| SourceError::Http {
            what,
            status: 200,
            detail: " without a token in its JSON answer".into(),
        })
    }

    /// One request to the token endpoint, classified for [`retry`] (`url`, `realm` with the query). An identity token
    /// is exchanged with an OAuth2 refresh_token grant (POST, form body), as docker does; user
    /// and password go as basic auth on a GET.
    fn ask_token(
        &self,
        realm: &str,
        url: &str,
        scope: &str,
        service: Option<&str>,
    ) -> Result<ureq::Response, Failure<ureq::Error>> {
        let identity = self
            .creds
            .as_ref()
            .and_then(|c| c.identity_token.as_deref());
        match identity {
            Some(refresh_token) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("scope", scope),
                    ("client_id", "d2v"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let form: Vec<(String, String)> = form
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let req = self.agent.post(realm);
                self.call_with(move || {
                    let form: Vec<(&str, &str)> =
                        form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    req.send_form(&form).map_err(Box::new)
                })
                .map_err(|e| classify(*e))
            }
            None => {
                let mut req = self.agent.get(url);
                if let Some(c) = &self.creds {
                    req = req.set("Authorization", &c.basic_header());
                }
                self.call(req).map_err(|e| classify(*e))
            }
        }
    }

    pub(super) fn auth_hint(&self) -> String {
        if self.creds.is_some() {
            " (the credentials d2v found were rejected)".into()
        } else {
            " (d2v found no credentials for it)".into()
        }
    }

    /// The Authorization header for the next request (fetching a token when needed).
    pub(super) fn authorization(&self, refresh: bool) -> Result<Option<String>, SourceError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
