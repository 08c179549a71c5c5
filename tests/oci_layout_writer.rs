//! testkit's OCI layout writer checked by a real tool: `skopeo copy` verifies every blob's
//! digest and size while copying, and `skopeo inspect` must report the manifest digest, layers
//! and config the writer says it wrote (gzip, zstd and uncompressed layers).

use std::process::Command;

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn skopeo_reads_and_verifies_written_layouts() {
    testkit::require_tool("skopeo", "skopeo");
    let work = std::env::temp_dir().join(format!("d2v-oci-writer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let layout = work.join("layout");
    let images = testkit::edge_cases::write_layout(&layout).unwrap();
    let mut media_types = std::collections::BTreeSet::new();
    for (name, img) in &images {
        let src = format!("oci:{}:{name}", layout.display());
        let info: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &src])).unwrap();
        assert_eq!(info["Digest"], img.manifest_digest.as_str(), "{name}");
        let layers: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(info["Layers"], serde_json::json!(layers), "{name}");
        assert_eq!(info["Os"], "linux");
        assert_eq!(info["Architecture"], "amd64");
        let config: serde_json::Value =
            serde_json::from_str(&skopeo(&["inspect", "--config", &src])).unwrap();
        let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!(diff_ids),
            "{name}"
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/bin/sh"])
        );
        // A copy re-reads and verifies every blob against its descriptor.
        let dst = format!("oci:{}:{name}", work.join("copy").display());
        skopeo(&["copy", "--quiet", &src, &dst]);
        media_types.extend(img.layers.iter().map(|l| l.media_type.clone()));
    }
    assert_eq!(
        media_types.len(),
        3,
        "gzip, zstd and plain layers: {media_types:?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
