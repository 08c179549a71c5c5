//! End-to-end boot tests (issue 5): the real `d2v` binary turns the OS fixtures into OVAs
//! (`d2v build oci:…` for the systemd, OpenRC and Debian 13 fixtures, `d2v pull` from a local
//! docker-registry for the systemd one); the VMDK taken out of each OVA boots in QEMU (TCG)
//! under SeaBIOS and under OVMF until the guest's self-check prints its checksums, which must
//! equal the ones xtask computed from the staging tree (and `openrc --sys` must not say DOCKER).
//! The disks are also checked with the reference tools: `qemu-img check`, `sgdisk -v`,
//! `fsck.fat -n` on the ESP and `e2fsck -fn` on the root partition.
//!
//! Fixtures: built by `cargo xtask test`. Without them these tests print a notice and pass
//! (so a plain `cargo test` stays quick) unless `D2V_REQUIRE_FIXTURES=1` or `D2V_FIXTURES` is
//! set (xtask sets both), when a missing fixture is a failure.
//!
//! Each OVA is built once per test binary and shared; at most [`MAX_QEMUS`] QEMUs run at once.
//! Work files go to `target/e2e/<fixture>-<how>/` (replaced on each run); serial logs stay there.
//! `D2V_BOOT_TIMEOUT` (seconds) overrides the boot timeout.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use testkit::fixtures::{self, Fixture, SELFCHECK_END};
use testkit::qemu::{Boot, Firmware};
use testkit::registry::{Kind, Registry};

/// QEMU processes this test binary runs at the same time (TCG on a 2-core machine).
const MAX_QEMUS: usize = 2;
/// Default boot timeout: a TCG boot takes 15-40 s on an idle machine, far more on a busy one.
const BOOT_TIMEOUT_SECS: u64 = 600;

const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Discoverable Partitions: root partition (x86-64).
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixtures_required() -> bool {
    std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some()
}

/// The fixture, or `None` (after a notice) when it is not built and not required.
fn fixture(name: &str) -> Option<Fixture> {
    if let Some(f) = fixtures::try_load(name) {
        return Some(f);
    }
    let path = fixtures::manifest_path(name);
    if fixtures_required() {
        panic!(
            "fixture {name:?} is missing ({} not found or outdated): run `cargo xtask test`",
            path.display()
        );
    }
    eprintln!(
        "NOTICE: e2e boot test skipped: fixture {name:?} not built ({} missing); \
         run `cargo xtask test` to build the fixtures and run it",
        path.display()
    );
    None
}

// ---------------------------------------------------------------------------------------------
// Building the OVAs (once per fixture and way, shared by the tests)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `d2v build oci:LAYOUT:TAG`.
    Build,
    /// `skopeo copy` to a plain-HTTP docker-registry, then `d2v pull HOST/REPO:TAG`.
    Pull,
}

struct Built {
    fixture: Fixture,
    via: Via,
    /// `target/e2e/<fixture>-<via>`: OVA, VMDK, serial logs, raw images of failed checks.
    dir: PathBuf,
    ova: PathBuf,
    vmdk: PathBuf,
    /// What `d2v --json` printed.
    summary: serde_json::Value,
}

impl Built {
    /// A string field of the `--json` summary, e.g. `["disk", "root_partuuid"]`.
    fn field(&self, path: &[&str]) -> String {
        let mut v = &self.summary;
        for k in path {
            v = &v[*k];
        }
        v.as_str()
            .unwrap_or_else(|| panic!("d2v --json has no string {path:?}: {}", self.summary))
            .to_string()
    }
}

/// The VM name given to every build of a fixture, so that `build` and `pull` of the same
/// image must write the same disk.
fn vm_name(fixture: &str) -> String {
    format!("e2e-{fixture}")
}

/// A kernel argument passed with `--kernel-arg`; the guest kernel must report it.
fn kernel_arg(fixture: &str) -> String {
    format!("d2v.e2e={fixture}")
}

