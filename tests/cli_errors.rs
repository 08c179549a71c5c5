//! Bad input through the real `d2v` binary: every case must give exit status 1, a
//! `d2v: error:` message on stderr naming the thing and what to do, no panic, nothing on
//! stdout, and no output file left behind. Images are tiny hand-made OCI layouts (testkit's
//! layout writer and tar builder); registry cases use Debian's docker-registry via testkit.

use std::ffi::OsString;
use std::path::Path;

use testkit::cli::*;
use testkit::oci::{self, Compression, ImageSpec};
use testkit::registry::{Kind, Registry, PASSWORD};
use testkit::tar::{tar, Entry};

/// The d2v binary cargo built for these tests.
const D2V: &str = env!("CARGO_BIN_EXE_d2v");

/// `d2v ARGS` must fail naming `needles`, leaving the output directory empty.
fn fails_leaving_nothing(sb: &Sandbox, args: &[OsString], needles: &[&str]) -> Run {
    let r = sb.d2v(args);
    assert_clean_failure(&r, needles);
    assert!(
        sb.out_listing().is_empty(),
        "a failed run left {:?} in the output directory\n{}",
        sb.out_listing(),
        r.stderr
    );
    r
}

/// `d2v build SRC -o out/vm.ova --cache-dir cache` must fail naming `needles`, leaving the
/// output directory empty.
fn build_fails(sb: &Sandbox, src: &str, extra: &[&str], needles: &[&str]) -> Run {
    let (out, cache) = (sb.out_file("vm.ova"), sb.fresh_cache());
    let mut args: Vec<OsString> = vec!["build".into(), src.into(), "-o".into(), out.into()];
    args.extend(["--cache-dir".into(), cache.into()]);
    args.extend(extra.iter().map(OsString::from));
    fails_leaving_nothing(sb, &args, needles)
}

