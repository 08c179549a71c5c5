//! The seed corpora of `cargo xtask fuzz`: `target/fuzz-corpus/TARGET/`, rebuilt from the
//! hand-written seeds in `fuzz/seeds/TARGET/`, the regression inputs in `testdata/fuzz/TARGET/`,
//! the OS fixtures (manifests, configs, small layers, the kernel and initrd heads), the
//! hand-made edge-case layers of `testkit::edge_cases` (tar, gzip, zstd; as docker and OCI
//! archives too) and the host's GRUB modules, shim and text files. Large files contribute
//! their first [`MAX_SEED`] bytes only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::util::{root, sha256_hex, Result};
use testkit::oci::{self, Compression, ImageSpec};

/// The largest seed; longer inputs slow every execution down.
const MAX_SEED: usize = 256 << 10;

/// Writes the seeds into `corpus/TARGET/` and returns how many each target got.
struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn add(&self, target: &str, data: &[u8]) -> Result<()> {
        let data = &data[..data.len().min(MAX_SEED)];
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(&sha256_hex(data)[..16]), data)?;
        Ok(())
    }

    /// `data` after a selector byte (the `manifest` and `image_text` targets' first byte).
    fn add_picked(&self, target: &str, pick: u8, data: &[u8]) -> Result<()> {
        self.add(target, &[&[pick][..], data].concat())
    }

    /// Every file of `from/TARGET/` for each TARGET directory there.
    fn add_tree(&self, from: &Path) -> Result<()> {
        let Ok(rd) = fs::read_dir(from) else {
            return Ok(());
        };
        for d in rd {
            let d = d?.path();
            let target = d.file_name().unwrap().to_string_lossy().to_string();
            for f in fs::read_dir(&d)? {
                self.add(&target, &fs::read(f?.path())?)?;
            }
        }
        Ok(())
    }
}

/// Rebuilds `target/fuzz-corpus/`; returns its path and the seed count per target.
pub fn build(fixtures: &Path) -> Result<(PathBuf, Vec<(String, usize)>)> {
    let dir = root().join("target/fuzz-corpus");
    let seeds = Seeds { dir: dir.clone() };
    seeds.add_tree(&root().join("fuzz/seeds"))?;
    seeds.add_tree(&root().join("testdata/fuzz"))?;
    from_fixtures(&seeds, fixtures)?;
    from_edge_cases(&seeds)?;
    from_host(&seeds)?;
    gpt(&seeds)?;
    let mut counts = Vec::new();
    for d in fs::read_dir(&dir)? {
        let d = d?.path();
        counts.push((
            d.file_name().unwrap().to_string_lossy().to_string(),
            fs::read_dir(&d)?.count(),
        ));
    }
    counts.sort();
    Ok((dir, counts))
}

/// The first `MAX_SEED` bytes of a file, if it exists.
fn head(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut b = Vec::new();
    fs::File::open(p)
        .ok()?
        .take(MAX_SEED as u64)
        .read_to_end(&mut b)
        .ok()?;
    Some(b)
}

/// Manifests, indexes, configs (JSON blobs, each with every Content-Type pick) and small
/// layers of each fixture's OCI layout; the kernel fixture's vmlinuz and initrd heads.
fn from_fixtures(seeds: &Seeds, fixtures: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir(fixtures) else {
        println!("no fixtures in {}: seeds without them", fixtures.display());
        return Ok(());
    };
    for f in rd {
        let layout = f?.path().join("oci");
        if let Some(index) = head(&layout.join("index.json")) {
            seeds.add_picked("manifest", 0, &index)?;
        }
        let Ok(blobs) = fs::read_dir(layout.join("blobs/sha256")) else {
            continue;
        };
        for b in blobs {
            let p = b?.path();
            let len = p.metadata()?.len() as usize;
            if len > MAX_SEED {
                continue;
            }
            let data = fs::read(&p)?;
            if serde_json::from_slice::<serde_json::Value>(&data).is_ok() {
                for pick in 0..8 {
                    seeds.add_picked("manifest", pick, &data)?;
                }
            } else {
                seeds.add("layer_raw", &data)?;
            }
        }
    }
    if let Some(k) = head(&fixtures.join("kernel/vmlinuz")) {
        seeds.add("pe_kernel", &k)?;
    }
    if let Some(i) = head(&fixtures.join("kernel/initrd.img")) {
        seeds.add("initramfs", &i[..i.len().min(64 << 10)])?;
    }
    Ok(())
}

