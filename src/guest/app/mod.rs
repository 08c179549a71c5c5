//! What a container runtime would run, resolved at build time for d2v's init
//! ([`crate::init::config::AppConfig`]): the OCI image spec's rules for `Entrypoint`/`Cmd`,
//! `Env`, `WorkingDir` and `User` (name, uid, `uid:gid`, `name:group`, looked up in the image's
//! own `/etc/passwd` and `/etc/group`, supplementary groups included), as runc applies them.
//! Everything that would make the app fail to start is an error here, before a disk is written.

mod install;

pub use install::{install, own_executable};

use crate::init::config::{AppConfig, Restart, DEFAULT_PATH};
use crate::source::ContainerConfig;
use crate::tree::Tree;

/// Why the image's config cannot be run as an app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Neither `Entrypoint` nor `Cmd`.
    #[error(
        "the image has no Entrypoint or Cmd: there is nothing for d2v's init to run; set one \
         in the Dockerfile (ENTRYPOINT/CMD) or install an init system (e.g. systemd-sysv)"
    )]
    NothingToRun,
    /// `User` names a user the image's `/etc/passwd` does not have.
    #[error(
        "the image's User {user:?} is not in its /etc/passwd: add the user to the image \
         (e.g. RUN useradd {user}) or set USER to a numeric uid"
    )]
    UnknownUser {
        /// The `User` value's user part.
        user: String,
    },
    /// `User` names a group the image's `/etc/group` does not have.
    #[error(
        "the image's User {spec:?} names group {group:?}, which is not in its /etc/group: add \
         the group to the image or use a numeric gid"
    )]
    UnknownGroup {
        /// The whole `User` value.
        spec: String,
        /// The group part.
        group: String,
    },
    /// The program to run is not in the image.
    #[error(
        "the image's entrypoint {program:?} is not in the image{}: d2v's init could not start \
         it; check ENTRYPOINT/CMD and PATH",
        if *.searched { " (searched the image's PATH)" } else { "" }
    )]
    NoProgram {
        /// `args[0]`.
        program: String,
        /// Whether it was looked up in `PATH`.
        searched: bool,
    },
    /// The program is an executable for another machine.
    #[error(
        "the image's entrypoint {path} is an executable for {machine}, but the VM is x86-64: \
         pull the image's linux/amd64 variant (--platform linux/amd64)"
    )]
    ForeignProgram {
        /// The resolved path.
        path: String,
        /// The ELF machine found.
        machine: String,
    },
    /// d2v's own executable could not be read.
    #[error("reading d2v's own executable (/proc/self/exe) to put it into the guest: {source}")]
    OwnExecutable {
        /// The read error.
        source: std::io::Error,
    },
    /// d2v is not a static executable, so it cannot be the guest's init.
    #[error(
        "this d2v cannot be the VM's init: {why}; the guest needs a static x86-64 d2v \
         (the released binary, or build with RUSTFLAGS='-C target-feature=+crt-static' cargo \
         build --release --target x86_64-unknown-linux-gnu)"
    )]
    NotStatic {
        /// What was found.
        why: String,
    },
    /// `StopSignal` is not a signal.
    #[error("the image's StopSignal {0:?} is not a signal name or number (e.g. SIGTERM)")]
    BadStopSignal(String),
}

/// What the build adds to the image's config.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The guest's hostname.
    pub hostname: String,
    /// `--stop-timeout`, seconds.
    pub stop_timeout_secs: u64,
    /// `--restart`.
    pub restart: Restart,
    /// Seconds to wait for the network before starting the app anyway.
    pub network_timeout_secs: u64,
}

/// The image's config as d2v's init will run it in the guest `tree`.
pub fn resolve(tree: &Tree, c: &ContainerConfig, o: &AppOptions) -> Result<AppConfig, AppError> {
    let args = command(c)?;
    let user = resolve_user(tree, c.user.as_deref().unwrap_or(""))?;
    let env = environment(c.env.as_deref().unwrap_or(&[]), &user.home, &o.hostname);
    check_program(tree, &args[0], &env)?;
    let working_dir = match c.working_dir.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => format!("/{}", d.trim_start_matches('/')),
        _ => "/".to_string(),
    };
    let mut exposed_ports: Vec<String> = c
        .exposed_ports
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect();
    exposed_ports.sort();
    Ok(AppConfig {
        args,
        env,
        working_dir,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname: o.hostname.clone(),
        stop_signal: stop_signal(c.stop_signal.as_deref())?,
        stop_timeout_secs: o.stop_timeout_secs,
        restart: o.restart,
        network_timeout_secs: o.network_timeout_secs,
        exposed_ports,
    })
}

