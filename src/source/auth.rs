//! Registry credentials: `--creds USER:PASS`, `--authfile`, `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json` (`auths`, `credHelpers`,
//! `credsStore` via `docker-credential-NAME get`). Secrets never appear in messages or Debug.
//!
//! An `identitytoken` in an auth file (what `docker login` stores for registries that hand out
//! OAuth2 refresh tokens, e.g. `az acr login`), or a credential helper answering with the user
//! name `<token>`, is an identity token: it is exchanged for a bearer token with an OAuth2
//! `refresh_token` grant (see `registry/token.rs`), not sent as a password.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use super::reference::DOCKER_HUB;
use super::{SourceError, SourceOptions};

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Creds {
    pub user: String,
    pub pass: String,
    /// An OAuth2 refresh token ("identity token"), used instead of `user`/`pass` to get
    /// bearer tokens.
    pub identity_token: Option<String>,
}

impl fmt::Debug for Creds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.identity_token.is_some() {
            ", identity_token: <redacted>"
        } else {
            ""
        };
        write!(
            f,
            "Creds {{ user: {:?}, pass: <redacted>{token} }}",
            self.user
        )
    }
}

/// The user name docker's credential helpers answer with when the secret is an identity token.
const TOKEN_USER: &str = "<token>";

impl Creds {
    fn password(user: impl Into<String>, pass: impl Into<String>) -> Creds {
        Creds {
            user: user.into(),
            pass: pass.into(),
            identity_token: None,
        }
    }

    fn identity_token(user: impl Into<String>, token: impl Into<String>) -> Creds {
        Creds {
            user: user.into(),
            pass: String::new(),
            identity_token: Some(token.into()),
        }
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.pass);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(serde::Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `https://index.docker.io/v1/` → `index.docker.io/v1`; the key as a registry[/path].
fn norm_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    match k {
        "index.docker.io/v1" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => k.to_string(),
    }
}

/// The server URL credential helpers know a registry by.
fn helper_server(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_string()
    }
}

/// The auth files to read, in order, and whether each must exist: `--authfile`, else
/// `REGISTRY_AUTH_FILE`, else podman's `$XDG_RUNTIME_DIR/containers/auth.json` and
/// `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`), then docker's
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (containers-auth.json(5)).
fn auth_files(
    opts: &SourceOptions,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(PathBuf, bool)> {
    if let Some(f) = &opts.authfile {
        return vec![(f.clone(), true)];
    }
    if let Some(f) = env("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
        return vec![(PathBuf::from(f), true)];
    }
    let mut v = Vec::new();
    if let Some(r) = env("XDG_RUNTIME_DIR").filter(|f| !f.is_empty()) {
        v.push((PathBuf::from(r).join("containers/auth.json"), false));
    }
    let config_home = env("XDG_CONFIG_HOME")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config_home {
        v.push((c.join("containers/auth.json"), false));
    }
    match env("DOCKER_CONFIG").filter(|f| !f.is_empty()) {
        Some(d) => v.push((PathBuf::from(d).join("config.json"), false)),
        None => {
            if let Some(h) = env("HOME") {
                v.push((PathBuf::from(h).join(".docker/config.json"), false));
            }
        }
    }
    v
}

/// A warning for each auth file d2v reads credentials from that other users may read or
/// change (any group or other permission bit), naming it and `chmod 600`; none with `--creds`.
pub(crate) fn exposed_auth_files(opts: &SourceOptions) -> Vec<String> {
    if opts.creds.is_some() {
        return Vec::new();
    }
    auth_files(opts, |k| std::env::var_os(k))
        .into_iter()
        .filter_map(|(file, _)| exposed(&file))
        .collect()
}

fn exposed(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the auth file {0} holds registry credentials and other users may read it (mode \
             {mode:04o}): restrict it with `chmod 600 {0}`",
            file.display()
        )
    })
}

