//! Init's event loop: one `poll` over a signalfd (SIGCHLD, SIGTERM, SIGINT), the app's
//! output pipes and the power-button input devices; it reaps every child, forwards the app's
//! lines to the console, stops the app on request and restarts it by its policy.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::app::{self, show_args};
use super::config::{AppConfig, Restart};
use super::console::{say, Console, LineBuffer, PARTIAL_FLUSH};
use super::input::PowerButtons;
use super::power::{self, signal_name};

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Status(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// From a `waitpid` status.
    pub fn from_wait(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Status(libc::WEXITSTATUS(status))
        }
    }
}

/// Whether the app is started again after `exit` (never while the VM is stopping).
pub fn should_restart(policy: Restart, exit: Exit, stopping: bool) -> bool {
    !stopping
        && match policy {
            Restart::No => false,
            Restart::Always => true,
            Restart::OnFailure => exit != Exit::Status(0),
        }
}

/// Docker's restart delay: 100 ms, doubled at each restart up to a minute, back to 100 ms
/// after a run of 10 s or more.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: Backoff::FIRST,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(60);
    const STABLE: Duration = Duration::from_secs(10);

    /// The delay before the next start, after a run of `ran_for`.
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Backoff::STABLE {
            self.next = Backoff::FIRST;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d
    }
}

/// One output pipe of the app.
struct Stream {
    pipe: File,
    lines: LineBuffer,
    last_data: Instant,
}

impl Stream {
    fn new(fd: OwnedFd, prefix: &'static str) -> Stream {
        // SAFETY: fcntl on a fd we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Stream {
            pipe: File::from(fd),
            lines: LineBuffer::new(prefix),
            last_data: Instant::now(),
        }
    }

    /// Reads what is there; false at end of file (or an error).
    fn drain(&mut self, console: &mut Console) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    console.write(&self.lines.flush());
                    return false;
                }
                Ok(n) => {
                    self.last_data = Instant::now();
                    console.write(&self.lines.push(&buf[..n]));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => {
                    console.write(&self.lines.flush());
                    return false;
                }
            }
        }
    }
}

/// The supervisor's state.
struct Supervisor<'a> {
    cfg: &'a AppConfig,
    signals: File,
    console: Console,
    buttons: PowerButtons,
    streams: Vec<Stream>,
    app: Option<(i32, Instant)>,
    stopping: bool,
    kill_at: Option<Instant>,
    start_at: Option<Instant>,
    backoff: Backoff,
    /// When `/dev/input` was last scanned for new power buttons.
    scanned: Instant,
}

/// How often `/dev/input` is scanned for new power buttons.
const SCAN_EVERY: Duration = Duration::from_secs(1);