/// `d2v build SRC --format FORMAT -o OUT`.
fn build_as(sb: &Sandbox, src: &str, format: &str, out: &Path) -> Run {
    sb.d2v([
        "build".as_ref(),
        src.as_ref(),
        "--format".as_ref(),
        format.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
}

/// `d2v inspect SRC` must fail naming `needles`.
fn inspect_fails(sb: &Sandbox, src: &str, extra: &[&str], needles: &[&str]) -> Run {
    let cache = sb.fresh_cache();
    let mut args: Vec<String> = vec!["inspect".into(), src.into(), "--cache-dir".into()];
    args.push(cache.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let r = sb.d2v(&args);
    assert_clean_failure(&r, needles);
    r
}

/// `d2v export SRC -o out/rootfs.tar` must fail naming `needles` and leave no tar behind.
fn export_fails(sb: &Sandbox, src: &str, needles: &[&str]) -> Run {
    let (out, cache) = (sb.out_file("rootfs.tar"), sb.fresh_cache());
    let mut args: Vec<OsString> = vec!["export".into(), src.into(), "-o".into(), out.into()];
    args.extend(["--cache-dir".into(), cache.into()]);
    fails_leaving_nothing(sb, &args, needles)
}

fn layout(
    sb: &Sandbox,
    os_id: &str,
    kernel: bool,
    c: Compression,
) -> (std::path::PathBuf, oci::WrittenImage) {
    let dir = sb.path("in/oci");
    let img = write_tiny(&dir, "v1", os_id, kernel, c);
    (dir, img)
}

/// A sandbox holding the tiny Debian image (a kernel; layers compressed with `c`) as `v1` in
/// its layout `in/oci`, and the `oci:` source that names it.
struct Debian {
    sb: Sandbox,
    dir: std::path::PathBuf,
    img: oci::WrittenImage,
    src: String,
}

fn debian_image(c: Compression) -> Debian {
    let sb = Sandbox::new(D2V);
    let (dir, img) = layout(&sb, "debian", true, c);
    let src = oci_src(&dir, "v1");
    Debian { sb, dir, img, src }
}

/// A sandbox holding, as `v1` in its layout `in/oci`, the tiny Debian image's base layer (gzip)
/// under `layer` (compressed with `c`).
fn debian_with_layer(layer: Vec<u8>, c: Compression) -> Debian {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let img = debian_with_layer_at(&dir, layer, c);
    let src = oci_src(&dir, "v1");
    Debian { sb, dir, img, src }
}

/// A registry of `kind` serving the tiny Debian image as `repo_tag`, pushed from the sandbox's
/// layout; `src` names it in the registry.
fn debian_in_registry(kind: Kind, repo_tag: &str) -> (Registry, Debian) {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let spec = tiny("v1", "debian", true, Compression::Gzip);
    let (reg, img) = Registry::with_image(kind, &dir, &spec, repo_tag);
    let src = format!("{}/{repo_tag}", reg.host);
    (reg, Debian { sb, dir, img, src })
}

#[test]
fn unknown_transport() {
    let sb = Sandbox::new(D2V);
    for src in [
        "docker-daemon:app:latest",
        "ftp://example.com/app:1",
        "containers-storage:app",
    ] {
        let t = src.split(':').next().unwrap();
        // Names the transport and lists the ones d2v reads.
        let r = inspect_fails(&sb, src, &[], &[t, "docker://", "oci:", "docker-archive:"]);
        assert!(r.stderr.contains("transport"), "{}", r.stderr);
        build_fails(&sb, src, &[], &[t, "oci:"]);
    }
}

/// Which registries.conf is read: `--registries-conf`, else `$CONTAINERS_REGISTRIES_CONF`,
/// else the user's (`~/.config/containers/registries.conf`, with drop-ins); a blocked
/// registry and a malformed file are named.
#[test]
fn registries_conf_files_block_and_are_named() {
    let sb = Sandbox::new(D2V);
    let blocked = |host: &str| format!("[[registry]]\nlocation = \"{host}\"\nblocked = true\n");
    let user = sb.path("home/.config/containers");
    std::fs::create_dir_all(user.join("registries.conf.d")).unwrap();
    std::fs::write(user.join("registries.conf"), blocked("a.example")).unwrap();
    std::fs::write(
        user.join("registries.conf.d/50-b.conf"),
        blocked("b.example"),
    )
    .unwrap();
    let user_conf = user.join("registries.conf");
    let user_conf = user_conf.to_str().unwrap();
    inspect_fails(
        &sb,
        "a.example/app:1",
        &[],
        &["a.example/app:1", "blocked", user_conf],
    );
    inspect_fails(
        &sb,
        "b.example/app:1",
        &[],
        &["b.example/app:1", "blocked", "50-b.conf"],
    );
    build_fails(&sb, "a.example/app:1", &[], &["blocked"]);

    // An explicit file replaces them all (drop-ins included).
    let other = sb.path("other.conf");
    std::fs::write(&other, blocked("c.example")).unwrap();
    let flag = ["--registries-conf", other.to_str().unwrap()];
    inspect_fails(
        &sb,
        "c.example/app:1",
        &flag,
        &["blocked", other.to_str().unwrap()],
    );
    let r = sb.d2v_env(
        [
            "inspect",
            "c.example/app:1",
            "--cache-dir",
            sb.fresh_cache().to_str().unwrap(),
        ],
        &[("CONTAINERS_REGISTRIES_CONF", other.to_str().unwrap())],
    );
    assert_clean_failure(&r, &["blocked", other.to_str().unwrap()]);

    std::fs::write(&other, "[[registry]]\nlocation = [\n").unwrap();
    inspect_fails(
        &sb,
        "c.example/app:1",
        &flag,
        &["registries configuration", other.to_str().unwrap()],
    );
    let missing = sb.path("missing.conf");
    inspect_fails(
        &sb,
        "c.example/app:1",
        &["--registries-conf", missing.to_str().unwrap()],
        &["no such file", missing.to_str().unwrap()],
    );
}

#[test]
fn malformed_reference() {
    let sb = Sandbox::new(D2V);
    for (src, named) in [
        ("Docker.io/Library/UPPER", "Docker.io/Library/UPPER"),
        ("debian:bad tag!", "bad tag!"),
        ("debian@sha256:1234", "sha256:1234"),
        ("docker://", "docker://"),
        ("oci:", "oci"),
    ] {
        let r = inspect_fails(&sb, src, &[], &[named]);
        assert!(
            r.stderr.to_lowercase().contains("reference")
                || r.stderr.to_lowercase().contains("invalid"),
            "{}",
            r.stderr
        );
        build_fails(&sb, src, &[], &[named]);
    }
}

#[test]
fn missing_oci_directory_and_tag() {
    let sb = Sandbox::new(D2V);
    let missing = sb.path("in/no-such-layout");
    let src = oci_src(&missing, "v1");
    build_fails(&sb, &src, &[], &[&missing.display().to_string()]);

    let (dir, _) = layout(&sb, "debian", true, Compression::Gzip);
    // The tag is named, and so are the tags that exist.
    inspect_fails(&sb, &oci_src(&dir, "nope"), &[], &["nope"]);
    build_fails(&sb, &oci_src(&dir, "nope"), &[], &["nope"]);
}

#[test]
fn registry_missing_tag_is_a_404() {
    let (reg, Debian { sb, .. }) = debian_in_registry(Kind::Plain, "test/app:v1");
    let src = format!("{}/test/app:nope", reg.host);
    let r = inspect_fails(&sb, &src, &[], &["test/app", "nope", "not found"]);
    assert!(r.stderr.contains("404"), "{}", r.stderr);
    build_fails(&sb, &src, &[], &["test/app", "nope"]);
    // A missing repository, too.
    inspect_fails(
        &sb,
        &format!("{}/test/ghost:v1", reg.host),
        &[],
        &["test/ghost", "not found"],
    );
    // The same image under the right tag works.
    sb.d2v(["inspect".to_string(), format!("{}/test/app:v1", reg.host)])
        .ok();
}

#[test]
fn registry_tampered_layer_and_pull() {
    let (reg, Debian { sb, img, src, .. }) = debian_in_registry(Kind::Plain, "test/app:v1");
    // `d2v pull` of the intact image works (and writes only its output).
    let out = sb.out_file("pulled.ova");
    sb.d2v([
        "pull".as_ref(),
        src.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--root-free".as_ref(),
        "16M".as_ref(),
        "--cache-dir".as_ref(),
        sb.fresh_cache().as_os_str(),
    ])
    .ok();
    assert_eq!(sb.out_listing(), ["pulled.ova"]);
    std::fs::remove_file(&out).unwrap();
    // One byte of a layer changed in the registry's storage: pull fails naming the blob.
    let victim = &img.layers[0].digest;
    let p = reg.blob_data(victim);
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&p, &b).unwrap();
    let r = sb.d2v([
        "pull".as_ref(),
        src.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--cache-dir".as_ref(),
        sb.fresh_cache().as_os_str(),
    ]);
    assert_clean_failure(&r, &[victim, "digest mismatch"]);
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
}

#[test]
fn registry_401_without_creds_ok_with_creds() {
    let (reg, Debian { sb, img, src, .. }) = debian_in_registry(Kind::Token, "private/app:v1");

    let r = inspect_fails(&sb, &src, &[], &["private/app", "401", "--creds"]);
    assert!(!r.stderr.contains(PASSWORD));
    build_fails(&sb, &src, &[], &["private/app", "--creds"]);

    // Wrong password: refused, and the password is never printed (even with -v).
    let wrong = "d2vtest:wrong-pass-xyz";
    let r = inspect_fails(&sb, &src, &["--creds", wrong, "-v"], &["private/app"]);
    assert!(
        !r.stderr.contains("wrong-pass-xyz"),
        "secret printed:\n{}",
        r.stderr
    );

    // Right credentials: the manifest digest the registry serves is reported.
    let creds = reg.creds().unwrap();
    let ok = sb
        .d2v(["inspect", &src, "--creds", &creds, "-v", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("inspect --json");
    assert!(
        json_has_string(&v, &reg.digest("private/app:v1"))
            || json_has_string(&v, &img.manifest_digest),
        "{v:#}"
    );
    assert!(
        !ok.stderr.contains(PASSWORD),
        "secret printed:\n{}",
        ok.stderr
    );
}

#[test]
fn no_manifest_for_the_platform() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    // Names what was asked, what exists, and the option to choose.
    let arm = ["--platform", "linux/arm64"];
    inspect_fails(
        &sb,
        &src,
        &arm,
        &["linux/arm64", "linux/amd64", "--platform"],
    );
    build_fails(&sb, &src, &arm, &["linux/arm64", "linux/amd64"]);
    // A malformed platform is a clear error too.
    inspect_fails(&sb, &src, &["--platform", "amd64"], &["amd64", "os/arch"]);
}

/// Flips bytes in the middle of a compressed stream (not in its header).
fn corrupt_middle(mut b: Vec<u8>) -> Vec<u8> {
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 64] {
        *x ^= 0xa5;
    }
    b
}

/// The Debian image with its first layer (compressed with `c`) corrupt in the middle: build
/// and export fail naming that blob, blamed on the layer, not on d2v's own spill file.
/// Returns the image and the corrupt blob's digest.
fn corrupt_first_layer(c: Compression) -> (Debian, String) {
    let d = debian_image(c);
    let good = std::fs::read(&d.img.layers[0].path).unwrap();
    let bad = replace_layer_blob(&d.dir, "v1", 0, &corrupt_middle(good));
    let r = build_fails(&d.sb, &d.src, &[], &[&bad, "corrupt"]);
    assert!(!r.stderr.contains("spill"), "{}", r.stderr);
    export_fails(&d.sb, &d.src, &[&bad]);
    (d, bad)
}

#[test]
fn corrupt_gzip_layer() {
    let (Debian { sb, dir, src, .. }, bad) = corrupt_first_layer(Compression::Gzip);
    inspect_fails(&sb, &src, &[], &[&bad]);

    // Not gzip at all under a gzip media type: the magic bytes are checked.
    let plain = replace_layer_blob(&dir, "v1", 0, &base_layer("debian", true));
    build_fails(&sb, &src, &[], &[&plain, "gzip"]);
}

#[test]
fn corrupt_zstd_layer() {
    corrupt_first_layer(Compression::Zstd);
}

#[test]
fn truncated_blob() {
    let Debian { sb, dir, img, src } = debian_image(Compression::Gzip);
    // The blob file is shorter than the manifest says.
    let l = &img.layers[0];
    let b = std::fs::read(&l.path).unwrap();
    std::fs::write(&l.path, &b[..b.len() / 2]).unwrap();
    build_fails(&sb, &src, &[], &[&l.digest]);
    export_fails(&sb, &src, &[&l.digest]);
    std::fs::write(&l.path, &b).unwrap();

    // A truncated gzip stream stored under its own (correct) digest: the stream ends early.
    let cut = replace_layer_blob(&dir, "v1", 0, &b[..b.len() * 2 / 3]);
    build_fails(&sb, &src, &[], &[&cut]);

    // The same for zstd.
    let zdir = sb.path("in/oci-zstd");
    let zimg = write_tiny(&zdir, "v1", "debian", true, Compression::Zstd);
    let zb = std::fs::read(&zimg.layers[0].path).unwrap();
    let zcut = replace_layer_blob(&zdir, "v1", 0, &zb[..zb.len() * 2 / 3]);
    build_fails(&sb, &oci_src(&zdir, "v1"), &[], &[&zcut]);
}

#[test]
fn digest_mismatch() {
    let Debian { sb, dir, img, src } = debian_image(Compression::Gzip);
    // One byte of the second layer changed in place (same size): only the digest tells.
    let l = &img.layers[1];
    let good = std::fs::read(&l.path).unwrap();
    let mut b = good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&l.path, &b).unwrap();
    let r = build_fails(&sb, &src, &[], &[&l.digest, "digest"]);
    assert!(
        r.stderr.contains("mismatch") || r.stderr.contains("corrupt"),
        "{}",
        r.stderr
    );
    export_fails(&sb, &src, &[&l.digest]);
    inspect_fails(&sb, &src, &[], &[&l.digest]);
    std::fs::write(&l.path, &good).unwrap();

    // A tampered config.
    let (_, m) = manifest_of(&dir, "v1");
    let cfg = m["config"]["digest"].as_str().unwrap().to_string();
    let cp = oci::blob_path(&dir, &cfg);
    let good_cfg = std::fs::read(&cp).unwrap();
    let tampered = String::from_utf8(good_cfg.clone())
        .unwrap()
        .replace("D2V_TEST=1", "D2V_TEST=2");
    std::fs::write(&cp, tampered).unwrap();
    build_fails(&sb, &src, &[], &[&cfg]);
    std::fs::write(&cp, &good_cfg).unwrap();

    // Every blob verifies, but a layer's uncompressed content does not match the config's
    // diff_id: d2v must read every layer to its end and check it.
    rewrite_config(&dir, "v1", |c| {
        c["rootfs"]["diff_ids"][1] = sha256(b"something else").into();
    });
    build_fails(&sb, &src, &[], &["diff_id"]);
    export_fails(&sb, &src, &["diff_id"]);

    // Fewer diff_ids than layers.
    rewrite_config(&dir, "v1", |c| {
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    });
    build_fails(&sb, &src, &[], &["diff_id"]);
}

#[test]
fn oversized_manifest() {
    let Debian { sb, dir, .. } = debian_image(Compression::Gzip);
    rewrite_manifest(&dir, "v1", |m| {
        m["annotations"] = serde_json::json!({"padding": "x".repeat(9 << 20)});
    });
    inspect_fails(&sb, &oci_src(&dir, "v1"), &[], &["manifest", "larger than"]);
}

#[test]
fn unsafe_paths_in_a_layer() {
    for evil in ["../etc/passwd", "usr/../../etc/shadow", "./../../x"] {
        let evil_layer = tar(&[
            Entry::file("etc/motd", "ok\n"),
            Entry::file(evil, "root::0:0::/:/bin/sh\n"),
        ]);
        let Debian { sb, img, src, .. } = debian_with_layer(evil_layer, Compression::Gzip);
        let layer = &img.layers[1].digest;
        let r = build_fails(&sb, &src, &[], &[evil, layer]);
        assert!(
            r.stderr.contains("..") && (r.stderr.contains("escape") || r.stderr.contains("refus")),
            "{}",
            r.stderr
        );
        export_fails(&sb, &src, &[evil, layer]);
        inspect_fails(&sb, &src, &[], &[evil]);
    }
}

#[test]
fn image_without_a_kernel_fails_early_naming_the_package() {
    for (os, package) in [
        ("debian", "linux-image-cloud-amd64"),
        ("alpine", "linux-virt"),
    ] {
        let sb = Sandbox::new(D2V);
        let (dir, _) = layout(&sb, os, false, Compression::Gzip);
        let r = build_fails(&sb, &oci_src(&dir, "v1"), &[], &["kernel", package]);
        // With --json too: nothing on stdout, the error on stderr.
        build_fails(&sb, &oci_src(&dir, "v1"), &["--json"], &["kernel", package]);
        // Early: before any disk or output is written (no vmdk/ovf progress, nothing left).
        assert!(!r.stderr.contains("holding output"), "{}", r.stderr);
        // inspect reports it without failing.
        let ok = sb.d2v(["inspect", &oci_src(&dir, "v1"), "--json"]).ok();
        let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
        let kernels = json_find(&v, "kernels").expect("kernels in the report");
        assert_eq!(kernels.as_array().map(Vec::len), Some(0), "{v:#}");
    }
    // An image with no os-release still gets advice for both families.
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    oci::write_image(
        &dir,
        &ImageSpec::new()
            .layer(tar(&[Entry::file("hello", "world")]), Compression::Gzip)
            .tag("v1"),
    )
    .unwrap();
    build_fails(&sb, &oci_src(&dir, "v1"), &[], &["kernel"]);
}

#[test]
fn missing_output_directory() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    let missing = sb.path("no/such/dir");
    for (format, name) in [
        ("ova", "vm.ova"),
        ("ovf", "vm"),
        ("vmdk", "vm.vmdk"),
        ("raw", "vm.img"),
    ] {
        let out = missing.join(name);
        let r = build_as(&sb, &src, format, &out);
        assert_clean_failure(&r, &[&missing.display().to_string()]);
        assert!(
            r.stderr.contains("director") || r.stderr.contains("exist"),
            "{}",
            r.stderr
        );
        assert!(!sb.path("no").exists(), "d2v created the missing directory");
    }
    // export checks before reading the image: it fails even for a source that is not there.
    let r = sb.d2v([
        "export".as_ref(),
        oci_src(&sb.path("in/absent"), "v1").as_ref(),
        "-o".as_ref(),
        missing.join("rootfs.tar").as_os_str(),
    ]);
    assert_clean_failure(&r, &[&missing.display().to_string(), "does not exist"]);
}