/// The edge-case layers (tar, gzip, zstd), an OCI archive and a docker archive of each.
fn from_edge_cases(seeds: &Seeds) -> Result<()> {
    let tmp = root().join("target/fuzz-corpus.tmp");
    let _ = fs::remove_dir_all(&tmp);
    for case in testkit::edge_cases::all() {
        let layout = tmp.join(case.name);
        let mut spec = ImageSpec::new().tag("1").entrypoint(&["/bin/sh"]);
        for l in &case.layers {
            let tar = testkit::tar::tar(l);
            seeds.add("layer_raw", &tar)?;
            for c in [Compression::Gzip, Compression::Zstd] {
                let w = oci::write_layer(&tmp.join("layers"), &mut &tar[..], c)?;
                seeds.add("layer_raw", &fs::read(&w.path)?)?;
            }
            spec = spec.layer(tar, case.compression);
        }
        let image = oci::write_image(&layout, &spec)?;
        seeds.add("archive", &tar_dir(&layout)?)?;
        seeds.add("archive", &docker_archive(&layout, &image)?)?;
    }
    let modules = [
        (
            "lib/modules/6.1.0/kernel/drivers/scsi/vmw_pvscsi.ko",
            &b"x"[..],
        ),
        ("lib/modules/6.1.0/kernel/fs/ext4/ext4.ko.zst", b"y"),
        ("init", b"#!/bin/sh\n"),
    ];
    seeds.add("initramfs", &testkit::cpio::newc(&modules))?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// The files of `dir` as a tar (an oci-archive when `dir` is a layout).
fn tar_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir)?;
    Ok(b.into_inner()?)
}

/// A `docker save` archive of `image`: manifest.json, the config, the layers.
fn docker_archive(layout: &Path, image: &oci::WrittenImage) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data)?;
        Ok(())
    };
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let config = format!("{}.json", hex(&image.config_digest));
    add(
        &config,
        &fs::read(oci::blob_path(layout, &image.config_digest))?,
    )?;
    let mut layers = Vec::new();
    for l in &image.layers {
        let name = format!("{}/layer.tar", hex(&l.digest));
        add(&name, &fs::read(&l.path)?)?;
        layers.push(name);
    }
    let manifest = serde_json::json!([{"Config": config, "RepoTags": ["a:1"], "Layers": layers}]);
    add("manifest.json", manifest.to_string().as_bytes())?;
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok(out)
}

/// GRUB's modules and moddep.lst, shim, and the host's own text files of the kinds d2v reads
/// in images.
fn from_host(seeds: &Seeds) -> Result<()> {
    for dir in ["/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        let mut mods: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "mod"))
            .filter(|p| p.metadata().is_ok_and(|m| m.len() <= 8 << 10))
            .collect();
        mods.sort();
        for m in mods.iter().take(24) {
            seeds.add("grub_elf", &fs::read(m)?)?;
        }
        if let Some(lst) = head(&Path::new(dir).join("moddep.lst")) {
            seeds.add_picked("image_text", 4, &lst)?;
        }
    }
    for efi in ["/usr/lib/shim/fbx64.efi", "/usr/lib/shim/mmx64.efi"] {
        if let Some(pe) = head(Path::new(efi)) {
            seeds.add("pe_kernel", &pe)?;
        }
    }
    for (pick, file) in [(0, "/etc/os-release"), (0, "/usr/lib/os-release")] {
        if let Some(t) = head(Path::new(file)) {
            seeds.add_picked(
                "image_text",
                pick,
                &[&t[..], b"\x006.1.0-28-cloud-amd64"].concat(),
            )?;
        }
    }
    if let Some(t) = head(Path::new("/etc/default/grub")) {
        seeds.add_picked("image_text", 1, &t)?;
    }
    if let (Some(p), Some(g)) = (
        head(Path::new("/etc/passwd")),
        head(Path::new("/etc/group")),
    ) {
        for user in ["root", "1000:100", "nobody:nogroup", "daemon"] {
            let t = [&p[..], b"\n\n", &g[..], b"\0", user.as_bytes()].concat();
            seeds.add_picked("image_text", 2, &t)?;
        }
    }
    for m in fs::read_dir("/lib/modules").into_iter().flatten().flatten() {
        if let Some(dep) = head(&m.path().join("modules.dep")) {
            seeds.add_picked("image_text", 3, &dep[..dep.len().min(32 << 10)])?;
        }
    }
    Ok(())
}

/// A disk whose GPT lists one partition with the GUID the `gpt` target looks for, with 512-
/// and 4096-byte sectors.
fn gpt(seeds: &Seeds) -> Result<()> {
    for sector in [512usize, 4096] {
        let mut d = vec![0u8; sector * 3];
        let h = &mut d[sector..];
        h[..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&4u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        let e = &mut d[2 * sector..];
        e[..16].copy_from_slice(&[0xaf; 16]);
        e[16..32].copy_from_slice(&[0x11; 16]);
        seeds.add("gpt", &d)?;
    }
    Ok(())
}
