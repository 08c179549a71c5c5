//! The end of the guest: stopping every process, syncing, remounting `/` read-only and
//! powering off; and the signals init takes for itself.

use std::time::{Duration, Instant};

use super::console::say;

/// The signals init handles through its signalfd (blocked everywhere else).
pub const HANDLED: [libc::c_int; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A set of [`HANDLED`].
pub fn handled_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks [`HANDLED`] in this thread (and the threads it starts later); children get an
/// empty mask back from `std::process::Command`.
pub fn block_signals() {
    let set = handled_set();
    // SAFETY: a valid sigset.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Ctrl-Alt-Del sends SIGINT to init instead of rebooting at once.
pub fn ctrl_alt_del_to_sigint() {
    // SAFETY: reboot(2) with LINUX_REBOOT_CMD_CAD_OFF only changes that setting.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// The name of signal `n` (`SIGTERM`), or `signal N`.
pub fn signal_name(n: i32) -> String {
    let names = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    names
        .iter()
        .find(|(s, _)| *s == n)
        .map_or(format!("signal {n}"), |(_, name)| name.to_string())
}

/// Reaps every exited child without waiting; returns `(pid, wait status)` of each.
pub fn reap() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push((pid, status));
    }
}

fn no_children_left() -> bool {
    let mut status = 0;
    // SAFETY: plain waitpid.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// Sends `sig` to every process but init, then reaps until none is left or `patience`
/// passes.
fn kill_all(sig: libc::c_int, patience: Duration) {
    // SAFETY: kill(-1) never signals the caller.
    unsafe { libc::kill(-1, sig) };
    let until = Instant::now() + patience;
    while Instant::now() < until {
        reap();
        if no_children_left() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops every process, syncs, remounts `/` read-only and powers off.
pub fn shutdown() -> ! {
    kill_all(libc::SIGTERM, Duration::from_secs(3));
    kill_all(libc::SIGKILL, Duration::from_secs(1));
    // SAFETY: sync(2) has no arguments.
    unsafe { libc::sync() };
    if let Err(e) = super::mount::remount_root(true) {
        // A root that is rootfs (an initramfs) cannot be remounted; nothing is lost then.
        if e.source.raw_os_error() != Some(libc::EINVAL) {
            say(format_args!("remounting / read-only: {e}"));
        }
    }
    power_off()
}

/// Prints `powering off` and powers off (never returns, even if that fails).
pub fn power_off() -> ! {
    say("powering off");
    // SAFETY: sync and reboot(2) with RB_POWER_OFF.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    say(format_args!(
        "power off failed: {}",
        std::io::Error::last_os_error()
    ));
    loop {
        // Init must not exit (the kernel would panic): wait forever, quietly.
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// After a fatal error: waits 10 s (time to read the console) and powers off.
pub fn fatal() -> ! {
    say("powering off in 10 s");
    std::thread::sleep(Duration::from_secs(10));
    shutdown()
}
