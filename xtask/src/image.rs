//! `cargo xtask image`: d2v's own container image, written by xtask's OCI layout writer (the
//! fixtures' one), not by a container engine.
//!
//! One layer, `FROM scratch`-like: the static release d2v as `/usr/local/bin/d2v`, the host's
//! CA bundle (Debian's ca-certificates) as `/etc/ssl/certs/ca-certificates.crt`, `/etc/passwd`
//! and `/etc/group` with root and the non-root user `nonroot` (65532), and `/tmp` (01777). The
//! config runs `d2v` as 65532:65532; the manifest and the config's labels carry the OCI
//! annotations (source, revision, version, licenses, created).
//!
//! Same bytes for the same inputs: every entry is root-owned with the mtime of
//! `SOURCE_DATE_EPOCH`, else of the commit (`git log -1 --format=%ct`); entries are sorted; the
//! gzip settings are fixed; JSON keys are sorted. Written to `target/image/`: `oci/` (an OCI
//! layout, tag = d2v's version) and `d2v.oci.tar` (the same as an `oci-archive`).

use crate::bail;
use crate::fixtures::oci;
use crate::fixtures::recipes::{Entry, LayerSpec};
use crate::util::{output, root, step, Result};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's non-root user and group (distroless's `nonroot`).
pub const USER_ID: u32 = 65532;
/// Where the binary is in the image (`PATH` is this directory).
const BIN_DIR: &str = "usr/local/bin/";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the image says about itself.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `d2v --version`'s version.
    pub version: String,
    /// The commit (`-dirty` when tracked files differ from it).
    pub revision: String,
    /// Where the source is (`--source`, else git's `origin`); left out when unknown.
    pub source: Option<String>,
    /// SPDX expression, Cargo.toml's `license`.
    pub licenses: String,
    /// Seconds since 1970: every mtime and `created`.
    pub epoch: u64,
}

/// What [`write`] wrote.
#[derive(Debug)]
pub struct Written {
    /// The OCI layout, tagged [`Meta::version`].
    pub layout: PathBuf,
    /// The same image as an `oci-archive`.
    pub archive: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut source = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--source" => source = it.next().cloned(),
            other => {
                bail!("cargo xtask image: unknown argument {other:?} (usage: image [--source URL])")
            }
        }
    }
    let bin = crate::testcmd::release_d2v()?;
    let w = build(&bin, source)?;
    println!(
        "oci:{}:{}\noci-archive:{}\nmanifest {}",
        w.layout.display(),
        w.tag,
        w.archive.display(),
        w.manifest_digest
    );
    Ok(())
}

/// Where [`build`] writes: `target/image` (`oci/`, `d2v.oci.tar`).
pub fn out_dir() -> PathBuf {
    root().join("target/image")
}

/// The image of the release binary `bin` in [`out_dir`], with the metadata of this checkout;
/// `source` (else git's `origin`) is the source annotation.
pub fn build(bin: &Path, source: Option<String>) -> Result<Written> {
    step("d2v's container image (target/image: oci/, d2v.oci.tar)");
    let meta = Meta {
        version: version_of(bin)?,
        revision: revision()?,
        source: source.or_else(|| git(&["remote", "get-url", "origin"]).ok()),
        licenses: license()?,
        epoch: epoch()?,
    };
    println!("{meta:?}");
    if meta.source.is_none() {
        println!("note: no git remote `origin` and no --source: org.opencontainers.image.source left out");
    }
    let ca = fs::read(CA_BUNDLE)
        .map_err(|e| format!("cannot read {CA_BUNDLE} ({e}): install Debian's ca-certificates"))?;
    write(&fs::read(bin)?, &ca, &meta, &out_dir())
}