/// `Entrypoint` + `Cmd` (the image spec: `Cmd` are the entrypoint's default arguments, or
/// the command when there is no entrypoint).
pub fn command(c: &ContainerConfig) -> Result<Vec<String>, AppError> {
    let args: Vec<String> = c
        .entrypoint
        .iter()
        .flatten()
        .chain(c.cmd.iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(AppError::NothingToRun);
    }
    Ok(args)
}

/// The image's `Env` over the default `PATH`; `HOME` and `HOSTNAME` added when unset, as
/// runc and Docker do. Later duplicates of a key win.
pub fn environment(image_env: &[String], home: &str, hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
    for kv in [DEFAULT_PATH.to_string()]
        .iter()
        .chain(image_env)
        .chain([format!("HOSTNAME={hostname}"), format!("HOME={home}")].iter())
    {
        let k = key(kv);
        match out.iter().position(|e| key(e) == k) {
            // HOSTNAME and HOME only fill gaps; the image's PATH replaces the default.
            Some(_) if k == "HOSTNAME" || k == "HOME" => {}
            Some(i) => out[i] = kv.clone(),
            None => out.push(kv.clone()),
        }
    }
    out
}

/// A user as the runtime would run the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (without `gid`), ascending.
    pub groups: Vec<u32>,
    /// Home directory (`/` when unknown).
    pub home: String,
}

/// `/etc/passwd` or `/etc/group` lines split on `:`.
fn db(tree: &Tree, path: &str) -> Vec<Vec<String>> {
    tree.read_text(path.as_bytes(), 4 << 20)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect()
}

/// Resolves an OCI `User` value (`""`, `name`, `uid`, `name:group`, `uid:gid`, …).
pub fn resolve_user(tree: &Tree, spec: &str) -> Result<User, AppError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = db(tree, "etc/passwd");
    let groups = db(tree, "etc/group");
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd
        .iter()
        .find(|f| f[0] == user)
        .or_else(|| passwd.iter().find(|f| f[2] == user));
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
            Some(f[0].clone()),
            f.get(5).filter(|h| !h.is_empty()).cloned(),
        ),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => {
            return Err(AppError::UnknownUser {
                user: user.to_string(),
            })
        }
    };
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| AppError::UnknownGroup {
                spec: spec.to_string(),
                group: g.to_string(),
            })?,
        };
    }
    let mut extra: Vec<u32> = match &name {
        // With an explicit group, runc still adds the user's memberships.
        Some(n) => groups
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&g| g != gid)
            .collect(),
        None => Vec::new(),
    };
    extra.sort_unstable();
    extra.dedup();
    Ok(User {
        uid,
        gid,
        groups: extra,
        home: home.unwrap_or_else(|| "/".to_string()),
    })
}

/// The value of `key` in a `KEY=VALUE` list.
fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Checks that `program` exists in the image (looked up in `PATH` when it has no `/`) and,
/// when it is an ELF executable, that it is one for x86-64.
fn check_program(tree: &Tree, program: &str, env: &[String]) -> Result<(), AppError> {
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.to_string()]
    } else {
        env_value(env, "PATH")
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect()
    };
    let Some(path) = candidates
        .iter()
        .find(|p| tree.resolve_file(p.as_bytes()).is_some())
    else {
        return Err(AppError::NoProgram {
            program: program.to_string(),
            searched: !program.contains('/'),
        });
    };
    let mut head = Vec::new();
    if let Some(fd) = tree.resolve_file(path.as_bytes()) {
        // Unreadable: the boot will say so; this check only refuses what is surely wrong.
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(tree.spill().reader(fd), 20),
            &mut head,
        );
    }
    match crate::elf::machine(&head) {
        Some(m) if m != crate::elf::EM_X86_64 => Err(AppError::ForeignProgram {
            path: path.clone(),
            machine: crate::elf::machine_name(m).to_string(),
        }),
        _ => Ok(()),
    }
}

/// An OCI `StopSignal` (`SIGTERM`, `TERM`, `15`) as a number; SIGTERM when unset.
pub fn stop_signal(s: Option<&str>) -> Result<i32, AppError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(libc::SIGTERM);
    };
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64)
            .contains(&n)
            .then_some(n)
            .ok_or_else(|| AppError::BadStopSignal(s.to_string()));
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        "STOP" => libc::SIGSTOP,
        _ => {
            let rt = name
                .strip_prefix("RTMIN+")
                .and_then(|n| n.parse::<i32>().ok());
            match rt {
                Some(k) if k <= 30 => libc::SIGRTMIN() + k,
                _ => return Err(AppError::BadStopSignal(s.to_string())),
            }
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests;
