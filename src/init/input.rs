//! The ACPI power button (and any other key device with KEY_POWER): the evdev devices
//! `/dev/input/event*` whose key bits include KEY_POWER, read for a press.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// linux/input-event-codes.h.
const EV_KEY: u16 = 0x01;
/// linux/input-event-codes.h.
pub const KEY_POWER: u16 = 116;
/// KEY_MAX (0x2ff) bits, in bytes.
const KEY_BYTES: usize = 0x300 / 8;
/// `struct input_event` on LP64: a `timeval` (16 bytes), type, code (u16) and value (i32).
const EVENT_SIZE: usize = 24;

/// `EVIOCGBIT(ev, len)`: `_IOC(_IOC_READ, 'E', 0x20 + ev, len)`.
pub fn eviocgbit(ev: u16, len: usize) -> libc::Ioctl {
    ((2u32 << 30) | ((len as u32) << 16) | (u32::from(b'E') << 8) | (0x20 + u32::from(ev)))
        as libc::Ioctl
}

/// Whether the key bitmap `bits` has `key`.
pub fn has_key(bits: &[u8], key: u16) -> bool {
    bits.get(usize::from(key / 8))
        .is_some_and(|b| b & (1 << (key % 8)) != 0)
}

/// Whether a buffer of `input_event`s holds a KEY_POWER press (value 1).
pub fn power_pressed(events: &[u8]) -> bool {
    events.chunks_exact(EVENT_SIZE).any(|e| {
        let ty = u16::from_ne_bytes([e[16], e[17]]);
        let code = u16::from_ne_bytes([e[18], e[19]]);
        let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
        ty == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// The open power-button devices, and the device names already looked at.
#[derive(Debug, Default)]
pub struct PowerButtons {
    open: Vec<File>,
    seen: HashSet<String>,
}

impl PowerButtons {
    /// Opens the devices that appeared since the last scan and have KEY_POWER.
    pub fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir("/dev/input") else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("event") || !self.seen.insert(name) {
                continue;
            }
            let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(e.path())
            else {
                continue;
            };
            let mut bits = [0u8; KEY_BYTES];
            // SAFETY: EVIOCGBIT writes at most KEY_BYTES bytes into `bits`.
            let r = unsafe {
                libc::ioctl(
                    f.as_raw_fd(),
                    eviocgbit(EV_KEY, KEY_BYTES),
                    bits.as_mut_ptr(),
                )
            };
            if r > 0 && has_key(&bits, KEY_POWER) {
                self.open.push(f);
            }
        }
    }

    /// The open devices' fds, to poll.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.open.iter().map(|f| f.as_raw_fd())
    }

    /// How many devices are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Reads the pending events of every device: whether KEY_POWER was pressed. Devices that
    /// fail to read (unplugged) are closed.
    pub fn pressed(&mut self) -> bool {
        let mut pressed = false;
        self.open.retain_mut(|f| {
            let mut buf = [0u8; EVENT_SIZE * 32];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => pressed |= power_pressed(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        });
        pressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&ty.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        let release = event(EV_KEY, KEY_POWER, 0);
        let syn = event(0, 0, 0);
        assert!(!power_pressed(&[release.clone(), syn.clone()].concat()));
        assert!(power_pressed(
            &[syn, event(EV_KEY, KEY_POWER, 1), release].concat()
        ));
        assert!(!power_pressed(&event(EV_KEY, 115, 1)));
    }

    #[test]
    fn the_ioctl_number_and_key_bits_follow_the_kernel_headers() {
        // EVIOCGBIT(EV_KEY, 96) as <linux/input.h> computes it.
        assert_eq!(eviocgbit(EV_KEY, 96) as u64, 0x8060_4521);
        let mut bits = [0u8; KEY_BYTES];
        bits[14] = 1 << 4; // 116 = 14 * 8 + 4
        assert!(has_key(&bits, KEY_POWER));
        assert!(!has_key(&bits, KEY_POWER + 1));
    }
}
