//! Resource bombs through the real `d2v` binary: layers that decompress to far more than they
//! should (`--max-expansion`, `--max-image-size`) and oversized manifests, indexes and
//! configs. Each must be refused with a message naming the layer and the flag to raise, early
//! (while decompressing), leaving nothing in `$TMPDIR` or the output directory.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::cli::*;
use testkit::oci::{self, Compression, ImageSpec};
use testkit::registry::{Kind, Registry};
use testkit::tar::{tar, Entry};

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// A sandbox with the tiny Debian image plus `extra` (compressed with `c`) as `v1`, and a
/// private `$TMPDIR` for its runs.
struct Bomb {
    sb: Sandbox,
    dir: PathBuf,
    src: String,
    tmp: PathBuf,
    /// The extra layer's digest.
    layer: String,
}

fn with_layer(extra: Vec<u8>, c: Compression) -> Bomb {
    let mut sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let img = debian_with_layer_at(&dir, extra, c);
    let tmp = sb.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    sb.env.push(("TMPDIR".into(), tmp.display().to_string()));
    let src = oci_src(&dir, "v1");
    let layer = img.layers[1].digest.clone();
    Bomb {
        sb,
        dir,
        src,
        tmp,
        layer,
    }
}

/// A layer holding one file of `len` zeros.
fn zeros_layer(len: usize) -> Vec<u8> {
    tar(&[Entry::file("zeros", vec![0u8; len])])
}

impl Bomb {
    /// `d2v build SRC -o out/vm.ova EXTRA` with a fresh cache.
    fn build(&self, extra: &[&str]) -> Run {
        let (out, cache) = (self.sb.out_file("vm.ova"), self.sb.fresh_cache());
        let mut args = vec![
            "build".to_string(),
            self.src.clone(),
            "-o".into(),
            out.display().to_string(),
            "--cache-dir".into(),
            cache.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.sb.d2v(&args)
    }

    /// The run failed naming the layer and `needles`, leaving nothing behind.
    fn refused(&self, r: &Run, needles: &[&str]) {
        let mut all = vec![self.layer.as_str()];
        all.extend(needles);
        assert_clean_failure(r, &all);
        assert!(
            self.sb.out_listing().is_empty(),
            "{:?}",
            self.sb.out_listing()
        );
        assert!(
            ls(&self.tmp).is_empty(),
            "left in TMPDIR: {:?}",
            ls(&self.tmp)
        );
    }
}

#[test]
fn gzip_bomb_is_refused_naming_the_layer_and_the_flag() {
    let b = with_layer(zeros_layer(10 << 20), Compression::Gzip);
    let r = b.build(&["--max-expansion", "10"]);
    b.refused(&r, &["decompression bomb", "--max-expansion (now 10)"]);
    // 10 MB of zeros gzip to about 10 KB: more than 200× too, so the default refuses it.
    let r = b.build(&[]);
    b.refused(&r, &["--max-expansion (now 200)"]);
    // Raised, the layer is read (inspect: the image is otherwise fine).
    let cache = b.sb.fresh_cache();
    let cache = cache.to_str().unwrap();
    let args = [
        "inspect",
        &b.src,
        "--cache-dir",
        cache,
        "--max-expansion",
        "2000",
    ];
    b.sb.d2v(args).ok();
}

/// The same from a registry (`pull`) and for `inspect`, which read layers the same way.
#[test]
fn zstd_bomb_is_refused_by_pull_and_inspect() {
    let b = with_layer(zeros_layer(10 << 20), Compression::Zstd);
    let spec = ImageSpec::new()
        .layer(base_layer("debian", true), Compression::Gzip)
        .layer(zeros_layer(10 << 20), Compression::Zstd)
        .tag("v1");
    let (reg, _) = Registry::with_image(Kind::Plain, &b.sb.path("in/push"), &spec, "bomb:v1");
    let (out, cache) = (b.sb.out_file("vm.ova"), b.sb.fresh_cache());
    let (out, cache) = (out.to_str().unwrap(), cache.to_str().unwrap());
    let reference = format!("{}/bomb:v1", reg.host);
    let args = ["pull", &reference, "-o", out, "--cache-dir", cache];
    let r = b.sb.d2v([&args[..], &["--max-expansion", "10"]].concat());
    b.refused(&r, &["decompression bomb", "--max-expansion (now 10)"]);
    let cache = b.sb.fresh_cache();
    let args = ["inspect", &b.src, "--cache-dir", cache.to_str().unwrap()];
    let r = b.sb.d2v([&args[..], &["--max-expansion", "10"]].concat());
    b.refused(&r, &["decompression bomb", "--max-expansion (now 10)"]);
}

/// A zstd stream of `frames` frames of 1 GiB of zeros each, the first starting with a tar
/// header for one 8 GiB file: 2 KiB or so a frame, so a few MiB expand to `frames` GiB.
fn zstd_zeros_bomb(frames: usize) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_size((8 << 30) - 1);
    header.set_mode(0o644);
    header.set_cksum();
    let gib = 1usize << 30;
    let frame = |head: &[u8]| {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        enc.write_all(head).unwrap();
        std::io::copy(
            &mut std::io::Read::take(std::io::repeat(0), (gib - head.len()) as u64),
            &mut enc,
        )
        .unwrap();
        enc.finish().unwrap()
    };
    let (first, rest) = (frame(header.as_bytes()), frame(&[]));
    let mut out = first;
    for _ in 1..frames {
        out.extend_from_slice(&rest);
    }
    out
}

