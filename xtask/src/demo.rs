//! `cargo xtask demo`: the systemd fixture → local registry → `d2v pull` → OVA → VMDK →
//! QEMU boot under SeaBIOS and OVMF to the self-check marker, checksums compared.
//!
//! It first installs the Debian packages it uses ([`debian::DEMO`]), then runs itself under
//! `strace` and checks that those packages provide every program it started
//! ([`crate::programs`]): the README's main command must work on a bare machine.

use crate::bail;
use crate::debian;
use crate::programs;
use crate::qemu::{self, Firmware};
use crate::util::{exec, root, step, Result, Timer};
use crate::{fixtures, testcmd};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::fixtures::SELFCHECK_END;
use testkit::registry::{Kind, Registry};

/// Set in the traced run, so that it does the demo itself.
const TRACED: &str = "XTASK_DEMO_TRACED";

pub fn run(args: &[String]) -> Result<()> {
    if std::env::var_os(TRACED).is_some() {
        return demo(args);
    }
    debian::ensure(&debian::subset(debian::DEMO))?;
    let work = root().join("target/demo");
    fs::create_dir_all(&work)?;
    let trace = work.join("programs.trace");
    let mut cmd = Command::new("strace");
    cmd.args(programs::STRACE_ARGS)
        .arg("-o")
        .arg(&trace)
        .arg(std::env::current_exe()?)
        .arg("demo")
        .args(args)
        .env(TRACED, "1");
    let demo = exec(&mut cmd);
    step("programs the demo started, and their packages");
    let own = own_binaries();
    let started = programs::started_programs(&fs::read_to_string(&trace)?, &own);
    let found = programs::check(&started, debian::DEMO)?;
    for (prog, pkg) in &found {
        println!("{prog:40} {pkg}");
    }
    demo
}

/// The toolchain's and the project's own binaries: not Debian's to provide.
fn own_binaries() -> impl Fn(&str) -> bool {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let dirs: Vec<PathBuf> = [
        std::env::var_os("CARGO_HOME").map(PathBuf::from),
        std::env::var_os("RUSTUP_HOME").map(PathBuf::from),
        Some(home.join(".cargo")),
        Some(home.join(".rustup")),
        Some(root()),
    ]
    .into_iter()
    .flatten()
    .collect();
    move |p: &str| dirs.iter().any(|d| Path::new(p).starts_with(d))
}

fn demo(_args: &[String]) -> Result<()> {
    let total = Timer::start();
    let fixture = fixtures::ensure(&[testkit::fixtures::SYSTEMD], false)?.remove(0);
    let work = root().join("target/demo");
    fs::create_dir_all(&work)?;

    step("local registry");
    let registry = Registry::start_in(Kind::Plain, &work.join("registry"));
    registry.push(&fixture.oci_ref(), "demo:latest");
    let image = format!("{}/demo:latest", registry.host);

    step(&format!("d2v pull {image}"));
    let ova = work.join("demo.ova");
    let _ = fs::remove_file(&ova);
    let d2v = testcmd::release_d2v()?; // built first, so the time below is the pull's own
    let t = Timer::start();
    let pulled = exec(
        Command::new(&d2v)
            .arg("pull")
            .arg(&image)
            .arg("-o")
            .arg(&ova),
    );
    if let Err(e) = pulled {
        bail!(
            "{e}\n`d2v pull` failed. Everything before it worked: the image was served at \
             {image}; its OCI layout is {}",
            fixture.oci_layout.display()
        );
    }
    let pull_secs = t.secs();
    drop(registry);

    step("VMDK out of the OVA");
    let vmdk = extract_vmdk(&ova, &work)?;
    println!("{} ({} bytes)", vmdk.display(), fs::metadata(&vmdk)?.len());

    let mut results = Vec::new();
    for fw in [Firmware::Bios, Firmware::Uefi] {
        let devices = match fw {
            Firmware::Bios => "PVSCSI disk, VMXNET3 NIC",
            Firmware::Uefi => "IDE disk",
        };
        step(&format!("boot under {} (TCG, {devices})", fw.name()));
        // SeaBIOS on the devices the OVF declares (PVSCSI disk, VMXNET3 NIC), as on vSphere;
        // OVMF on IDE (Debian's OVMF cannot boot from PVSCSI).
        let booted = match fw {
            Firmware::Bios => qemu::boot_on_vmware_devices(&vmdk, "vmdk", &work, SELFCHECK_END),
            Firmware::Uefi => qemu::boot(&vmdk, "vmdk", fw, &work, SELFCHECK_END),
        };
        let r = booted.and_then(|b| {
            fixture
                .check_selfcheck(&b.log)
                .map(|rep| (b, rep))
                .map_err(Into::into)
        });
        match &r {
            Ok((b, rep)) => println!(
                "{}: self-check OK after {:.0} s: {} paths match the image{} (log {})",
                fw.name(),
                b.secs,
                rep.files.len(),
                rep.net_addrs
                    .as_ref()
                    .filter(|a| !a.is_empty())
                    .map(|a| format!(", network up: {}", a.join(" ")))
                    .unwrap_or_default(),
                b.log_path.display()
            ),
            Err(e) => println!("{}: FAILED: {e}", fw.name()),
        }
        results.push((fw, r.is_ok()));
    }

    step("demo summary");
    println!(
        "image     {image} ({} layers, {})",
        fixture.layers.len(),
        fixture.manifest_digest
    );
    println!(
        "d2v pull  {:.1} s -> {} ({} bytes)",
        pull_secs,
        ova.display(),
        fs::metadata(&ova)?.len()
    );
    for (fw, ok) in &results {
        println!(
            "boot      {:8} {}",
            fw.name(),
            if *ok { "OK" } else { "FAILED" }
        );
    }
    println!("total     {:.0} s", total.secs());
    if results.iter().any(|(_, ok)| !ok) {
        bail!("demo boot failed (serial logs in {})", work.display());
    }
    Ok(())
}

/// Extracts the (first) `.vmdk` member of an OVA (a tar) into `dir`.
pub fn extract_vmdk(ova: &Path, dir: &Path) -> Result<PathBuf> {
    let f = fs::File::open(ova).map_err(|e| format!("{}: {e}", ova.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    for e in archive.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        if name.ends_with(".vmdk") && !name.contains('/') {
            let out = dir.join(&name);
            let mut w = fs::File::create(&out)?;
            std::io::copy(&mut e, &mut w)?;
            return Ok(out);
        }
    }
    bail!("{}: no .vmdk member in the OVA", ova.display())
}
