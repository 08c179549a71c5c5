//! containers-registries.conf(5), version 2, as skopeo and podman read it: which registry an
//! image is really pulled from. A `[[registry]]` table whose `prefix` (default: its `location`)
//! matches a reference can rewrite it to another `location`, list `[[registry.mirror]]`s to try
//! first (a pull-through cache in a network that cannot reach Docker Hub), mark it `insecure`
//! (plain HTTP or an unverified certificate) or `blocked`. The longest matching prefix wins;
//! `*.example.com` matches hosts under example.com. Short names are not searched: d2v
//! normalises `debian` to `docker.io/library/debian` as docker does.
//!
//! Files: `--registries-conf`, else `$CONTAINERS_REGISTRIES_CONF`, else
//! `~/.config/containers/registries.conf` when it exists, else `/etc/containers/registries.conf`;
//! then the drop-ins `*.conf` of `/etc/containers/registries.conf.d` and
//! `~/.config/containers/registries.conf.d` in name order (not with an explicit file), a
//! later table for the same prefix replacing an earlier one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;
use super::SourceError;

#[derive(Debug, Clone, Default, Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<Registry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Registry {
    pub(crate) prefix: Option<String>,
    pub(crate) location: Option<String>,
    #[serde(default)]
    pub(crate) insecure: bool,
    #[serde(default)]
    pub(crate) blocked: bool,
    #[serde(default)]
    pub(crate) mirror_by_digest_only: bool,
    #[serde(default)]
    pub(crate) mirror: Vec<Mirror>,
    /// The file the table is in.
    #[serde(skip)]
    pub(crate) file: PathBuf,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Mirror {
    pub(crate) location: String,
    #[serde(default)]
    pub(crate) insecure: bool,
    /// `all` (default), `digest-only` or `tag-only`.
    pub(crate) pull_from_mirror: Option<String>,
}

impl Registry {
    fn prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .or(self.location.as_deref())
            .unwrap_or("")
    }
}

/// The registries configuration in effect (empty: every reference is pulled as written).
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    pub(crate) registries: Vec<Registry>,
    /// The files read, for messages.
    pub(crate) files: Vec<PathBuf>,
}

/// One place to pull an image from, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) reference: Reference,
    /// Plain HTTP or an unverified certificate allowed.
    pub(crate) insecure: bool,
    /// A mirror (not the registry the reference names or its `location`).
    pub(crate) mirror: bool,
}

fn bad(path: &Path, why: String) -> SourceError {
    SourceError::RegistriesConf {
        path: path.to_path_buf(),
        why,
    }
}