fn work_dir(name: &str, via: Via) -> PathBuf {
    let dir = testkit::workspace_root()
        .join("target/e2e")
        .join(format!("{name}-{}", format!("{via:?}").to_lowercase()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/e2e work directory");
    dir
}

fn d2v() -> PathBuf {
    fixtures::d2v_bin(env!("CARGO_BIN_EXE_d2v"))
}

/// Runs d2v with `args`, panicking with its output when it fails; returns stdout.
fn run_d2v(args: &[String]) -> String {
    let start = Instant::now();
    let out = Command::new(d2v())
        .args(args)
        .output()
        .expect("run the d2v binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "d2v {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" "),
        out.status
    );
    eprintln!(
        "[e2e] d2v {} took {:.1} s",
        args.first().map(String::as_str).unwrap_or(""),
        start.elapsed().as_secs_f64()
    );
    stdout
}

fn build(name: &str, via: Via) -> Built {
    let fixture = fixtures::load(name);
    let dir = work_dir(name, via);
    let ova = dir.join(format!("{name}.ova"));
    let common = |source: String| -> Vec<String> {
        vec![
            source,
            "-o".into(),
            ova.display().to_string(),
            "--cache-dir".into(),
            dir.join("cache").display().to_string(),
            "--name".into(),
            vm_name(name),
            "--kernel-arg".into(),
            kernel_arg(name),
            "--json".into(),
        ]
    };
    let (stdout, digest) = match via {
        Via::Build => {
            let mut args = vec!["build".to_string()];
            args.extend(common(fixture.oci_ref()));
            (run_d2v(&args), fixture.manifest_digest.clone())
        }
        Via::Pull => {
            let registry = Registry::start(Kind::Plain);
            let repo_tag = format!("d2v-e2e/{name}:{}", fixture.tag);
            registry.push(&fixture.oci_ref(), &repo_tag);
            let mut args = vec!["pull".to_string()];
            args.extend(common(format!("{}/{repo_tag}", registry.host)));
            (run_d2v(&args), registry.digest(&repo_tag))
        }
    };
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("d2v --json printed no JSON object ({e}):\n{stdout}");
    });
    assert!(summary.is_object(), "d2v --json summary: {summary}");
    assert!(ova.is_file(), "d2v wrote no {}", ova.display());
    let vmdk = fixtures::vmdk_from_ova(&ova, &dir.join("ova"));
    assert!(vmdk.is_file(), "no VMDK in {}", ova.display());
    let built = Built {
        fixture,
        via,
        dir,
        ova,
        vmdk,
        summary,
    };
    check_summary(&built, &digest);
    built
}

