//! Layers whose tar stream ends early, through the real `d2v` binary. umoci 0.4.7's
//! `insert` writes layers that end right after the last file's data (no padding, no
//! end-of-archive blocks); Go's `archive/tar` reads them, and so does d2v, with a warning (on
//! stderr and in `--json`). A stream cut inside a header or a file's data fails naming the
//! entry, exit status 1, nothing written.

use std::process::Command;

use testkit::cli::*;
use testkit::oci::Compression;
use testkit::tar::{tar, unterminated, Entry};

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// A sandbox with the tiny Debian image (a kernel) plus `layer` on top, as `v1` of the layout
/// `in/oci`; the `oci:` source and the top layer's digest.
fn debian_with_layer(layer: Vec<u8>, c: Compression) -> (Sandbox, String, String) {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let img = debian_with_layer_at(&dir, layer, c);
    let digest = img.layers[1].digest.clone();
    (sb, oci_src(&dir, "v1"), digest)
}

/// `d2v build SRC -o out/vm.ova` (with `--json` if `json`) with a fresh cache.
fn build(sb: &Sandbox, src: &str, json: bool) -> Run {
    let (out, cache) = (sb.out_file("vm.ova"), sb.fresh_cache());
    let mut args = vec![
        "build".into(),
        src.into(),
        "-o".into(),
        out.into_os_string(),
        "--cache-dir".into(),
        cache.into_os_string(),
    ];
    if json {
        args.push("--json".into());
    }
    sb.d2v(args)
}

/// The build succeeds and warns naming `digest` and `entry`: on stderr, and (with `--json`,
/// where stderr is quiet) in the summary's warnings.
fn builds_with_warning(sb: &Sandbox, src: &str, digest: &str, entry: &str) {
    let r = build(sb, src, false).ok();
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: ") && l.contains("end-of-archive"))
        .unwrap_or_else(|| panic!("no warning:\n{}", r.stderr));
    assert!(
        line.contains(digest) && line.contains(entry) && line.contains("umoci insert"),
        "{line}"
    );
    let r = build(sb, src, true).ok();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains(digest) && warnings.contains(entry),
        "{warnings}"
    );
}

#[test]
fn a_layer_ending_after_the_last_files_data_builds_with_a_warning() {
    let layer = unterminated(&[
        Entry::dir("etc/app"),
        Entry::file("etc/app/conf", "key=1\n"),
    ]);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (sb, src, digest) = debian_with_layer(layer.clone(), c);
        builds_with_warning(&sb, &src, &digest, "etc/app/conf");
        assert!(sb.out_file("vm.ova").is_file());
    }
}

#[test]
fn a_real_umoci_insert_layer_builds_with_a_warning() {
    let umoci = testkit::require_tool("umoci", "umoci");
    let (sb, src, _) =
        debian_with_layer(tar(&[Entry::file("etc/motd", "hi\n")]), Compression::Gzip);
    let file = sb.path("in/inserted");
    std::fs::write(&file, "inserted by umoci\n").unwrap();
    let image = format!("{}:v1", sb.path("in/oci").display());
    let out = Command::new(umoci)
        .args(["insert", "--image", &image])
        .arg(&file)
        .arg("/etc/inserted")
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci insert: {out:?}");
    let (_, manifest) = manifest_of(&sb.path("in/oci"), "v1");
    let digest = manifest["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    builds_with_warning(&sb, &src, &digest, "etc/inserted");
    // inspect --json carries it too.
    let r = sb.d2v(["inspect", "--json", &src]).ok();
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains(&digest) && warnings.contains("etc/inserted"),
        "{warnings}"
    );
}

#[test]
fn a_layer_cut_inside_a_header_or_data_fails_naming_the_entry() {
    let full = tar(&[
        Entry::file("etc/first", vec![1u8; 700]),
        Entry::file("etc/second", vec![2u8; 3000]),
    ]);
    // etc/first: header at 0, data at 512; etc/second: header at 1536, data at 2048.
    for (cut, needles) in [
        (2048 + 1000, ["etc/second", "data"]),
        (1536 + 200, ["etc/first", "header"]),
    ] {
        let (sb, src, digest) = debian_with_layer(full[..cut].to_vec(), Compression::Gzip);
        let r = build(&sb, &src, false);
        let mut n = needles.to_vec();
        n.extend([digest.as_str(), "truncated"]);
        assert_clean_failure(&r, &n);
        assert!(
            sb.out_listing().is_empty(),
            "a failed run left {:?}",
            sb.out_listing()
        );
    }
}
