//! Registry secrets never leave d2v: authenticated pulls from the real registry (htpasswd
//! basic auth over TLS, and bearer tokens from a token issuer, with a password or an identity
//! token), with `-v`, `--json` and failing variants (a wrong tag, a wrong password), and every
//! output — stdout, stderr, every file written (OVA, OVF, manifest, VMDK) — searched for the
//! password, the base64 `user:password`, the identity token and each bearer token issued.
//! An auth file other users may read is warned about, by name, with `chmod 600`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use testkit::cli::{tiny, Run, Sandbox};
use testkit::oci::Compression;
use testkit::registry::{Kind, Registry, IDENTITY_TOKEN, PASSWORD, USER};

const D2V: &str = env!("CARGO_BIN_EXE_d2v");
const WRONG: &str = "wrong-pw-7f3a9c";
const SMALL: [&str; 2] = ["--root-free", "64M"];

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The registry of `kind` serving the tiny image as `private/app:v1`, and a sandbox.
fn registry(kind: Kind) -> (Registry, Sandbox, String) {
    let sb = Sandbox::new(D2V);
    let spec = tiny("v1", "debian", true, Compression::Gzip);
    let (reg, _) = Registry::with_image(kind, &sb.path("in/oci"), &spec, "private/app:v1");
    let src = format!("{}/private/app:v1", reg.host);
    (reg, sb, src)
}

