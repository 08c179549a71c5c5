//! d2v's init: what runs in the guest of an app image (one without an init system).
//!
//! d2v is a multi-call binary: a static copy of itself goes into the guest at
//! [`config::INIT_PATH`] (and at `/init` of the initramfs d2v writes), and when started under
//! one of those names it runs as init instead of as the command-line tool.
//! [`config`] is the contract between the build (which writes it) and the guest (which reads
//! it).
//!
//! Two modes, by the name it was started as:
//! - `/init` ([`early`]): in the initramfs, load the modules, find and mount the root by
//!   `root=PARTUUID=`, move `/dev`, `/proc`, `/sys` into it and start its init;
//! - anything else, `/.d2v/init` in practice ([`pid1`]): PID 1 of the guest, which sets up
//!   the system, runs the app ([`app`]) and supervises it ([`supervise`]) until power-off.
//!
//! Init never panics on purpose and never exits: its errors are `d2v-init: …` lines on the
//! console, and a fatal one powers the VM off after 10 s.

pub mod app;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod early;
pub mod gpt;
pub mod input;
pub mod modules;
pub mod mount;
pub mod net;
pub mod pid1;
pub mod power;
pub mod supervise;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Whether a process started as `argv0` with pid `pid` is d2v's init: `/init`, a name
/// ending with `/.d2v/init`, or a file named `init` running as PID 1.
pub fn is_init(argv0: &OsStr, pid: u32) -> bool {
    let b = argv0.as_bytes();
    b == b"/init"
        || b.ends_with(b"/.d2v/init")
        || (pid == 1 && std::path::Path::new(argv0).file_name() == Some(OsStr::new("init")))
}

/// Runs init in the mode its name selects (see the module doc); never returns. A panic (a
/// bug) is printed as a `d2v-init:` line and powers the VM off after 10 s, instead of the
/// kernel panic an exiting PID 1 causes.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        console::say(format_args!("internal error: {info}"))
    }));
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let _ = std::panic::catch_unwind(|| {
        if argv0.as_bytes() == b"/init" {
            early::run()
        } else {
            pid1::run()
        }
    });
    power::fatal()
}

/// Makes sure fds 0, 1 and 2 are open (on `/dev/console`, else `/dev/null`): a kernel that
/// found no `/dev/console` starts init without them.
pub fn ensure_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        for path in [c"/dev/console", c"/dev/null"] {
            let flags = if fd == 0 {
                libc::O_RDONLY
            } else {
                libc::O_WRONLY
            };
            // SAFETY: a NUL-terminated path; dup2 onto the closed fd.
            let got = unsafe { libc::open(path.as_ptr(), flags | libc::O_NOCTTY) };
            if got >= 0 {
                if got != fd {
                    // SAFETY: both fds are valid or `fd` is free.
                    unsafe {
                        libc::dup2(got, fd);
                        libc::close(got);
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_names() {
        assert!(is_init(OsStr::new("/init"), 1));
        assert!(is_init(OsStr::new("/init"), 77));
        assert!(is_init(OsStr::new("/.d2v/init"), 1));
        assert!(is_init(OsStr::new("/mnt/.d2v/init"), 500));
        assert!(is_init(OsStr::new("/sbin/init"), 1));
        assert!(!is_init(OsStr::new("/sbin/init"), 2));
        assert!(!is_init(OsStr::new("d2v"), 1));
        assert!(!is_init(OsStr::new("/usr/bin/d2v"), 1));
    }
}
