//! d2v as a container image (issue 11): the image `cargo xtask image` writes (an OCI layout and
//! an `oci-archive`, no container engine involved) is checked with the real tools and run by a
//! real OCI runtime.
//!
//! - Its JSON: the non-root user, `ENTRYPOINT ["d2v"]`, the OCI annotations (version, revision,
//!   licenses, source), one root-owned layer with the release d2v (`$D2V_BIN`'s bytes), the
//!   host's CA bundle, a passwd entry for 65532 and `/tmp` (01777); `skopeo` and d2v read the
//!   `oci-archive` as the same manifest.
//! - `umoci unpack` of the layout and `runc run` of that bundle: as the image's own user
//!   (65532, which umoci takes from the image), every capability dropped, `noNewPrivileges`, a
//!   read-only root, a tmpfs `/tmp`, the host's network (to reach the registry on 127.0.0.1), a
//!   bind-mounted output directory; d2v pulls the systemd fixture from a local docker-registry
//!   and writes an OVA there that must be the same bytes, `cmp`, as the host d2v's. With the
//!   home directory on the read-only root the blob cache must be `/tmp/d2v-cache-65532`: a
//!   host directory mounted there must hold the image's layers afterwards (and a cache asked
//!   for in the home must fail: the root is read-only).
//!
//! `$D2V_IMAGE` is the directory `cargo xtask image` wrote (`target/image`: `oci/`,
//! `d2v.oci.tar`); `cargo xtask test` builds the image and sets it, with `D2V_BIN` and
//! `D2V_FIXTURES`. Without it these tests print a notice and pass, unless the fixtures are
//! required (`D2V_REQUIRE_FIXTURES=1` or `D2V_FIXTURES` set).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::fixtures;
use testkit::registry::{Kind, Registry};
use testkit::{output_text, require_tool};

/// The image's user and group.
const USER_ID: u32 = 65532;

fn required() -> bool {
    std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some()
}

/// `$D2V_IMAGE`, or `None` (after a notice) when it is not set and not required.
fn image_dir() -> Option<PathBuf> {
    match std::env::var_os("D2V_IMAGE") {
        Some(d) => Some(PathBuf::from(d)),
        None if required() => {
            panic!("D2V_IMAGE is not set: run `cargo xtask image` and set it to target/image")
        }
        None => {
            eprintln!(
                "NOTICE: container image test skipped: D2V_IMAGE not set (`cargo xtask test` sets it)"
            );
            None
        }
    }
}

