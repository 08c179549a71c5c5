//! Mounting: the syscall, "is this mounted" from `/proc/self/mountinfo`, and the file
//! systems a container runtime gives an app (`/proc`, `/sys`, `/dev`, `/dev/pts`, …).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::console::say;

/// A mount, unmount or mount-point creation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {source}")]
pub struct MountError {
    /// What was tried (`mount proc on`, `move`, `mkdir`, …).
    pub op: String,
    /// The mount point.
    pub target: String,
    /// The system's error.
    #[source]
    pub source: io::Error,
}

fn cstr(s: &[u8]) -> CString {
    // Paths and names here never hold NUL bytes; one that does becomes empty (and fails).
    CString::new(s).unwrap_or_default()
}

/// `mount(2)`: `fstype` `source` on `target` with `flags` and `data`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), MountError> {
    let (s, t, f) = (
        cstr(source.as_bytes()),
        cstr(target.as_os_str().as_bytes()),
        cstr(fstype.as_bytes()),
    );
    let d = data.map(|d| cstr(d.as_bytes()));
    let dp = d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dp) };
    if r == 0 {
        Ok(())
    } else {
        Err(MountError {
            op: format!("mount {fstype} on"),
            target: target.display().to_string(),
            source: io::Error::last_os_error(),
        })
    }
}

/// Moves the mount at `from` to `to` (`MS_MOVE`).
pub fn move_mount(from: &Path, to: &Path) -> Result<(), MountError> {
    mount(&from.to_string_lossy(), to, "", libc::MS_MOVE, None).map_err(|e| MountError {
        op: format!("move {} to", from.display()),
        ..e
    })
}

/// Unmounts `target` (lazily: what is still open there keeps working).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    let t = cstr(target.as_os_str().as_bytes());
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(MountError {
            op: "unmount".into(),
            target: target.display().to_string(),
            source: io::Error::last_os_error(),
        })
    }
}

/// The mount points in a `mountinfo` text (field 5, octal escapes such as `\040` decoded).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |a, c| a.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted on `path` (per `/proc/self/mountinfo`; false when that
/// cannot be read, i.e. before `/proc` is mounted).
pub fn is_mounted(path: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points(&info).iter().any(|m| m == path)
}

/// Mounts `fstype` on `target` unless something is mounted there, creating the directory.
pub fn ensure(
    fstype: &str,
    target: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), MountError> {
    if is_mounted(target) {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| MountError {
        op: "mkdir".into(),
        target: target.into(),
        source,
    })?;
    mount(fstype, Path::new(target), fstype, flags, data)
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// `/proc`, `/sys` and `/dev` (devtmpfs), each unless already mounted: what the rest of init
/// needs first. Failures are printed, not fatal.
pub fn mount_basics() {
    let basics = [
        ("proc", "/proc", NOSUID_NODEV_NOEXEC),
        ("sysfs", "/sys", NOSUID_NODEV_NOEXEC),
        ("devtmpfs", "/dev", libc::MS_NOSUID),
    ];
    for (fstype, target, flags) in basics {
        // /proc/self/mountinfo is unreadable until /proc is mounted: try /proc first.
        if let Err(e) = ensure(fstype, target, flags, None) {
            if e.source.raw_os_error() != Some(libc::EBUSY) {
                say(e);
            }
        }
    }
}

/// Everything else a container runtime mounts and links (see the module doc), each unless
/// already there. Failures are printed, not fatal.
pub fn mount_container_fs() {
    let tmp_empty = std::fs::read_dir("/tmp").map_or(true, |mut d| d.next().is_none());
    let mut list = vec![
        (
            "devpts",
            "/dev/pts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755"),
        ),
    ];
    if tmp_empty {
        list.push((
            "tmpfs",
            "/tmp",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=1777"),
        ));
    }
    list.push(("cgroup2", "/sys/fs/cgroup", NOSUID_NODEV_NOEXEC, None));
    for (fstype, target, flags, data) in list {
        if let Err(e) = ensure(fstype, target, flags, data) {
            say(e);
        }
    }
    let links = [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    for (to, link) in links {
        if std::fs::symlink_metadata(link).is_err() {
            if let Err(e) = std::os::unix::fs::symlink(to, link) {
                say(format_args!("symlink {link} -> {to}: {e}"));
            }
        }
    }
}

/// Whether the file system at `path` is mounted read-only.
pub fn is_read_only(path: &str) -> bool {
    let p = cstr(path.as_bytes());
    // SAFETY: statvfs is plain data; a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statvfs(p.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

/// Remounts `/` read-write (when it is read-only) or read-only.
pub fn remount_root(read_only: bool) -> Result<(), MountError> {
    if !read_only && !is_read_only("/") {
        return Ok(());
    }
    let flags = libc::MS_REMOUNT | if read_only { libc::MS_RDONLY } else { 0 };
    mount("", Path::new("/"), "", flags, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_come_from_field_five_unescaped() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw\n\
                    40 22 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_points(info), vec!["/", "/dev", "/mnt/a b"]);
    }
}
