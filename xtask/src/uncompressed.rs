//! A copy of an OCI image whose layers are stored uncompressed
//! (`application/vnd.oci.image.layer.v1.tar`), for `cargo xtask bench ext4-tar`: the same
//! filesystem as the original, so that d2v, like `mke2fs -d` with its tree extracted
//! beforehand, has no decompression to do.
//!
//! The config blob is copied byte for byte: its `diff_ids` are the digests of the uncompressed
//! layers, which are now also the layer blobs' digests. The manifest is the original with the
//! layer descriptors replaced.

use crate::util::Result;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use testkit::oci::{self, Compression};

/// Writes `tag` of the layout `src` into a new layout `dst` (replaced if present) with every
/// layer uncompressed, tagged `tag` too.
pub(crate) fn copy(src: &Path, tag: &str, dst: &Path) -> Result<()> {
    let image = oci::read_image(src, Some(tag))?;
    let _ = fs::remove_dir_all(dst);
    fs::create_dir_all(dst.join("blobs/sha256"))?;
    fs::write(
        dst.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    let mut layers = Vec::new();
    for (media_type, path) in &image.layers {
        let mut tar = oci::open_layer(media_type, path)?;
        let l = oci::write_layer(dst, &mut tar, Compression::None)?;
        layers.push(json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}));
    }
    let config_digest = image.manifest["config"]["digest"]
        .as_str()
        .ok_or("manifest without a config digest")?;
    let (digest, _) = oci::write_blob(dst, &fs::read(oci::blob_path(src, config_digest))?)?;
    if digest != config_digest {
        return Err(format!("config blob {config_digest} has digest {digest}").into());
    }
    let mut manifest = image.manifest.clone();
    manifest["layers"] = Value::Array(layers);
    let (digest, size) = oci::write_blob(dst, &serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": oci::MANIFEST_MEDIA_TYPE, "digest": digest, "size": size,
            "annotations": {oci::REF_NAME: tag},
        }],
    });
    fs::write(dst.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Read;

    #[test]
    fn layers_become_their_uncompressed_tars_and_the_config_stays() {
        let dir = std::env::temp_dir().join(format!("xtask-uncompressed-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        let tars = [b"first layer".repeat(1000), b"second".repeat(5000)];
        let spec = oci::ImageSpec::new()
            .layer(tars[0].clone(), Compression::Gzip)
            .layer(tars[1].clone(), Compression::Zstd)
            .tag("t");
        let written = oci::write_image(&src, &spec).unwrap();
        copy(&src, "t", &dst).unwrap();

        let got = oci::read_image(&dst, Some("t")).unwrap();
        let orig = oci::read_image(&src, Some("t")).unwrap();
        assert_eq!(got.config, orig.config);
        assert_eq!(got.manifest["config"], orig.manifest["config"]);
        assert_eq!(got.layers.len(), 2);
        let diff_ids = got.config["rootfs"]["diff_ids"].as_array().unwrap();
        for (i, (media_type, path)) in got.layers.iter().enumerate() {
            assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar");
            let mut blob = Vec::new();
            fs::File::open(path)
                .unwrap()
                .read_to_end(&mut blob)
                .unwrap();
            assert_eq!(blob, tars[i]);
            let digest = format!("sha256:{:x}", Sha256::digest(&blob));
            assert_eq!(diff_ids[i].as_str(), Some(digest.as_str()));
            assert_eq!(
                got.manifest["layers"][i]["digest"].as_str(),
                Some(digest.as_str())
            );
            assert_eq!(digest, written.layers[i].diff_id);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
