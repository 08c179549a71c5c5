//! Names the commit d2v is built from in `d2v --version`: `D2V_COMMIT` if set (a build from a
//! source tarball), else `git rev-parse HEAD` of this checkout, else "unknown commit". Only
//! the commit: the same commit gives the same binary.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !s.trim().is_empty()).then(|| s.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=D2V_COMMIT");
    let given = std::env::var("D2V_COMMIT").ok().filter(|c| !c.is_empty());
    let commit = given.clone().or_else(|| git(&["rev-parse", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs. Only files
    // that exist: cargo reruns a build script every time a rerun-if-changed file is missing
    // (a worktree has no refs of its own, a fresh clone often no packed-refs), which rebuilt
    // d2v on every cargo invocation. A given D2V_COMMIT needs no watching.
    let watch = |p: &Path| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]).filter(|_| given.is_none()) {
        let dir = Path::new(&dir);
        watch(&dir.join("HEAD"));
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(&dir.join(&r));
        }
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            let common = Path::new(&common);
            watch(&common.join("packed-refs"));
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(&common.join(r));
            }
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let long = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (unknown commit)"),
    };
    println!("cargo:rustc-env=D2V_LONG_VERSION={long}");
}
