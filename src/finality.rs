//! Which bytes of a disk image being written are final, so that a reader (the VMDK writer)
//! can work on them while the disk writers (GPT, FAT, ext4) go on.
//!
//! A writer says how far the disk is final with a *watermark*: every byte below it is written
//! and will not change (the disk writers write front to back; ext4 writes its metadata before
//! its file contents for this). At the end it says
//! [`Finality::finish`] (everything is final) or [`Finality::abort`] (the disk will not be
//! finished; readers stop). A reader waits with [`Finality::wait_beyond`].
//!
//! The other way round, a reader may hold the writer back: with [`Finality::limit_lead`] the
//! watermark stays within that many bytes of what the reader has [`Finality::consumed`]
//! (`advance` waits), so that the bytes written but not yet read stay bounded, until the
//! reader lets go ([`Finality::release`], which its [`Reading`] guard does on any return).
//!
//! A leaf module: the disk writers and the VMDK writer both import it, neither the other.

use std::sync::{Condvar, Mutex, MutexGuard};

/// What a reader may read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Bytes below this offset are final.
    Below(u64),
    /// Every byte is final.
    All,
    /// The disk will not be finished.
    Aborted,
}

#[derive(Debug, Default)]
struct State {
    below: u64,
    done: bool,
    aborted: bool,
    /// What the reader has read, and how far beyond it the watermark may go.
    consumed: u64,
    lead: Option<u64>,
}

/// The shared progress of a disk being written; see the module docs.
#[derive(Debug, Default)]
pub struct Finality {
    state: Mutex<State>,
    cv: Condvar,
}

impl Finality {
    /// Nothing final yet.
    pub fn new() -> Finality {
        Finality::default()
    }

    /// A disk already written whole.
    pub fn complete() -> Finality {
        let f = Finality::new();
        f.finish();
        f
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every byte below `offset` is final. Never moves back. Waits
    /// while the watermark is further than the lead limit beyond what the reader consumed.
    pub fn advance(&self, offset: u64) {
        let mut s = self.advanced(offset);
        while s
            .lead
            .is_some_and(|l| s.below > s.consumed.saturating_add(l) && !s.aborted)
        {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// [`Finality::advance`] without waiting for the reader: for a region whose written bytes
    /// are bounded otherwise (the ESP, by its size; mostly holes), so the writer goes on to
    /// its next region while the reader works through this one.
    pub fn advance_now(&self, offset: u64) {
        drop(self.advanced(offset));
    }

    fn advanced(&self, offset: u64) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        if offset > s.below {
            s.below = offset;
            self.cv.notify_all();
        }
        s
    }

    /// Holds the writer within `bytes` of what the reader has consumed, from now until
    /// [`Finality::release`].
    pub fn limit_lead(&self, bytes: u64) {
        self.lock().lead = Some(bytes);
    }

    /// The reader is done with every byte below `offset`.
    pub fn consumed(&self, offset: u64) {
        let mut s = self.lock();
        if offset > s.consumed {
            s.consumed = offset;
            self.cv.notify_all();
        }
    }

    /// The reader holds the writer back no more.
    pub fn release(&self) {
        self.lock().lead = None;
        self.cv.notify_all();
    }

    /// A guard that releases the writer when the reader returns, whatever it returns with.
    pub fn reading(&self) -> Reading<'_> {
        Reading(self)
    }

    /// Every byte is final.
    pub fn finish(&self) {
        self.lock().done = true;
        self.cv.notify_all();
    }

    /// The disk will not be finished: waiting readers return [`Ready::Aborted`].
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.cv.notify_all();
    }

    /// Waits until the watermark passes `offset` (or the disk is finished or abandoned).
    pub fn wait_beyond(&self, offset: u64) -> Ready {
        let mut s = self.lock();
        loop {
            if s.aborted {
                return Ready::Aborted;
            }
            if s.done {
                return Ready::All;
            }
            if s.below > offset {
                return Ready::Below(s.below);
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Releases the writer when dropped: see [`Finality::reading`].
pub struct Reading<'a>(&'a Finality);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Tells `finality` the disk is finished (or abandoned, if dropped before [`Finisher::done`]),
/// so that readers never wait for a writer that returned early with an error or a panic.
pub struct Finisher<'a>(Option<&'a Finality>);

impl<'a> Finisher<'a> {
    /// Guards `finality` until [`Finisher::done`].
    pub fn new(finality: &'a Finality) -> Finisher<'a> {
        Finisher(Some(finality))
    }

    /// The disk was written whole.
    pub fn done(mut self) {
        if let Some(f) = self.0.take() {
            f.finish();
        }
    }
}

impl Drop for Finisher<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiting_follows_the_watermark_then_the_end() {
        let f = Arc::new(Finality::new());
        let g = Arc::clone(&f);
        let t = std::thread::spawn(move || (g.wait_beyond(10), g.wait_beyond(50)));
        f.advance(5);
        f.advance(20);
        std::thread::sleep(std::time::Duration::from_millis(20));
        f.advance(3); // never moves back
        f.finish();
        let (a, b) = t.join().unwrap();
        assert!(matches!(a, Ready::Below(20) | Ready::All), "{a:?}");
        assert_eq!(b, Ready::All);
    }

    #[test]
    fn the_reader_holds_the_writer_within_the_lead_until_it_lets_go() {
        let f = Arc::new(Finality::new());
        f.limit_lead(100);
        f.advance(100); // within the lead: no wait
        let g = Arc::clone(&f);
        let writer = std::thread::spawn(move || {
            g.advance(250);
            g.advance(1000);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!writer.is_finished(), "250 is beyond 0 + 100");
        f.consumed(150);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!writer.is_finished(), "1000 is beyond 150 + 100");
        assert_eq!(f.wait_beyond(200), Ready::Below(1000));
        drop(f.reading());
        writer.join().unwrap();
    }

    #[test]
    fn advancing_now_does_not_wait_for_the_reader() {
        let f = Finality::new();
        f.limit_lead(100);
        f.advance_now(10_000); // far beyond 0 + 100, and no reader: returns at once
        assert_eq!(f.wait_beyond(5_000), Ready::Below(10_000));
    }

    #[test]
    fn a_writer_that_returns_early_aborts() {
        let f = Finality::new();
        {
            let _guard = Finisher::new(&f);
        }
        assert_eq!(f.wait_beyond(0), Ready::Aborted);
        let f = Finality::new();
        Finisher::new(&f).done();
        assert_eq!(f.wait_beyond(u64::MAX), Ready::All);
    }
}
