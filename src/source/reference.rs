//! Source strings (skopeo's transport names) and registry references with Docker Hub
//! normalisation, as in the distribution reference grammar.

use std::fmt;
use std::path::PathBuf;

use super::SourceError;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `docker://REF` or a bare `REF`.
    Registry(Reference),
    /// `oci:DIR[:TAG]`.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:REF]`.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `dir:DIR`: skopeo's directory transport (`manifest.json` and blobs named by digest).
    Dir { dir: PathBuf },
}

/// The registry of Docker Hub as written in references.
pub(crate) const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub(crate) const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A normalised registry reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, ...
    pub(crate) registry: String,
    /// `library/debian`, `org/app`, ...
    pub(crate) repository: String,
    pub(crate) tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub(crate) digest: Option<String>,
}

/// A tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `name`'s registry (its first component when that looks like a host: a `.`, a `:` or
/// `localhost`; else Docker Hub) and the rest.
fn split_registry(name: &str) -> (String, String) {
    let (registry, repo) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        (DOCKER_HUB.to_string(), repo)
    } else {
        (registry, repo)
    }
}

/// A registry's `host[:port]`, an IPv6 address in brackets.
fn valid_host(registry: &str) -> bool {
    !registry.is_empty()
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

impl Reference {
    /// Parses `debian`, `debian:12`, `ghcr.io/org/app:tag@sha256:...`, `localhost:5000/x`.
    pub(crate) fn parse(s: &str) -> Result<Reference, SourceError> {
        let bad = |why: &str| SourceError::BadReference {
            reference: s.to_string(),
            why: why.into(),
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match s.rsplit_once('@') {
            Some((r, d)) => {
                check_digest(d)
                    .map_err(|_| bad("the digest must be sha256: and 64 lowercase hex digits"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(bad("a tag is up to 128 letters, digits, '_', '.' or '-'"));
        }
        let (registry, repo) = split_registry(name);
        if !valid_host(&registry) {
            return Err(bad("the registry host is not a valid host[:port]"));
        }
        let repository = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        for comp in repository.split('/') {
            if !valid_component(comp) {
                return Err(bad(
                    "repository names are lowercase letters and digits separated by '.', '_', '__' or '-'",
                ));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host[:port] to connect to (Docker Hub's API lives on another host).
    pub(crate) fn endpoint(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub(crate) fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || start == i {
            return false;
        }
    }
    true
}

/// Checks `sha256:<64 lowercase hex>` and returns the hex part.
pub(crate) fn check_digest(d: &str) -> Result<&str, SourceError> {
    match d.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) =>
        {
            Ok(h)
        }
        _ => Err(SourceError::BadDigest {
            digest: d.chars().take(80).collect(),
        }),
    }
}

/// Splits `PATH[:SUFFIX]` the way skopeo does for `oci:` and archives: the whole string when
/// it names an existing file or directory, else at the first ':' whose prefix exists (so a
/// docker-archive suffix may itself be `name:tag`), else at the last ':'.
fn split_path_suffix(s: &str) -> (PathBuf, Option<String>) {
    if std::path::Path::new(s).exists() {
        return (PathBuf::from(s), None);
    }
    let suffix = |t: &str| {
        if t.is_empty() {
            None
        } else {
            Some(t.to_string())
        }
    };
    for (i, _) in s.match_indices(':') {
        if i > 0 && std::path::Path::new(&s[..i]).exists() {
            return (PathBuf::from(&s[..i]), suffix(&s[i + 1..]));
        }
    }
    match s.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !p.is_empty() => (PathBuf::from(p), suffix(t)),
        _ => (PathBuf::from(s), None),
    }
}

/// Parses a source string: `docker://REF`, `REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
/// `docker-archive:FILE[:REF]`, `dir:DIR`.
pub(crate) fn parse_source(s: &str) -> Result<Transport, SourceError> {
    if let Some(r) = s.strip_prefix("docker://") {
        if r.is_empty() {
            return Err(SourceError::BadReference {
                reference: s.to_string(),
                why: "docker://: needs an image reference after it, e.g. docker://debian:12".into(),
            });
        }
        return Ok(Transport::Registry(Reference::parse(r)?));
    }
    let empty = |t: &str| SourceError::BadReference {
        reference: s.to_string(),
        why: format!("{t}: needs a path after the colon"),
    };
    if let Some(r) = s.strip_prefix("oci:") {
        if r.is_empty() {
            return Err(empty("oci"));
        }
        let (dir, tag) = split_path_suffix(r);
        return Ok(Transport::OciDir { dir, tag });
    }
    if let Some(r) = s.strip_prefix("oci-archive:") {
        if r.is_empty() {
            return Err(empty("oci-archive"));
        }
        let (file, tag) = split_path_suffix(r);
        return Ok(Transport::OciArchive { file, tag });
    }
    if let Some(r) = s.strip_prefix("docker-archive:") {
        if r.is_empty() {
            return Err(empty("docker-archive"));
        }
        let (file, reference) = split_path_suffix(r);
        return Ok(Transport::DockerArchive { file, reference });
    }
    if let Some(r) = s.strip_prefix("dir:") {
        if r.is_empty() {
            return Err(empty("dir"));
        }
        return Ok(Transport::Dir { dir: r.into() });
    }
    // `name:tag` looks like `transport:rest`; a known-looking but unsupported transport is refused.
    if let Some((t, _)) = s.split_once(':') {
        let known = [
            "containers-storage",
            "docker-daemon",
            "ostree",
            "sif",
            "tarball",
            "http",
            "https",
        ];
        if known.contains(&t) || s[t.len()..].starts_with("://") {
            return Err(SourceError::UnknownTransport {
                transport: t.to_string(),
            });
        }
    }
    Ok(Transport::Registry(Reference::parse(s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(r("debian").to_string(), "docker.io/library/debian:latest");
        assert_eq!(r("debian").endpoint(), "registry-1.docker.io");
        assert_eq!(r("debian:12").to_string(), "docker.io/library/debian:12");
        assert_eq!(
            r("bitnami/redis").to_string(),
            "docker.io/bitnami/redis:latest"
        );
        assert_eq!(
            r("index.docker.io/debian").to_string(),
            "docker.io/library/debian:latest"
        );
        assert_eq!(r("docker.io/library/debian").repository, "library/debian");
    }

    #[test]
    fn registries_ports_and_digests() {
        let x = r("localhost:5000/app");
        assert_eq!(
            (x.registry.as_str(), x.repository.as_str()),
            ("localhost:5000", "app")
        );
        assert_eq!(x.endpoint(), "localhost:5000");
        let x = r("127.0.0.1:5000/a/b/c:v1.2");
        assert_eq!(
            (x.registry.as_str(), x.tag.as_deref()),
            ("127.0.0.1:5000", Some("v1.2"))
        );
        let x = r(&format!("ghcr.io/org/app@{D}"));
        assert_eq!((x.tag.as_deref(), x.digest.as_deref()), (None, Some(D)));
        assert_eq!(x.manifest_ref(), D);
        let x = r(&format!("ghcr.io/org/app:1@{D}"));
        assert_eq!((x.tag.as_deref(), x.manifest_ref()), (Some("1"), D));
        assert_eq!(x.to_string(), format!("ghcr.io/org/app:1@{D}"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Debian",
            "debian:",
            "debian@sha256:abc",
            "debian@md5:0123",
            "a//b",
            "-x",
            "x-",
            "debian:t@g",
            "reg.io/a..b",
            &format!("debian:{}", "t".repeat(129)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Reference::parse("a__b/c-d--e.f").is_ok());
    }

    #[test]
    fn transports() {
        assert_eq!(
            parse_source("docker://debian:12").unwrap(),
            Transport::Registry(r("debian:12"))
        );
        assert_eq!(
            parse_source("alpine").unwrap(),
            Transport::Registry(r("alpine"))
        );
        assert_eq!(
            parse_source("oci:/nonexistent/dir:v1").unwrap(),
            Transport::OciDir {
                dir: "/nonexistent/dir".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse_source("oci:/nonexistent/dir").unwrap(),
            Transport::OciDir {
                dir: "/nonexistent/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            parse_source("oci-archive:/x/a.tar:latest").unwrap(),
            Transport::OciArchive {
                file: "/x/a.tar".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            parse_source("docker-archive:/x/a.tar").unwrap(),
            Transport::DockerArchive {
                file: "/x/a.tar".into(),
                reference: None
            }
        );
        assert!(matches!(
            parse_source("containers-storage:foo"),
            Err(SourceError::UnknownTransport { .. })
        ));
        assert!(matches!(
            parse_source("ftp://x/y"),
            Err(SourceError::UnknownTransport { .. })
        ));
        assert!(parse_source("oci:").is_err());
        assert_eq!(
            parse_source("dir:/x/img").unwrap(),
            Transport::Dir {
                dir: "/x/img".into()
            }
        );
        assert!(parse_source("dir:").is_err());
        assert!(matches!(
            parse_source("docker-daemon:app:1"),
            Err(SourceError::UnknownTransport { .. })
        ));
        let e = parse_source("docker://").unwrap_err().to_string();
        assert!(e.contains("\"docker://\"") && e.contains("e.g."), "{e}");
    }

    #[test]
    fn existing_path_with_colon_is_not_split() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a:b");
        std::fs::create_dir(&p).unwrap();
        let s = format!("oci:{}", p.display());
        assert_eq!(
            parse_source(&s).unwrap(),
            Transport::OciDir { dir: p, tag: None }
        );
    }
}
