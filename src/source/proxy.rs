//! HTTP proxies from the environment, as curl and Go's net/http (so skopeo and docker) read
//! them: `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/`HTTP_PROXY` for plain http,
//! `all_proxy`/`ALL_PROXY` for either when those are unset; `no_proxy`/`NO_PROXY` lists hosts
//! reached directly (`*`, `host`, `host:port`, `.domain` or `domain` for the domain and every
//! name below it, IP addresses). Loopback hosts are always reached directly.
//! The proxy URL may hold credentials (`http://user:pass@proxy:3128`); they never appear in
//! messages or Debug output.

use std::fmt;

/// The proxy settings d2v uses; `ProxyConfig::from_env` reads them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `https_proxy` (or `HTTPS_PROXY`).
    pub https: Option<String>,
    /// `http_proxy` (or `HTTP_PROXY`).
    pub http: Option<String>,
    /// `all_proxy` (or `ALL_PROXY`): for a scheme without its own.
    pub all: Option<String>,
    /// `NO_PROXY` entries, trimmed and lowercased.
    pub no_proxy: Vec<String>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |p: &Option<String>| p.as_deref().map(redact);
        f.debug_struct("ProxyConfig")
            .field("https", &show(&self.https))
            .field("http", &show(&self.http))
            .field("all", &show(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `http://user:pass@proxy:3128` → `http://<credentials>@proxy:3128`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let sep = if scheme.is_empty() { "" } else { "://" };
    match rest.split_once('@') {
        Some((_, host)) => format!("{scheme}{sep}<credentials>@{host}"),
        None => url.to_string(),
    }
}

impl ProxyConfig {
    /// The settings in this process's environment (lower case first, as curl reads them).
    pub(crate) fn from_env() -> ProxyConfig {
        ProxyConfig::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings from `var` (a name → value lookup).
    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> ProxyConfig {
        let get = |name: &str| {
            var(name)
                .or_else(|| var(&name.to_ascii_uppercase()))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        ProxyConfig {
            https: get("https_proxy"),
            http: get("http_proxy"),
            all: get("all_proxy"),
            no_proxy: get("no_proxy")
                .unwrap_or_default()
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// The proxy for a `scheme` (`https`/`http`) URL to `host` (`name`, `name:port`,
    /// `[v6]:port`), or `None` to connect directly.
    pub(crate) fn for_url(&self, scheme: &str, host: &str) -> Option<&str> {
        let proxy = match scheme {
            "https" => self.https.as_deref(),
            _ => self.http.as_deref(),
        }
        .or(self.all.as_deref())?;
        (!self.bypass(host)).then_some(proxy)
    }

    /// Whether `host` is reached directly: loopback, or listed in `NO_PROXY`.
    pub(crate) fn bypass(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = host_name(&host);
        if is_loopback(name) {
            return true;
        }
        self.no_proxy.iter().any(|e| {
            if e == "*" {
                return true;
            }
            if e.contains(':') && !e.starts_with('[') && e.matches(':').count() == 1 {
                return *e == host; // host:port
            }
            let e = e.trim_start_matches("*.").trim_start_matches('.');
            let e = e.trim_start_matches('[').trim_end_matches(']');
            name == e || name.ends_with(&format!(".{e}"))
        })
    }
}

/// `name:port` → `name`; `[v6]:port` or `[v6]` → `v6`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn is_loopback(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(|k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn scheme_picks_the_variable_and_all_proxy_is_the_fallback() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://s:3128"),
            ("http_proxy", "http://p:3128"),
        ]);
        assert_eq!(c.for_url("https", "ghcr.io"), Some("http://s:3128"));
        assert_eq!(c.for_url("http", "reg:5000"), Some("http://p:3128"));
        let c = cfg(&[("ALL_PROXY", "http://a:1")]);
        assert_eq!(c.for_url("https", "ghcr.io"), Some("http://a:1"));
        assert_eq!(c.for_url("http", "ghcr.io"), Some("http://a:1"));
        // Lower case wins over upper case, as in curl.
        let c = cfg(&[
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:1"),
        ]);
        assert_eq!(c.for_url("https", "x.io"), Some("http://low:1"));
        assert_eq!(cfg(&[]).for_url("https", "ghcr.io"), None);
        assert_eq!(
            cfg(&[("HTTPS_PROXY", "  ")]).for_url("https", "ghcr.io"),
            None
        );
    }

    #[test]
    fn no_proxy_and_loopback_go_direct() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://s:3128"),
            (
                "NO_PROXY",
                " .corp.example, registry.local:5000,10.1.2.3 ,[fd00::1],Intern.IO",
            ),
        ]);
        for direct in [
            "a.corp.example",
            "corp.example",
            "registry.local:5000",
            "10.1.2.3",
            "10.1.2.3:443",
            "[fd00::1]:5000",
            "intern.io",
            "x.intern.io:443",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:443",
            "a.localhost",
        ] {
            assert_eq!(c.for_url("https", direct), None, "{direct}");
        }
        for proxied in [
            "ghcr.io",
            "notcorp.example",
            "registry.local",
            "registry.local:5001",
            "10.1.2.33",
            "xintern.io",
        ] {
            assert_eq!(
                c.for_url("https", proxied),
                Some("http://s:3128"),
                "{proxied}"
            );
        }
        let all = cfg(&[("HTTPS_PROXY", "http://s:1"), ("no_proxy", "*")]);
        assert_eq!(all.for_url("https", "ghcr.io"), None);
    }

    #[test]
    fn credentials_are_redacted() {
        let c = cfg(&[("HTTPS_PROXY", "http://bob:s3cret@proxy:3128")]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("bob"),
            "{shown}"
        );
        assert!(shown.contains("proxy:3128"), "{shown}");
        assert_eq!(redact("proxy:3128"), "proxy:3128");
        assert_eq!(redact("u:p@proxy:1"), "<credentials>@proxy:1");
    }
}