/// An auth file for `host` with `entry` (the JSON object of its `auths` entry), mode `mode`.
fn auth_file(sb: &Sandbox, name: &str, host: &str, entry: &str, mode: u32) -> PathBuf {
    let f = sb.path(&format!("in/{name}"));
    std::fs::write(&f, format!(r#"{{"auths":{{"{host}":{entry}}}}}"#)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

/// Collects every run's stdout and stderr.
#[derive(Default)]
struct Outputs(Vec<(String, Vec<u8>)>);

impl Outputs {
    fn add(&mut self, r: &Run) {
        self.0
            .push((format!("stdout of {}", r.cmd), r.stdout.clone()));
        self.0.push((
            format!("stderr of {}", r.cmd),
            r.stderr.clone().into_bytes(),
        ));
    }

    /// Adds every file under `dir`.
    fn add_files(&mut self, dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                self.add_files(&p);
            } else {
                self.0
                    .push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }

    /// Fails naming the output and the secret when one holds one.
    fn assert_free_of(&self, secrets: &[String]) {
        assert!(self.0.len() > 4, "nothing collected");
        for (what, bytes) in &self.0 {
            for s in secrets {
                let found = bytes.windows(s.len()).any(|w| w == s.as_bytes());
                assert!(!found, "{what} holds the secret {s:?}");
            }
        }
    }
}

/// A pull that must succeed; its output goes to `out/NAME`.
fn pull_ok(sb: &Sandbox, src: &str, name: &str, extra: &[&str], outs: &mut Outputs) -> Run {
    let out = sb.out_file(name).display().to_string();
    let mut args = vec!["pull", src, "-o", &out];
    args.extend(SMALL);
    args.extend(extra);
    let r = sb.d2v(&args).ok();
    outs.add(&r);
    r
}

/// A pull that must fail.
fn pull_fails(sb: &Sandbox, src: &str, extra: &[&str], outs: &mut Outputs) -> Run {
    let out = sb.out_file("failed.ova").display().to_string();
    let mut args = vec!["pull", src, "-o", &out];
    args.extend(extra);
    let r = sb.d2v(&args);
    assert!(!r.status.success(), "{}: succeeded", r.cmd);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    outs.add(&r);
    r
}

fn warned(r: &Run, file: &Path) -> bool {
    let text = format!("{}{}", r.stderr, r.stdout_str());
    text.contains(&file.display().to_string()) && text.contains("chmod 600")
}

#[test]
fn basic_auth_secrets_stay_out_of_every_output() {
    let (reg, sb, src) = registry(Kind::TlsBasic);
    let ca = reg.ca_dir().display().to_string();
    let creds = format!("{USER}:{PASSWORD}");
    let entry = format!(r#"{{"auth":"{}"}}"#, b64(&creds));
    let open = auth_file(&sb, "open.json", &reg.host, &entry, 0o644);
    let open_s = open.display().to_string();
    let mut outs = Outputs::default();

    // With the auth file open to others: a warning on stderr, and in --json's warnings.
    let r = pull_ok(
        &sb,
        &src,
        "a.ova",
        &["--cert-dir", &ca, "--authfile", &open_s, "-v"],
        &mut outs,
    );
    assert!(
        warned(&r, &open),
        "no warning about {open_s}:\n{}",
        r.stderr
    );
    let r = pull_ok(
        &sb,
        &src,
        "b",
        &[
            "--cert-dir",
            &ca,
            "--authfile",
            &open_s,
            "--format",
            "ovf",
            "--json",
        ],
        &mut outs,
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let w = v["warnings"].to_string();
    assert!(w.contains(&open_s) && w.contains("chmod 600"), "{v:#}");
    let args = [
        "inspect",
        &src,
        "--cert-dir",
        &ca,
        "--authfile",
        &open_s,
        "--json",
    ];
    let r = sb.d2v(args).ok();
    outs.add(&r);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(v["warnings"].to_string().contains("chmod 600"), "{v:#}");
    // REGISTRY_AUTH_FILE, private: no warning.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = sb.out_file("c.ova").display().to_string();
    let mut args = vec!["pull", &src, "-o", &out, "--cert-dir", &ca, "-v"];
    args.extend(SMALL);
    let r = sb.d2v_env(&args, &[("REGISTRY_AUTH_FILE", &open_s)]).ok();
    assert!(!r.stderr.contains("chmod"), "{}", r.stderr);
    outs.add(&r);
    // --creds, and the failures: a wrong tag (authenticated), a wrong password.
    pull_ok(
        &sb,
        &src,
        "d.vmdk",
        &[
            "--cert-dir",
            &ca,
            "--creds",
            &creds,
            "-v",
            "--format",
            "vmdk",
        ],
        &mut outs,
    );
    let missing = src.replace(":v1", ":v9");
    pull_fails(
        &sb,
        &missing,
        &["--cert-dir", &ca, "--creds", &creds, "-v"],
        &mut outs,
    );
    pull_fails(
        &sb,
        &missing,
        &["--cert-dir", &ca, "--creds", &creds, "--json"],
        &mut outs,
    );
    let wrong = format!("{USER}:{WRONG}");
    let r = pull_fails(
        &sb,
        &src,
        &["--cert-dir", &ca, "--creds", &wrong, "-v"],
        &mut outs,
    );
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    pull_fails(
        &sb,
        &src,
        &["--cert-dir", &ca, "--creds", &wrong, "--json"],
        &mut outs,
    );

    outs.add_files(&sb.out());
    outs.assert_free_of(&[
        PASSWORD.to_string(),
        b64(&creds),
        WRONG.to_string(),
        b64(&wrong),
    ]);
}

#[test]
fn bearer_tokens_stay_out_of_every_output() {
    let (reg, sb, src) = registry(Kind::Token);
    let creds = format!("{USER}:{PASSWORD}");
    let mut outs = Outputs::default();

    // Password → token, with -v and --json, as an OVA and an OVF directory.
    pull_ok(&sb, &src, "a.ova", &["--creds", &creds, "-v"], &mut outs);
    pull_ok(
        &sb,
        &src,
        "b",
        &["--creds", &creds, "--json", "--format", "ovf"],
        &mut outs,
    );
    // An identity token (docker login's refresh token) from ~/.docker/config.json, open to
    // others: warned about.
    let entry = format!(
        r#"{{"auth":"{}","identitytoken":"{IDENTITY_TOKEN}"}}"#,
        b64("00000000-0000-0000-0000-000000000000:")
    );
    std::fs::create_dir_all(sb.path("home/.docker")).unwrap();
    let docker = auth_file(&sb, "docker.json", &reg.host, &entry, 0o640);
    let config = sb.path("home/.docker/config.json");
    std::fs::rename(&docker, &config).unwrap();
    let r = pull_ok(&sb, &src, "c.ova", &["-v"], &mut outs);
    assert!(
        warned(&r, &config),
        "no warning about {}:\n{}",
        config.display(),
        r.stderr
    );
    // Failures after a token was issued (wrong tag), and a wrong password.
    let missing = src.replace(":v1", ":v9");
    pull_fails(&sb, &missing, &["--creds", &creds, "-v"], &mut outs);
    pull_fails(&sb, &missing, &["-v", "--json"], &mut outs);
    let wrong = format!("{USER}:{WRONG}");
    pull_fails(&sb, &src, &["--creds", &wrong, "-v"], &mut outs);

    let tokens = reg.issued_tokens();
    assert!(tokens.len() >= 4, "{} tokens issued", tokens.len());
    let mut secrets = vec![
        PASSWORD.to_string(),
        b64(&creds),
        IDENTITY_TOKEN.to_string(),
        WRONG.to_string(),
        b64(&wrong),
    ];
    // Each JWT, and its signature alone.
    for t in tokens {
        secrets.push(t.rsplit('.').next().unwrap().to_string());
        secrets.push(t);
    }
    outs.add_files(&sb.out());
    outs.assert_free_of(&secrets);
}

/// A registry sends blob downloads to its storage with a pre-signed URL, whose query is a
/// credential: when that place cannot be reached, the message names the blob (and the
/// registry's URL for it), never the pre-signed URL.
#[test]
fn a_pre_signed_download_url_is_shown_without_its_signature() {
    use testkit::layout_registry::{Blob, LayoutRegistry};
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    testkit::cli::write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    let (_, manifest) = testkit::cli::manifest_of(&dir, "v1");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let reg = LayoutRegistry::start(&dir, "v1");
    // Nothing listens on port 1.
    let sig = "X-Amz-Signature=5ec4e7516a7e";
    reg.set(
        layer,
        Blob::Redirect(format!(
            "http://127.0.0.1:1/blob?X-Amz-Credential=AKIA42&{sig}"
        )),
    );
    let src = format!("{}/app:v1", reg.host);
    let mut outs = Outputs::default();
    for extra in [&["-v"][..], &["--json"]] {
        let r = pull_fails(&sb, &src, extra, &mut outs);
        assert!(r.stderr.contains(layer), "{}", r.stderr);
    }
    outs.add(&sb.d2v(["inspect", &src, "-v"]));
    outs.assert_free_of(&[sig.to_string(), "AKIA42".to_string()]);
}