/// The `--json` summary names the image d2v read, the fixture's kernel, and reports the
/// removal of each container marker.
fn check_summary(b: &Built, digest: &str) {
    let f = &b.fixture;
    assert_eq!(
        b.field(&["manifest_digest"]),
        digest,
        "{}: d2v converted another image than the one served",
        f.name
    );
    let kernel = f.kernel.rsplit('/').next().unwrap_or_default();
    let kernels = &b.summary["kernels"];
    assert!(
        kernels.as_array().is_some_and(|k| k
            .iter()
            .any(|k| k.as_str().is_some_and(|k| k.ends_with(kernel)))),
        "{}: d2v --json kernels {kernels} lack the image's {kernel}",
        f.name
    );
    // The fixture's initramfs (Debian's: an early microcode archive, then zstd) has the
    // PVSCSI driver the OVF's default controller needs: no warning about it. The OpenRC
    // fixture configures no network: exactly that is warned about.
    let warnings: Vec<&str> = b.summary["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|w| w.as_str()).collect())
        .unwrap_or_default();
    if f.init == "openrc" {
        assert!(
            warnings.len() == 1 && warnings[0].contains("configures no network"),
            "{}: d2v warns {warnings:?}",
            f.name
        );
    } else {
        assert!(warnings.is_empty(), "{}: d2v warns {warnings:?}", f.name);
    }
    let fixes = b.summary["guest_fixes"].to_string();
    for m in &f.container_markers {
        assert!(
            fixes.contains(m.as_str()),
            "{}: d2v does not report removing the container marker {m}; guest_fixes: {fixes}",
            f.name
        );
    }
}

type Shared = OnceLock<Result<Built, String>>;
static SYSTEMD_BUILD: Shared = OnceLock::new();
static SYSTEMD_PULL: Shared = OnceLock::new();
static OPENRC_BUILD: Shared = OnceLock::new();
static TRIXIE_BUILD: Shared = OnceLock::new();

/// The OVA of `name` made `via`, built on first use; `None` when fixtures are absent and not
/// required. A failed build fails every test that needs it, each with the same message.
fn built(name: &str, via: Via) -> Option<&'static Built> {
    fixture(name)?;
    let cell = match (name, via) {
        (fixtures::SYSTEMD, Via::Build) => &SYSTEMD_BUILD,
        (fixtures::SYSTEMD, Via::Pull) => &SYSTEMD_PULL,
        (fixtures::OPENRC, Via::Build) => &OPENRC_BUILD,
        (fixtures::TRIXIE, Via::Build) => &TRIXIE_BUILD,
        _ => unreachable!("no shared build for {name} via {via:?}"),
    };
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(|| build(name, via))).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        })
    });
    match result {
        Ok(b) => Some(b),
        Err(e) => panic!("building the {name} VM via d2v {via:?} failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Booting

fn boot_timeout() -> Duration {
    let secs = std::env::var("D2V_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BOOT_TIMEOUT_SECS);
    Duration::from_secs(secs)
}

/// The virtual hardware a boot test attaches the disk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hardware {
    /// A virtio disk and no NIC: QEMU's fastest.
    Virtio,
    /// The SCSI controller and NIC the OVA's descriptor declares, as QEMU's models of VMware's
    /// devices: what the VM gets on vSphere. The guest must find its root disk through the
    /// controller's driver in its initramfs.
    Ovf,
}

/// QEMU's models of the SCSI controller and NIC the OVF descriptor in `ova` declares.
fn ovf_hardware(ova: &Path) -> (String, String) {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(ova)
        .args(["--wildcards", "*.ovf"])
        .output()
        .expect("tar");
    assert!(out.status.success(), "no .ovf in {}", ova.display());
    let ovf = String::from_utf8_lossy(&out.stdout);
    let sub_types: Vec<&str> = ovf
        .split("<rasd:ResourceSubType>")
        .skip(1)
        .filter_map(|s| s.split_once("</rasd:ResourceSubType>").map(|(t, _)| t))
        .collect();
    let scsi = if sub_types.contains(&"VirtualSCSI") {
        "pvscsi"
    } else {
        panic!(
            "{}: no QEMU model for the controller in {sub_types:?}",
            ova.display()
        )
    };
    let nic = if sub_types.iter().any(|t| t.eq_ignore_ascii_case("vmxnet3")) {
        "vmxnet3"
    } else {
        panic!(
            "{}: no QEMU model for the NIC in {sub_types:?}",
            ova.display()
        )
    };
    (scsi.into(), nic.into())
}

/// Boots the VMDK under `fw` on `hw` to the end of the self-check and compares what the guest
/// printed with the fixture's expected checksums. The serial log stays in the work directory.
fn boot_and_selfcheck(b: &Built, fw: Firmware, hw: Hardware) {
    let log_path = b
        .dir
        .join(format!("serial-{fw:?}-{hw:?}.log").to_lowercase());
    let mut boot = Boot::new(&b.vmdk, fw, SELFCHECK_END);
    boot.timeout = boot_timeout();
    boot.memory_mib = 1024;
    if hw == Hardware::Ovf {
        let (scsi, nic) = ovf_hardware(&b.ova);
        boot.scsi_controller = Some(scsi);
        boot.nic = Some(nic);
    }
    let out = {
        let _slot = testkit::qemu::Slot::take(MAX_QEMUS);
        boot.run()
    };
    // Keep the serial log with the VM's other files; drop the harness's scratch directory
    // (serial log, OVMF variable store).
    std::fs::write(&log_path, &out.log).expect("write the serial log");
    if let Some(scratch) = out.log_path.parent() {
        if scratch.starts_with(std::env::temp_dir())
            && scratch
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("d2v-qemu-"))
        {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
    let what = format!(
        "{} VM ({fw:?}, {hw:?} hardware, {})",
        b.fixture.name,
        b.vmdk.display()
    );
    if !out.found {
        panic!(
            "{what}: no {SELFCHECK_END:?} on the serial console within {:?} ({:.0} s); \
             serial log kept at {}:\n{}",
            boot.timeout,
            out.elapsed.as_secs_f64(),
            log_path.display(),
            out.log
        );
    }
    let fail = |why: String| -> ! {
        panic!(
            "{what}: {why}\nserial log kept at {}:\n{}",
            log_path.display(),
            out.log
        )
    };
    // The kernel booted the entry d2v generated: its command line names the root partition
    // d2v reports and carries --kernel-arg.
    let cmdline = out
        .log
        .lines()
        .find_map(|l| l.split_once("Kernel command line:").map(|(_, c)| c.trim()))
        .unwrap_or_else(|| fail("no \"Kernel command line:\" on the serial console".into()));
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let partuuid = format!("root=PARTUUID={}", b.field(&["disk", "root_partuuid"]));
    // d2v.grub-default=1 comes from the fixture's /etc/default/grub.d.
    for want in [
        partuuid.as_str(),
        &kernel_arg(&b.fixture.name),
        "console=ttyS0,115200",
        "d2v.grub-default=1",
    ] {
        if !words.contains(&want) {
            fail(format!("kernel command line {cmdline:?} lacks {want:?}"));
        }
    }
    // The firmware really was the one asked for (Linux reports the EFI system table).
    let efi = out.log.contains("efi: EFI v");
    if efi != (fw == Firmware::Uefi) {
        fail(format!("booted under {fw:?} but the kernel saw EFI: {efi}"));
    }
    // On the OVF's hardware the guest's drivers for it ran (the root disk is reachable only
    // through the SCSI controller).
    if hw == Hardware::Ovf {
        for driver in ["vmw_pvscsi", "vmxnet3"] {
            if !out.log.contains(driver) {
                fail(format!("the kernel never mentions its {driver} driver"));
            }
        }
    }
    let report = b
        .fixture
        .check_selfcheck(&out.log)
        .unwrap_or_else(|e| fail(e));
    // On the OVF's hardware the VMXNET3 adapter works: the guest's DHCP client got an address
    // from QEMU's user network (10.0.2.0/24).
    if hw == Hardware::Ovf {
        let addrs = report.net_addrs.clone().unwrap_or_default();
        if !addrs.iter().any(|a| a.starts_with("10.0.2.")) {
            fail(format!(
                "the guest has no address from QEMU's DHCP on its VMXNET3 adapter: NET-ADDR {addrs:?}"
            ));
        }
    }
    eprintln!(
        "[e2e] {what}: self-check OK after {:.1} s: {} paths match the staging tree{}{}",
        out.elapsed.as_secs_f64(),
        report.files.len(),
        report
            .openrc_sys
            .map(|s| format!(", openrc --sys = {s:?}"))
            .unwrap_or_default(),
        report
            .net_addrs
            .filter(|a| !a.is_empty())
            .map(|a| format!(", addresses {}", a.join(" ")))
            .unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Disk checks with the reference tools

/// Runs `cmd`, returning (success, stdout + stderr).
fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[derive(Debug)]
struct Partition {
    number: u32,
    type_guid: String,
    unique_guid: String,
    first_lba: u64,
    last_lba: u64,
}

/// The partitions as `sgdisk` reads them (`-p` for the numbers, `-i N` for each one), and the
/// logical sector size.
fn sgdisk_partitions(raw: &Path) -> (u64, Vec<Partition>) {
    let (ok, table) = output(Command::new("sgdisk").arg("-p").arg(raw));
    assert!(ok, "sgdisk -p {}:\n{table}", raw.display());
    let sector = table
        .lines()
        .find_map(|l| l.strip_prefix("Sector size (logical"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| {
            v.trim()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no logical sector size in sgdisk -p output:\n{table}"));
    let numbers: Vec<u32> = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let mut parts = Vec::new();
    for number in numbers {
        let (ok, info) = output(
            Command::new("sgdisk")
                .arg("-i")
                .arg(number.to_string())
                .arg(raw),
        );
        assert!(ok, "sgdisk -i {number}:\n{info}");
        let field = |name: &str| -> String {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {name:?} in sgdisk -i {number}:\n{info}"))
                .to_string()
        };
        parts.push(Partition {
            number,
            type_guid: field("Partition GUID code:").to_ascii_uppercase(),
            unique_guid: field("Partition unique GUID:").to_ascii_uppercase(),
            first_lba: field("First sector:").parse().expect("first sector"),
            last_lba: field("Last sector:").parse().expect("last sector"),
        });
    }
    (sector, parts)
}

/// Copies `len` bytes at `offset` of `src` into a new sparse file `dst` (zero MiBs are skipped).
fn copy_region(src: &Path, offset: u64, len: u64, dst: &Path) {
    let mut input = File::open(src).expect("open raw disk");
    input.seek(SeekFrom::Start(offset)).unwrap();
    let mut input = input.take(len);
    let mut out = File::create(dst).expect("create partition image");
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..]).expect("read raw disk");
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(filled as i64)).unwrap();
        } else {
            out.write_all(&buf[..filled]).unwrap();
        }
        copied += filled as u64;
    }
    assert_eq!(copied, len, "{} ends inside a partition", src.display());
    out.set_len(len).unwrap();
}

/// (TYPE, UUID) of a filesystem image as `blkid -p` (low-level probing) reads it.
fn blkid(img: &Path) -> (String, String) {
    let (ok, text) = output(Command::new("blkid").args(["-p", "-o", "export"]).arg(img));
    assert!(ok, "blkid -p {}:\n{text}", img.display());
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    (get("TYPE"), get("UUID"))
}

fn check_disk(b: &Built) {
    testkit::require_tool("qemu-img", "qemu-utils");
    testkit::require_tool("sgdisk", "gdisk");
    testkit::require_tool("fsck.fat", "dosfstools");
    testkit::require_tool("e2fsck", "e2fsprogs");
    testkit::require_tool("blkid", "util-linux");
    let name = &b.fixture.name;
    let start = Instant::now();
    let disk_size = b.summary["disk"]["size"].as_u64();

    let (ok, text) = output(Command::new("qemu-img").arg("check").arg(&b.vmdk));
    assert!(
        ok && text.contains("No errors were found"),
        "{name}: qemu-img check {}:\n{text}",
        b.vmdk.display()
    );

    let scratch = b.dir.join("disk-check");
    std::fs::create_dir_all(&scratch).unwrap();
    let raw = scratch.join("disk.raw");
    let (ok, text) = output(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&b.vmdk)
            .arg(&raw),
    );
    assert!(ok, "{name}: qemu-img convert -O raw:\n{text}");
    let raw_size = std::fs::metadata(&raw).unwrap().len();
    assert_eq!(
        Some(raw_size),
        disk_size,
        "{name}: the VMDK's capacity is not the disk size d2v reports"
    );

    let (ok, text) = output(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(
        ok && text.contains("No problems found"),
        "{name}: sgdisk -v {} is not clean:\n{text}",
        raw.display()
    );

    let (sector, parts) = sgdisk_partitions(&raw);
    let find = |type_guid: &str, what: &str| -> &Partition {
        let found: Vec<&Partition> = parts.iter().filter(|p| p.type_guid == type_guid).collect();
        assert_eq!(
            found.len(),
            1,
            "{name}: want exactly one {what} partition ({type_guid}), sgdisk reads {parts:?}"
        );
        found[0]
    };
    find(TYPE_BIOS_BOOT, "BIOS boot");
    let esp = find(TYPE_ESP, "EFI System");
    let root = find(TYPE_ROOT_X86_64, "Linux root (x86-64)");
    assert_eq!(
        root.unique_guid,
        b.field(&["disk", "root_partuuid"]).to_ascii_uppercase(),
        "{name}: the root partition's GUID is not the PARTUUID d2v reports (and GRUB passes)"
    );

    let extract = |p: &Partition, file: &str| -> PathBuf {
        let path = scratch.join(file);
        copy_region(
            &raw,
            p.first_lba * sector,
            (p.last_lba + 1 - p.first_lba) * sector,
            &path,
        );
        path
    };
    let esp_img = extract(esp, "esp.img");
    let (ok, text) = output(Command::new("fsck.fat").arg("-n").arg(&esp_img));
    assert!(
        ok,
        "{name}: fsck.fat -n on the ESP (partition {}, kept at {}):\n{text}",
        esp.number,
        esp_img.display()
    );
    assert_eq!(
        blkid(&esp_img),
        ("vfat".to_string(), b.field(&["disk", "esp_serial"])),
        "{name}: ESP (the fstab entry for /boot names this serial)"
    );
    std::fs::remove_file(&esp_img).unwrap();

    let root_img = extract(root, "root.img");
    let (ok, text) = output(Command::new("e2fsck").arg("-fn").arg(&root_img));
    assert!(
        ok,
        "{name}: e2fsck -fn on the root (partition {}, kept at {}):\n{text}",
        root.number,
        root_img.display()
    );
    assert_eq!(
        blkid(&root_img),
        ("ext4".to_string(), b.field(&["disk", "root_fs_uuid"])),
        "{name}: root filesystem (the fstab entry for / names this UUID)"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
    eprintln!(
        "[e2e] {name}: qemu-img check, sgdisk -v, fsck.fat -n, e2fsck -fn clean ({:.1} s)",
        start.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn systemd_build_boots_under_seabios() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Build) {
        boot_and_selfcheck(b, Firmware::Bios, Hardware::Virtio);
    }
}

#[test]
fn systemd_build_boots_under_ovmf() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Build) {
        boot_and_selfcheck(b, Firmware::Uefi, Hardware::Virtio);
    }
}

#[test]
fn systemd_build_disk_passes_fsck() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Build) {
        check_disk(b);
    }
}