/// Writes the image of `binary` with the CA bundle `ca` to `out/oci` and `out/d2v.oci.tar`
/// (replacing what was there).
pub fn write(binary: &[u8], ca: &[u8], meta: &Meta, out: &Path) -> Result<Written> {
    let tmp = out.join(".oci.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{USER_ID}:\n");
    let mut entries = vec![
        Entry::Dir("etc/"),
        Entry::File("etc/group".into(), 0o644, group.into_bytes()),
        Entry::File("etc/passwd".into(), 0o644, passwd.into_bytes()),
        Entry::Dir("etc/ssl/"),
        Entry::Dir("etc/ssl/certs/"),
        Entry::File(CA_BUNDLE[1..].into(), 0o644, ca.to_vec()),
        Entry::DirMode("tmp/", 0o1777),
        Entry::Dir("usr/"),
        Entry::Dir("usr/local/"),
        Entry::Dir(BIN_DIR),
        Entry::File(format!("{BIN_DIR}d2v"), 0o755, binary.to_vec()),
    ];
    entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
    let spec = LayerSpec {
        comment: "d2v",
        entries,
    };
    let tar = oci::layer_tar_at(&spec, meta.epoch)?;
    let blob = oci::add_layer(&tmp, &tar[..], spec.comment)?;

    let created = rfc3339(meta.epoch);
    let mut annotations = json!({
        "org.opencontainers.image.title": "d2v",
        "org.opencontainers.image.description":
            "Turn a container image into a VMware vSphere VM (OVA/VMDK), without a daemon or root",
        "org.opencontainers.image.version": meta.version,
        "org.opencontainers.image.revision": meta.revision,
        "org.opencontainers.image.licenses": meta.licenses,
        "org.opencontainers.image.created": created,
    });
    if let Some(s) = &meta.source {
        annotations["org.opencontainers.image.source"] = json!(s);
    }
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Env": [format!("PATH=/{}", BIN_DIR.trim_end_matches('/'))],
            "Entrypoint": ["d2v"],
            "Cmd": ["--help"],
            "WorkingDir": "/",
            "Labels": annotations,
        },
        "rootfs": {"type": "layers", "diff_ids": [blob.diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let tag = meta.version.clone();
    let (manifest_digest, _) = oci::write_image(&tmp, &tag, &config, &[blob], Some(&annotations))?;

    let layout = out.join("oci");
    let _ = fs::remove_dir_all(&layout);
    fs::rename(&tmp, &layout)?;
    let archive = out.join("d2v.oci.tar");
    let part = out.join(".d2v.oci.tar.tmp");
    oci::oci_archive(&layout, &part, meta.epoch)?;
    fs::rename(&part, &archive)?;
    Ok(Written {
        layout,
        archive,
        tag,
        manifest_digest,
    })
}

fn entry_path(e: &Entry) -> &str {
    match e {
        Entry::Dir(p) | Entry::DirMode(p, _) => p,
        Entry::File(p, ..) => p,
        Entry::Symlink(p, _) | Entry::Hardlink(p, _) | Entry::Whiteout(p) | Entry::Opaque(p) => p,
    }
}

fn git(args: &[&str]) -> Result<String> {
    Ok(output(Command::new("git").current_dir(root()).args(args))?
        .trim()
        .to_string())
}

/// The commit, `-dirty` when tracked files were changed since.
fn revision() -> Result<String> {
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Ok(if dirty { format!("{head}-dirty") } else { head })
}

/// `SOURCE_DATE_EPOCH`, else the commit's time.
fn epoch() -> Result<u64> {
    let (s, what) = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => (s, "SOURCE_DATE_EPOCH"),
        Err(_) => (git(&["log", "-1", "--format=%ct", "HEAD"])?, "git log"),
    };
    s.trim()
        .parse()
        .map_err(|e| format!("{what} gave {s:?}, not seconds since 1970: {e}").into())
}

/// The version `d2v --version` prints (`d2v 0.1.0 (commit …)` → `0.1.0`).
fn version_of(bin: &Path) -> Result<String> {
    let out = output(Command::new(bin).arg("--version"))?;
    match parse_version(&out) {
        Some(v) => Ok(v.to_string()),
        None => bail!("`{} --version` printed {out:?}", bin.display()),
    }
}

/// The version word of `d2v --version`'s line.
fn parse_version(out: &str) -> Option<&str> {
    out.trim()
        .strip_prefix("d2v ")
        .and_then(|v| v.split_whitespace().next())
}

