//! UEFI Secure Boot (issue 14): an image carrying Debian's signed boot chain (the `secureboot`
//! fixture: bookworm with `shim-signed`, `grub-efi-amd64-signed` and the signed cloud kernel)
//! built by the real `d2v build` (`--secure-boot auto`, the default) boots under OVMF with
//! Secure Boot enforced and Microsoft's keys enrolled (`OVMF_CODE_4M.ms.fd` with a copy of
//! `OVMF_VARS_4M.ms.fd`, q35 with SMM), and the guest reports its `SecureBoot` variable as 1.
//! Negative control: the same image built with `--secure-boot off` (d2v's own, unsigned GRUB)
//! is refused by the same firmware. The chain-carrying disk also boots with Secure Boot off
//! (plain OVMF: SecureBoot=0) and under SeaBIOS. And `--secure-boot on` without a chain, or
//! with BIOS firmware, is a clear error that writes nothing.
//!
//! The boots need the fixture: without it they print a notice and pass, unless
//! `D2V_REQUIRE_FIXTURES=1` or `D2V_FIXTURES` is set (as in `tests/e2e_boot.rs`). Work files
//! and serial logs: `target/e2e/secureboot-*`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::cli::*;
use testkit::fixtures::{self, Fixture, SELFCHECK_END};
use testkit::oci::Compression;
use testkit::qemu::{Boot, Firmware};

const D2V: &str = env!("CARGO_BIN_EXE_d2v");

fn fixture() -> Option<Fixture> {
    let required = std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some();
    match fixtures::try_load(fixtures::SECUREBOOT) {
        Some(f) => Some(f),
        None if required => panic!(
            "fixture {:?} is missing: run `cargo xtask fixtures secureboot`",
            fixtures::SECUREBOOT
        ),
        None => {
            eprintln!("NOTICE: secure boot test skipped: the secureboot fixture is not built");
            None
        }
    }
}

