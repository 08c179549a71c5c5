//! Container → VM fixes on the staging tree. A container image assumes a runtime that
//! provides `/etc/hosts`, DNS, a hostname and no init; a VM boots it with its own kernel and
//! init. Each fix returns a [`Report`] line for the user.

use std::fmt;

pub mod app;

use crate::inspect;
use crate::tree::{Inode, Kind, Metadata, Timestamp, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest fix on {path}: {source}")]
    Tree { path: String, source: TreeError },
    #[error("guest fix: reading {path} from the image: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, GuestError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
}

/// One line of the report printed after conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub level: Level,
    pub message: String,
}

impl Report {
    fn info(m: impl Into<String>) -> Report {
        Report {
            level: Level::Info,
            message: m.into(),
        }
    }
    fn warn(m: impl Into<String>) -> Report {
        Report {
            level: Level::Warning,
            message: m.into(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Info => write!(f, "{}", self.message),
            Level::Warning => write!(f, "warning: {}", self.message),
        }
    }
}

/// What the fixes need to know about the VM.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    pub hostname: String,
    /// UUID of the root ext4 filesystem (`UUID=` in fstab).
    pub root_fs_uuid: String,
    /// FAT serial of the ESP, `XXXX-XXXX`.
    pub esp_serial: String,
}

/// Applies every fix in order and returns their reports.
pub fn apply(tree: &mut Tree, opts: &GuestOptions) -> Result<Vec<Report>> {
    let mut out = remove_container_markers(tree)?;
    out.push(write_fstab(tree, &opts.root_fs_uuid, &opts.esp_serial)?);
    out.extend(write_hostname(tree, &opts.hostname)?);
    out.extend(reset_machine_id(tree)?);
    out.extend(fix_resolv_conf(tree)?);
    out.extend(fix_openrc_rc_sys(tree)?);
    out.push(check_init(tree));
    Ok(out)
}

fn tree_err(path: &str) -> impl FnOnce(TreeError) -> GuestError + '_ {
    move |source| GuestError::Tree {
        path: path.to_string(),
        source,
    }
}

fn mtime() -> Timestamp {
    Timestamp {
        sec: crate::ids::source_date_epoch().unwrap_or(0),
        nsec: 0,
    }
}

/// Replaces whatever is at `path` with a root-owned regular file.
fn put_file(tree: &mut Tree, path: &str, data: &[u8], mode: u32) -> Result<()> {
    put_reader(tree, path, &mut &data[..], mode)
}

/// [`put_file`] with the contents read from `data`.
pub(crate) fn put_reader(
    tree: &mut Tree,
    path: &str,
    data: &mut dyn std::io::Read,
    mode: u32,
) -> Result<()> {
    let fd = tree.store(data).map_err(tree_err(path))?;
    tree.remove(path.as_bytes()).map_err(tree_err(path))?;
    let inode = Inode {
        meta: Metadata {
            mode,
            mtime: mtime(),
            ..Metadata::default()
        },
        kind: Kind::File(fd),
    };
    tree.insert(path.as_bytes(), inode)
        .map_err(tree_err(path))?;
    Ok(())
}

/// Contents of the regular file at `path` (symlinks followed inside the image), if any.
fn read_file(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(data) = tree.resolve_file(path.as_bytes()) else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut tree.spill().reader(data), &mut buf).map_err(|source| {
        GuestError::Read {
            path: path.into(),
            source,
        }
    })?;
    Ok(Some(buf))
}

fn exists(tree: &Tree, path: &str) -> bool {
    tree.resolve_file(path.as_bytes()).is_some()
}

/// Removes files that tell software it runs in a container: `/.dockerenv` (OpenRC then skips
/// most services), `/run/.containerenv`, and `/boot/boot` (meaningless once `/boot` is its own
/// filesystem).
pub fn remove_container_markers(tree: &mut Tree) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    for (path, why) in [
        (
            ".dockerenv",
            "OpenRC and others treat the system as a Docker container",
        ),
        ("run/.containerenv", "podman's container marker"),
        ("boot/boot", "/boot is the EFI System Partition"),
    ] {
        if tree.remove(path.as_bytes()).map_err(tree_err(path))? {
            out.push(Report::info(format!("removed /{path} ({why})")));
        }
    }
    Ok(out)
}