/// Whether `name` (`host/path`, no tag or digest) is under `prefix`.
fn matches(name: &str, prefix: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        let host = name.split('/').next().unwrap_or("");
        return host.ends_with(&format!(".{domain}"));
    }
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl RegistriesConf {
    /// Adds the tables of one file's text; a table for a prefix already known replaces it.
    pub fn add(&mut self, text: &str, path: &Path) -> Result<(), SourceError> {
        let f: File = toml::from_str(text).map_err(|e| bad(path, e.to_string()))?;
        for mut r in f.registry {
            r.file = path.to_path_buf();
            let p = r.prefix();
            if p.is_empty() {
                return Err(bad(
                    path,
                    "a [[registry]] table has neither prefix nor location".into(),
                ));
            }
            if p.starts_with("*.") && r.location.is_some() {
                return Err(bad(
                    path,
                    format!("the wildcard prefix {p:?} cannot have a location"),
                ));
            }
            if let Some(i) = self.registries.iter().position(|o| o.prefix() == p) {
                self.registries[i] = r;
            } else {
                self.registries.push(r);
            }
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// The configuration from the usual files (see the module's documentation), `explicit`
    /// being `--registries-conf`.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<RegistriesConf, SourceError> {
        let env = std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let user = home.map(|h| h.join(".config/containers"));
        let mut conf = RegistriesConf::default();
        let read = |p: &Path, conf: &mut RegistriesConf| -> Result<(), SourceError> {
            match std::fs::read_to_string(p) {
                Ok(text) => conf.add(&text, p),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(bad(p, e.to_string())),
            }
        };
        if let Some(p) = explicit.map(Path::to_path_buf).or(env) {
            if !p.is_file() {
                return Err(bad(&p, "no such file".into()));
            }
            read(&p, &mut conf)?;
            return Ok(conf);
        }
        let main = user
            .as_ref()
            .map(|u| u.join("registries.conf"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf"));
        read(&main, &mut conf)?;
        let mut dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
        dirs.extend(user.map(|u| u.join("registries.conf.d")));
        for d in dirs {
            let Ok(list) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut files: Vec<PathBuf> = list
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            files.sort();
            for f in files {
                read(&f, &mut conf)?;
            }
        }
        Ok(conf)
    }

    /// Where to pull `r` from: its mirrors first, then its registry (or `location`).
    pub(crate) fn endpoints(&self, r: &Reference) -> Result<Vec<Endpoint>, SourceError> {
        let name = format!("{}/{}", r.registry, r.repository);
        let found = self
            .registries
            .iter()
            .filter(|reg| matches(&name, reg.prefix()))
            .max_by_key(|reg| reg.prefix().len());
        let Some(reg) = found else {
            return Ok(vec![Endpoint {
                reference: r.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if reg.blocked {
            return Err(SourceError::Blocked {
                reference: r.to_string(),
                file: reg.file.clone(),
            });
        }
        let prefix = reg.prefix();
        let rewrite = |location: &str| -> Result<Reference, SourceError> {
            // A wildcard prefix keeps the name as it is.
            let rest = if prefix.starts_with("*.") {
                return Ok(r.clone());
            } else {
                &name[prefix.len()..]
            };
            let mut s = format!("{location}{rest}");
            if let Some(t) = &r.tag {
                s = format!("{s}:{t}");
            }
            if let Some(d) = &r.digest {
                s = format!("{s}@{d}");
            }
            Reference::parse(&s).map_err(|e| SourceError::RegistriesConf {
                path: reg.file.clone(),
                why: format!("{prefix} → {location} gives an invalid reference: {e}"),
            })
        };
        let mut out = Vec::new();
        for m in &reg.mirror {
            let by_digest = r.digest.is_some();
            let wanted = match m.pull_from_mirror.as_deref() {
                Some("digest-only") => by_digest,
                Some("tag-only") => !by_digest,
                _ => !reg.mirror_by_digest_only || by_digest,
            };
            if wanted {
                out.push(Endpoint {
                    reference: rewrite(&m.location)?,
                    insecure: m.insecure,
                    mirror: true,
                });
            }
        }
        out.push(Endpoint {
            reference: match &reg.location {
                Some(l) => rewrite(l)?,
                None => r.clone(),
            },
            insecure: reg.insecure,
            mirror: false,
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.add(text, Path::new("test.conf")).unwrap();
        c
    }

    fn names(c: &RegistriesConf, r: &str) -> Vec<String> {
        c.endpoints(&Reference::parse(r).unwrap())
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}{}",
                    e.reference,
                    if e.insecure { " (insecure)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn mirrors_come_first_and_keep_the_rest_of_the_name() {
        let c = conf(
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "mirror2.local"
"#,
        );
        assert_eq!(
            names(&c, "debian:12"),
            [
                "mirror.local:5000/hub/library/debian:12 (insecure)",
                "mirror2.local/library/debian:12",
                "docker.io/library/debian:12"
            ]
        );
        // Another registry is untouched.
        assert_eq!(names(&c, "ghcr.io/o/a:1"), ["ghcr.io/o/a:1"]);
    }

    #[test]
    fn longest_prefix_location_and_wildcards() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "a.local"
[[registry]]
prefix = "example.com/team"
location = "b.local/mirrors/team"
[[registry]]
prefix = "*.corp.example"
insecure = true
"#,
        );
        assert_eq!(names(&c, "example.com/x/y:1"), ["a.local/x/y:1"]);
        assert_eq!(
            names(&c, "example.com/team/app:2"),
            ["b.local/mirrors/team/app:2"]
        );
        // "example.com/teamwork" is not under "example.com/team".
        assert_eq!(names(&c, "example.com/teamwork:3"), ["a.local/teamwork:3"]);
        assert_eq!(
            names(&c, "reg.corp.example/app:1"),
            ["reg.corp.example/app:1 (insecure)"]
        );
        assert_eq!(names(&c, "corp.example/app:1"), ["corp.example/app:1"]);
    }

    #[test]
    fn digest_only_mirrors_and_blocked_registries() {
        let d = format!("sha256:{}", "a".repeat(64));
        let c = conf(
            r#"
[[registry]]
location = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.local"
[[registry]]
location = "evil.example"
blocked = true
"#,
        );
        assert_eq!(names(&c, "quay.io/o/a:1"), ["quay.io/o/a:1"]);
        assert_eq!(
            names(&c, &format!("quay.io/o/a@{d}")),
            [format!("m.local/o/a@{d}"), format!("quay.io/o/a@{d}")]
        );
        let e = c
            .endpoints(&Reference::parse("evil.example/x:1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocked") && e.contains("test.conf"), "{e}");
    }

    #[test]
    fn a_later_table_for_the_same_prefix_replaces_the_earlier() {
        let mut c = conf("[[registry]]\nlocation = \"quay.io\"\nblocked = true\n");
        c.add(
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.local\"\n",
            Path::new("drop-in.conf"),
        )
        .unwrap();
        assert_eq!(names(&c, "quay.io/a:1"), ["m.local/a:1", "quay.io/a:1"]);
    }

    #[test]
    fn bad_files_are_named() {
        let mut c = RegistriesConf::default();
        let e = c
            .add("[[registry]]\nlocation = 5\n", Path::new("x.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.conf"), "{e}");
        let e = c
            .add("[[registry]]\ninsecure = true\n", Path::new("y.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither prefix nor location"), "{e}");
    }
}