fn d2v() -> PathBuf {
    fixtures::d2v_bin(env!("CARGO_BIN_EXE_d2v"))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(testkit::workspace_root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The image as its OCI layout has it.
struct Layout {
    dir: PathBuf,
    tag: String,
    manifest_digest: String,
    manifest: Value,
    config: Value,
}

impl Layout {
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = std::fs::read(self.dir.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            hex,
            "blob {digest} does not match its digest"
        );
        bytes
    }

    fn open(dir: &Path) -> Layout {
        let read = |p: &Path| -> Value {
            serde_json::from_slice(
                &std::fs::read(p)
                    .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask image`)", p.display())),
            )
            .unwrap()
        };
        assert_eq!(
            read(&dir.join("oci-layout")),
            json!({"imageLayoutVersion": "1.0.0"})
        );
        let index = read(&dir.join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.json manifests");
        assert_eq!(manifests.len(), 1, "{index}");
        let m = &manifests[0];
        let mut l = Layout {
            dir: dir.to_path_buf(),
            tag: m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .expect("a tag")
                .to_string(),
            manifest_digest: m["digest"].as_str().unwrap().to_string(),
            manifest: Value::Null,
            config: Value::Null,
        };
        l.manifest = serde_json::from_slice(&l.blob(&l.manifest_digest)).unwrap();
        l.config =
            serde_json::from_slice(&l.blob(l.manifest["config"]["digest"].as_str().unwrap()))
                .unwrap();
        l
    }
}

/// The image's config and annotations say what the issue asks, its one layer holds the
/// release d2v and what it needs, and the `oci-archive` is the same image.
#[test]
#[ignore = "needs D2V_IMAGE (cargo xtask image) and D2V_BIN (cargo xtask test sets them)"]
fn image_config_layer_and_archive() {
    let Some(dir) = image_dir() else { return };
    let l = Layout::open(&dir.join("oci"));
    let bin = std::fs::read(d2v()).unwrap();

    // Annotations, in the manifest and as the config's labels.
    let version = run(Command::new(d2v()).arg("--version"));
    assert!(
        version.starts_with(&format!("d2v {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let a = &l.manifest["annotations"];
    let ann = |k: &str| a[format!("org.opencontainers.image.{k}")].clone();
    assert_eq!(ann("version"), env!("CARGO_PKG_VERSION"), "{a}");
    assert_eq!(l.tag, env!("CARGO_PKG_VERSION"));
    assert_eq!(ann("licenses"), env!("CARGO_PKG_LICENSE"), "{a}");
    assert_eq!(ann("title"), "d2v");
    let head = git(&["rev-parse", "HEAD"]).expect("git rev-parse HEAD");
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])
        .unwrap()
        .is_empty();
    let revision = if dirty { format!("{head}-dirty") } else { head };
    assert_eq!(
        ann("revision"),
        revision.as_str(),
        "the image is not of this checkout (rerun `cargo xtask image`): {a}"
    );
    match git(&["remote", "get-url", "origin"]) {
        Some(origin) => assert_eq!(ann("source"), origin.as_str(), "{a}"),
        None => assert_eq!(ann("source"), Value::Null, "no origin, yet a source: {a}"),
    }
    let epoch: u64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.parse().unwrap(),
        Err(_) => git(&["log", "-1", "--format=%ct", "HEAD"])
            .unwrap()
            .parse()
            .unwrap(),
    };

    // The config.
    let c = &l.config;
    assert_eq!(c["config"]["User"], format!("{USER_ID}:{USER_ID}"));
    assert_eq!(c["config"]["Entrypoint"], json!(["d2v"]));
    assert_eq!(c["config"]["Env"], json!(["PATH=/usr/local/bin"]));
    assert_eq!(&c["config"]["Labels"], a);
    assert_eq!(c["created"], ann("created"));
    assert_eq!(
        (&c["os"], &c["architecture"]),
        (&json!("linux"), &json!("amd64"))
    );

    // The one layer: root-owned, the commit's time, sorted; d2v is D2V_BIN.
    let layers = l.manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{}", l.manifest);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = l.blob(layers[0]["digest"].as_str().unwrap());
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        c["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", sha256_hex(&tar_bytes))])
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut listing = Vec::new();
    let mut files = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header();
        let path = e.path().unwrap().display().to_string();
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.mtime().unwrap(), epoch, "{path}");
        listing.push(format!("{path} {:o}", h.mode().unwrap()));
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let mut sorted = listing.clone();
    sorted.sort();
    assert_eq!(listing, sorted, "entries not sorted");
    for want in [
        "etc/passwd 644",
        "etc/group 644",
        "etc/ssl/certs/ca-certificates.crt 644",
        "tmp/ 1777",
        "usr/local/bin/d2v 755",
    ] {
        assert!(listing.iter().any(|l| l == want), "no {want}: {listing:?}");
    }
    assert!(
        files["usr/local/bin/d2v"] == bin,
        "the image's d2v is not {}",
        d2v().display()
    );
    assert_eq!(
        files["etc/ssl/certs/ca-certificates.crt"],
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()
    );
    let passwd = String::from_utf8(files["etc/passwd"].clone()).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{USER_ID}:{USER_ID}:"))),
        "{passwd}"
    );

    // The oci-archive: the layout's files, and the same manifest to skopeo and to d2v.
    let archive_path = dir.join("d2v.oci.tar");
    let mut a = tar::Archive::new(std::fs::File::open(&archive_path).unwrap());
    let mut n = 0;
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert!(
                data == std::fs::read(l.dir.join(&path)).unwrap(),
                "{} differs",
                path.display()
            );
            n += 1;
        }
    }
    assert_eq!(n, 5, "oci-layout, index.json and three blobs");
    require_tool("skopeo", "skopeo");
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive_path.display())));
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        l.manifest_digest
    );
    let inspect: Value = serde_json::from_str(&run(Command::new(d2v())
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive_path.display()))
        .arg("--json")))
    .unwrap();
    assert_eq!(
        inspect["manifest_digest"],
        l.manifest_digest.as_str(),
        "{inspect}"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A directory of the image's user, mode `mode`.
fn user_dir(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(USER_ID), Some(USER_ID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// runc runs the image, unpacked by umoci, locked down; d2v in it pulls the systemd fixture
/// from a local registry and writes the same OVA as the host d2v.
#[test]
#[ignore = "needs D2V_IMAGE, D2V_BIN, the fixtures, root, umoci and runc (cargo xtask test)"]
fn runc_runs_the_image_locked_down_and_writes_the_host_binarys_ova() {
    let Some(dir) = image_dir() else { return };
    let Some(fixture) = fixtures::try_load("systemd").or_else(|| {
        assert!(
            !required(),
            "fixture systemd missing: run `cargo xtask test`"
        );
        eprintln!("NOTICE: container image test skipped: fixture systemd not built");
        None
    }) else {
        return;
    };
    assert!(is_root(), "umoci unpack (as root) and runc need root");
    require_tool("umoci", "umoci");
    require_tool("runc", "runc");
    let l = Layout::open(&dir.join("oci"));

    let registry = Registry::start(Kind::Plain);
    let repo_tag = "d2v-image/systemd:latest";
    registry.push(&fixture.oci_ref(), repo_tag);
    let image_ref = format!("{}/{repo_tag}", registry.host);

    let work = testkit::scratch_dir("container-image");
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", l.dir.display(), l.tag))
        .arg(&bundle));
    let config_path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    // umoci ran the image as its own user and found its home in the image's /etc/passwd.
    let p = &mut config["process"];
    assert_eq!(p["user"]["uid"], USER_ID, "{p}");
    assert_eq!(p["user"]["gid"], USER_ID, "{p}");
    assert!(
        p["env"]
            .as_array()
            .unwrap()
            .contains(&json!("HOME=/home/nonroot")),
        "{p}"
    );
    assert_eq!(p["args"], json!(["d2v", "--help"]), "{p}");

    let out = work.join("out");
    user_dir(&out, 0o755);
    // Where d2v must put its cache: a host directory is mounted there to see it.
    let cache = work.join("cache");
    user_dir(&cache, 0o700);
    p["terminal"] = json!(false);
    p["args"] = json!([
        "d2v",
        "pull",
        image_ref,
        "-o",
        "/out/app.ova",
        "--name",
        "image-test",
        "--json"
    ]);
    p["capabilities"] = json!({
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
    });
    p["noNewPrivileges"] = json!(true);
    config["root"]["readonly"] = json!(true);
    // The host's network: the registry listens on the host's 127.0.0.1.
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=1777"]
    }));
    mounts.push(json!({
        "destination": "/out", "type": "bind", "source": out,
        "options": ["rbind", "rw", "nosuid", "nodev"]
    }));
    mounts.push(json!({
        "destination": format!("/tmp/d2v-cache-{USER_ID}"), "type": "bind", "source": cache,
        "options": ["rbind", "rw", "nosuid", "nodev"]
    }));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let id = format!("d2v-image-test-{}", std::process::id());
    let stdout = run(Command::new("runc")
        .arg("--root")
        .arg(work.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id));
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("d2v --json in runc printed no JSON ({e}):\n{stdout}"));
    assert_eq!(
        summary["manifest_digest"],
        registry.digest(repo_tag).as_str(),
        "{summary}"
    );
    let ova = out.join("app.ova");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&ova).expect("no OVA in the output directory");
        assert_eq!(
            (m.uid(), m.gid()),
            (USER_ID, USER_ID),
            "written by the image's user"
        );
    }
    // The cache went to /tmp/d2v-cache-65532: the layers are in the directory mounted there.
    for layer in &fixture.layers {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        assert!(
            cache.join("blobs/sha256").join(hex).is_file(),
            "layer {} not in the cache at /tmp/d2v-cache-{USER_ID}",
            layer.digest
        );
    }
    // The root really is read-only: the home's cache, asked for, cannot be made.
    config["process"]["args"] = json!([
        "d2v",
        "pull",
        image_ref,
        "--cache-dir",
        "/home/nonroot/.cache/d2v",
        "-o",
        "/out/never.ova"
    ]);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let denied = Command::new("runc")
        .arg("--root")
        .arg(work.join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("{id}-ro"))
        .output()
        .unwrap();
    let text = output_text(&denied);
    assert!(
        !denied.status.success() && text.contains("Read-only file system"),
        "{text}"
    );
    assert!(!out.join("never.ova").exists());

    // The host d2v, same image and options: the same bytes.
    let host = work.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let host_ova = host.join("app.ova");
    run(Command::new(d2v())
        .arg("pull")
        .arg(&image_ref)
        .arg("-o")
        .arg(&host_ova)
        .args(["--name", "image-test", "--json", "--cache-dir"])
        .arg(host.join("cache"))
        .env_remove("SOURCE_DATE_EPOCH"));
    run(Command::new("cmp").arg(&host_ova).arg(&ova));
    let _ = std::fs::remove_dir_all(&work);
}