/// True when `text` has a line that is neither blank nor a comment.
fn has_content(text: &[u8]) -> bool {
    String::from_utf8_lossy(text)
        .lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Writes `/etc/fstab` mounting the root by `UUID=` and the ESP at `/boot`, unless the image
/// has an fstab with entries. fsck passes are set only when the image has the checker.
pub fn write_fstab(tree: &mut Tree, root_uuid: &str, esp_serial: &str) -> Result<Report> {
    if read_file(tree, "etc/fstab")?.is_some_and(|t| has_content(&t)) {
        return Ok(Report::warn(format!(
            "kept the image's non-empty /etc/fstab: make sure it mounts UUID={root_uuid} at / and UUID={esp_serial} \
             at /boot"
        )));
    }
    let has_any = |names: &[&str]| {
        names.iter().any(|n| {
            ["sbin", "usr/sbin", "bin", "usr/bin"]
                .iter()
                .any(|d| exists(tree, &format!("{d}/{n}")))
        })
    };
    let root_pass = if has_any(&["fsck.ext4", "e2fsck"]) {
        1
    } else {
        0
    };
    let boot_pass = if has_any(&["fsck.vfat", "fsck.fat"]) {
        2
    } else {
        0
    };
    let text = format!(
        "# /etc/fstab written by d2v\n\
         # <file system>  <mount point>  <type>  <options>  <dump>  <pass>\n\
         UUID={root_uuid}  /  ext4  defaults,errors=remount-ro  0  {root_pass}\n\
         UUID={esp_serial}  /boot  vfat  defaults,umask=0022  0  {boot_pass}\n"
    );
    put_file(tree, "etc/fstab", text.as_bytes(), 0o644)?;
    Ok(Report::info(format!(
        "wrote /etc/fstab: / is UUID={root_uuid} (ext4), /boot is UUID={esp_serial} (vfat)"
    )))
}

/// A hostname from an image reference: `docker.io/library/nginx:1.25` → `nginx`.
pub fn default_hostname(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or("");
    let last = no_digest.rsplit('/').next().unwrap_or("");
    let name = last.split(':').next().unwrap_or("");
    // An archive's file name without its extension (`app.tar.gz` → `app`).
    let name = [".tar.gz", ".tgz", ".tar.zst", ".tar"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name);
    let mut h: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    h.truncate(63);
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "d2v".into()
    } else {
        h
    }
}

/// Writes `/etc/hostname`, and an `/etc/hosts` when the image has none (or an empty one).
pub fn write_hostname(tree: &mut Tree, hostname: &str) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    put_file(
        tree,
        "etc/hostname",
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    out.push(Report::info(format!("wrote /etc/hostname: {hostname}")));
    if !read_file(tree, "etc/hosts")?.is_some_and(|t| has_content(&t)) {
        let hosts = format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        );
        put_file(tree, "etc/hosts", hosts.as_bytes(), 0o644)?;
        out.push(Report::info(
            "wrote /etc/hosts (the image had none; a container runtime provides it)",
        ));
    }
    Ok(out)
}

/// Empties `/etc/machine-id` so each VM gets its own on first boot, and drops a stale copy
/// in `/var/lib/dbus/machine-id` (a symlink to /etc/machine-id is kept).
pub fn reset_machine_id(tree: &mut Tree) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    let had = read_file(tree, "etc/machine-id")?;
    put_file(tree, "etc/machine-id", b"", 0o444)?;
    out.push(Report::info(match had {
        Some(t) if !t.iter().all(u8::is_ascii_whitespace) => {
            "emptied /etc/machine-id (each VM generates its own)"
        }
        _ => "wrote an empty /etc/machine-id (each VM generates its own)",
    }));
    let dbus = "var/lib/dbus/machine-id";
    if let Some(id) = tree.lookup(dbus.as_bytes()) {
        if matches!(tree.inode(id).kind, Kind::File(_)) {
            tree.remove(dbus.as_bytes()).map_err(tree_err(dbus))?;
            out.push(Report::info(
                "removed the stale /var/lib/dbus/machine-id copy",
            ));
        }
    }
    Ok(out)
}

/// Whether `text` is a resolv.conf a container runtime or image builder left behind.
fn is_container_resolv_conf(text: &[u8]) -> bool {
    let t = String::from_utf8_lossy(text);
    let lower = t.to_ascii_lowercase();
    !has_content(text)
        || lower.contains("generated by docker")
        || lower.contains("docker embedded dns")
        || lower.contains("generated by podman")
        || lower.contains("generated by buildah")
        || t.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nameserver", "127.0.0.11"])
}

const RESOLVED: [&str; 2] = [
    "usr/lib/systemd/systemd-resolved",
    "lib/systemd/systemd-resolved",
];