/// 64 GiB of zeros in about 2 MiB: refused after what the default ratio allows (200× the
/// blob), in seconds, not after inflating 64 GiB. The layer's diff_id is that of another
/// layer: had d2v read the stream to its end, it would report a diff_id mismatch instead.
#[test]
fn a_large_zstd_bomb_is_stopped_early_by_default() {
    let b = with_layer(zeros_layer(4096), Compression::Zstd);
    let bomb = zstd_zeros_bomb(64);
    let digest = replace_layer_blob(&b.dir, "v1", 1, &bomb);
    let t0 = Instant::now();
    let r = b.build(&[]);
    let took = t0.elapsed();
    assert_clean_failure(&r, &[&digest, "decompression bomb", "--max-expansion"]);
    assert!(!r.stderr.contains("diff_id"), "{}", r.stderr);
    assert!(took < Duration::from_secs(120), "took {took:?}");
    eprintln!("{} byte bomb refused in {took:?}", bomb.len());
    assert!(b.sb.out_listing().is_empty());
    assert!(ls(&b.tmp).is_empty(), "left in TMPDIR: {:?}", ls(&b.tmp));
}

#[test]
fn max_image_size_counts_every_layer() {
    let b = with_layer(
        tar(&[Entry::file("noise", noise(7, 3 << 20))]),
        Compression::None,
    );
    let r = b.build(&["--max-image-size", "2M"]);
    // The base layer (under 1 MiB) fits; the second takes the total past 2 MiB.
    b.refused(&r, &["--max-image-size", "2.0 MiB"]);
}

#[test]
fn bad_limit_values_are_usage_errors() {
    let sb = Sandbox::new(D2V);
    for (flag, value) in [("--max-expansion", "0"), ("--max-image-size", "lots")] {
        let r = sb.d2v(["inspect", "oci:nowhere:v1", flag, value]);
        assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
        assert!(r.stderr.contains(flag), "{}", r.stderr);
    }
}

