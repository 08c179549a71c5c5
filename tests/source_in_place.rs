//! Local sources are read in place, through the real `d2v` binary: `oci:`, `dir:`,
//! `oci-archive:` and `docker-archive:` (the last three made by skopeo from a tiny Debian
//! layout) build without writing a blob anywhere — the blob cache (`XDG_CACHE_HOME`) and
//! `TMPDIR` stay empty — and a layer blob corrupted in place (same size, so only its digest
//! tells) is refused by name, leaving no output.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::cli::*;
use testkit::oci::Compression;

const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// One local source of the tiny Debian image, and where its first layer's bytes are.
struct Local {
    src: String,
    /// The file holding the first layer blob, its offset and size there.
    layer: (PathBuf, u64, u64),
    /// How d2v names that layer: its digest (a docker archive's uncompressed layer: its
    /// diff_id, which is its digest).
    digest: String,
}

fn skopeo(from: &str, to: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", from, to])
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where member `name` of the tar archive `file` starts, and its size.
fn member(file: &Path, name: &str) -> (u64, u64) {
    let mut ar = tar::Archive::new(std::fs::File::open(file).unwrap());
    for e in ar.entries_with_seek().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            return (e.raw_file_position(), e.size());
        }
    }
    panic!("{name} is not in {}", file.display());
}

/// The tiny Debian image (gzip layers) as each local transport has it.
fn sources(sb: &Sandbox) -> Vec<Local> {
    let lay = sb.path("in/oci");
    let img = write_tiny(&lay, "v1", "debian", true, Compression::Gzip);
    let l0 = &img.layers[0];
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let oci = oci_src(&lay, "v1");
    let (dir, oa, da) = (
        sb.path("in/dir"),
        sb.path("in/oa.tar"),
        sb.path("in/da.tar"),
    );
    skopeo(&oci, &format!("dir:{}", dir.display()));
    skopeo(&oci, &format!("oci-archive:{}:v1", oa.display()));
    skopeo(&oci, &format!("docker-archive:{}:app:v1", da.display()));
    // skopeo stores a docker archive's layers uncompressed, named by their diff_id.
    let (oa_at, oa_size) = member(&oa, &format!("blobs/sha256/{}", hex(&l0.digest)));
    let (da_at, da_size) = member(&da, &format!("{}.tar", hex(&l0.diff_id)));
    vec![
        Local {
            src: oci,
            layer: (l0.path.clone(), 0, l0.size),
            digest: l0.digest.clone(),
        },
        Local {
            src: format!("dir:{}", dir.display()),
            layer: (dir.join(hex(&l0.digest)), 0, l0.size),
            digest: l0.digest.clone(),
        },
        Local {
            src: format!("oci-archive:{}:v1", oa.display()),
            layer: (oa, oa_at, oa_size),
            digest: l0.digest.clone(),
        },
        Local {
            src: format!("docker-archive:{}", da.display()),
            layer: (da, da_at, da_size),
            digest: l0.diff_id.clone(),
        },
    ]
}

/// Flips 64 bytes in the middle of `len` bytes at `at` of `file`; returns what was there.
fn corrupt(file: &Path, at: u64, len: u64) -> Vec<u8> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mid = at + len / 2;
    let mut good = vec![0; 64];
    f.seek(SeekFrom::Start(mid)).unwrap();
    std::io::Read::read_exact(&mut f, &mut good).unwrap();
    let bad: Vec<u8> = good.iter().map(|b| b ^ 0xa5).collect();
    f.seek(SeekFrom::Start(mid)).unwrap();
    f.write_all(&bad).unwrap();
    good
}

#[test]
fn local_sources_write_no_blob_anywhere() {
    let sb = Sandbox::new(D2V);
    let tmp = sb.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp_env = [("TMPDIR", tmp.to_str().unwrap())];
    for local in sources(&sb) {
        let out = sb.out_file("vm.ova");
        let r = sb.d2v_env(
            [
                "build".as_ref(),
                local.src.as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            &tmp_env,
        );
        assert!(r.status.success(), "{}: {}", local.src, r.stderr);
        let r = sb.d2v_env(["inspect", &local.src, "--json"], &tmp_env);
        assert!(r.status.success(), "{}: {}", local.src, r.stderr);
        // XDG_CACHE_HOME is the sandbox's cache directory: nothing was written there.
        let cached = testkit::files_under(&sb.path("cache"));
        assert!(cached.is_empty(), "{}: {cached:?}", local.src);
        let spilled = testkit::files_under(&tmp);
        assert!(spilled.is_empty(), "{}: {spilled:?}", local.src);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn a_blob_corrupted_in_place_is_refused_by_name() {
    let sb = Sandbox::new(D2V);
    for local in sources(&sb) {
        let (file, at, len) = &local.layer;
        let good = corrupt(file, *at, *len);
        let r = sb.d2v([
            "build".as_ref(),
            local.src.as_ref(),
            "-o".as_ref(),
            sb.out_file("vm.ova").as_os_str(),
        ]);
        assert_clean_failure(&r, &[&local.digest]);
        assert!(
            r.stderr.contains("mismatch") || r.stderr.contains("corrupt"),
            "{}: {}",
            local.src,
            r.stderr
        );
        assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
        assert!(testkit::files_under(&sb.path("cache")).is_empty());
        // Put back, the source builds again.
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.seek(SeekFrom::Start(at + len / 2)).unwrap();
        f.write_all(&good).unwrap();
    }
}
