//! Which bytes of a disk image being written are final, so that a reader (the VMDK writer)
//! can work on them while the disk writers (GPT, FAT, ext4) go on.
//!
//! A writer says two things: *late* ranges, which it will write only at its end (ext4's
//! superblocks, descriptor tables, bitmaps and inode tables), and a *watermark*: every byte
//! below it, outside the late ranges, is written and will not change. At the end it says
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
    /// Bytes below this offset are final, except the late ranges.
    Below(u64),
    /// Every byte is final.
    All,
    /// The disk will not be finished.
    Aborted,
}

#[derive(Debug, Default)]
struct State {
    below: u64,
    /// Sorted, disjoint `[start, end)` byte ranges.
    late: Vec<(u64, u64)>,
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

    /// Adds byte ranges written only at the end (each `[start, end)`).
    pub fn add_late(&self, ranges: impl IntoIterator<Item = (u64, u64)>) {
        let mut s = self.lock();
        s.late.extend(ranges.into_iter().filter(|(a, b)| a < b));
        s.late.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(s.late.len());
        for &(a, b) in &s.late {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        s.late = merged;
    }

    /// Every byte below `offset`, outside the late ranges, is final. Never moves back. Waits
    /// while the watermark is further than the lead limit beyond what the reader consumed.
    pub fn advance(&self, offset: u64) {
        let mut s = self.lock();
        if offset > s.below {
            s.below = offset;
            self.cv.notify_all();
        }
        while s
            .lead
            .is_some_and(|l| s.below > s.consumed.saturating_add(l) && !s.aborted)
        {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
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

    /// Whether `[start, end)` meets a late range (and so may still change before the end).
    pub fn is_late(&self, start: u64, end: u64) -> bool {
        let s = self.lock();
        let i = s.late.partition_point(|&(_, b)| b <= start);
        s.late.get(i).is_some_and(|&(a, _)| a < end)
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
    fn late_ranges_merge_and_are_found() {
        let f = Finality::new();
        f.add_late([(100, 200), (150, 300), (500, 600), (700, 700)]);
        assert!(!f.is_late(0, 100));
        assert!(f.is_late(0, 101));
        assert!(f.is_late(250, 260));
        assert!(!f.is_late(300, 500));
        assert!(f.is_late(599, 1000));
        assert!(!f.is_late(600, 10_000));
    }

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