/// A manifest with 10 000 layers (the config's diff_ids and history as long): read and
/// applied in bounded time and memory. d2v flattens the layers itself, so overlayfs' limit of
/// about 128 lower directories (docker, containerd) does not apply; the 4 MiB manifest limit
/// (about 20 000 layer descriptors) bounds the count. Built too, under the default soft
/// open-files limit (1024) and under a hard one too low for its 10 000 blob files.
#[test]
fn ten_thousand_layers_are_read_in_bounded_time_and_memory() {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let mut spec = ImageSpec::new()
        .layer(base_layer("debian", true), Compression::Gzip)
        .tag("v1");
    for i in 1..10_000 {
        let layer = tar(&[Entry::file(format!("layers/{i}"), i.to_string())]);
        spec = spec.layer(layer, Compression::Gzip);
    }
    oci::write_image(&dir, &spec).unwrap();
    let (v, rss) = inspected(&sb, &oci_src(&dir, "v1"), "10 000 layers");
    assert_eq!(v["layers"].as_array().unwrap().len(), 10_000);
    assert!(rss < 512 << 10, "peak RSS {rss} KiB");
    // Built under Debian's default open-files limit (soft 1024): a build holds each layer's
    // blob file open from the flatten to the root's data pass, and raises its soft limit to
    // what that needs. Under a hard limit below it, the error names the limit.
    let (src, cache) = (oci_src(&dir, "v1"), sb.fresh_cache());
    let build = |limits: &str, out: &str| {
        let script = format!("ulimit {limits} && exec \"$@\"");
        let wrapper = ["sh", "-c", script.as_str(), "sh"].map(std::ffi::OsStr::new);
        let out = sb.out_file(out);
        let out = out.to_str().unwrap();
        let args = [
            "build",
            &src,
            "-o",
            out,
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        sb.d2v_wrapped(&wrapper, args)
    };
    let r = build("-Sn 1024", "vm.raw");
    assert!(r.status.success(), "{}", r.stderr);
    let r = build("-n 512", "low.raw");
    assert_clean_failure(
        &r,
        &[
            "10000 layer blob files",
            "open-files limit is 512",
            "ulimit -n",
        ],
    );
    assert!(!sb.out_file("low.raw").exists());
}

/// An index of 10 000 manifests: the platform asked for is found among them; an index past
/// the 4 MiB manifest limit is refused as oversized.
#[test]
fn an_index_of_ten_thousand_entries() {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let img = oci::write_image(&dir, &tiny("base", "debian", true, Compression::Gzip)).unwrap();
    let mut entries: Vec<serde_json::Value> = (0..9_999)
        .map(|i| {
            let mut d = img.descriptor.clone();
            d["platform"] = serde_json::json!({"os": "linux", "architecture": format!("arch{i}")});
            d
        })
        .collect();
    entries.push(img.descriptor.clone());
    let index = |entries: &[serde_json::Value]| {
        let index = serde_json::json!({"schemaVersion": 2,
            "mediaType": oci::INDEX_MEDIA_TYPE, "manifests": entries});
        let (digest, size) = oci::write_blob(&dir, &serde_json::to_vec(&index).unwrap()).unwrap();
        assert!(size < 4 << 20 || entries.len() > 10_000, "{size}");
        serde_json::json!({"mediaType": oci::INDEX_MEDIA_TYPE, "digest": digest, "size": size})
    };
    oci::add_to_index(&dir, index(&entries), Some("many")).unwrap();
    let (v, _) = inspected(&sb, &oci_src(&dir, "many"), "index of 10 000");
    assert_eq!(v["platform"], "linux/amd64");

    let big: Vec<serde_json::Value> = std::iter::repeat_n(entries[0].clone(), 40_000).collect();
    oci::add_to_index(&dir, index(&big), Some("huge")).unwrap();
    inspect_refused(&sb, &oci_src(&dir, "huge"), &["larger than", "4194304"]);
}

/// A config whose `history` is most of the 32 MiB config limit is read; one past the limit is
/// refused as oversized, before it is parsed.
#[test]
fn a_config_with_a_huge_history() {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    oci::write_image(&dir, &tiny("v1", "debian", true, Compression::Gzip)).unwrap();
    let history = |n: usize| {
        let entry = serde_json::json!({"created_by": "RUN ".to_string() + &"x".repeat(1000)});
        serde_json::Value::Array(vec![entry; n])
    };
    rewrite_config(&dir, "v1", |c| c["history"] = history(30_000));
    let src = oci_src(&dir, "v1");
    inspected(&sb, &src, "30 MB history");

    rewrite_config(&dir, "v1", |c| c["history"] = history(40_000));
    inspect_refused(&sb, &src, &["larger than", "33554432"]);
}

/// `d2v inspect --json` of `src` with a fresh cache, which must succeed: its JSON and peak RSS
/// (KiB), both printed with the time under `what`.
fn inspected(sb: &Sandbox, src: &str, what: &str) -> (serde_json::Value, u64) {
    let cache = sb.fresh_cache();
    let args = [
        "inspect",
        src,
        "--json",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let (r, rss, took) = sb.d2v_measured(args);
    assert!(r.status.success(), "{what}: {}", r.stderr);
    eprintln!("{what}: inspect in {took:?}, peak RSS {rss} KiB");
    let v = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{what}: {e}"));
    (v, rss)
}

/// `d2v inspect` of `src` with a fresh cache fails cleanly, its error holding `expect`.
fn inspect_refused(sb: &Sandbox, src: &str, expect: &[&str]) {
    let cache = sb.fresh_cache();
    let r = sb.d2v(["inspect", src, "--cache-dir", cache.to_str().unwrap()]);
    assert_clean_failure(&r, expect);
}

/// A PAX extended header of 64 MiB (one xattr record) in an uncompressed layer: the tar reader
/// would hold all of it in memory; refused past 1 MiB, as Go's archive/tar does, before it is.
#[test]
fn a_huge_pax_header_is_refused_before_it_is_in_memory() {
    let record = vec![b'v'; 64 << 20];
    let layer = tar(&[Entry::file("etc/big", "x\n").xattr("user.big", &record)]);
    drop(record);
    let b = with_layer(layer, Compression::None);
    let (out, cache) = (b.sb.out_file("vm.ova"), b.sb.fresh_cache());
    let (out, cache) = (out.to_str().unwrap(), cache.to_str().unwrap());
    let (r, rss, took) =
        b.sb.d2v_measured(["build", &b.src, "-o", out, "--cache-dir", cache]);
    eprintln!("64 MiB PAX header: refused in {took:?}, peak RSS {rss} KiB");
    b.refused(&r, &["PAX extended header", "1048576"]);
    assert!(rss < 48 << 10, "peak RSS {rss} KiB");
}