#[test]
fn disk_too_small() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    for (size, needles) in [
        (
            ["--disk-size", "2M"],
            &["--disk-size", "2 MiB", "larger"][..],
        ),
        (["--root-size", "64K"], &["--root-size", "larger"]),
    ] {
        build_fails(&sb, &src, &size, needles);
    }
    // Checked before any disk is written.
    let r = build_fails(&sb, &src, &["--root-size", "1M"], &["--root-size"]);
    assert!(!r.stderr.contains("writing disk"), "{}", r.stderr);
}

#[test]
fn output_path_conflicts_fail_before_reading_the_image() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    let user_dir = sb.out_file("photos");
    std::fs::create_dir(&user_dir).unwrap();
    std::fs::write(user_dir.join("holiday.jpg"), b"precious").unwrap();
    let a_file = sb.out_file("notes.txt");
    std::fs::write(&a_file, b"notes").unwrap();
    let check = |format: &str, out: &Path, needles: &[&str]| {
        let r = build_as(&sb, &src, format, out);
        assert_clean_failure(&r, needles);
        // Checked first: no image was read.
        assert!(!r.stderr.contains("applied"), "{}", r.stderr);
    };
    // An ovf output never replaces a directory of other files (it would delete them).
    check("ovf", &user_dir, &["photos", "holiday.jpg", "-o"]);
    assert_eq!(
        std::fs::read(user_dir.join("holiday.jpg")).unwrap(),
        b"precious"
    );
    for f in ["ova", "vmdk", "raw"] {
        check(f, &user_dir, &["photos", "directory"]);
    }
    check("ovf", &a_file, &["notes.txt", "not a directory"]);
    check("ova", Path::new("."), &["\".\"", "-o"]);
    let r = sb.d2v([
        "export".as_ref(),
        src.as_ref(),
        "-o".as_ref(),
        user_dir.as_os_str(),
    ]);
    assert_clean_failure(&r, &["photos", "directory"]);
    assert_eq!(
        sb.out_listing(),
        ["notes.txt", "photos"],
        "outputs or temporaries left"
    );
    assert_eq!(ls(&user_dir), ["holiday.jpg"]);
}