#[test]
fn openrc_build_boots_under_seabios() {
    if let Some(b) = built(fixtures::OPENRC, Via::Build) {
        boot_and_selfcheck(b, Firmware::Bios, Hardware::Virtio);
    }
}

#[test]
fn openrc_build_boots_under_ovmf() {
    if let Some(b) = built(fixtures::OPENRC, Via::Build) {
        boot_and_selfcheck(b, Firmware::Uefi, Hardware::Virtio);
    }
}

#[test]
fn openrc_build_disk_passes_fsck() {
    if let Some(b) = built(fixtures::OPENRC, Via::Build) {
        check_disk(b);
    }
}

/// Debian 13: GRUB 2.12's modules (assembled by d2v), Linux 6.12 and its zstd initramfs,
/// systemd 257 — on the OVF's devices (PVSCSI, VMXNET3) under SeaBIOS, on virtio under OVMF.
#[test]
fn trixie_build_boots_on_the_ovf_hardware_under_seabios() {
    if let Some(b) = built(fixtures::TRIXIE, Via::Build) {
        boot_and_selfcheck(b, Firmware::Bios, Hardware::Ovf);
    }
}

#[test]
fn trixie_build_boots_under_ovmf() {
    if let Some(b) = built(fixtures::TRIXIE, Via::Build) {
        boot_and_selfcheck(b, Firmware::Uefi, Hardware::Virtio);
    }
}

