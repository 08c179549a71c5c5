//! Read-ahead: a reader (a layer's decompressor) run on a thread of its own, so that
//! decompression overlaps with whatever the caller does with the bytes (tar parsing, hashing,
//! the spill file).
//!
//! The producer thread fills fixed-size buffers and hands them over a bounded channel; the
//! consumer hands emptied buffers back for reuse. At most `bufs` buffers of `size` bytes ever
//! exist, so memory stays bounded whatever the speed of either side.
//!
//! Errors of the inner reader reach the consumer unchanged (same kind, same message), after
//! every byte read before them. Dropping the [`ReadAhead`] early stops the thread (its next
//! hand-over fails) and waits for it, so for at most one buffer's worth of reading (the inner
//! reader should not block indefinitely: a file, not a socket); a panic on the thread becomes
//! an `io::Error`.

use std::any::Any;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// From the producer: `n` bytes at the start of a buffer, or the end of the stream.
enum Msg {
    Data(Vec<u8>, usize),
    End(io::Result<()>),
}

enum State {
    Reading,
    Eof,
    /// The first error was returned as it was; later reads repeat its kind and text.
    Failed(io::ErrorKind, String),
}

pub struct ReadAhead {
    full: Option<Receiver<Msg>>,
    empty: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    state: State,
}

impl ReadAhead {
    /// Starts reading `src` on a new thread named `name`, with at most `bufs` buffers
    /// (≥ 2) of `size` bytes in flight.
    pub fn new<R: Read + Send + 'static>(
        src: R,
        name: &str,
        bufs: usize,
        size: usize,
    ) -> io::Result<ReadAhead> {
        // The channels never hold more than the buffers that exist (`bufs`), so their
        // bounds only save allocations; the buffer count is what bounds memory.
        let bufs = bufs.max(2);
        let (full_tx, full_rx) = mpsc::sync_channel(bufs);
        let (empty_tx, empty_rx) = mpsc::channel();
        // Allocated here, not on the thread: glibc would give the thread an arena of its
        // own, which keeps freed buffers resident after the thread has ended.
        for _ in 0..bufs {
            let _ = empty_tx.send(vec![0u8; size.max(1)]);
        }
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || produce(src, &full_tx, &empty_rx))?;
        Ok(ReadAhead {
            full: Some(full_rx),
            empty: Some(empty_tx),
            thread: Some(thread),
            cur: Vec::new(),
            len: 0,
            pos: 0,
            state: State::Reading,
        })
    }

    /// Waits for the producer thread (it has ended or is about to); its panic as an error.
    fn join(&mut self) -> io::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Err(payload)) => Err(io::Error::other(format!(
                "read-ahead thread panicked: {}",
                panic_text(&*payload)
            ))),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.state = State::Failed(e.kind(), e.to_string());
        self.full = None;
        self.empty = None;
        e
    }
}

fn produce<R: Read>(mut src: R, full: &SyncSender<Msg>, empty: &Receiver<Vec<u8>>) {
    // A buffer handed back, or the consumer is gone.
    while let Ok(mut buf) = empty.recv() {
        let (n, end) = fill(&mut src, &mut buf);
        if n > 0 && full.send(Msg::Data(buf, n)).is_err() {
            return;
        }
        if let Some(end) = end {
            let _ = full.send(Msg::End(end));
            return;
        }
    }
}