#[test]
fn full_stdout_is_an_error_not_a_panic() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    for args in [
        vec!["inspect", &src, "--json"],
        vec!["inspect", &src],
        vec!["export", &src, "-o", "-"],
    ] {
        let r = sb.d2v_stdout_full(&args);
        assert_clean_failure(&r, &["stdout", "No space left"]);
    }
}

#[test]
fn invalid_option_values_fail_before_reading_the_image() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    for (opt, value, needles) in [
        (
            "--hostname",
            "evil\nhost",
            &["--hostname", "valid hostname"][..],
        ),
        ("--hostname", "my host", &["--hostname", "my host"][..]),
        // A newline would add lines to the generated grub.cfg.
        (
            "--kernel-arg",
            "quiet\n}\nmenuentry x {",
            &["--kernel-arg", "one line"][..],
        ),
        ("--cpus", "0", &["--cpus", "1 to"][..]),
        ("--memory", "1M", &["--memory", "4 MiB"][..]),
        ("--name", "", &["--name", "non-empty"][..]),
        ("--fs-uuid", "not-a-uuid", &["--fs-uuid", "not-a-uuid"][..]),
        ("--memory", "100T", &["--memory", "24 TiB"][..]),
        ("--boot-size", "1M", &["--boot-size", "40 MiB"][..]),
        ("--root-size", "100T", &["--root-size", "62 TiB"][..]),
        ("--disk-size", "63T", &["--disk-size", "62 TiB"][..]),
    ] {
        let r = build_fails(&sb, &src, &[opt, value], needles);
        if opt != "--fs-uuid" {
            assert!(!r.stderr.contains("applied"), "{}", r.stderr);
        }
    }
}