#[test]
fn trixie_build_disk_passes_fsck() {
    if let Some(b) = built(fixtures::TRIXIE, Via::Build) {
        check_disk(b);
    }
}

/// The pulled disk is byte for byte the built one (see below), so its SeaBIOS boot is spent on
/// the hardware vSphere gives the VM: a PVSCSI disk and a VMXNET3 NIC.
#[test]
fn systemd_pull_boots_on_the_ovf_hardware_under_seabios() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Pull) {
        boot_and_selfcheck(b, Firmware::Bios, Hardware::Ovf);
    }
}

/// On virtio: Debian 12's OVMF has no PVSCSI driver, so it cannot boot from that controller.
#[test]
fn systemd_pull_boots_under_ovmf() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Pull) {
        boot_and_selfcheck(b, Firmware::Uefi, Hardware::Virtio);
    }
}

#[test]
fn systemd_pull_disk_passes_fsck() {
    if let Some(b) = built(fixtures::SYSTEMD, Via::Pull) {
        check_disk(b);
    }
}

/// The same image from the OCI layout and from a registry gives the same disk, byte for byte
/// (identifiers derive from the manifest digest, never from the transport or the clock).
#[test]
fn systemd_pull_and_build_write_identical_disks() {
    let (Some(built), Some(pulled)) = (
        built(fixtures::SYSTEMD, Via::Build),
        built(fixtures::SYSTEMD, Via::Pull),
    ) else {
        return;
    };
    let sum = |b: &Built| file_sha256(&b.vmdk);
    assert_eq!(
        sum(built),
        sum(pulled),
        "VMDK of {:?} ({}) differs from that of {:?} ({})",
        built.via,
        built.vmdk.display(),
        pulled.via,
        pulled.vmdk.display()
    );
}