/// Replaces a container-only `/etc/resolv.conf` (missing, empty, or written by a container
/// runtime) with a link to systemd-resolved's stub when the image has systemd-resolved, else
/// with a file that DHCP clients (dhclient, udhcpc, networkd) overwrite.
pub fn fix_resolv_conf(tree: &mut Tree) -> Result<Option<Report>> {
    let path = "etc/resolv.conf";
    if let Some(id) = tree.lookup(path.as_bytes()) {
        match &tree.inode(id).kind {
            // A link (e.g. to resolved's stub, or resolvconf's run file) is the OS's choice.
            Kind::Symlink(_) => return Ok(None),
            Kind::File(_)
                if !is_container_resolv_conf(&read_file(tree, path)?.unwrap_or_default()) =>
            {
                return Ok(None)
            }
            _ => {}
        }
    }
    tree.remove(path.as_bytes()).map_err(tree_err(path))?;
    if RESOLVED.iter().any(|p| exists(tree, p)) {
        let target = b"../run/systemd/resolve/stub-resolv.conf".to_vec();
        let inode = Inode {
            meta: Metadata {
                mode: 0o777,
                mtime: mtime(),
                ..Metadata::default()
            },
            kind: Kind::Symlink(target.into()),
        };
        tree.insert(path.as_bytes(), inode)
            .map_err(tree_err(path))?;
        return Ok(Some(Report::info(
            "replaced the container's /etc/resolv.conf with a link to systemd-resolved's stub",
        )));
    }
    let text = "# Written by d2v: the container's resolv.conf was an artefact of its runtime.\n\
                # A DHCP client replaces this file; otherwise add 'nameserver <address>' lines.\n";
    put_file(tree, path, text.as_bytes(), 0o644)?;
    Ok(Some(Report::info(
        "replaced the container's /etc/resolv.conf with a placeholder that DHCP clients fill in",
    )))
}

/// `rc_sys` values of OpenRC that mean "running in a container".
const CONTAINER_RC_SYS: [&str; 8] = [
    "docker",
    "lxc",
    "openvz",
    "podman",
    "prefix",
    "rkt",
    "systemd-nspawn",
    "vserver",
];

/// Comments out an `rc_sys="docker"` (or another container type) in OpenRC's `/etc/rc.conf`,
/// so OpenRC runs the services a VM needs; its auto-detection then sees a VM.
pub fn fix_openrc_rc_sys(tree: &mut Tree) -> Result<Option<Report>> {
    let path = "etc/rc.conf";
    let Some(text) = read_file(tree, path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let mut changed = Vec::new();
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            let t = line.trim();
            let value = t.strip_prefix("rc_sys=").map(|v| {
                v.trim_matches(|c| c == '"' || c == '\'')
                    .to_ascii_lowercase()
            });
            match value {
                Some(v) if CONTAINER_RC_SYS.contains(&v.as_str()) => {
                    changed.push(v);
                    format!("# {} # disabled by d2v: a VM is not a container\n", t)
                }
                _ => line.to_string(),
            }
        })
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    let id = tree.resolve(path.as_bytes(), true).expect("read above");
    let mode = tree.inode(id).meta.mode;
    put_file(tree, path, lines.concat().as_bytes(), mode)?;
    Ok(Some(Report::info(format!(
        "disabled rc_sys=\"{}\" in /etc/rc.conf (OpenRC would run as in a container)",
        changed[0]
    ))))
}

/// Which init system the kernel will start ([`inspect::init_system`], the classifier
/// `inspect` reports from too), or a warning when there is none.
pub fn check_init(tree: &Tree) -> Report {
    let own = crate::init::config::INIT_PATH;
    match inspect::init_system(tree) {
        (_, None) if exists(tree, own.trim_start_matches('/')) => Report::info(format!(
            "init: d2v's init ({own}, started by init= on the kernel command line) runs the \
             image's entrypoint"
        )),
        (kind, Some((tried, resolved))) => {
            let target = if resolved == tried {
                String::new()
            } else {
                format!(" → {resolved}")
            };
            Report::info(format!("init: {tried}{target} ({})", kind.name()))
        }
        (_, None) if inspect::systemd_without_init(tree) => Report::warn(
            "systemd is installed but /sbin/init is missing: the kernel will not start it and              will panic; install systemd-sysv (Debian/Ubuntu), which links /sbin/init to systemd",
        ),
        (_, None) => Report::warn(
            "no init system found (/sbin/init is missing): the kernel will panic; install \
             systemd-sysv (Debian/Ubuntu), openrc (Alpine) or busybox-openrc",
        ),
    }
}

#[cfg(test)]
mod tests;
