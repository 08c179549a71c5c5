//! What users of the command line meet beside the conversion itself: `--version` naming the
//! commit, shell completion scripts (checked by the shells), `-v` stage times and the same in
//! `--json`, and the platform and index digest in `build --json`.

use std::process::Command;

use testkit::cli::*;
use testkit::oci::{self, Compression};

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

#[test]
fn version_names_the_commit() {
    let sb = Sandbox::new(D2V);
    let out = sb.d2v(["--version"]).ok().stdout_str();
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        out.starts_with(&format!("d2v {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // D2V_BIN may be a release binary built at this commit (CI); a dev build is too.
    assert!(
        out.contains(&format!("(commit {head})")),
        "--version does not name HEAD {head}: {out}"
    );
}

/// bash loads the script and completes `d2v pu` to `pull` and `d2v build --for` to
/// `--format`; zsh and fish parse theirs; every shell clap knows gets a script.
#[test]
fn completion_scripts_work_in_their_shells() {
    let sb = Sandbox::new(D2V);
    let script = |shell: &str| {
        let r = sb.d2v(["completion", shell]).ok();
        assert!(!r.stdout.is_empty(), "{shell}: empty script");
        let path = sb.path(&format!("in/d2v.{shell}"));
        std::fs::write(&path, &r.stdout).unwrap();
        path
    };
    let bash = script("bash");
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let cmd = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _d2v d2v '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display(),
            line,
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let o = Command::new("bash").args(["-c", &cmd]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(complete("d2v pu").trim(), "pull");
    assert!(complete("d2v build --for").lines().any(|l| l == "--format"));

    let zsh = script("zsh");
    testkit::require_tool("zsh", "zsh");
    let o = Command::new("zsh").arg("-n").arg(&zsh).output().unwrap();
    assert!(
        o.status.success(),
        "zsh -n: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let fish = script("fish");
    testkit::require_tool("fish", "fish");
    let o = Command::new("fish")
        .arg("--no-execute")
        .arg(&fish)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fish -n: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for shell in ["elvish", "powershell"] {
        let text = String::from_utf8_lossy(&std::fs::read(script(shell)).unwrap()).into_owned();
        assert!(
            text.contains("pull") && text.contains("--compression-level"),
            "{shell}"
        );
    }
    let r = sb.d2v(["completion", "tcsh"]);
    assert_eq!(r.status.code(), Some(2), "a usage error: {}", r.stderr);
    assert!(
        r.stderr.contains("tcsh") && r.stderr.contains("bash"),
        "{}",
        r.stderr
    );
}

/// The tiny image behind an OCI image index (as a multi-platform image is), so that the
/// summary has an index digest to report.
fn behind_an_index(sb: &Sandbox) -> (String, String, String) {
    let dir = sb.path("in/oci");
    let img = write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    let index_digest = oci::write_index(&dir, &[&img], "v1").unwrap();
    (oci_src(&dir, "v1"), img.manifest_digest, index_digest)
}

#[test]
fn verbose_prints_stage_times_and_json_carries_them() {
    let sb = Sandbox::new(D2V);
    let (src, manifest, index) = behind_an_index(&sb);
    let out = sb.out_file("vm.ova");
    let stages = [
        "pull", "flatten", "guest", "ext4", "esp_grub", "output", "total",
    ];
    let build = |flag: &str| {
        let out = out.to_str().unwrap();
        sb.d2v(["build", &src, "-o", out, "--root-free", "64M", flag])
            .ok()
    };

    let r = build("-v");
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("times: "))
        .unwrap_or_else(|| panic!("no times line:\n{}", r.stderr));
    for s in stages {
        assert!(line.contains(&format!("{s} ")), "{s} missing: {line}");
    }
    // Each stage's own line as it ends, before the summary.
    assert!(r.stderr.contains("time: ext4 "), "{}", r.stderr);

    std::fs::remove_file(&out).unwrap();
    let r = build("--json");
    assert!(
        r.stderr.is_empty(),
        "--json writes no progress:\n{}",
        r.stderr
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["manifest_digest"], manifest.as_str());
    assert_eq!(v["index_digest"], index.as_str(), "{v:#}");
    assert_eq!(v["platform"], "linux/amd64");
    let t = v["timings"].as_object().unwrap_or_else(|| panic!("{v:#}"));
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    let mut want = stages.to_vec();
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    let sum: f64 = stages[..6].iter().map(|s| t[*s].as_f64().unwrap()).sum();
    let total = t["total"].as_f64().unwrap();
    assert!(
        total > 0.0 && sum <= total + 0.01,
        "stages {sum} s > total {total} s"
    );

    // A single-platform image has no index digest.
    let plain = sb.path("in/plain");
    write_tiny(&plain, "v1", "debian", true, Compression::Gzip);
    let out2 = sb.out_file("vm2.ova");
    let r = sb
        .d2v([
            "build",
            &oci_src(&plain, "v1"),
            "-o",
            out2.to_str().unwrap(),
            "--root-free",
            "64M",
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(v["index_digest"].is_null(), "{v:#}");
    assert_eq!(v["platform"], "linux/amd64");
}
