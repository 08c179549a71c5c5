//! For the black-box CLI tests: run the real `d2v` binary with a private cache and HOME,
//! build tiny OCI layouts, and tamper with them the way a corrupt or malicious image would.
//!
//! testkit does not know where cargo put the binary: a test passes it to [`Sandbox::new`]
//! (`env!("CARGO_BIN_EXE_d2v")`, which only d2v's own tests can name).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::oci::{self, Compression, ImageSpec, WrittenImage};
use crate::tar::{tar, Entry};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const KERNEL_VERSION: &str = "6.1.0-x";

/// How long one d2v run may take before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(600);

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub cmd: String,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics (showing stderr) unless the run succeeded.
    pub fn ok(self) -> Run {
        assert!(
            self.status.success(),
            "`{}` failed ({:?}):\n{}",
            self.cmd,
            self.status,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

/// A sandbox for d2v runs: a private cache directory, HOME and XDG dirs (so no user config,
/// auth file or cache is read), plus a work directory for inputs and outputs.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// The d2v binary every run starts.
    bin: PathBuf,
}

impl Sandbox {
    /// A sandbox whose runs start the binary `d2v`.
    pub fn new(d2v: impl Into<PathBuf>) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("d2v-cli-")
            .tempdir()
            .unwrap();
        for d in ["home", "cache", "out", "in"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Sandbox {
            dir,
            env: Vec::new(),
            bin: d2v.into(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// A new, empty blob cache directory for one run (so a blob verified and cached by an
    /// earlier run cannot hide a layout tampered with since).
    pub fn fresh_cache(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        self.path(&format!("cache/run-{}", N.fetch_add(1, Ordering::Relaxed)))
    }
    /// The (initially empty) output directory.
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }
    pub fn out_file(&self, name: &str) -> PathBuf {
        self.out().join(name)
    }

    /// Runs `d2v ARGS` with the sandbox's cache (`--cache-dir` is added by callers that need
    /// it; XDG_CACHE_HOME points into the sandbox anyway).
    pub fn d2v<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.d2v_env(args, &[])
    }

    pub fn d2v_env<I, S>(&self, args: I, env: &[(&str, &str)]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(cmd)
    }

    /// Runs `d2v ARGS` with stdout on `/dev/full` (every write fails with ENOSPC).
    pub fn d2v_stdout_full<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        run_with_timeout_stdout(self.command(args), Some(full))
    }

    /// Runs `WRAPPER… d2v ARGS` (e.g. strace, unshare) with d2v's sandbox environment.
    pub fn d2v_wrapped<I, S>(&self, wrapper: &[&OsStr], args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_with_timeout(self.wrapped(wrapper, args))
    }

    /// `d2v ARGS` under `/usr/bin/time -v`: the run, its peak RSS in KiB and its wall time.
    pub fn d2v_measured<I, S>(&self, args: I) -> (Run, u64, Duration)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let time = crate::require_tool("time", "time");
        let t0 = Instant::now();
        let r = self.d2v_wrapped(&[time.as_os_str(), "-v".as_ref()], args);
        let took = t0.elapsed();
        let rss = r
            .stderr
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS from time -v:\n{}", r.stderr));
        (r, rss, took)
    }

    /// [`Sandbox::command`] run through `wrapper` (its program, then its arguments).
    pub fn wrapped<I, S>(&self, wrapper: &[&OsStr], args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let d2v = self.command(args);
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(d2v.get_program())
            .args(d2v.get_args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in d2v.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// The command, not yet started (for tests that signal the process).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.path("home"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .env_remove("D2V_TEST_HOLD_BEFORE_COMMIT")
            .env_remove("D2V_TEST_PAUSE_AT")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        // The machine's proxy settings must not reach d2v: tests set their own.
        for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            cmd.env_remove(var).env_remove(var.to_ascii_uppercase());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Names in the output directory (hidden ones included).
    pub fn out_listing(&self) -> Vec<String> {
        ls(&self.out())
    }
}

pub fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run_with_timeout(cmd: Command) -> Run {
    run_with_timeout_stdout(cmd, None)
}

fn run_with_timeout_stdout(mut cmd: Command, stdout: Option<std::fs::File>) -> Run {
    let shown = format!("{cmd:?}");
    let out_file = tempfile::tempfile().unwrap();
    let err_file = tempfile::tempfile().unwrap();
    cmd.stdout(stdout.unwrap_or_else(|| out_file.try_clone().unwrap()))
        .stderr(err_file.try_clone().unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut b = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut b).unwrap();
        b
    };
    Run {
        status,
        stdout: read(out_file),
        stderr: String::from_utf8_lossy(&read(err_file)).into_owned(),
        cmd: shown,
    }
}

/// A bad-input run: exit status 1, `d2v: error:` on stderr naming every `needle`
/// (case-insensitive), no panic, no backtrace, nothing on stdout.
pub fn assert_clean_failure(run: &Run, needles: &[&str]) {
    let e = &run.stderr;
    // Shown with --nocapture, to review the messages.
    eprintln!("--- {}\n{e}", run.cmd);
    let ctx = format!("`{}`\nstderr:\n{e}", run.cmd);
    assert_eq!(run.status.code(), Some(1), "expected exit status 1: {ctx}");
    assert!(!e.contains("panicked"), "d2v panicked: {ctx}");
    assert!(!e.contains("RUST_BACKTRACE"), "d2v panicked: {ctx}");
    assert!(e.contains("d2v: error: "), "no `d2v: error:` line: {ctx}");
    // Causes are not repeated: a `caused by` line says something the message does not.
    let first = e
        .lines()
        .find(|l| l.starts_with("d2v: error: "))
        .unwrap_or_default();
    for l in e.lines() {
        if let Some(c) = l.strip_prefix("  caused by: ") {
            assert!(!first.contains(c), "repeated cause {c:?}: {ctx}");
        }
    }
    let lower = e.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "stderr does not mention {n:?}: {ctx}"
        );
    }
    assert!(
        run.stdout.is_empty(),
        "a failed run printed on stdout: {:?}\n{ctx}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// `/etc/os-release` text for `id` (`debian`, `alpine`, ...).
pub fn os_release(id: &str) -> String {
    match id {
        "debian" => "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n".into(),
        "alpine" => "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n".into(),
        other => format!("ID={other}\n"),
    }
}

/// A pseudo-random byte string (deterministic), so compressed layers are not tiny.
pub fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// The base layer of a tiny "OS": directories, `/etc/os-release` for `os_id`, a fake shell,
/// and, with `kernel`, a fake `/boot/vmlinuz-6.1.0-x` and `/boot/initrd.img-6.1.0-x`.
pub fn base_layer(os_id: &str, kernel: bool) -> Vec<u8> {
    let mut e = vec![
        Entry::dir("bin"),
        Entry::dir("boot"),
        Entry::dir("etc"),
        Entry::dir("sbin"),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::dir("var"),
        Entry::dir("tmp").mode(0o1777),
        Entry::file("etc/os-release", os_release(os_id)),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        Entry::file("bin/sh", noise(1, 20_000)).mode(0o755),
        Entry::symlink("sbin/init", "/bin/sh"),
        // A network configuration, as a VM image needs one (d2v warns when there is none).
        Entry::dir("etc/systemd"),
        Entry::dir("etc/systemd/network"),
        Entry::file(
            "etc/systemd/network/50-dhcp.network",
            "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n",
        ),
    ];
    if kernel {
        e.push(Entry::file(
            format!("boot/vmlinuz-{KERNEL_VERSION}"),
            noise(2, 300_000),
        ));
        e.push(Entry::file(
            format!("boot/initrd.img-{KERNEL_VERSION}"),
            noise(3, 100_000),
        ));
    }
    tar(&e)
}

/// A second layer that changes the first: a new file, a replaced file and a deletion.
pub fn app_layer() -> Vec<u8> {
    tar(&[
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/hello", "#!/bin/sh\necho hello\n").mode(0o755),
        Entry::file("etc/motd", "built by the d2v CLI tests\n"),
        Entry::whiteout("etc/passwd"),
        Entry::file("etc/hostname", "container-id-1234\n"),
    ])
}

/// The tiny image tagged `tag`: a base layer (`os_id`, kernel or not) and the app layer,
/// compressed with `c`.
pub fn tiny(tag: &str, os_id: &str, kernel: bool, c: Compression) -> ImageSpec {
    ImageSpec::new()
        .layer(base_layer(os_id, kernel), c)
        .layer(app_layer(), c)
        .entrypoint(&["/usr/bin/hello"])
        .env(&["PATH=/usr/bin:/bin", "D2V_TEST=1"])
        .tag(tag)
}

/// Writes [`tiny`] into the OCI layout `dir`.
pub fn write_tiny(
    dir: &Path,
    tag: &str,
    os_id: &str,
    kernel: bool,
    c: Compression,
) -> WrittenImage {
    oci::write_image(dir, &tiny(tag, os_id, kernel, c)).unwrap()
}

/// The tiny Debian image (its base layer gzip, with a kernel) with `layer` (compressed with
/// `c`) on top, written as `v1` of the layout `dir`.
pub fn debian_with_layer_at(dir: &Path, layer: Vec<u8>, c: Compression) -> WrittenImage {
    let spec = ImageSpec::new()
        .layer(base_layer("debian", true), Compression::Gzip)
        .layer(layer, c)
        .tag("v1");
    oci::write_image(dir, &spec).unwrap()
}

/// `oci:DIR:TAG`.
pub fn oci_src(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The manifest descriptor in `index.json` tagged `tag`, and the manifest itself.
pub fn manifest_of(dir: &Path, tag: &str) -> (Value, Value) {
    let index = read_json(&dir.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"][oci::REF_NAME] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()));
    let m = read_json(&oci::blob_path(dir, desc["digest"].as_str().unwrap()));
    (desc, m)
}

/// Rewrites the manifest tagged `tag` with `edit` and re-points the index at the new one, so
/// every digest on the way stays consistent (only what `edit` changes is "wrong").
pub fn rewrite_manifest(dir: &Path, tag: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (_, mut m) = manifest_of(dir, tag);
    edit(&mut m);
    let (digest, size) = oci::write_blob(dir, &serde_json::to_vec(&m).unwrap()).unwrap();
    let ip = dir.join("index.json");
    let mut index = read_json(&ip);
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["annotations"][oci::REF_NAME] == tag {
            d["digest"] = digest.clone().into();
            d["size"] = size.into();
        }
    }
    std::fs::write(&ip, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    digest
}

/// Replaces layer `i`'s blob with `bytes` (stored under its own, correct digest), keeping the
/// media type and the config's diff_ids: the blob verifies, its content does not.
pub fn replace_layer_blob(dir: &Path, tag: &str, i: usize, bytes: &[u8]) -> String {
    let (digest, size) = oci::write_blob(dir, bytes).unwrap();
    let d = digest.clone();
    rewrite_manifest(dir, tag, |m| {
        m["layers"][i]["digest"] = d.into();
        m["layers"][i]["size"] = size.into();
    });
    digest
}

/// Rewrites the image config with `edit` (stored under its correct digest).
pub fn rewrite_config(dir: &Path, tag: &str, edit: impl FnOnce(&mut Value)) {
    let (_, m) = manifest_of(dir, tag);
    let mut c = read_json(&oci::blob_path(
        dir,
        m["config"]["digest"].as_str().unwrap(),
    ));
    edit(&mut c);
    let (digest, size) = oci::write_blob(dir, &serde_json::to_vec(&c).unwrap()).unwrap();
    rewrite_manifest(dir, tag, |m| {
        m["config"]["digest"] = digest.into();
        m["config"]["size"] = size.into();
    });
}

/// Whether `needle` occurs as a string anywhere in `v` (values and keys).
pub fn json_has_string(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| json_has_string(x, needle)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k == needle || json_has_string(x, needle)),
        _ => false,
    }
}

/// The first value under key `key` anywhere in `v` (depth first).
pub fn json_find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(o) => o
            .get(key)
            .or_else(|| o.values().find_map(|x| json_find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| json_find(x, key)),
        _ => None,
    }
}
