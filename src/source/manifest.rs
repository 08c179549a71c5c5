//! OCI image manifest and index, Docker schema2 manifest and manifest list, image config,
//! and platform selection.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::SourceError;

#[cfg_attr(not(test), allow(dead_code))] // the tests name it; ACCEPT spells it out
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub(crate) const DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The `Accept` header for manifest requests: every type d2v reads (never schema1).
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (the distribution spec's 4 MiB).
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub(crate) const MAX_CONFIG: u64 = 32 << 20;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares, or `None` for a type that is not a layer.
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    let base = media_type
        .replace("nondistributable.", "")
        .replace("rootfs.foreign.diff", "rootfs.diff");
    match base.as_str() {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Some(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// A manifest or an index, told apart by which fields are present.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnyManifest {
    #[serde(default)]
    pub(crate) schema_version: Option<u32>,
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<Descriptor>>,
}

/// A manifest after classification.
pub(crate) enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Classifies manifest bytes; `content_type` is the HTTP Content-Type when there is one.
pub(crate) fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<Parsed, SourceError> {
    let bad = |why: String| SourceError::BadManifest {
        what: what.to_string(),
        why,
    };
    let m: AnyManifest =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("it is not valid JSON: {e}")))?;
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    let mt = m.media_type.as_deref().or(ct).unwrap_or("");
    if m.schema_version == Some(1) || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED {
        return Err(SourceError::Schema1 {
            what: what.to_string(),
        });
    }
    if let Some(list) = m.manifests {
        return Ok(Parsed::Index(list));
    }
    match (m.config, m.layers) {
        (Some(config), Some(layers)) => {
            if config.media_type != OCI_CONFIG
                && config.media_type != DOCKER_CONFIG
                && !config.media_type.is_empty()
            {
                return Err(bad(format!(
                    "its config has media type {}: it is an artifact, not a container image",
                    config.media_type
                )));
            }
            Ok(Parsed::Image { config, layers })
        }
        _ => Err(bad(format!(
            "media type {mt:?} has neither `manifests` nor `config` and `layers`"
        ))),
    }
}

/// An OS/architecture pair with an optional variant, as in `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = SourceError;
    fn from_str(s: &str) -> Result<Self, SourceError> {
        Platform::parse(s)
    }
}

impl Platform {
    /// Parses `os/arch[/variant]`; `x86_64` and `aarch64` are read as `amd64` and `arm64`.
    pub fn parse(s: &str) -> Result<Platform, SourceError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(SourceError::BadPlatform {
                platform: s.to_string(),
            });
        }
        let arch = match parts[1] {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: arch.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    fn norm_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", Some("v8")) | ("arm64", None) => None,
            (_, v) => v,
        }
    }

    /// Whether an image of platform `have` satisfies the request `self`.
    pub(crate) fn matches(&self, have: &Platform) -> bool {
        self.os == have.os
            && self.architecture == have.architecture
            && (self.variant.is_none() || self.norm_variant() == have.norm_variant())
    }
}

/// Picks the manifest for `want` from an index; prefers an entry without a variant when none
/// was asked for. Entries without a platform are not candidates.
pub(crate) fn select_platform<'a>(
    list: &'a [Descriptor],
    want: &Platform,
) -> Option<&'a Descriptor> {
    let cands: Vec<&Descriptor> = list
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .collect();
    cands
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.norm_variant().is_none())
        })
        .or(cands.first())
        .copied()
}

/// The image config (the parts d2v uses; unknown fields are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created: Option<String>,
    /// The `config` object: what the container runs.
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default)]
    pub(crate) rootfs: RootFs,
}

/// The `config` object of an image config: what the container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub(crate) env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub(crate) cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub(crate) labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(p: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", p.len()),
            size: 1,
            platform: Some(Platform::parse(p).unwrap()),
            annotations: Default::default(),
        }
    }

    #[test]
    fn platform_parse_and_match() {
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap(),
            Platform::default()
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(arm.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(Platform::parse("linux/arm64/v8").unwrap().matches(&arm));
        assert!(!Platform::parse("linux/arm/v7")
            .unwrap()
            .matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(!Platform::default().matches(&arm));
    }

    #[test]
    fn select_from_index() {
        let list = vec![
            desc("linux/arm/v7"),
            desc("linux/arm64/v8"),
            desc("linux/amd64"),
            desc("windows/amd64"),
        ];
        assert_eq!(select_platform(&list, &Platform::default()), Some(&list[2]));
        assert_eq!(
            select_platform(&list, &Platform::parse("linux/arm64").unwrap()),
            Some(&list[1])
        );
        assert_eq!(
            select_platform(&list, &Platform::parse("linux/arm").unwrap()),
            Some(&list[0])
        );
        assert_eq!(
            select_platform(&list, &Platform::parse("linux/s390x").unwrap()),
            None
        );
    }

    #[test]
    fn classify_manifests() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest(idx, None, "x"),
            Ok(Parsed::Index(_))
        ));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"sha256:a","size":2}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(m.as_bytes(), None, "x"),
            Ok(Parsed::Image { .. })
        ));
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        let e = parse_manifest(s1, None, "reg/x:1").err().unwrap();
        assert!(e.to_string().contains("schema1"), "{e}");
        assert!(parse_manifest(b"{", None, "x").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":2}"#, None, "x").is_err());
        let art = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:a","size":2},"layers":[]}"#;
        assert!(parse_manifest(art, None, "x")
            .err()
            .unwrap()
            .to_string()
            .contains("artifact"));
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(layer_compression(OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(layer_compression("application/json"), None);
    }
}