/// The credentials for `registry` (and `repository`), or `None` for anonymous access.
pub(crate) fn lookup(
    registry: &str,
    repository: &str,
    opts: &SourceOptions,
) -> Result<Option<Creds>, SourceError> {
    if let Some(c) = &opts.creds {
        let (user, pass) = c.split_once(':').ok_or_else(|| SourceError::Credentials {
            why: "--creds must be USER:PASSWORD".into(),
        })?;
        return Ok(Some(Creds::password(user, pass)));
    }
    for (file, must_exist) in auth_files(opts, |k| std::env::var_os(k)) {
        if !file.exists() {
            if must_exist {
                return Err(SourceError::Credentials {
                    why: format!("auth file {} does not exist", file.display()),
                });
            }
            continue;
        }
        if let Some(c) = from_file(&file, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

pub(crate) fn from_file(
    file: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Creds>, SourceError> {
    let bad = |why: String| SourceError::Credentials {
        why: format!("{}: {why}", file.display()),
    };
    let text = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    // serde_json's messages quote no input, so a secret cannot leak through them.
    let af: AuthFile =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not a valid auth file: {e}")))?;
    if let Some((_, h)) = af
        .cred_helpers
        .iter()
        .find(|(k, _)| norm_key(k) == registry)
    {
        return helper(h, registry);
    }
    let full = format!("{registry}/{repository}");
    let best = af
        .auths
        .iter()
        .map(|(k, e)| (norm_key(k), e))
        .filter(|(k, _)| *k == registry || full.starts_with(&format!("{k}/")))
        .max_by_key(|(k, _)| k.len());
    if let Some((k, e)) = best {
        if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            // The `auth` next to it names a user (often `<token>` or a nil UUID) and no password.
            let user = e
                .auth
                .as_deref()
                .and_then(|a| {
                    base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .ok()
                })
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|raw| raw.split_once(':').map(|(u, _)| u.to_string()))
                .unwrap_or_else(|| TOKEN_USER.into());
            return Ok(Some(Creds::identity_token(user, t)));
        }
        if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| bad(format!("the `auth` of {k} is not base64")))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| bad(format!("the `auth` of {k} is not UTF-8")))?;
            let (u, p) = raw
                .split_once(':')
                .ok_or_else(|| bad(format!("the `auth` of {k} is not USER:PASS")))?;
            return Ok(Some(Creds::password(u, p)));
        }
        if let (Some(u), Some(p)) = (&e.username, &e.password) {
            return Ok(Some(Creds::password(u.clone(), p.clone())));
        }
    }
    if let Some(store) = af.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return helper(store, registry);
    }
    Ok(None)
}

/// Runs `docker-credential-NAME get` with the server URL on stdin.
fn helper(name: &str, registry: &str) -> Result<Option<Creds>, SourceError> {
    helper_prog(&format!("docker-credential-{name}"), registry)
}

