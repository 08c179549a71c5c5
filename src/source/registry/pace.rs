//! The low-speed rule for registry response bodies: each [`MIN_BYTES`] must arrive within
//! `--registry-timeout` seconds of the previous ones. A registry that sends nothing (the
//! socket's read timeout, the same number of seconds, ends the wait) or trickles a byte a
//! second (which no per-read timeout catches) has stalled: d2v gives up for good, and the next
//! run resumes the partial download.
//!
//! Before the body, the response headers: ureq 2's per-read timeout lets a registry that
//! trickles them a byte a second hold d2v forever, so [`call_within`] waits for the whole
//! response head at most twice `--registry-timeout` (one to connect, one to answer).

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// Fewer bytes than this in `--registry-timeout` is a stall.
pub(crate) const MIN_BYTES: u64 = 1024;

/// How a body stalled, as the error says it ("sent 2 bytes in 2 s").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Stall(pub(crate) String);

/// The stall behind `e`, if `e` is one.
pub(super) fn stall_of(e: &io::Error) -> Option<&Stall> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Stall>())
}

/// Sends a request (`send`) and waits at most `limit` for the status line and headers. The
/// request runs on a thread of its own, abandoned when the limit passes (it ends when the
/// registry hangs up or the process exits); the error is then a [`Stall`] as a transport error.
pub(super) fn call_within(
    limit: Duration,
    send: impl FnOnce() -> Result<ureq::Response, Box<ureq::Error>> + Send + 'static,
) -> Result<ureq::Response, Box<ureq::Error>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let call = move || {
        let _ = tx.send(send());
    };
    if let Err(e) = std::thread::Builder::new()
        .name("d2v-request".into())
        .spawn(call)
    {
        return Err(Box::new(e.into()));
    }
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(Box::new(
            io::Error::new(
                io::ErrorKind::TimedOut,
                Stall(format!(
                    "did not finish its response headers in {} s",
                    limit.as_secs()
                )),
            )
            .into(),
        )),
    }
}

/// The stall behind a transport error, if it is one.
pub(super) fn stall_of_transport(t: &ureq::Transport) -> Option<&Stall> {
    crate::error::causes(t)
        .find_map(|e| e.downcast_ref::<io::Error>())
        .and_then(stall_of)
}

/// A response body held to the low-speed rule.
pub(super) struct Paced<R> {
    inner: R,
    limit: Duration,
    since: Instant,
    bytes: u64,
}

impl<R: Read> Paced<R> {
    pub(super) fn new(inner: R, limit: Duration) -> Paced<R> {
        Paced {
            inner,
            limit,
            since: Instant::now(),
            bytes: 0,
        }
    }

    fn stalled(&self) -> io::Error {
        let secs = self.since.elapsed().as_secs();
        let how = if self.bytes == 0 {
            format!("sent nothing for {secs} s")
        } else {
            format!("sent only {} bytes in {secs} s", self.bytes)
        };
        io::Error::new(io::ErrorKind::TimedOut, Stall(how))
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(self.stalled()),
            r => r?,
        };
        self.bytes += n as u64;
        if self.bytes >= MIN_BYTES {
            self.since = Instant::now();
            self.bytes = 0;
        } else if n > 0 && self.since.elapsed() >= self.limit {
            return Err(self.stalled());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `chunk` bytes a read, sleeping `pause` before each.
    struct Slow {
        chunk: usize,
        pause: Duration,
        left: usize,
    }

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.pause);
            let n = self.chunk.min(self.left).min(buf.len());
            buf[..n].fill(7);
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_trickle_is_a_stall_a_steady_stream_is_not() {
        let limit = Duration::from_millis(200);
        let trickle = Slow {
            chunk: 1,
            pause: Duration::from_millis(20),
            left: 1 << 20,
        };
        let e = io::copy(&mut Paced::new(trickle, limit), &mut io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stall_of(&e).unwrap().0.contains("sent only"), "{e}");
        // 4 KiB every 20 ms, over several stretches: fine.
        let steady = Slow {
            chunk: 4096,
            pause: Duration::from_millis(20),
            left: 40 * 4096,
        };
        let n = io::copy(&mut Paced::new(steady, limit), &mut io::sink()).unwrap();
        assert_eq!(n, 40 * 4096);
        // A short body that ends within the stretch, however slowly.
        let short = Slow {
            chunk: 1,
            pause: Duration::from_millis(20),
            left: 3,
        };
        assert_eq!(
            io::copy(&mut Paced::new(short, limit), &mut io::sink()).unwrap(),
            3
        );
    }

    #[test]
    fn a_read_timeout_is_a_stall() {
        struct Silent;
        impl Read for Silent {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::TimedOut, "timed out reading"))
            }
        }
        let e = Paced::new(Silent, Duration::from_secs(1))
            .read(&mut [0u8; 8])
            .unwrap_err();
        assert!(stall_of(&e).unwrap().0.contains("sent nothing"), "{e}");
    }
}