#[test]
fn bad_properties_fail_before_reading_the_image() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    for (args, needles) in [
        (
            &["--property", "novalue"][..],
            &["--property", "KEY=VALUE"][..],
        ),
        (&["--property", "=v"], &["--property", "key is empty"]),
        (&["--property", "a.b=v"], &["\"a.b\"", "'.'"]),
        (
            &["--property", "a=1", "--property", "a=2"],
            &["\"a\"", "twice"],
        ),
        (
            &["--property-label", "nope=Label"],
            &["--property-label", "no property \"nope\""],
        ),
        (
            &["--cloud-init", "--format", "vmdk"],
            &["--format vmdk", "ova or ovf"],
        ),
    ] {
        let r = build_fails(&sb, &src, args, needles);
        assert!(!r.stderr.contains("applied"), "{}", r.stderr);
    }
}

#[test]
fn bad_archives_and_cache_dir() {
    let sb = Sandbox::new(D2V);
    let garbage = sb.path("in/garbage.tar");
    std::fs::write(&garbage, noise(9, 5000)).unwrap();
    for t in ["docker-archive", "oci-archive"] {
        let src = format!("{t}:{}", garbage.display());
        let r = build_fails(&sb, &src, &[], &["garbage.tar"]);
        assert_printable(&r.stderr, t);
        let missing = sb.path("in/missing.tar");
        build_fails(
            &sb,
            &format!("{t}:{}", missing.display()),
            &[],
            &["missing.tar"],
        );
    }
    // The cache is for registries (a local source is read in place, its --cache-dir unused):
    // one that cannot be used is named before anything is fetched.
    let r = sb.d2v([
        "inspect".as_ref(),
        "127.0.0.1:9/app:v1".as_ref(),
        "--cache-dir".as_ref(),
        garbage.as_os_str(),
    ]);
    assert_clean_failure(&r, &["garbage.tar", "--cache-dir"]);
    let (dir, _) = layout(&sb, "debian", true, Compression::Gzip);
    let r = sb.d2v([
        "inspect".as_ref(),
        oci_src(&dir, "v1").as_ref(),
        "--cache-dir".as_ref(),
        garbage.as_os_str(),
    ]);
    assert!(r.status.success(), "{}", r.stderr);
}

