//! A forward HTTP proxy on loopback, for d2v's proxy tests: `CONNECT host:port` tunnels and
//! absolute-form requests (`GET http://host:port/path`), with host names mapped to loopback
//! addresses so that a registry is reachable under a name that does not resolve (only through
//! the proxy). Every request is logged; proxy credentials may be required (407 otherwise).

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::http::read_request_head;

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// `CONNECT` or the forwarded method.
    pub method: String,
    /// `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    pub proxy_authorization: Option<String>,
}

pub struct Proxy {
    pub port: u16,
    log: Arc<Mutex<Vec<ProxyRequest>>>,
}

impl Proxy {
    /// Starts a proxy mapping each host name in `hosts` to an IP address (other names are
    /// connected to as they are). With `require_auth` (`user:password`), requests without
    /// those credentials get 407.
    pub fn start(hosts: &[(&str, &str)], require_auth: Option<&str>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let hosts: BTreeMap<String, String> = hosts
            .iter()
            .map(|(h, ip)| (h.to_string(), ip.to_string()))
            .collect();
        let want = require_auth.map(|up| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            )
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let (log, hosts, want) = (l.clone(), hosts.clone(), want.clone());
                std::thread::spawn(move || serve(client, &log, &hosts, want.as_deref()));
            }
        });
        Proxy { port, log }
    }

    /// `http://127.0.0.1:PORT`, with `user:password@` when given.
    pub fn url(&self, creds: Option<&str>) -> String {
        match creds {
            Some(c) => format!("http://{c}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.log.lock().unwrap().clone()
    }
}

/// `name:port` with `name` mapped through `hosts`.
fn upstream(target: &str, hosts: &BTreeMap<String, String>) -> String {
    match target.rsplit_once(':') {
        Some((name, port)) => match hosts.get(name) {
            Some(ip) => format!("{ip}:{port}"),
            None => target.to_string(),
        },
        None => format!("{}:80", hosts.get(target).map_or(target, |s| s.as_str())),
    }
}

fn serve(
    mut client: TcpStream,
    log: &Mutex<Vec<ProxyRequest>>,
    hosts: &BTreeMap<String, String>,
    want: Option<&str>,
) {
    let mut r = BufReader::new(client.try_clone().unwrap());
    let Ok(head) = read_request_head(&mut r) else {
        return;
    };
    let auth = head.header("proxy-authorization").map(str::to_string);
    log.lock().unwrap().push(ProxyRequest {
        method: head.method.clone(),
        target: head.path.clone(),
        proxy_authorization: auth.clone(),
    });
    // The scheme is case-insensitive (ureq sends `basic`).
    let matches = |want: &str| {
        auth.as_deref()
            .and_then(|a| a.split_once(' '))
            .is_some_and(|(scheme, creds)| {
                scheme.eq_ignore_ascii_case("basic")
                    && Some(creds) == want.split_once(' ').map(|w| w.1)
            })
    };
    if want.is_some_and(|w| !matches(w)) {
        let _ = write!(
            client,
            "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    if head.method == "CONNECT" {
        let Ok(up) = TcpStream::connect(upstream(&head.path, hosts)) else {
            let _ = write!(
                client,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
            );
            return;
        };
        let _ = write!(client, "HTTP/1.1 200 Connection established\r\n\r\n");
        let (mut up_r, mut client_w) = (up.try_clone().unwrap(), client);
        let mut up_w = up;
        let t = std::thread::spawn(move || {
            let _ = std::io::copy(&mut up_r, &mut client_w);
            let _ = client_w.shutdown(std::net::Shutdown::Both);
        });
        let _ = std::io::copy(&mut r, &mut up_w);
        let _ = up_w.shutdown(std::net::Shutdown::Write);
        let _ = t.join();
        return;
    }
    // Absolute form: http://host:port/path → origin form to the upstream, one request.
    let Some(rest) = head.path.strip_prefix("http://") else {
        let _ = write!(
            client,
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        );
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Ok(mut up) = TcpStream::connect(upstream(authority, hosts)) else {
        let _ = write!(
            client,
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
        );
        return;
    };
    let mut req = format!("{} {path} HTTP/1.1\r\n", head.method);
    for (k, v) in &head.headers {
        let k_lower = k.to_ascii_lowercase();
        if k_lower != "proxy-authorization" && k_lower != "connection" {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    let len: u64 = head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    let _ = (&mut r).take(len).read_to_end(&mut body);
    if up.write_all(req.as_bytes()).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let _ = std::io::copy(&mut up, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
}