fn helper_prog(prog: &str, registry: &str) -> Result<Option<Creds>, SourceError> {
    let bad = |why: String| SourceError::Credentials {
        why: format!("{prog}: {why}"),
    };
    let mut child = Command::new(prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            bad(format!(
                "cannot run it ({e}); install the credential helper or remove it from the config"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| bad(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let first = msg
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>();
        return Err(bad(format!("failed for {registry}: {first}")));
    }
    #[derive(serde::Deserialize)]
    struct Out {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let o: Out = serde_json::from_slice(&out.stdout)
        .map_err(|_| bad("printed something that is not credentials JSON".into()))?;
    if o.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if o.username == TOKEN_USER {
        Creds::identity_token(o.username, o.secret)
    } else {
        Creds::password(o.username, o.secret)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts_with(file: &Path) -> SourceOptions {
        SourceOptions {
            authfile: Some(file.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn creds_option_and_redaction() {
        let o = SourceOptions {
            creds: Some("bob:s3cr:et".into()),
            ..Default::default()
        };
        let c = lookup("r.io", "x", &o).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("bob", "s3cr:et"));
        assert!(!format!("{c:?}").contains("s3cr"));
        let o = SourceOptions {
            creds: Some("nocolon".into()),
            ..Default::default()
        };
        assert!(lookup("r.io", "x", &o).is_err());
    }

    #[test]
    fn auth_file_entries() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},
                "r.io:5000":{{"auth":"{}"}},"r.io:5000/team":{{"auth":"{}"}},
                "other.io":{{"username":"u3","password":"p3"}}}}}}"#,
                b("hub:hubpw"),
                b("u1:p1"),
                b("u2:p2")
            ),
        )
        .unwrap();
        let o = opts_with(&f);
        let user = |reg: &str, repo: &str| lookup(reg, repo, &o).unwrap().map(|c| c.user);
        assert_eq!(user("docker.io", "library/debian").as_deref(), Some("hub"));
        assert_eq!(user("r.io:5000", "x").as_deref(), Some("u1"));
        assert_eq!(user("r.io:5000", "team/app").as_deref(), Some("u2"));
        assert_eq!(user("other.io", "a").as_deref(), Some("u3"));
        assert_eq!(user("nothere.io", "a"), None);
    }

    #[test]
    fn auth_file_search_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
        };
        let files = |o: &SourceOptions, e| -> Vec<(String, bool)> {
            auth_files(o, e)
                .into_iter()
                .map(|(p, m)| (p.display().to_string(), m))
                .collect()
        };
        let all: &[(&str, &str)] = &[
            ("REGISTRY_AUTH_FILE", "/r.json"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("HOME", "/home/u"),
        ];
        let o = SourceOptions {
            authfile: Some("/a.json".into()),
            ..Default::default()
        };
        assert_eq!(files(&o, env(all)), [("/a.json".to_string(), true)]);
        let o = SourceOptions::default();
        assert_eq!(files(&o, env(all)), [("/r.json".to_string(), true)]);
        assert_eq!(
            files(
                &o,
                env(&[("XDG_RUNTIME_DIR", "/run/user/1"), ("HOME", "/home/u")])
            ),
            [
                ("/run/user/1/containers/auth.json".to_string(), false),
                ("/home/u/.config/containers/auth.json".to_string(), false),
                ("/home/u/.docker/config.json".to_string(), false)
            ]
        );
        assert_eq!(
            files(&o, env(&[("DOCKER_CONFIG", "/dc"), ("HOME", "/home/u")])),
            [
                ("/home/u/.config/containers/auth.json".to_string(), false),
                ("/dc/config.json".to_string(), false)
            ]
        );
        assert_eq!(
            files(&o, env(&[("XDG_CONFIG_HOME", "/cfg"), ("HOME", "/home/u")])),
            [
                ("/cfg/containers/auth.json".to_string(), false),
                ("/home/u/.docker/config.json".to_string(), false)
            ]
        );
    }

    #[test]
    fn auth_files_open_to_others_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        std::fs::write(&f, "{}").unwrap();
        let o = opts_with(&f);
        for (mode, warns) in [(0o600, false), (0o400, false), (0o644, true), (0o620, true)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = exposed_auth_files(&o);
            assert_eq!(w.len(), usize::from(warns), "{mode:o}: {w:?}");
            if let Some(w) = w.first() {
                let name = f.display().to_string();
                assert!(w.contains(&format!("chmod 600 {name}")), "{w}");
                assert!(w.contains(&format!("{mode:04o}")), "{w}");
            }
        }
        // With --creds no file is read: nothing to say.
        let o = SourceOptions {
            creds: Some("u:p".into()),
            ..opts_with(&f)
        };
        assert!(exposed_auth_files(&o).is_empty());
    }

    #[test]
    fn credential_helper_is_run() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("docker-credential-fake");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread url\n[ \"$url\" = r.io ] || { echo 'credentials not found'; exit 1; }\n\
             echo '{\"ServerURL\":\"r.io\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let prog = bin.to_str().unwrap();
        let c = helper_prog(prog, "r.io").unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("hu", "hs"));
        assert_eq!(helper_prog(prog, "s.io").unwrap(), None);
    }

    #[test]
    fn identity_tokens_from_auth_files_and_helpers() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.json");
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // As `az acr login` writes it: a nil-UUID user without a password, and the token.
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"acr.io":{{"auth":"{}","identitytoken":"rt-s3cret"}},
                "bare.io":{{"identitytoken":"rt-2"}},"empty.io":{{"auth":"{}","identitytoken":""}}}}}}"#,
                b("00000000-0000-0000-0000-000000000000:"),
                b("u:p")
            ),
        )
        .unwrap();
        let o = opts_with(&f);
        let c = lookup("acr.io", "app", &o).unwrap().unwrap();
        assert_eq!(c.user, "00000000-0000-0000-0000-000000000000");
        assert_eq!(c.identity_token.as_deref(), Some("rt-s3cret"));
        assert!(c.pass.is_empty());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("rt-s3cret") && shown.contains("identity_token"),
            "{shown}"
        );
        let c = lookup("bare.io", "app", &o).unwrap().unwrap();
        assert_eq!(
            (c.user.as_str(), c.identity_token.as_deref()),
            ("<token>", Some("rt-2"))
        );
        // An empty identity token is no identity token.
        let c = lookup("empty.io", "app", &o).unwrap().unwrap();
        assert_eq!(
            (c.user.as_str(), c.pass.as_str(), c.identity_token),
            ("u", "p", None)
        );

        // A credential helper signals an identity token with the user name `<token>`.
        let bin = d.path().join("docker-credential-tok");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread url\necho '{\"Username\":\"<token>\",\"Secret\":\"rt-3\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let c = helper_prog(bin.to_str().unwrap(), "r.io").unwrap().unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("rt-3"));
        assert!(c.pass.is_empty());
    }

    #[test]
    fn missing_helper_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.json");
        std::fs::write(&f, r#"{"credHelpers":{"r.io":"d2v-no-such-helper"}}"#).unwrap();
        let e = lookup("r.io", "x", &opts_with(&f)).unwrap_err().to_string();
        assert!(e.contains("docker-credential-d2v-no-such-helper"), "{e}");
        let o = opts_with(&d.path().join("missing.json"));
        assert!(lookup("r.io", "x", &o)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
