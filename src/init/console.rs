//! The console: init's own `d2v-init: …` lines, and the app's output, a prefixed line at a
//! time, on `/dev/console` and `/dev/tty0` (serial and VGA) without ever blocking init for
//! long.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

/// The longest line written in one piece; longer lines are cut (and continued on the next).
pub const MAX_LINE: usize = 4096;
/// How long a partial line (no newline yet) waits before it is written anyway.
pub const PARTIAL_FLUSH: Duration = Duration::from_millis(300);
/// How long one console write may wait for the device before the rest is dropped.
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// Prints `d2v-init: MSG` on init's standard error (the console). Never fails.
pub fn say(msg: impl std::fmt::Display) {
    let line = format!("d2v-init: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Splits a stream of bytes into lines, each with `prefix` and a space in front; lines longer
/// than [`MAX_LINE`] are cut, and [`LineBuffer::flush`] gives out a pending partial line.
#[derive(Debug)]
pub struct LineBuffer {
    prefix: &'static str,
    pending: Vec<u8>,
}

impl LineBuffer {
    /// A buffer whose lines start with `prefix` (`[app]`, `[app:err]`).
    pub fn new(prefix: &'static str) -> LineBuffer {
        LineBuffer {
            prefix,
            pending: Vec::new(),
        }
    }

    /// Whether a partial line is waiting.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Adds `data`; returns the complete lines it finished, each ending with `\n`.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                self.emit(&mut out);
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE {
                    self.emit(&mut out);
                }
            }
        }
        out
    }

    /// The pending partial line, as a complete line (empty when none is pending).
    pub fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            self.emit(&mut out);
        }
        out
    }

    fn emit(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b' ');
        // A carriage return before the newline (CRLF output) is not repeated.
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        out.append(&mut self.pending);
        out.push(b'\n');
    }
}

/// The devices the app's lines go to: `/dev/console`, and `/dev/tty0` when it is another
/// device. Opened non-blocking; devices that cannot be opened are left out.
#[derive(Debug)]
pub struct Console {
    outputs: Vec<File>,
}

impl Console {
    /// Opens the console devices (again at each call: cheap, and a device that appears later
    /// is used).
    pub fn open() -> Console {
        let mut outputs: Vec<File> = Vec::new();
        let mut seen = Vec::new();
        for path in ["/dev/console", "/dev/tty0"] {
            let Ok(f) = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(path)
            else {
                continue;
            };
            let rdev = f.metadata().map(|m| m.rdev()).unwrap_or(0);
            if seen.contains(&rdev) || (path == "/dev/tty0" && console_is_a_vt()) {
                continue;
            }
            seen.push(rdev);
            outputs.push(f);
        }
        Console { outputs }
    }

    /// Writes `bytes` to every device, waiting at most [`WRITE_WAIT`] for each; a device
    /// that stalls or fails is left out from then on (until the next [`Console::open`]).
    pub fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.outputs.retain_mut(|f| write_bounded(f, bytes));
    }
}

/// Whether the kernel's console is only virtual terminals (then /dev/console is the screen
/// already, and writing to /dev/tty0 too would show each line twice).
fn console_is_a_vt() -> bool {
    // /sys/class/tty/console/active lists the console's devices (`ttyS0 tty0`).
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let names: Vec<&str> = active.split_whitespace().collect();
    !names.is_empty()
        && names
            .iter()
            .all(|n| n.starts_with("tty") && n[3..].chars().all(|c| c.is_ascii_digit()))
}

/// Writes all of `bytes` unless the device stalls for [`WRITE_WAIT`] or fails (false).
fn write_bounded(f: &mut File, mut bytes: &[u8]) -> bool {
    let deadline = std::time::Instant::now() + WRITE_WAIT;
    while !bytes.is_empty() {
        match f.write(bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                let mut pfd = libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
            }
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_get_the_prefix_and_partial_ones_wait() {
        let mut b = LineBuffer::new("[app]");
        assert_eq!(b.push(b"one\ntw"), b"[app] one\n");
        assert!(b.has_partial());
        assert_eq!(b.push(b"o\r\nthr"), b"[app] two\n");
        assert_eq!(b.flush(), b"[app] thr\n");
        assert!(!b.has_partial());
        assert_eq!(b.flush(), b"");
        assert_eq!(b.push(b"\n"), b"[app] \n");
    }

    #[test]
    fn long_lines_are_cut_at_max_line() {
        let mut b = LineBuffer::new("[app:err]");
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let out = b.push(&long);
        let lines: Vec<&[u8]> = out
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), "[app:err] ".len() + MAX_LINE);
        assert_eq!(b.flush(), [b"[app:err] ".as_slice(), b"xxxxx\n"].concat());
    }
}
