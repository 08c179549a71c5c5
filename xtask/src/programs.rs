//! Which host programs a run started, and whether the Debian packages it installs provide them.
//!
//! `cargo xtask demo` runs itself under `strace -f` (execve and the fork family only); this
//! module reads that trace back into a process tree, keeps the programs the run started itself
//! — not those its toolchain (cargo, rustc and the linker they run), the project's own binaries
//! or mmdebstrap (whose chroot runs the guest's dpkg) start in turn — and asks `dpkg -S` which
//! package provides each. A program that no package of the run's list (nor a package every
//! Debian system has, Priority `required`) provides is an error: the README's command would
//! fail on a fresh machine.

use crate::bail;
use crate::util::{output, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The strace options whose output [`started_programs`] reads. `--seccomp-bpf` stops the
/// traced processes at these system calls only, so the demo's timings stay its own.
pub const STRACE_ARGS: &[&str] = &[
    "-f",
    "--seccomp-bpf",
    "-qq",
    "-e",
    "trace=execve,execveat,clone,clone3,fork,vfork",
];

/// Programs whose own children are theirs to answer for: mmdebstrap runs the guest's packages'
/// scripts in a chroot.
const DELEGATES: &[&str] = &["mmdebstrap"];

#[derive(Debug, Default)]
struct Process {
    parent: Option<u32>,
    /// Programs this process executed, in order.
    execs: Vec<String>,
}

/// Reads an `strace -f` trace (one `PID syscall(...) = RET` per line, `<unfinished ...>` and
/// `<... NAME resumed>` pairs included) into processes keyed by pid.
fn processes(trace: &str) -> (Option<u32>, HashMap<u32, Process>) {
    let mut procs: HashMap<u32, Process> = HashMap::new();
    let mut pending_exec: HashMap<u32, String> = HashMap::new();
    let mut first = None;
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        first.get_or_insert(pid);
        procs.entry(pid).or_default();
        let rest = rest.trim_start();
        let call = rest
            .strip_prefix("<... ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| rest.split('(').next().unwrap_or(""));
        if rest.starts_with("execve") {
            if let Some(path) = rest.split('"').nth(1) {
                pending_exec.insert(pid, path.to_string());
            }
        }
        let Some(ret) = result(rest) else {
            continue; // unfinished: the resumed line carries the result
        };
        match call {
            "execve" | "execveat" => {
                if let Some(path) = pending_exec.remove(&pid) {
                    if ret == "0" {
                        procs.entry(pid).or_default().execs.push(path);
                    }
                }
            }
            "clone" | "clone3" | "fork" | "vfork" => {
                if let Ok(child) = ret.parse::<u32>() {
                    procs.entry(child).or_default().parent = Some(pid);
                }
            }
            _ => {}
        }
    }
    (first, procs)
}

/// The return value of a finished syscall line (`… = 0`, `… = -1 ENOENT (…)`).
fn result(rest: &str) -> Option<&str> {
    if rest.ends_with("<unfinished ...>") {
        return None;
    }
    // strace pads the result column: `<... vfork resumed>)              = 32694`.
    let (call, ret) = rest.rsplit_once(" = ")?;
    if !call.trim_end().ends_with(')') {
        return None;
    }
    ret.split_whitespace().next()
}

/// The programs the traced run started itself (see the module doc), each once. `own` says
/// which paths are the toolchain's or the project's own binaries (their subtrees are skipped).
pub fn started_programs(trace: &str, own: &dyn Fn(&str) -> bool) -> Vec<String> {
    let (root, procs) = processes(trace);
    let mut out = BTreeSet::new();
    for (pid, p) in &procs {
        if Some(*pid) == root {
            continue; // the traced command itself
        }
        if skipped_by_ancestor(*pid, &procs, root, own) {
            continue;
        }
        for path in &p.execs {
            if !own(path) {
                out.insert(path.clone());
            }
            if own(path) || is_delegate(path) {
                break; // what it execs after that is its own business
            }
        }
    }
    out.into_iter().collect()
}

/// Is `pid` below a process (other than the traced command) that ran the toolchain, one of
/// the project's binaries, or a delegate?
fn skipped_by_ancestor(
    pid: u32,
    procs: &HashMap<u32, Process>,
    root: Option<u32>,
    own: &dyn Fn(&str) -> bool,
) -> bool {
    let mut cur = procs.get(&pid).and_then(|p| p.parent);
    let mut hops = 0;
    while let Some(a) = cur {
        if Some(a) == root || hops > 10_000 {
            return false;
        }
        let p = &procs[&a];
        if p.execs.iter().any(|e| own(e) || is_delegate(e)) {
            return true;
        }
        cur = p.parent;
        hops += 1;
    }
    false
}

fn is_delegate(path: &str) -> bool {
    let name = Path::new(path).file_name().and_then(|n| n.to_str());
    name.is_some_and(|n| DELEGATES.contains(&n))
}

/// The package `dpkg -S` names for `path`, trying the path as run, its canonical form and its
/// other half of the /usr merge (dpkg may know `/bin/x` for `/usr/bin/x`).
pub fn package_of(path: &str) -> Option<String> {
    let mut tries = vec![PathBuf::from(path)];
    if let Ok(c) = std::fs::canonicalize(path) {
        tries.push(c);
    }
    for p in tries.clone() {
        let s = p.to_string_lossy().into_owned();
        match s.strip_prefix("/usr") {
            Some(rest) => tries.push(PathBuf::from(rest)),
            None => tries.push(PathBuf::from(format!("/usr{s}"))),
        }
    }
    tries.iter().find_map(|p| {
        let out = output(Command::new("dpkg").arg("-S").arg(p)).ok()?;
        parse_dpkg_s(&out)
    })
}

/// The first package of `dpkg -S` output (`pkg[, pkg2]: /path`), diversion lines skipped.
fn parse_dpkg_s(out: &str) -> Option<String> {
    out.lines()
        .filter(|l| !l.starts_with("diversion "))
        .find_map(|l| l.split_once(": "))
        .and_then(|(pkgs, _)| pkgs.split(", ").next())
        .map(|p| p.split(':').next().unwrap_or(p).to_string())
}

/// Is `pkg` on every Debian system (Essential, or Priority required)?
fn on_every_system(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Essential} ${Priority}", pkg]))
        .is_ok_and(|o| o.trim() == "yes required" || o.trim().ends_with(" required"))
}