fn signalfd() -> std::io::Result<File> {
    let set = power::handled_set();
    // SAFETY: a valid sigset; a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Runs the app and supervises it until the VM powers off.
pub fn run(cfg: &AppConfig) -> ! {
    let signals = match signalfd() {
        Ok(s) => s,
        Err(e) => {
            say(format_args!("signalfd: {e}"));
            power::fatal()
        }
    };
    let mut s = Supervisor {
        cfg,
        signals,
        console: Console::open(),
        buttons: PowerButtons::default(),
        streams: Vec::new(),
        app: None,
        stopping: false,
        kill_at: None,
        start_at: Some(Instant::now()),
        backoff: Backoff::default(),
        scanned: Instant::now(),
    };
    s.buttons.scan();
    loop {
        s.timers();
        if s.app.is_none() && s.start_at.is_none() {
            s.drain_all();
            power::shutdown();
        }
        s.wait();
    }
}

impl Supervisor<'_> {
    fn start(&mut self) {
        let cfg = self.cfg;
        say(format_args!(
            "starting app: {} (uid {}, gid {}, in {})",
            show_args(&cfg.args),
            cfg.uid,
            cfg.gid,
            cfg.working_dir
        ));
        if !cfg.exposed_ports.is_empty() {
            say(format_args!(
                "exposed ports: {}",
                cfg.exposed_ports.join(", ")
            ));
        }
        self.console = Console::open();
        match app::spawn(cfg) {
            Ok(sp) => {
                self.streams.push(Stream::new(sp.stdout.into(), "[app]"));
                self.streams
                    .push(Stream::new(sp.stderr.into(), "[app:err]"));
                self.app = Some((sp.pid, Instant::now()));
            }
            Err(e) => {
                say(&e);
                self.exited(Exit::Status(e.status()), Duration::ZERO);
            }
        }
    }

    fn exited(&mut self, exit: Exit, ran_for: Duration) {
        self.drain_all();
        match exit {
            Exit::Status(n) => say(format_args!("app exited with status {n}")),
            Exit::Signal(n) => say(format_args!(
                "app killed by signal {n} ({})",
                signal_name(n)
            )),
        }
        self.app = None;
        self.kill_at = None;
        if should_restart(self.cfg.restart, exit, self.stopping) {
            let delay = self.backoff.delay(ran_for);
            say(format_args!(
                "restarting the app in {} ms",
                delay.as_millis()
            ));
            self.start_at = Some(Instant::now() + delay);
        }
    }

    fn stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.start_at = None;
        say(format_args!("{why}"));
        if let Some((pid, _)) = self.app {
            let sig = self.cfg.stop_signal;
            say(format_args!("stopping the app ({})", signal_name(sig)));
            // SAFETY: plain kill(2) to the app's process.
            unsafe { libc::kill(pid, sig) };
            self.kill_at = Some(Instant::now() + Duration::from_secs(self.cfg.stop_timeout_secs));
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.scanned + SCAN_EVERY <= now {
            self.buttons.scan();
            self.scanned = now;
        }
        if self.start_at.is_some_and(|t| t <= now) {
            self.start_at = None;
            self.start();
        }
        if let (Some(t), Some((pid, _))) = (self.kill_at, self.app) {
            if t <= now {
                say(format_args!(
                    "the app did not stop within {} s: SIGKILL",
                    self.cfg.stop_timeout_secs
                ));
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.kill_at = None;
            }
        }
        for st in &mut self.streams {
            if st.lines.has_partial() && st.last_data + PARTIAL_FLUSH <= now {
                self.console.write(&st.lines.flush());
            }
        }
    }

    fn drain_all(&mut self) {
        let console = &mut self.console;
        self.streams.retain_mut(|st| st.drain(console));
    }

    fn on_signal(&mut self) {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while let Ok(n) = self.signals.read(&mut info) {
            if n < 4 {
                break;
            }
            let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            match signo {
                libc::SIGCHLD => self.on_child(),
                libc::SIGTERM | libc::SIGINT => {
                    self.stop(&format!("{} received", signal_name(signo)))
                }
                _ => {}
            }
        }
    }

    fn on_child(&mut self) {
        for (pid, status) in power::reap() {
            if let Some((_, started)) = self.app.filter(|(p, _)| *p == pid) {
                self.exited(Exit::from_wait(status), started.elapsed());
            }
        }
    }

    /// Polls until something happens or the next timer is due.
    fn wait(&mut self) {
        let now = Instant::now();
        let mut due = self.scanned + SCAN_EVERY;
        let partial = self.streams.iter().filter(|s| s.lines.has_partial());
        for t in [self.kill_at, self.start_at]
            .into_iter()
            .flatten()
            .chain(partial.map(|s| s.last_data + PARTIAL_FLUSH))
        {
            due = due.min(t);
        }
        let timeout = due.saturating_duration_since(now).as_millis() as i32;
        let mut fds = vec![pollfd(self.signals.as_raw_fd())];
        fds.extend(self.streams.iter().map(|s| pollfd(s.pipe.as_raw_fd())));
        fds.extend(self.buttons.fds().map(pollfd));
        // SAFETY: a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            return;
        }
        let ready = |i: usize| fds[i].revents != 0;
        let streams = self.streams.len();
        let stream_ready: Vec<bool> = (0..streams).map(|i| ready(1 + i)).collect();
        let button_ready = (0..self.buttons.len()).any(|i| ready(1 + streams + i));
        if ready(0) {
            self.on_signal();
        }
        // Streams first read after a SIGCHLD were drained already; read the rest.
        if self.streams.len() == streams {
            let console = &mut self.console;
            let mut i = 0;
            self.streams.retain_mut(|st| {
                let keep = !stream_ready[i] || st.drain(console);
                i += 1;
                keep
            });
        }
        if button_ready && self.buttons.pressed() {
            self.stop("power button pressed");
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_policy_decides_as_docker_does() {
        use Exit::*;
        use Restart::*;
        assert!(!should_restart(No, Status(1), false));
        assert!(should_restart(OnFailure, Status(3), false));
        assert!(should_restart(OnFailure, Signal(9), false));
        assert!(!should_restart(OnFailure, Status(0), false));
        assert!(should_restart(Always, Status(0), false));
        for policy in [No, OnFailure, Always] {
            assert!(!should_restart(policy, Signal(15), true), "{policy:?}");
        }
    }

    #[test]
    fn the_backoff_doubles_to_a_minute_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(50);
        let d: Vec<u128> = (0..12).map(|_| b.delay(quick).as_millis()).collect();
        assert_eq!(&d[..4], &[100, 200, 400, 800]);
        assert_eq!(d[11], 60_000);
        assert_eq!(b.delay(Duration::from_secs(10)).as_millis(), 100);
    }

    #[test]
    fn wait_statuses_become_exits() {
        assert_eq!(Exit::from_wait(3 << 8), Exit::Status(3));
        assert_eq!(Exit::from_wait(libc::SIGTERM), Exit::Signal(15));
    }
}
