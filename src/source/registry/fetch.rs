//! Manifests and blobs from the registry, through the blob cache.

use std::io::{Read, Write};

use indicatif::ProgressBar;

use super::retry::{retry, Failure};
use super::{pace, Client};
use crate::source::cache::{sha256_digest, BlobWriter};
use crate::source::fetcher::{Fetcher, Location};
use crate::source::manifest::{Descriptor, ACCEPT, MAX_CONFIG, MAX_MANIFEST};
use crate::source::{named_with_digest, SourceError};

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
        let served = resp
            .header("docker-content-digest")
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string);
        let body = self.read_body(resp, MAX_MANIFEST + 1, &what)?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(SourceError::TooLarge {
                what,
                limit: MAX_MANIFEST,
            });
        }
        // For a tag the registry's Docker-Content-Digest is the only digest to check against.
        if let Some(want) = served.filter(|_| !reference.starts_with("sha256:")) {
            let got = sha256_digest(&body);
            if got != want {
                return Err(SourceError::DigestMismatch {
                    what,
                    expected: want,
                    got,
                });
            }
        }
        Ok((body, ct))
    }

    fn config(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError> {
        let at = self.blob(desc, what, &ProgressBar::hidden())?;
        self.cache
            .read_small(&desc.digest, MAX_CONFIG)?
            .ok_or_else(|| SourceError::Layout {
                path: at.path,
                why: "config blob vanished from the cache".into(),
            })
    }

    fn keep_manifest(&self, bytes: &[u8], digest: &str) -> Result<(), SourceError> {
        let what = format!("{} manifest {digest}", self.r);
        self.cache
            .put_bytes(bytes, Some((digest, bytes.len() as u64)), &what)?;
        Ok(())
    }

    fn blob(&self, d: &Descriptor, what: &str, bar: &ProgressBar) -> Result<Location, SourceError> {
        if let Some(p) = self.cache.get(&d.digest, Some(d.size))? {
            bar.set_position(d.size);
            return Ok(Location::cached(p));
        }
        // Resume what an earlier run left; if those bytes turn out wrong, once more afresh.
        let w = self.cache.resumable_writer(&d.digest)?;
        let resumed = w.resumed() > 0;
        let what_from = format!("{what} from {}", self.r.registry);
        match self
            .download(d, what, bar, w)?
            .commit(Some((&d.digest, d.size)), &what_from)
        {
            Err(SourceError::DigestMismatch { .. }) if resumed => {
                let w = self.cache.resumable_writer(&d.digest)?;
                self.download(d, what, bar, w)?
                    .commit(Some((&d.digest, d.size)), &what_from)?;
            }
            r => {
                r?;
            }
        }
        self.cache.path(&d.digest).map(Location::cached)
    }
}

impl Client {
    /// Downloads blob `d` into `w` from where `w` ends (Range), retrying cut-short bodies; a
    /// body that stalls is given up on at once (its bytes stay in `w`'s partial file).
    fn download(
        &self,
        d: &Descriptor,
        what: &str,
        bar: &ProgressBar,
        mut w: BlobWriter,
    ) -> Result<BlobWriter, SourceError> {
        let path = format!("blobs/{}", d.digest);
        if w.len() > d.size {
            // Not this blob's bytes: a Range request past its end would only fail.
            w.restart().map_err(|e| self.cache_err(e))?;
        }
        bar.set_position(w.len());
        if w.len() == d.size {
            return Ok(w); // all there already (a run that stopped before renaming it)
        }
        let mut buf = vec![0u8; 256 << 10];
        retry(|| {
            let from = (!w.is_empty()).then(|| w.len());
            let resp = self
                .send("GET", &path, None, from, what)
                .map_err(Failure::fatal)?;
            let resumed = resp.status() == 206
                && resp
                    .header("content-range")
                    .and_then(|c| c.strip_prefix("bytes "))
                    .and_then(|c| c.split('-').next())
                    == Some(&w.len().to_string());
            if !resumed && !w.is_empty() {
                w.restart().map_err(|e| Failure::fatal(self.cache_err(e)))?;
            }
            self.receive(resp, &mut w, d.size, bar, &mut buf)
                .map_err(|f| match f {
                    Failure::Transient { error, .. } if pace::stall_of(&error).is_some() => {
                        Failure::fatal(self.body_err(&named_with_digest(what, &d.digest), *error))
                    }
                    Failure::Transient { error, .. } => {
                        Failure::transient(SourceError::SizeMismatch {
                            what: format!("{what} (download kept failing: {error})"),
                            digest: d.digest.clone(),
                            expected: d.size,
                            got: w.len(),
                        })
                    }
                    Failure::Final(e) => Failure::fatal(self.cache_err(*e)),
                })
        })?;
        Ok(w)
    }

    /// Appends `resp`'s body to `w`, up to one byte past `size` (commit reports the size
    /// mismatch). A failed read is worth another request; a failed write is not.
    fn receive(
        &self,
        resp: ureq::Response,
        w: &mut BlobWriter,
        size: u64,
        bar: &ProgressBar,
        buf: &mut [u8],
    ) -> Result<(), Failure<std::io::Error>> {
        let mut body = self.paced(resp);
        loop {
            match body.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    w.write_all(&buf[..n]).map_err(Failure::fatal)?;
                    bar.set_position(w.len());
                    if w.len() > size {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::transient(e)),
            }
        }
    }

    /// An I/O failure of the blob cache.
    fn cache_err(&self, source: std::io::Error) -> SourceError {
        SourceError::Io {
            path: self.cache.dir().into(),
            source,
        }
    }
}