/// No raw binary bytes dumped on the terminal: `stderr` is lines of printable ASCII.
fn assert_printable(stderr: &str, what: &str) {
    assert!(
        stderr
            .chars()
            .all(|c| c == '\n' || (c.is_ascii() && !c.is_ascii_control())),
        "{what}: binary bytes in the message: {stderr:?}"
    );
}

#[test]
fn malformed_layer_tars() {
    let mut truncated = tar(&[Entry::file("big", vec![7u8; 100_000])]);
    truncated.truncate(5000);
    let mut bad_sum = tar(&[Entry::file("ok", "x")]);
    bad_sum[148] = b'9';
    for (what, layer, needles) in [
        ("garbage", noise(5, 4096), &["tar"][..]),
        ("truncated", truncated, &["truncated"][..]),
        ("bad checksum", bad_sum, &["tar"][..]),
        (
            "hardlink to nothing",
            tar(&[Entry::hardlink("etc/x", "does/not/exist")]),
            &["etc/x", "does/not/exist"][..],
        ),
    ] {
        let Debian { sb, img, src, .. } = debian_with_layer(layer, Compression::None);
        let digest = &img.layers[1].digest;
        let mut n = needles.to_vec();
        n.push(digest);
        let r = build_fails(&sb, &src, &[], &n);
        assert_printable(&r.stderr, what);
        export_fails(&sb, &src, &[digest]);
    }
}

