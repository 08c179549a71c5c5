//! For the documentation tests (README examples, CI recipes): run a documented shell
//! command line as a user would, with `d2v` on PATH being the binary under test, in a private
//! HOME and cache, against a real local registry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::oci::Compression;
use crate::registry::Registry;

/// A directory holding only `d2v`, a symlink to the binary under test (`$D2V_BIN`, else
/// `built`, the test's `env!("CARGO_BIN_EXE_d2v")`), to put first on PATH.
pub fn d2v_on_path(scratch: &Path, built: &str) -> PathBuf {
    let bin = crate::fixtures::d2v_bin(built);
    let dir = scratch.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("d2v");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    dir
}

/// PATH with `first` in front of the test process's own.
pub fn path_with(first: &Path) -> String {
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{}:{rest}", first.display())
}

/// A shell command for `script` (`sh -e -c`, or `bash -e -o pipefail -c` when `bash`), in
/// `cwd`, with only the given environment plus PATH (nothing of the test process's HOME,
/// proxies, auth files or registries configuration leaks in).
pub fn shell(
    script: &str,
    cwd: &Path,
    bash: bool,
    env: &[(String, String)],
    path: &str,
) -> Command {
    let mut cmd = if bash {
        let mut c = Command::new("bash");
        c.args([
            "--noprofile",
            "--norc",
            "-e",
            "-o",
            "pipefail",
            "-c",
            script,
        ]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-e", "-c", script]);
        c
    };
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run_ok(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        crate::output_text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{what}: d2v panicked:\n{}",
        crate::output_text(&out)
    );
    out
}

/// A small image d2v can turn into a VM (a kernel and an initramfs in /boot, an init, a
/// network configuration; GRUB from the host), written to the OCI layout `dir` as `tag`.
pub fn write_app_image(dir: &Path, tag: &str) {
    crate::cli::write_tiny(dir, tag, "debian", true, Compression::Gzip);
}

/// Pushes the small image of [`write_app_image`] to `reg` as `repo_tag` (as a CI pipeline's
/// kaniko step would have).
pub fn push_app_image(reg: &Registry, scratch: &Path, repo_tag: &str) {
    let layout = scratch.join("pushed-layout");
    if !layout.join("index.json").is_file() {
        write_app_image(&layout, "app");
    }
    reg.push(&format!("oci:{}:app", layout.display()), repo_tag);
}

/// A docker config JSON with `USER:PASSWORD` for `registry`, as
/// `kubectl create secret docker-registry` (or `docker login`) writes it.
pub fn docker_config_json(registry: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({
        "auths": {registry: {"username": user, "password": password, "auth": auth}}
    })
    .to_string()
}

/// A registries.conf that lets d2v reach the test registry `host` over TLS without knowing its
/// CA: `insecure` for that location alone (a CI platform's registry has a certificate from a
/// public CA; the test CA is in no trust store d2v reads from the environment).
pub fn trust_test_registry(dir: &Path, host: &str) -> PathBuf {
    let p = dir.join("registries.conf");
    std::fs::write(
        &p,
        format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    )
    .unwrap();
    p
}

/// Asserts `ova` is an OVA: a tar whose first member is the `.ovf`, with a `.mf` and a
/// `.vmdk` (listed by GNU tar).
pub fn assert_ova(ova: &Path) {
    assert!(ova.is_file(), "{} was not written", ova.display());
    let out = Command::new("tar").arg("-tf").arg(ova).output().unwrap();
    assert!(out.status.success(), "tar -tf {}", ova.display());
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        names.first().is_some_and(|n| n.ends_with(".ovf"))
            && names.iter().any(|n| n.ends_with(".mf"))
            && names.iter().any(|n| n.ends_with(".vmdk")),
        "{} is not an OVA: {names:?}",
        ova.display()
    );
}

/// The number of verified blobs in d2v's cache directory `dir`.
pub fn cached_blobs(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}
