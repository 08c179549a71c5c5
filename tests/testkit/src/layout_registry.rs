//! A minimal registry on 127.0.0.1 (plain HTTP, anonymous) serving one image of an OCI layout
//! by tag, whose blob downloads a test can make misbehave in ways the real registry does not:
//! stall halfway, or redirect to another place.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::http::read_request_head;

/// What a blob request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blob {
    /// The blob.
    Serve,
    /// The headers of the whole blob and half its bytes, then nothing until the client hangs
    /// up ([`LayoutRegistry::stalled`] is set then).
    Stall,
    /// `307 Temporary Redirect` to this URL.
    Redirect(String),
}

/// The registry; it serves until the test process ends.
pub struct LayoutRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Set when a [`Blob::Stall`] download has sent its half.
    pub stalled: Arc<AtomicBool>,
    behaviour: Arc<Mutex<Vec<(String, Blob)>>>,
}

struct Served {
    dir: PathBuf,
    manifest: Vec<u8>,
    stalled: Arc<AtomicBool>,
    behaviour: Arc<Mutex<Vec<(String, Blob)>>>,
}

impl LayoutRegistry {
    /// Serves the image tagged `tag` in the OCI layout `dir` under any repository name (its
    /// manifest for every tag).
    pub fn start(dir: &Path, tag: &str) -> LayoutRegistry {
        let (desc, _) = crate::cli::manifest_of(dir, tag);
        let manifest =
            std::fs::read(crate::oci::blob_path(dir, desc["digest"].as_str().unwrap())).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
        let reg = LayoutRegistry {
            host,
            stalled: Arc::new(AtomicBool::new(false)),
            behaviour: Arc::new(Mutex::new(Vec::new())),
        };
        let served = Arc::new(Served {
            dir: dir.to_path_buf(),
            manifest,
            stalled: reg.stalled.clone(),
            behaviour: reg.behaviour.clone(),
        });
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || served.answer(conn));
            }
        });
        reg
    }

    /// Sets what requests for the blob `digest` get from now on.
    pub fn set(&self, digest: &str, blob: Blob) {
        let mut b = self.behaviour.lock().unwrap();
        b.retain(|(d, _)| d != digest);
        b.push((digest.to_string(), blob));
    }
}

const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl Served {
    fn answer(&self, mut s: TcpStream) {
        // A TLS ClientHello (d2v tries https first): hang up as a plain server would.
        let mut first = [0u8; 1];
        if s.peek(&mut first).unwrap_or(0) == 1 && first[0] == 0x16 {
            return;
        }
        let mut r = BufReader::new(s.try_clone().unwrap());
        let head = read_request_head(&mut r).unwrap_or_default();
        let blob = head.path.rsplit_once("/blobs/").map(|(_, d)| d.to_string());
        let how = blob.as_ref().and_then(|d| {
            let b = self.behaviour.lock().unwrap();
            b.iter().find(|(x, _)| x == d).map(|(_, how)| how.clone())
        });
        if let Some(Blob::Redirect(to)) = &how {
            let _ = write!(
                s,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            return;
        }
        let (body, ctype) = if head.path == "/v2/" {
            (b"{}".to_vec(), "application/json")
        } else if head.path.contains("/manifests/") {
            (
                self.manifest.clone(),
                "application/vnd.oci.image.manifest.v1+json",
            )
        } else if let Some(Ok(b)) = blob.as_ref().map(|d| {
            let hex = d.trim_start_matches("sha256:");
            std::fs::read(self.dir.join("blobs/sha256").join(hex))
        }) {
            (b, "application/octet-stream")
        } else {
            let _ = s.write_all(NOT_FOUND);
            return;
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Docker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            crate::cli::sha256(&body)
        );
        if head.method == "HEAD" {
            return;
        }
        if how == Some(Blob::Stall) {
            let _ = s.write_all(&body[..body.len() / 2]);
            let _ = s.flush();
            self.stalled.store(true, Ordering::SeqCst);
            // Nothing more, until the client hangs up.
            let _ = s.read(&mut [0u8; 1]);
            return;
        }
        let _ = s.write_all(&body);
    }
}