#[test]
fn argument_parser_errors_name_the_value() {
    let sb = Sandbox::new(D2V);
    for (args, named) in [
        (&["build", "x", "--format", "zip"][..], "zip"),
        (&["build", "x", "--disk-size", "10Q"][..], "10Q"),
        (&["build", "x", "--disk-size", "99999999T"][..], "too large"),
        (&["build", "x", "--compression-level", "12"][..], "12"),
        (&["build", "x", "--hw-version", "16"][..], "16"),
        (&["build", "x", "--os-type", "debian"][..], "guest ID"),
        (&["build"][..], "<SOURCE>"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let r = sb.d2v(args);
        let e = &r.stderr;
        // clap's usage errors exit with 2; never a panic, never a success.
        assert_eq!(r.status.code(), Some(2), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert!(e.contains("error:") && e.contains(named), "{args:?}: {e}");
        assert!(r.stdout.is_empty());
    }
    // An unknown hardware version: the versions vSphere has are listed.
    let e = sb.d2v(["build", "x", "--hw-version", "12"]).stderr;
    assert!(e.contains("13, 14, 15, 17, 18, 19, 20, 21"), "{e}");
}

#[test]
fn missing_blob_in_a_layout() {
    let Debian { sb, dir, img, src } = debian_image(Compression::Gzip);
    std::fs::remove_file(&img.layers[1].path).unwrap();
    build_fails(&sb, &src, &[], &[&img.layers[1].digest, "missing", "copy"]);
    std::fs::remove_file(oci::blob_path(&dir, &img.config_digest)).unwrap();
    inspect_fails(&sb, &src, &[], &[&img.config_digest, "missing"]);
}

#[test]
fn tls_registry_with_a_private_ca() {
    let (reg, Debian { sb, img, src, .. }) = debian_in_registry(Kind::TlsBasic, "secure/app:v1");
    let creds = reg.creds().unwrap();
    // Unknown CA: says TLS failed and how to trust the CA.
    let r = inspect_fails(&sb, &src, &["--creds", &creds], &["TLS", "--cert-dir"]);
    assert!(
        !r.stderr.contains(PASSWORD),
        "secret printed:\n{}",
        r.stderr
    );
    let ca = reg.ca_dir().display().to_string();
    // Trusted CA, no credentials: 401 with advice.
    inspect_fails(&sb, &src, &["--cert-dir", &ca], &["secure/app", "--creds"]);
    // A --cert-dir that is not there is an error, not silently ignored.
    let missing = sb.path("no-such-certs").display().to_string();
    inspect_fails(
        &sb,
        &src,
        &["--cert-dir", &missing],
        &["--cert-dir", "no-such-certs"],
    );
    // Both: works.
    let ok = sb
        .d2v([
            "inspect",
            &src,
            "--cert-dir",
            &ca,
            "--creds",
            &creds,
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(json_has_string(&v, &img.layers[0].digest), "{v:#}");
}

/// An image without GRUB on a host without GRUB (its /usr/lib/grub hidden under an empty tmpfs
/// in a mount namespace of d2v's own, so other tests still see it): the error names the
/// Debian packages to install.
#[test]
fn no_grub_modules_in_the_image_or_on_the_host() {
    let unshare = testkit::require_tool("unshare", "util-linux");
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    let out = sb.out_file("vm.ova");
    let cache = sb.fresh_cache();
    let hide = "mount -t tmpfs none /usr/lib/grub && exec \"$@\"";
    let wrapper = [
        unshare.as_os_str(),
        "--mount".as_ref(),
        "--propagation".as_ref(),
        "private".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        hide.as_ref(),
        "sh".as_ref(),
    ];
    let r = sb.d2v_wrapped(
        &wrapper,
        [
            "build",
            &src,
            "-o",
            out.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert_clean_failure(
        &r,
        &[
            "/usr/lib/grub/i386-pc",
            "neither has this host",
            "grub-pc-bin",
        ],
    );
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
}

/// A tmpfs of `size` mounted at `dir` for the test's lifetime (the tests run as root, as
/// `cargo xtask test` does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        Tmpfs::mount_with(dir, &format!("size={size}"))
    }

    /// With mount options `options` (`ro`, ...).
    fn mount_with(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs on {} failed (root needed)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full filesystem, first where the staging tree's file data goes (TMPDIR), then where the
/// disk image is written (beside the output): the message names the directory and what to do,
/// and nothing is left behind.
#[test]
fn full_filesystem_names_the_directory_and_what_to_do() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    let small = sb.path("small-tmp");
    let _tmp = Tmpfs::mount(&small, "128k");
    let build = |out: &Path, env: &[(&str, &str)]| {
        let (out, cache) = (out.to_str().unwrap(), sb.fresh_cache());
        let args = [
            "build",
            &src,
            "-o",
            out,
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        sb.d2v_env(args, env)
    };
    let r = build(
        &sb.out_file("vm.ova"),
        &[("TMPDIR", small.to_str().unwrap())],
    );
    assert_clean_failure(
        &r,
        &[
            small.to_str().unwrap(),
            "filesystem is full",
            "set TMPDIR",
            "No space left",
        ],
    );
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());

    let small_out = sb.path("small-out");
    let _out = Tmpfs::mount(&small_out, "1m");
    let r = build(&small_out.join("vm.ova"), &[]);
    assert_clean_failure(
        &r,
        &[
            small_out.to_str().unwrap(),
            "filesystem is full",
            "-o",
            "No space left",
        ],
    );
    assert_eq!(
        ls(&small_out),
        Vec::<String>::new(),
        "left in {}",
        small_out.display()
    );
}

/// The proxy comes from the environment as curl and docker read it (HTTPS_PROXY, NO_PROXY):
/// a dead proxy is named in the error (its password never), and NO_PROXY bypasses it.
#[test]
fn proxy_from_the_environment() {
    let sb = Sandbox::new(D2V);
    let cache = sb.fresh_cache();
    let run = |env: &[(&str, &str)]| {
        sb.d2v_env(
            [
                "inspect",
                "registry.test:5000/team/app:v1",
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            env,
        )
    };
    let proxied = run(&[("HTTPS_PROXY", "http://bob:s3cret@127.0.0.1:9")]);
    assert_clean_failure(
        &proxied,
        &[
            "registry.test:5000",
            "through the proxy http://<credentials>@127.0.0.1:9",
            "NO_PROXY",
        ],
    );
    assert!(!proxied.stderr.contains("s3cret"), "{}", proxied.stderr);
    let direct = run(&[
        ("https_proxy", "http://127.0.0.1:9"),
        ("no_proxy", "localhost,.test"),
    ]);
    assert_clean_failure(&direct, &["registry.test:5000"]);
    assert!(!direct.stderr.contains("proxy"), "{}", direct.stderr);
    let bad = run(&[("HTTPS_PROXY", "socks5://127.0.0.1:9")]);
    assert_clean_failure(&bad, &["socks5://127.0.0.1:9", "http://"]);
}

/// The arm64 variant of a multi-platform image (`--platform linux/arm64`), and an image whose
/// config says amd64 but whose content is arm64: refused before anything is written, naming
/// each thing that says so (the config, `/sbin/init`'s ELF machine, the kernel's header).
#[test]
fn an_image_for_another_architecture() {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(18, 0);
    elf.extend_from_slice(&183u16.to_le_bytes());
    elf.resize(4096, 0);
    let mut kernel = vec![0u8; 4096];
    kernel[0x38..0x3C].copy_from_slice(b"ARM\x64");
    let arm_content = || {
        tar(&[
            Entry::file("bin/sh", &elf),
            Entry::file(format!("boot/vmlinuz-{KERNEL_VERSION}"), &kernel),
        ])
    };
    let spec = |arch: &str, tag: &str, arm: bool| {
        let mut s = ImageSpec::new().layer(base_layer("debian", true), Compression::Gzip);
        if arm {
            s = s.layer(arm_content(), Compression::Gzip);
        }
        s.architecture = arch.into();
        s.tag(tag)
    };
    let amd = oci::write_image(&dir, &spec("amd64", "amd", false)).unwrap();
    let arm = oci::write_image(&dir, &spec("arm64", "arm", true)).unwrap();
    oci::write_index(&dir, &[&amd, &arm], "multi").unwrap();
    let r = build_fails(
        &sb,
        &oci_src(&dir, "multi"),
        &["--platform", "linux/arm64"],
        &[
            "architecture is arm64",
            "/sbin/init",
            "aarch64",
            "/boot/vmlinuz-",
            "x86-64",
        ],
    );
    assert!(r.stderr.contains("--platform linux/amd64"), "{}", r.stderr);
    oci::write_image(&dir, &spec("amd64", "mislabelled", true)).unwrap();
    let r = build_fails(
        &sb,
        &oci_src(&dir, "mislabelled"),
        &[],
        &[
            "/sbin/init is an ELF executable for arm64",
            "the kernel /boot/vmlinuz-",
        ],
    );
    assert!(!r.stderr.contains("config"), "{}", r.stderr);
}

/// An output directory that cannot be written (a read-only mount: the tests run as root, for
/// whom a mode of 555 stops nothing): every format fails naming the directory, before the
/// image is read.
#[test]
fn read_only_output_directory() {
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    let ro = sb.path("ro-out");
    let _ro = Tmpfs::mount_with(&ro, "ro,size=64k");
    for (format, name) in [("ova", "vm.ova"), ("ovf", "vm"), ("vmdk", "vm.vmdk")] {
        let r = build_as(&sb, &src, format, &ro.join(name));
        assert_clean_failure(&r, &[ro.to_str().unwrap(), "read-only"]);
        assert!(!r.stderr.contains("applied"), "{}", r.stderr);
    }
    let r = sb.d2v([
        "export".as_ref(),
        src.as_ref(),
        "-o".as_ref(),
        ro.join("rootfs.tar").as_os_str(),
    ]);
    assert_clean_failure(&r, &[ro.to_str().unwrap(), "read-only"]);
    assert_eq!(ls(&ro), Vec::<String>::new());
}

/// The output directory removed while d2v writes (just before the output is committed): the
/// error names the output and says the directory is gone; nothing is recreated.
#[test]
fn output_directory_removed_while_building() {
    use std::io::BufRead;
    let Debian { sb, src, .. } = debian_image(Compression::Gzip);
    for (format, name) in [("ova", "vm.ova"), ("vmdk", "vm.vmdk"), ("ovf", "vm")] {
        let dir = sb.path("vanishing");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(name);
        let mut cmd = sb.command([
            "build".as_ref(),
            src.as_ref(),
            "--format".as_ref(),
            format.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        cmd.env("D2V_TEST_HOLD_BEFORE_COMMIT", "2")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut text = String::new();
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            text += &line;
            if line.contains("holding output before commit") {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            line.clear();
        }
        let status = child.wait().unwrap();
        let ctx = format!("{format}:\n{text}");
        assert!(text.contains("holding output"), "{ctx}");
        assert_eq!(status.code(), Some(1), "{ctx}");
        assert!(!text.contains("panicked"), "{ctx}");
        let first = text
            .lines()
            .find(|l| l.starts_with("d2v: error: "))
            .unwrap_or_else(|| panic!("no error line: {ctx}"));
        assert!(
            first.contains(out.to_str().unwrap()) && first.contains("no longer exists"),
            "{ctx}"
        );
        assert!(!dir.exists(), "d2v recreated {}", dir.display());
    }
}

/// A blob cache on a full filesystem: the download fails naming the cache directory and what
/// to do; nothing half-written is in the cache's blobs (a kept partial download is in tmp/).
#[test]
fn cache_on_a_full_filesystem() {
    let (_reg, Debian { sb, src, .. }) = debian_in_registry(Kind::Plain, "test/app:v1");
    let cache = sb.path("small-cache");
    let _small = Tmpfs::mount(&cache, "24k");
    let r = sb.d2v([
        "build".as_ref(),
        src.as_ref(),
        "-o".as_ref(),
        sb.out_file("vm.ova").as_os_str(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
    ]);
    assert_clean_failure(
        &r,
        &[
            cache.to_str().unwrap(),
            "filesystem is full",
            "--cache-dir",
            "No space left",
        ],
    );
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
    for e in std::fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert_eq!(
            sha256(&std::fs::read(e.path()).unwrap()),
            format!("sha256:{name}"),
            "a blob in the cache is not whole"
        );
    }
}
