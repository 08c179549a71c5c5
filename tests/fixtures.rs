//! The fixtures `cargo xtask test` builds are what fixture.json says they are, checked with
//! independent tools (skopeo, gzip, sha256sum, GNU tar). Ignored by default: they need the
//! fixtures; `cargo xtask test` runs ignored tests.

use std::path::Path;
use std::process::Command;
use testkit::fixtures::{self, Fixture};

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn blob(f: &Fixture, digest: &str) -> std::path::PathBuf {
    f.oci_layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn check_layout(f: &Fixture) {
    testkit::require_tool("skopeo", "skopeo");
    // The manifest skopeo reads from the layout is the one fixture.json names.
    let raw = sh(&format!(
        "skopeo inspect --raw oci:{}:{} | sha256sum",
        q(&f.oci_layout),
        f.tag
    ));
    assert_eq!(
        format!("sha256:{}", &raw[..64]),
        f.manifest_digest,
        "{}",
        f.name
    );
    for l in &f.layers {
        let b = blob(f, &l.digest);
        assert_eq!(
            std::fs::metadata(&b).unwrap().len(),
            l.size,
            "{}",
            b.display()
        );
        let digest = sh(&format!("sha256sum < {}", q(&b)));
        assert_eq!(format!("sha256:{}", &digest[..64]), l.digest);
        let diff = sh(&format!("gzip -dc < {} | sha256sum", q(&b)));
        assert_eq!(format!("sha256:{}", &diff[..64]), l.diff_id);
    }
    // The docker archive holds the same layers (by diff_id), in order.
    let config = sh(&format!(
        "skopeo inspect --config docker-archive:{}",
        q(&f.docker_archive)
    ));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let want: Vec<&str> = f.layers.iter().map(|l| l.diff_id.as_str()).collect();
    let got: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, want, "{}: docker-archive diff_ids", f.name);
}

fn layer_names(f: &Fixture, i: usize) -> Vec<String> {
    let list = sh(&format!("tar -tzf {}", q(&blob(f, &f.layers[i].digest))));
    list.lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[test]
#[ignore = "needs the fixtures built by cargo xtask test"]
fn systemd_fixture_is_what_its_manifest_says() {
    let f = fixtures::load(fixtures::SYSTEMD);
    check_layout(&f);
    assert_eq!(f.layers.len(), 3);
    let l2 = layer_names(&f, 1);
    for want in [
        "opt/d2v-fixture/.wh.delete-me",
        "opt/d2v-fixture/.wh.gone-dir",
        "opt/d2v-fixture/opaque/.wh..wh..opq",
        "etc/.wh.motd",
    ] {
        assert!(l2.iter().any(|n| n == want), "layer 2 lacks {want}: {l2:?}");
    }
    let l3 = layer_names(&f, 2);
    assert!(
        l3.iter()
            .any(|n| n == "etc/systemd/system/d2v-selfcheck.service"),
        "{l3:?}"
    );
    let base = layer_names(&f, 0);
    assert!(
        base.iter().any(|n| n == f.kernel.trim_start_matches('/')),
        "no {} in the base",
        f.kernel
    );
    // The self-check covers files from every layer and some that must be absent.
    let absent = f
        .selfcheck
        .files
        .iter()
        .filter(|e| e.sha256.is_none())
        .count();
    assert!(
        absent >= 5 && f.selfcheck.files.len() >= 15,
        "{:?}",
        f.selfcheck
    );
}

#[test]
#[ignore = "needs the fixtures built by cargo xtask test"]
fn openrc_fixture_carries_dockerenv_in_its_layers() {
    let f = fixtures::load(fixtures::OPENRC);
    check_layout(&f);
    assert_eq!(f.container_markers, ["/.dockerenv"]);
    for i in 0..f.layers.len() {
        assert!(
            layer_names(&f, i).iter().any(|n| n == ".dockerenv"),
            "layer {i} lacks .dockerenv"
        );
    }
    assert!(f.selfcheck.openrc_sys);
    let marker = f
        .selfcheck
        .files
        .iter()
        .find(|e| e.path == "/.dockerenv")
        .expect("checked");
    assert_eq!(
        marker.sha256, None,
        "the guest must not see /.dockerenv after d2v"
    );
}