/// The `license` of the d2v package (the top-level Cargo.toml's `[package]`).
fn license() -> Result<String> {
    let toml = fs::read_to_string(root().join("Cargo.toml"))?;
    let package = toml
        .split("\n[")
        .find(|s| s.starts_with("package]"))
        .unwrap_or_default();
    for line in package.lines() {
        if let Some(v) = line.strip_prefix("license = ") {
            return Ok(v.trim().trim_matches('"').to_string());
        }
    }
    bail!("Cargo.toml's [package] has no license")
}

/// `1970-01-01T00:00:00Z` style UTC time of `secs` since 1970.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = d2v::ids::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(epoch: u64) -> Meta {
        Meta {
            version: "9.8.7".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            source: Some("https://example.invalid/d2v".into()),
            licenses: "Apache-2.0".into(),
            epoch,
        }
    }

    /// Every file under `dir`, by relative path, with its bytes.
    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    v.push((rel, fs::read(&p).unwrap()));
                }
            }
        }
        v.sort();
        v
    }

    #[test]
    fn two_writes_give_the_same_bytes_and_another_epoch_another_digest() {
        let d = tempfile_dir("twice");
        let bin = b"\x7fELF not really".repeat(1000);
        let ca = b"-----BEGIN CERTIFICATE-----\n...\n".to_vec();
        let a = write(&bin, &ca, &meta(1_700_000_000), &d.join("a")).unwrap();
        let b = write(&bin, &ca, &meta(1_700_000_000), &d.join("b")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(files(&a.layout), files(&b.layout));
        assert_eq!(fs::read(&a.archive).unwrap(), fs::read(&b.archive).unwrap());
        // Writing again over the first replaces it with the same bytes (no stale blobs).
        let again = write(&bin, &ca, &meta(1_700_000_000), &d.join("a")).unwrap();
        assert_eq!(files(&again.layout), files(&b.layout));
        // oci-layout, index.json and three blobs (layer, config, manifest).
        assert_eq!(files(&again.layout).len(), 5);
        let c = write(&bin, &ca, &meta(1_700_000_001), &d.join("c")).unwrap();
        assert_ne!(a.manifest_digest, c.manifest_digest);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn layer_and_config_are_what_the_image_needs() {
        let d = tempfile_dir("content");
        let w = write(b"binary", b"certs", &meta(1_700_000_000), &d).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(w.layout.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], w.manifest_digest.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "9.8.7"
        );
        let blob = |digest: &serde_json::Value| {
            let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            fs::read(w.layout.join("blobs/sha256").join(hex)).unwrap()
        };
        let manifest: serde_json::Value = serde_json::from_slice(&blob(&m["digest"])).unwrap();
        let a = &manifest["annotations"];
        assert_eq!(
            a["org.opencontainers.image.revision"],
            meta(0).revision.as_str()
        );
        assert_eq!(a["org.opencontainers.image.version"], "9.8.7");
        assert_eq!(a["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(
            a["org.opencontainers.image.source"],
            "https://example.invalid/d2v"
        );
        assert_eq!(
            a["org.opencontainers.image.created"],
            "2023-11-14T22:13:20Z"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"], json!(["d2v"]));
        assert_eq!(&config["config"]["Labels"], a);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let gz = blob(&layers[0]["digest"]);
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut seen = Vec::new();
        for e in tar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            let path = e.path().unwrap().display().to_string();
            seen.push(format!("{path} {:o}", h.mode().unwrap()));
        }
        assert_eq!(
            seen,
            [
                "etc/ 755",
                "etc/group 644",
                "etc/passwd 644",
                "etc/ssl/ 755",
                "etc/ssl/certs/ 755",
                "etc/ssl/certs/ca-certificates.crt 644",
                "tmp/ 1777",
                "usr/ 755",
                "usr/local/ 755",
                "usr/local/bin/ 755",
                "usr/local/bin/d2v 755",
            ]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn version_word_of_the_version_line() {
        assert_eq!(
            parse_version("d2v 0.1.0 (commit 0123abcd)\n"),
            Some("0.1.0")
        );
        assert_eq!(parse_version("d2v 0.1.0\n"), Some("0.1.0"));
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-image-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }
}
