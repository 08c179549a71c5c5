//! Mode 1: the early init, `/init` of the initramfs d2v writes. Loads the modules, waits for
//! the partition `root=PARTUUID=…` names, mounts it (ext4) on `/newroot`, moves `/dev`,
//! `/proc`, `/sys` and `/run` into it, frees the initramfs, switches to it and starts its
//! init. A root that cannot be found or mounted is reported and the VM powers off.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::cmdline::Cmdline;
use super::config::MODULES_PATH;
use super::console::say;
use super::mount::{self, MountError};
use super::{gpt, modules, power};

/// Where the root is mounted before the switch.
pub const NEWROOT: &str = "/newroot";
/// How long to wait for the root partition to appear.
const ROOT_WAIT: Duration = Duration::from_secs(30);
/// The API file systems moved into the new root, `/proc` last (it is what tells mounts).
pub const MOVED: [&str; 4] = ["/dev", "/sys", "/run", "/proc"];

/// Why the root could not be switched to.
#[derive(Debug, thiserror::Error)]
pub enum EarlyError {
    /// The command line names no root by PARTUUID.
    #[error("no root=PARTUUID=… on the kernel command line")]
    NoRoot,
    /// `root=PARTUUID=` is not a GUID.
    #[error(transparent)]
    Cmdline(#[from] super::cmdline::CmdlineError),
    /// The partition did not appear.
    #[error("no partition with PARTUUID {0} appeared within {secs} s", secs = ROOT_WAIT.as_secs())]
    NotFound(String),
    /// Mounting or moving failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `chdir`/`chroot` failed.
    #[error("switching to {NEWROOT}: {0}")]
    Switch(#[source] std::io::Error),
    /// No init could be started in the new root.
    #[error("no init to start in the root (tried {0})")]
    NoInit(String),
}

/// What to do with one API file system: move it, create its mount point and move it, or
/// (no mount point in a read-only root) unmount it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Move it onto the existing mount point.
    Move(&'static str),
    /// Create the mount point, then move.
    CreateAndMove(&'static str),
    /// Unmount it.
    Unmount(&'static str),
}

/// The steps for the mounted API file systems of [`MOVED`].
pub fn plan_moves(
    mounted: &[String],
    root_writable: bool,
    exists_in_root: impl Fn(&str) -> bool,
) -> Vec<Step> {
    MOVED
        .iter()
        .filter(|p| mounted.iter().any(|m| m == *p))
        .map(|&p| match (exists_in_root(p), root_writable) {
            (true, _) => Step::Move(p),
            (false, true) => Step::CreateAndMove(p),
            (false, false) => Step::Unmount(p),
        })
        .collect()
}

/// The programs tried as the root's init: `init=`, then the kernel's own list.
pub fn init_candidates(init: Option<&str>) -> Vec<String> {
    let mut c: Vec<String> = init.map(String::from).into_iter().collect();
    for p in ["/sbin/init", "/etc/init", "/bin/init", "/bin/sh"] {
        if !c.iter().any(|x| x == p) {
            c.push(p.into());
        }
    }
    c
}

/// Runs the early init; never returns.
pub fn run() -> ! {
    mount::mount_basics();
    super::ensure_stdio();
    let loaded = modules::load_listed(MODULES_PATH);
    let cmdline = Cmdline::read();
    let err = match switch_root(&cmdline) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    say(&err);
    if !matches!(err, EarlyError::NoInit(_) | EarlyError::Switch(_)) {
        say(format_args!(
            "block devices: {}",
            gpt::block_devices().join(" ")
        ));
        say(format_args!("modules loaded: {}", loaded.join(" ")));
    }
    power::fatal()
}

fn wait_for_root(want: &[u8; 16]) -> Option<std::path::PathBuf> {
    let until = Instant::now() + ROOT_WAIT;
    loop {
        if let Some(dev) = gpt::find_root(want) {
            return Some(dev);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn switch_root(cmdline: &Cmdline) -> Result<std::convert::Infallible, EarlyError> {
    let want = cmdline.root_partuuid().ok_or(EarlyError::NoRoot)??;
    let text = cmdline.root.as_deref().unwrap_or_default()["PARTUUID=".len()..].to_string();
    let dev = wait_for_root(&want).ok_or(EarlyError::NotFound(text.clone()))?;
    say(format_args!("root PARTUUID={text} is {}", dev.display()));
    let _ = std::fs::create_dir_all(NEWROOT);
    let flags = if cmdline.rw { 0 } else { libc::MS_RDONLY };
    mount::mount(
        &dev.to_string_lossy(),
        Path::new(NEWROOT),
        "ext4",
        flags,
        None,
    )?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = mount::mount_points(&info);
    let exists = |p: &str| Path::new(&format!("{NEWROOT}{p}")).is_dir();
    let writable = !mount::is_read_only(NEWROOT);
    for step in plan_moves(&mounted, writable, exists) {
        match step {
            Step::Move(p) => mount::move_mount(Path::new(p), &Path::new(NEWROOT).join(&p[1..]))?,
            Step::CreateAndMove(p) => {
                let to = Path::new(NEWROOT).join(&p[1..]);
                let _ = std::fs::create_dir_all(&to);
                mount::move_mount(Path::new(p), &to)?;
            }
            Step::Unmount(p) => mount::unmount(Path::new(p))?,
        }
    }
    free_initramfs();
    enter(NEWROOT).map_err(EarlyError::Switch)?;
    exec_init(cmdline.init.as_deref())
}

/// chdir + `mount . / MS_MOVE` + chroot: the new root becomes `/`.
fn enter(root: &str) -> std::io::Result<()> {
    std::env::set_current_dir(root)?;
    mount::mount(".", Path::new("/"), "", libc::MS_MOVE, None).map_err(|e| e.source)?;
    let dot = CString::new(".").unwrap_or_default();
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chroot(dot.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

fn exec_init(init: Option<&str>) -> Result<std::convert::Infallible, EarlyError> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let tried = init_candidates(init);
    for path in &tried {
        if Path::new(path).exists() {
            let e = std::process::Command::new(path).args(&args).exec();
            say(format_args!("cannot start {path}: {e}"));
        }
    }
    Err(EarlyError::NoInit(tried.join(", ")))
}

/// Deletes the initramfs' files (those on its own file system, not the new root's or the
/// moved ones) when `/` is a ramfs or tmpfs, as switch_root does.
fn free_initramfs() {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // SAFETY: statfs is plain data.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path.
    let ok = unsafe { libc::statfs(c"/".as_ptr(), &mut st) } == 0;
    if !ok || ![RAMFS_MAGIC, TMPFS_MAGIC].contains(&(st.f_type as i64)) {
        return;
    }
    if let Ok(m) = std::fs::symlink_metadata("/") {
        remove_tree(Path::new("/"), m.dev());
    }
}

fn remove_tree(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev {
            continue; // a mount point: the new root, or something still mounted
        }
        if m.is_dir() {
            remove_tree(&p, dev);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_api_fs_are_moved_created_or_unmounted() {
        let mounted: Vec<String> = ["/", "/proc", "/sys", "/dev"].map(String::from).to_vec();
        let has = |p: &str| p != "/sys";
        assert_eq!(
            plan_moves(&mounted, false, has),
            vec![
                Step::Move("/dev"),
                Step::Unmount("/sys"),
                Step::Move("/proc")
            ]
        );
        assert_eq!(
            plan_moves(&mounted, true, has),
            vec![
                Step::Move("/dev"),
                Step::CreateAndMove("/sys"),
                Step::Move("/proc")
            ]
        );
        let with_run = [mounted, vec!["/run".into()]].concat();
        assert!(plan_moves(&with_run, true, |_| true).contains(&Step::Move("/run")));
    }

    #[test]
    fn init_from_the_command_line_comes_first() {
        assert_eq!(
            init_candidates(Some("/.d2v/init")),
            [
                "/.d2v/init",
                "/sbin/init",
                "/etc/init",
                "/bin/init",
                "/bin/sh"
            ]
        );
        assert_eq!(init_candidates(Some("/bin/sh")).len(), 4);
        assert_eq!(init_candidates(None)[0], "/sbin/init");
    }
}