fn boot_timeout() -> Duration {
    let secs = std::env::var("D2V_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// `d2v build FIXTURE --format ovf --json` plus `extra` into `target/e2e/secureboot-NAME/`;
/// the VMDK, the `--json` summary and the OVF descriptor.
fn build(f: &Fixture, name: &str, extra: &[&str]) -> (PathBuf, serde_json::Value, String) {
    let dir = testkit::workspace_root()
        .join("target/e2e")
        .join(format!("secureboot-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ovf_dir = dir.join("ovf");
    let out = Command::new(fixtures::d2v_bin(D2V))
        .args(["build", &f.oci_ref(), "--format", "ovf", "--json", "-o"])
        .arg(&ovf_dir)
        .args(extra)
        .output()
        .expect("run d2v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "d2v build failed:\n{stderr}");
    eprintln!("{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let with_ext = |ext: &str| {
        std::fs::read_dir(&ovf_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {}", ovf_dir.display()))
    };
    let ovf = std::fs::read_to_string(with_ext("ovf")).unwrap();
    (with_ext("vmdk"), summary, ovf)
}

/// The OVF's Secure Boot line, the `vmw:Config` key an import applies.
fn ovf_secure_boot(on: bool) -> String {
    format!(
        "<vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"{on}\"/>"
    )
}

fn secure_boot(vmdk: &PathBuf, log: &str, marker: &str, timeout: Duration) -> Boot {
    let mut b = Boot::new(vmdk, Firmware::Uefi, marker);
    b.secure_boot = true;
    b.timeout = timeout;
    b.memory_mib = 1024;
    b.log = Some(vmdk.with_file_name(log));
    b
}

#[test]
fn signed_chain_boots_with_secure_boot_enforced_and_unsigned_grub_is_refused() {
    let Some(f) = fixture() else { return };
    let inspect = Command::new(fixtures::d2v_bin(D2V))
        .args(["inspect", &f.oci_ref()])
        .output()
        .expect("run d2v inspect");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("secure boot: signed chain complete (shim /usr/lib/shim/shimx64.efi.signed (signed), GRUB /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed (signed) (prefix /EFI/debian), kernels /boot/vmlinuz-"),
        "{text}"
    );
    let (vmdk, summary, ovf) = build(&f, "auto", &[]);
    assert!(ovf.contains(&ovf_secure_boot(true)), "{ovf}");
    let sb = &summary["secure_boot"];
    assert_eq!(sb["enabled"], true, "{summary:#}");
    assert_eq!(sb["complete"], true, "{summary:#}");
    assert_eq!(sb["chain"]["grub_prefix"], "/EFI/debian", "{summary:#}");

    let out = secure_boot(&vmdk, "serial.log", SELFCHECK_END, boot_timeout()).run();
    let fail = |why: &str| -> ! {
        panic!(
            "Secure Boot boot: {why}; serial log ({}):\n{}",
            out.log_path.display(),
            out.log
        )
    };
    if !out.found {
        fail("no self-check");
    }
    let report = f.check_selfcheck(&out.log).unwrap_or_else(|e| fail(&e));
    if report.secure_boot != Some(1) {
        fail(&format!(
            "the guest's SecureBoot variable is {:?}, not 1",
            report.secure_boot
        ));
    }
    eprintln!(
        "[secure boot] signed chain: self-check OK, SecureBoot=1 after {:.1} s",
        out.elapsed.as_secs_f64()
    );
    // The same disk with Secure Boot off (shim boots GRUB anyway) and under SeaBIOS (d2v's
    // core.img, unchanged by the chain).
    for fw in [Firmware::Uefi, Firmware::Bios] {
        let mut b = Boot::new(&vmdk, fw, SELFCHECK_END);
        b.timeout = boot_timeout();
        b.memory_mib = 1024;
        b.log = Some(vmdk.with_file_name(format!("serial-{}.log", fw.name())));
        let out = b.run();
        let report = f
            .check_selfcheck(&out.log)
            .unwrap_or_else(|e| panic!("{} boot: {e}; serial log:\n{}", fw.name(), out.log));
        let want = (fw == Firmware::Uefi).then_some(0);
        assert_eq!(report.secure_boot, want, "{}: {}", fw.name(), out.log);
        eprintln!(
            "[secure boot] the same disk under {}: self-check OK",
            fw.name()
        );
    }

    // Negative control: d2v's own unsigned GRUB, same firmware and keys.
    let (vmdk, summary, ovf) = build(&f, "off", &["--secure-boot", "off"]);
    assert!(ovf.contains(&ovf_secure_boot(false)), "{ovf}");
    assert_eq!(summary["secure_boot"]["enabled"], false, "{summary:#}");
    // OVMF says, on the serial console, that it refused the disk's loader (then the shell,
    // unsigned too) and found nothing to boot.
    let refused = "No bootable option or device was found";
    let out = secure_boot(&vmdk, "serial.log", refused, Duration::from_secs(300)).run();
    let denied = out
        .log
        .lines()
        .any(|l| l.contains("failed to load Boot") && l.contains("Access Denied"));
    assert!(
        out.found && denied && !out.log.contains("Linux version"),
        "OVMF did not refuse d2v's unsigned GRUB (Access Denied, then {refused:?}); serial \
         log ({}):\n{}",
        out.log_path.display(),
        out.log
    );
    eprintln!("[secure boot] unsigned GRUB refused by OVMF, as it must");
}

/// A sandbox with the tiny Debian image (a kernel, no shim, no signed GRUB) as `oci:…:v1`.
fn tiny_debian() -> (Sandbox, String) {
    let sb = Sandbox::new(D2V);
    let dir = sb.path("in/oci");
    write_tiny(&dir, "v1", "debian", true, Compression::Gzip);
    let src = oci_src(&dir, "v1");
    (sb, src)
}

fn build_fails(sb: &Sandbox, src: &str, extra: &[&str], needles: &[&str]) {
    let out = sb.out_file("vm.ova");
    let mut args: Vec<OsString> = vec!["build".into(), src.into(), "-o".into(), out.into()];
    args.extend(extra.iter().map(OsString::from));
    let run = sb.d2v(&args);
    assert_clean_failure(&run, needles);
    assert!(sb.out_listing().is_empty(), "{:?}", sb.out_listing());
}

#[test]
fn secure_boot_on_without_a_signed_chain_names_the_packages() {
    let (sb, src) = tiny_debian();
    build_fails(
        &sb,
        &src,
        &["--secure-boot", "on"],
        &[
            "--secure-boot on",
            "no shim",
            "shim-signed",
            "grub-efi-amd64-signed",
            "shim-x64",
            "grub2-efi-x64",
            "--secure-boot off",
        ],
    );
}

#[test]
fn secure_boot_on_with_bios_firmware_is_refused() {
    let (sb, src) = tiny_debian();
    build_fails(
        &sb,
        &src,
        &["--secure-boot", "on", "--firmware", "bios"],
        &["--secure-boot on", "--firmware efi"],
    );
}

#[test]
fn inspect_reports_the_chain() {
    let (sb, src) = tiny_debian();
    let run = sb.d2v(["inspect", &src]).ok();
    let text = run.stdout_str();
    assert!(
        text.contains("secure boot: no complete signed chain (shim none, GRUB none"),
        "{text}"
    );
    let run = sb.d2v(["inspect", &src, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let chain = json_find(&v, "secure_boot").expect("secure_boot in inspect --json");
    assert_eq!(chain["shim"], serde_json::Value::Null, "{chain}");
    assert!(
        chain["missing"].as_array().is_some_and(|m| !m.is_empty()),
        "{chain}"
    );
}
