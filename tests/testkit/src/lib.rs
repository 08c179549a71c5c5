//! Harness for d2v's tests and `cargo xtask`: starts real services (Debian's `docker-registry`,
//! QEMU) on loopback, finds the fixtures `cargo xtask test` builds, and runs the `d2v` binary
//! the way users do (`cli`, `shell`).

pub mod cli;
pub mod cpio;
pub mod fixtures;

use std::path::{Path, PathBuf};

pub mod proxy;
pub mod qemu;
pub mod registry;
mod token_issuer;

/// The workspace root (where the top-level Cargo.toml is).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Where `cargo xtask test` puts built fixtures: `$D2V_FIXTURES` or `<workspace>/target/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("D2V_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/fixtures"))
}

/// Fails with a message naming the Debian package when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]) {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} not found: install Debian's {package} (cargo xtask test installs it)");
}

/// Asserts the host has GRUB's BIOS and UEFI module directories, which d2v builds from when
/// an image ships no GRUB.
pub fn require_grub_modules() {
    for (dir, package) in [
        ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin"),
    ] {
        assert!(
            Path::new(dir).join("kernel.img").is_file(),
            "{dir} missing: install Debian's {package} (cargo xtask test installs it)"
        );
    }
}

pub mod edge_cases;
pub mod http;
pub mod layout_registry;
pub mod oci;
pub mod ovf_schema;
pub mod shell;
pub mod tar;
/// A finished command's stdout then stderr, as text (for matching and assertion messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new empty file at `path` (truncated if it exists), open for reading and writing: a disk
/// image to write into.
pub fn create_rw(path: &std::path::Path) -> std::fs::File {
    std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Asserts that `qemu-img compare` reads the VMDK `vmdk` back as the raw image `raw`.
pub fn assert_vmdk_matches_raw(raw: &std::path::Path, vmdk: &std::path::Path) {
    let qemu_img = require_tool("qemu-img", "qemu-utils");
    let out = std::process::Command::new(qemu_img)
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(raw)
        .arg(vmdk)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img compare {} {}: {}",
        raw.display(),
        vmdk.display(),
        output_text(&out)
    );
}

/// A fresh directory under the system temp dir for one test's files, removed when the
/// returned guard is dropped — unless the thread is panicking: after a failure it is left in
/// place (and named on stderr) so its logs can be inspected. Bind the guard for as long as the
/// directory is used (`scratch_dir(..).join(..)` on a temporary would remove it at once).
#[must_use = "the directory is removed when the guard is dropped"]
pub fn scratch_dir(what: &str) -> Scratch {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("d2v-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    Scratch(dir)
}

/// A directory of [`scratch_dir`]; derefs to its path.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Scratch {
    /// The path, the directory left in place for its owner to remove.
    pub fn keep(self) -> PathBuf {
        let path = self.0.clone();
        std::mem::forget(self);
        path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("testkit: {} kept for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Every file under `dir`, at any depth (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
