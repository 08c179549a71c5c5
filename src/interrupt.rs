//! Interrupted runs: SIGINT, SIGTERM and SIGHUP make d2v remove its temporary files and exit
//! at once with status 128 + the signal's number (130, 143, 129), whatever stage it is in.
//!
//! [`install`] blocks the three signals in `main` before any other thread starts (threads
//! inherit the mask; `std::process::Command` clears it in children) and starts one thread that
//! waits for them with `sigwait`. Every named temporary file or directory d2v makes is a
//! [`Temp`]: it is created, renamed into place or removed under the lock of one process-wide
//! registry, which the signal thread takes, and keeps, to remove what is left before it exits.
//! So a temporary is either in the registry or not yet made / already renamed, never half-way.
//! Unnamed (`O_TMPFILE`) files need nothing: they vanish with the process. A partial download
//! in the blob cache is not a temporary: it stays for the next run to resume (`source::cache`).
//!
//! Test hook: with `D2V_TEST_PAUSE_AT=NAME` set, [`pause_point`]`(NAME)` prints
//! `d2v: test pause at NAME` to stderr and sleeps, so a test can signal d2v at that stage.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The signals that end d2v with a clean-up.
const SIGNALS: [(libc::c_int, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

/// The temporaries that exist now, by id.
struct Registry {
    next: u64,
    paths: Vec<(u64, PathBuf)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    paths: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere must not keep the clean-up from running.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set, sigaddset adds valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (s, _) in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after)
/// and starts the thread that handles them. Call it first in `main`, before any thread starts.
pub fn install() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    std::thread::Builder::new()
        .name("d2v-signals".into())
        .spawn(move || wait_and_exit(set))?;
    Ok(())
}

/// Waits for one of the signals, removes the registered temporaries and ends the process.
fn wait_and_exit(set: libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is a valid place for the signal's number.
    while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
    // Kept until the process ends: no temporary is made or renamed from now on.
    let reg = registry();
    for (_, p) in &reg.paths {
        remove(p);
    }
    let name = SIGNALS
        .iter()
        .find(|(s, _)| *s == sig)
        .map_or("signal", |s| s.1);
    let line = format!("d2v: interrupted ({name}), removed temporary files\n");
    // SAFETY: write(2) of a valid buffer to fd 2; not through `std::io::stderr`, whose lock
    // another thread may hold. Then _exit: no atexit handlers or destructors run, which could
    // touch state other threads are using.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(128 + sig);
    }
}

/// Removes a temporary file or directory; a directory another thread is still filling is
/// tried again a few times.
fn remove(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            for _ in 0..5 {
                if std::fs::remove_dir_all(p).is_ok() || !p.exists() {
                    break;
                }
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// A named temporary file or directory, removed when dropped or when d2v is interrupted,
/// unless [`Temp::finish`] moved it into place.
#[derive(Debug)]
pub(crate) struct Temp {
    id: u64,
    path: PathBuf,
    tracked: bool,
}

impl Temp {
    /// Runs `make`, which creates a temporary and returns it with its path, and registers
    /// the path, both under the registry's lock.
    pub(crate) fn create<T>(
        make: impl FnOnce() -> io::Result<(T, PathBuf)>,
    ) -> io::Result<(T, Temp)> {
        let mut reg = registry();
        let (value, path) = make()?;
        let id = reg.next;
        reg.next += 1;
        reg.paths.push((id, path.clone()));
        Ok((
            value,
            Temp {
                id,
                path,
                tracked: true,
            },
        ))
    }

    /// Where the temporary is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `done` (which moves the temporary into place) under the registry's lock and, when
    /// it succeeds, forgets the temporary; when it fails, the temporary is removed.
    pub(crate) fn finish<T>(mut self, done: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
        let out = {
            let mut reg = registry();
            let out = done(&self.path);
            if out.is_ok() {
                reg.paths.retain(|(id, _)| *id != self.id);
                self.tracked = false;
            }
            out
        };
        // On failure the lock is released before `drop` takes it to remove the temporary.
        out
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.tracked {
            let mut reg = registry();
            remove(&self.path);
            reg.paths.retain(|(id, _)| *id != self.id);
        }
    }
}

/// A test hook: with `D2V_TEST_PAUSE_AT=NAME`, says so on stderr and sleeps (for a test to
/// signal d2v while it is at stage `name`).
pub(crate) fn pause_point(name: &str) {
    if std::env::var_os("D2V_TEST_PAUSE_AT").is_some_and(|v| v == name) {
        eprintln!("d2v: test pause at {name}");
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(p: &Path) -> bool {
        registry().paths.iter().any(|(_, q)| q == p)
    }

    /// The module relies on it: a credential helper d2v runs must not inherit the mask.
    #[test]
    fn children_start_with_no_signal_blocked() {
        let set = signal_set();
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sets; only this test's thread is affected, and restored below.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        let blocked = |status: &str| {
            let line = status
                .lines()
                .find(|l| l.starts_with("SigBlk:"))
                .unwrap_or("");
            u64::from_str_radix(line.trim_start_matches("SigBlk:").trim(), 16).unwrap_or(0)
        };
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        // SIGHUP, SIGINT and SIGTERM: bits 0, 1 and 14.
        assert_eq!(blocked(&own) & 0x4003, 0x4003, "{own}");
        let out = std::process::Command::new("sh")
            .args(["-c", "grep SigBlk /proc/self/status"])
            .output();
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let out = String::from_utf8(out.unwrap().stdout).unwrap();
        assert!(out.starts_with("SigBlk:") && blocked(&out) == 0, "{out}");
    }

    #[test]
    fn a_temp_is_registered_until_finished_or_dropped() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let ((), t) = Temp::create(|| std::fs::create_dir(&a).map(|()| ((), a.clone()))).unwrap();
        std::fs::write(a.join("x"), b"x").unwrap();
        assert!(registered(&a));
        drop(t);
        assert!(!a.exists() && !registered(&a));

        let ((), t) = Temp::create(|| std::fs::write(&a, b"y").map(|()| ((), a.clone()))).unwrap();
        // A failed move removes it.
        let e = t
            .finish(|p| std::fs::rename(p, d.path().join("no/such/dir")))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!a.exists() && !registered(&a));

        let ((), t) = Temp::create(|| std::fs::write(&a, b"z").map(|()| ((), a.clone()))).unwrap();
        t.finish(|p| std::fs::rename(p, &b)).unwrap();
        assert!(!registered(&a) && std::fs::read(&b).unwrap() == b"z");
        // A failed creation registers nothing.
        let none = Temp::create(|| std::fs::create_dir(&b).map(|()| ((), b.clone())));
        assert!(none.is_err() && !registered(&b) && b.exists());
    }
}