/// Checks that each program comes from a package in `listed` or on every system; returns
/// `program → package` for printing, or an error naming every program that does not.
pub fn check(programs: &[String], listed: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    let mut wrong = Vec::new();
    for prog in programs {
        match package_of(prog) {
            Some(pkg) if listed.contains(&pkg.as_str()) || on_every_system(&pkg) => {
                found.insert(prog.clone(), pkg);
            }
            Some(pkg) => wrong.push(format!("{prog} (package {pkg}, not in the list)")),
            None => wrong.push(format!("{prog} (no Debian package provides it)")),
        }
    }
    if !wrong.is_empty() {
        bail!(
            "the run started programs that its package list does not provide: {}",
            wrong.join("; ")
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A trace as strace 5/6 prints it with -f -qq, unfinished/resumed pairs included.
    const TRACE: &str = r#"100 execve("/root/.cargo/bin/cargo", ["cargo"], 0x7ffd /* 30 vars */) = 0
100 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD, stack=0x7f, stack_size=0x9000}, 88 <unfinished ...>
101 execve("/usr/local/sbin/skopeo", ["skopeo", "copy"], 0x7ffe /* 30 vars */) = -1 ENOENT (No such file or directory)
101 execve("/usr/bin/skopeo", ["skopeo", "copy"], 0x7ffe /* 30 vars */ <unfinished ...>
100 <... clone3 resumed> => {parent_tid=[101]}, 88)    = 101
101 <... execve resumed>) = 0
100 vfork() = 102
102 execve("/root/.cargo/bin/rustc", ["rustc"], 0x1 /* 3 vars */) = 0
102 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD) = 103
103 execve("/usr/bin/cc", ["cc"], 0x1 /* 3 vars */) = 0
100 fork() = 104
104 execve("/usr/bin/mmdebstrap", ["mmdebstrap"], 0x1 /* 3 vars */) = 0
104 clone(child_stack=NULL, flags=SIGCHLD) = 105
105 execve("/usr/bin/dpkg", ["dpkg"], 0x1 /* 3 vars */) = 0
100 fork() = 106
106 execve("/work/target/release/d2v", ["d2v"], 0x1 /* 3 vars */) = 0
"#;

    fn own(p: &str) -> bool {
        p.starts_with("/root/.cargo/") || p.starts_with("/work/target/")
    }

    #[test]
    fn programs_started_by_the_run_itself() {
        assert_eq!(
            started_programs(TRACE, &own),
            ["/usr/bin/mmdebstrap", "/usr/bin/skopeo"]
        );
    }

    #[test]
    fn dpkg_s_lines() {
        assert_eq!(
            parse_dpkg_s("skopeo: /usr/bin/skopeo\n").as_deref(),
            Some("skopeo")
        );
        assert_eq!(
            parse_dpkg_s("diversion by x from: /bin/sh\nlibc-bin, libc6:amd64: /sbin/ldconfig\n")
                .as_deref(),
            Some("libc-bin")
        );
        assert_eq!(parse_dpkg_s(""), None);
    }

    /// The real thing: strace a shell that runs jq (a package neither required nor listed),
    /// then check the programs against two lists — the check must fail without jq.
    #[test]
    fn a_program_outside_the_list_is_refused() {
        for pkg in ["strace", "jq"] {
            assert!(
                crate::debian::installed(pkg),
                "needs Debian's {pkg} (cargo xtask deps installs it)"
            );
        }
        let dir = tempfile_dir();
        let trace = dir.join("trace");
        crate::util::output(
            Command::new("strace")
                .args(STRACE_ARGS)
                .arg("-o")
                .arg(&trace)
                .args(["sh", "-c", "jq --version >/dev/null; true"]),
        )
        .unwrap();
        let progs = started_programs(&fs::read_to_string(&trace).unwrap(), &|_| false);
        assert!(progs.iter().any(|p| p.ends_with("/jq")), "{progs:?}");
        let err = check(&progs, &[]).unwrap_err().to_string();
        assert!(err.contains("jq (package jq, not in the list)"), "{err}");
        let ok = check(&progs, &["jq"]).unwrap();
        assert_eq!(ok.values().filter(|p| *p == "jq").count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-programs-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