fn file_sha256(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Copies the directory tree `from` to `to` (regular files and directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// d2v needs no privileges: the same build run as user and group 65534 (`setpriv`, no
/// supplementary groups, no capabilities) writes the same disk, byte for byte, as root's —
/// owners, modes, device nodes, setuid bits and capabilities come from the layers, never from
/// the files of the user running d2v.
#[test]
fn systemd_build_as_an_unprivileged_user_writes_the_same_disk() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let Some(root_built) = built(fixtures::SYSTEMD, Via::Build) else {
        return;
    };
    let setpriv = testkit::require_tool("setpriv", "util-linux");
    let f = &root_built.fixture;
    // Inputs where uid 65534 can read them whatever the checkout's permissions, and a work
    // directory it owns.
    let dir = testkit::scratch_dir("e2e-unprivileged");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("d2v");
    std::fs::copy(d2v(), &bin).unwrap();
    let layout = dir.join("oci");
    copy_tree(&f.oci_layout, &layout);
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    chown(&work, Some(65534), Some(65534)).unwrap();
    let ova = work.join(format!("{}.ova", f.name));
    let start = Instant::now();
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(&bin)
        .arg("build")
        .arg(format!("oci:{}:{}", layout.display(), f.tag))
        .arg("-o")
        .arg(&ova)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .args(["--name", &vm_name(&f.name)])
        .args(["--kernel-arg", &kernel_arg(&f.name)])
        .env("HOME", &work)
        .env("TMPDIR", &work)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "d2v build as uid 65534 failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "[e2e] d2v build as uid 65534 took {:.1} s",
        start.elapsed().as_secs_f64()
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&ova).unwrap().uid(), 65534);
    // The OVF names the source (another path here); the disk must be the same bytes.
    let vmdk = fixtures::vmdk_from_ova(&ova, &work.join("ova"));
    assert_eq!(
        file_sha256(&vmdk),
        file_sha256(&root_built.vmdk),
        "the disk built as uid 65534 ({}) differs from root's ({})",
        vmdk.display(),
        root_built.vmdk.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The partition reader and the sparse copy against a disk sgdisk itself partitions.
#[test]
fn partitions_are_read_and_copied_out() {
    testkit::require_tool("sgdisk", "gdisk");
    let dir = testkit::scratch_dir("e2e-sgdisk");
    let raw = dir.join("disk.raw");
    File::create(&raw).unwrap().set_len(8 << 20).unwrap();
    let (ok, text) = output(
        Command::new("sgdisk")
            .args(["-n", "1:2048:4095", "-t", "1:EF00", "-n", "2:4096:8191"])
            .args(["-t", &format!("2:{TYPE_ROOT_X86_64}")])
            .arg(&raw),
    );
    assert!(ok, "{text}");
    let mut f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.seek(SeekFrom::Start(4096 * 512 + 3)).unwrap();
    f.write_all(b"root-data").unwrap();
    drop(f);
    let (sector, parts) = sgdisk_partitions(&raw);
    assert_eq!(sector, 512);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].type_guid, TYPE_ESP);
    assert_eq!((parts[0].first_lba, parts[0].last_lba), (2048, 4095));
    assert_eq!(parts[1].type_guid, TYPE_ROOT_X86_64);
    assert_eq!((parts[1].first_lba, parts[1].last_lba), (4096, 8191));
    let out = dir.join("p2.img");
    copy_region(&raw, 4096 * 512, 4096 * 512, &out);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), 4096 * 512);
    assert_eq!(&bytes[3..12], b"root-data");
    assert!(bytes[12..].iter().all(|&b| b == 0));
    std::fs::remove_dir_all(&dir).unwrap();
}