/// Reads into `buf` until it is full or the stream ends or fails; the bytes read and, if
/// the stream ended or failed, how.
fn fill<R: Read>(src: &mut R, buf: &mut [u8]) -> (usize, Option<io::Result<()>>) {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => return (n, Some(Ok(()))),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(Err(e))),
        }
    }
    (n, None)
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.len {
                let n = out.len().min(self.len - self.pos);
                out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match &self.state {
                State::Reading => {}
                State::Eof => return Ok(0),
                State::Failed(kind, text) => return Err(io::Error::new(*kind, text.clone())),
            }
            let used = std::mem::take(&mut self.cur);
            if let (Some(empty), true) = (&self.empty, used.capacity() > 0) {
                // The producer may be gone (it ended): then the buffer is simply freed.
                let _ = empty.send(used);
            }
            let Some(full) = &self.full else {
                return Ok(0);
            };
            match full.recv() {
                Ok(Msg::Data(buf, n)) => {
                    self.cur = buf;
                    self.len = n;
                    self.pos = 0;
                }
                Ok(Msg::End(Ok(()))) => {
                    self.full = None;
                    self.empty = None;
                    self.join().map_err(|e| self.fail(e))?;
                    self.state = State::Eof;
                }
                Ok(Msg::End(Err(e))) => {
                    // The thread is ending: reap it (an error it returned did not panic it).
                    let _ = self.join();
                    return Err(self.fail(e));
                }
                // Gone without saying how: it panicked.
                Err(_) => {
                    let e = self
                        .join()
                        .err()
                        .unwrap_or_else(|| io::Error::other("read-ahead thread ended early"));
                    return Err(self.fail(e));
                }
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Disconnect both channels first: a producer blocked on either wakes up and returns,
        // one busy filling a buffer returns at its next hand-over.
        self.full = None;
        self.empty = None;
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Yields `data` in reads of at most `step` bytes, then fails with `err` if given.
    struct Src {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        err: Option<io::Error>,
        reads: Arc<AtomicUsize>,
    }

    impl Src {
        fn new(data: Vec<u8>, step: usize) -> Src {
            Src {
                data,
                pos: 0,
                step,
                err: None,
                reads: Arc::default(),
            }
        }
    }

    impl Read for Src {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.pos == self.data.len() {
                return match self.err.take() {
                    Some(e) => Err(e),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn bytes_arrive_in_order_whatever_the_read_sizes() {
        // (bytes, inner read size, buffers, buffer size, outer read size)
        for (len, step, bufs, size, out) in [
            (1_000_003, usize::MAX, 4, 256 << 10, 64 << 10),
            (1_000_003, 1000, 2, 4096, 1),
            (100_003, 1, 3, 17, 4099),
            (10_007, 65536, 2, 1, 7),
            (1_000_003, usize::MAX, 4, 2 << 20, 3 << 20),
            (4096, 4096, 2, 4096, 4096),
        ] {
            let d = data(len);
            let mut r = ReadAhead::new(Src::new(d.clone(), step), "t", bufs, size).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; out];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(n <= out);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(
                got, d,
                "len {len} step {step} bufs {bufs} size {size} out {out}"
            );
            // The end stays the end.
            assert_eq!(r.read(&mut buf).unwrap(), 0);
            assert_eq!(r.read(&mut []).unwrap(), 0);
        }
    }

    #[test]
    fn empty_stream_and_empty_reads() {
        let mut r = ReadAhead::new(io::empty(), "t", 2, 8).unwrap();
        assert_eq!(r.read(&mut []).unwrap(), 0);
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).unwrap(), 0);
        let mut r = ReadAhead::new(&b"abc"[..], "t", 2, 8).unwrap();
        assert_eq!(r.read(&mut []).unwrap(), 0);
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn error_arrives_after_the_bytes_before_it_unchanged() {
        let d = data(100_000);
        let mut src = Src::new(d.clone(), 3000);
        src.err = Some(io::Error::new(io::ErrorKind::InvalidData, "broken here"));
        let mut r = ReadAhead::new(src, "t", 2, 4096).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        let e = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("end instead of the error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, d);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "broken here");
        // Later reads fail the same way rather than looking like a clean end.
        let again = r.read(&mut buf).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
        assert_eq!(again.to_string(), "broken here");
    }

    #[test]
    fn interrupted_reads_are_retried() {
        struct Flaky(bool, io::Cursor<Vec<u8>>);
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 = !self.0;
                if self.0 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = buf.len().min(100);
                self.1.read(&mut buf[..n])
            }
        }
        let d = data(10_000);
        let mut r = ReadAhead::new(Flaky(false, io::Cursor::new(d.clone())), "t", 2, 512).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, d);
    }

    #[test]
    fn a_panic_becomes_an_error() {
        struct Boom;
        impl Read for Boom {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("inflate exploded");
            }
        }
        let mut r = ReadAhead::new(Boom, "t", 2, 8).unwrap();
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("inflate exploded"), "{e}");
        assert!(r.read(&mut [0u8; 8]).is_err());
    }

    #[test]
    fn dropping_early_stops_the_thread_and_reads_little() {
        // An endless source: only the bounded buffers can stop the producer.
        struct Endless(Arc<AtomicUsize>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.fetch_add(buf.len(), Ordering::SeqCst);
                buf.fill(1);
                Ok(buf.len())
            }
        }
        let read = Arc::new(AtomicUsize::new(0));
        let mut r = ReadAhead::new(Endless(read.clone()), "t", 3, 1000).unwrap();
        let mut buf = [0u8; 10];
        r.read_exact(&mut buf).unwrap();
        // Give the producer time to run ahead as far as it may.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(read.load(Ordering::SeqCst) <= 3 * 1000);
        drop(r); // joins the thread: returns only if it stopped
        let after = read.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(read.load(Ordering::SeqCst), after);

        // Dropped before reading anything, and after reading everything.
        drop(ReadAhead::new(Endless(Arc::default()), "t", 2, 1000).unwrap());
        let mut r = ReadAhead::new(&b"xyz"[..], "t", 2, 2).unwrap();
        r.read_to_end(&mut Vec::new()).unwrap();
        drop(r);
    }

    #[test]
    fn buffers_are_recycled() {
        // A source whose reads are counted shows the producer never runs more than the
        // in-flight buffers ahead of the consumer.
        let d = data(64 * 1024);
        let src = Src::new(d.clone(), 1024);
        let reads = src.reads.clone();
        let mut r = ReadAhead::new(src, "t", 2, 1024).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        for i in 1..=64 {
            r.read_exact(&mut buf).unwrap();
            got.extend_from_slice(&buf);
            std::thread::sleep(std::time::Duration::from_millis(1));
            // Read so far: the `i` buffers taken, and at most one more: the other buffer.
            assert!(reads.load(Ordering::SeqCst) <= i + 1, "{i}");
        }
        assert_eq!(got, d);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
