//! Starting the app as a container runtime would: the executable found in the `PATH` of
//! its own environment, that environment only, its working directory, user and groups, a
//! new session, stdin from `/dev/null` and stdout/stderr into pipes.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

use super::config::{AppConfig, DEFAULT_PATH};

/// Why the app could not be started; [`SpawnError::status`] is the exit status a container
/// runtime reports for it.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `args` is empty.
    #[error("no command to run (the configuration's args are empty)")]
    NoArgs,
    /// The working directory is missing or not a directory.
    #[error("working directory {0} does not exist")]
    NoWorkDir(String),
    /// The first word names no executable in `PATH`.
    #[error("{name}: executable file not found in $PATH ({path})")]
    NotInPath {
        /// The command.
        name: String,
        /// The `PATH` searched.
        path: String,
    },
    /// `execve` (or a step before it in the child) failed.
    #[error("cannot run {path}: {source}")]
    Exec {
        /// The executable.
        path: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// 127 for something missing, 126 for something that cannot be executed.
    pub fn status(&self) -> i32 {
        match self {
            SpawnError::Exec { source, .. } if source.kind() != io::ErrorKind::NotFound => 126,
            _ => 127,
        }
    }
}

/// The app's process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its session and process group id).
    pub pid: i32,
    /// The read end of its stdout pipe.
    pub stdout: ChildStdout,
    /// The read end of its stderr pipe.
    pub stderr: ChildStderr,
}

/// The value of `PATH` in `env`, else the default a runtime gives.
pub fn path_of(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(&DEFAULT_PATH["PATH=".len()..])
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` as is when it holds a `/`, else the first executable regular file `DIR/name` for
/// the directories of `path` (an empty entry is the working directory), as Go's
/// `exec.LookPath` (runc) does.
pub fn look_path(name: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                cwd.join(name)
            } else {
                Path::new(dir).join(name)
            }
        })
        .find(|p| is_executable_file(p))
}

/// `args` for a log line: words with blanks or quotes in single quotes.
pub fn show_args(args: &[String]) -> String {
    let show = |a: &String| {
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$".contains(c)) {
            format!("'{}'", a.replace('\'', "'\\''"))
        } else {
            a.clone()
        }
    };
    args.iter().map(show).collect::<Vec<_>>().join(" ")
}

/// Starts the app.
pub fn spawn(cfg: &AppConfig) -> Result<Spawned, SpawnError> {
    let name = cfg.args.first().ok_or(SpawnError::NoArgs)?;
    let cwd = Path::new(&cfg.working_dir);
    if !cwd.is_dir() {
        return Err(SpawnError::NoWorkDir(cfg.working_dir.clone()));
    }
    let path = path_of(&cfg.env);
    let exe = look_path(name, path, cwd).ok_or_else(|| SpawnError::NotInPath {
        name: name.clone(),
        path: path.into(),
    })?;
    let mut cmd = Command::new(&exe);
    cmd.arg0(name)
        .args(&cfg.args[1..])
        .env_clear()
        .envs(cfg.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (uid, gid, groups) = (cfg.uid, cfg.gid, cfg.groups.clone());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // The signals init takes through its signalfd are blocked in init: not in the app.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            check(libc::setsid())?;
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        path: exe.display().to_string(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both pipes were asked for")
    };
    Ok(Spawned {
        pid: child.id() as i32,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_comes_from_the_apps_environment_else_the_default() {
        let env = vec!["A=1".to_string(), "PATH=/x:/y".to_string()];
        assert_eq!(path_of(&env), "/x:/y");
        assert_eq!(
            path_of(&[]),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
    }

    #[test]
    fn look_path_takes_the_first_executable_file() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for dir in [&a, &b, &c] {
            std::fs::create_dir(dir).unwrap();
        }
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        // a/app is not executable, b/app is a directory, c/app is the one.
        std::fs::write(a.join("app"), "").unwrap();
        mode(&a.join("app"), 0o644).unwrap();
        std::fs::create_dir(b.join("app")).unwrap();
        std::fs::write(c.join("app"), "").unwrap();
        mode(&c.join("app"), 0o755).unwrap();
        let path = format!("{}:{}:{}", a.display(), b.display(), c.display());
        assert_eq!(look_path("app", &path, Path::new("/")), Some(c.join("app")));
        assert_eq!(look_path("nope", &path, Path::new("/")), None);
        assert_eq!(
            look_path("./rel/x", &path, Path::new("/")),
            Some("./rel/x".into())
        );
        // An empty PATH entry is the working directory.
        assert_eq!(look_path("app", ":", &c), Some(c.join("app")));
    }

    #[test]
    fn statuses_are_the_runtimes() {
        assert_eq!(SpawnError::NoWorkDir("/x".into()).status(), 127);
        let nf = SpawnError::NotInPath {
            name: "x".into(),
            path: "/bin".into(),
        };
        assert_eq!(nf.status(), 127);
        let denied = SpawnError::Exec {
            path: "/x".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        assert_eq!(denied.status(), 126);
    }

    #[test]
    fn args_are_shown_quoted_when_needed() {
        let args = ["sh", "-c", "echo \"$X\"; exit 3", ""].map(String::from);
        assert_eq!(show_args(&args), "sh -c 'echo \"$X\"; exit 3' ''");
    }
}
