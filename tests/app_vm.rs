//! App images as VMs (issue 13), end to end: the app fixtures (no kernel; busybox httpd
//! `FROM scratch`, a Python service with a non-root user, a systemd image) and the kernel
//! fixtures (a Debian image with the cloud kernel, the same kernel as a LinuxKit image) are
//! pushed to a local docker-registry; the static d2v pulls each app with `--kernel-from`; the
//! VMDK from the OVA boots in QEMU (TCG) on the OVF's devices under SeaBIOS (PVSCSI + VMXNET3)
//! and under OVMF (virtio disk: Debian's OVMF has no PVSCSI driver; VMXNET3 NIC), with a host
//! port forwarded to the app's 8080. Checked from the host and the serial console: the HTTP
//! answer, the user/groups/directory/environment the app runs with, its stdout/stderr lines,
//! its exit status powering the VM off, and the ACPI power button (QEMU's `system_powerdown`)
//! stopping it with SIGTERM first. Bad inputs fail before anything is written.
//!
//! Fixtures: built by `cargo xtask test` (D2V_FIXTURES); without them, and unless required
//! (D2V_REQUIRE_FIXTURES=1 or D2V_FIXTURES set), these tests print a notice and pass. The
//! static d2v comes from D2V_BIN (d2v's init is a copy of it). Work files and serial logs stay
//! in `target/app-vm/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testkit::fixtures::apps::{self, AppFixture};
use testkit::qemu::{Boot, Firmware, Running, Slot};
use testkit::registry::{Kind, Registry};

/// QEMUs at once (TCG, 2 cores).
const MAX_QEMUS: usize = 2;
/// A TCG boot to the app takes 20-60 s on an idle machine; far more on a busy one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

fn required() -> bool {
    std::env::var("D2V_REQUIRE_FIXTURES").as_deref() == Ok("1")
        || std::env::var_os("D2V_FIXTURES").is_some()
}

/// The registry serving every app and kernel fixture as `d2v-apps/NAME:latest`, or `None`
/// (after a notice) when the fixtures are not built and not required.
fn registry() -> Option<&'static Registry> {
    static REG: OnceLock<Option<&'static Registry>> = OnceLock::new();
    *REG.get_or_init(|| {
        let fixtures: Vec<AppFixture> = apps::ALL
            .iter()
            .filter_map(|n| apps::try_load_app(n))
            .collect();
        if fixtures.len() < apps::ALL.len() {
            if required() {
                apps::ALL.iter().for_each(|n| drop(apps::load_app(n)));
            }
            eprintln!("NOTICE: app VM tests skipped: app fixtures not built (cargo xtask test)");
            return None;
        }
        let reg = Registry::start(Kind::Plain);
        for f in &fixtures {
            reg.push(&f.oci_ref(), &format!("d2v-apps/{}:latest", f.name));
        }
        Some(reg.until_exit())
    })
}

fn d2v() -> PathBuf {
    testkit::fixtures::d2v_bin(env!("CARGO_BIN_EXE_d2v"))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/app-vm")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

fn image(reg: &Registry, name: &str) -> String {
    format!("{}/d2v-apps/{name}:latest", reg.host)
}

/// `d2v pull APP --kernel-from KERNEL -o DIR/NAME.ova --json` plus `extra`; the summary and the
/// VMDK taken out of the OVA.
fn pull(dir: &Path, app: &str, kernel: &str, extra: &[&str]) -> (serde_json::Value, PathBuf) {
    let reg = registry().expect("checked by the caller");
    let ova = dir.join("vm.ova");
    let out = Command::new(d2v())
        .args([
            "pull",
            &image(reg, app),
            "--kernel-from",
            &image(reg, kernel),
        ])
        .arg("-o")
        .arg(&ova)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--json")
        .args(extra)
        .output()
        .expect("run d2v");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "d2v pull {app} failed:\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let vmdk = testkit::fixtures::vmdk_from_ova(&ova, &dir.join("ova"));
    (summary, vmdk)
}

/// A free TCP port on 127.0.0.1 for QEMU's host forward.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Where the VM's disk and NIC are attached.
#[derive(Clone, Copy, Debug)]
enum Machine {
    /// SeaBIOS, the disk on a PVSCSI controller and a VMXNET3 NIC: the OVF's devices.
    SeabiosOvf,
    /// OVMF with a virtio disk and a VMXNET3 NIC.
    Ovmf,
}

/// Starts QEMU on `vmdk` with port `port` forwarded to the guest's 8080 and a monitor socket.
fn start(vmdk: &Path, dir: &Path, machine: Machine, port: u16) -> Running {
    let fw = match machine {
        Machine::SeabiosOvf => Firmware::Bios,
        Machine::Ovmf => Firmware::Uefi,
    };
    let mut boot = Boot::new(vmdk, fw, "unused");
    if let Machine::SeabiosOvf = machine {
        boot.scsi_controller = Some("pvscsi".into());
    }
    boot.nic = Some("vmxnet3".into());
    boot.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:{}", apps::HTTP_PORT)];
    boot.monitor = Some(dir.join("monitor.sock"));
    boot.log = Some(dir.join("serial.log"));
    boot.memory_mib = 1024;
    boot.spawn()
}

/// `GET path` on the forwarded port until the answer holds `want` or `timeout` passes.
fn http_get(port: u16, path: &str, want: &str, timeout: Duration) -> Option<String> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: vm\r\n\r\n");
            let mut body = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut body).is_ok()
                && body.contains(want)
            {
                return Some(body);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

/// Waits for `text` on the console, panicking with the log when it does not come.
fn expect(vm: &mut Running, text: &str, what: &str) {
    if !vm.wait_for(text, BOOT_TIMEOUT) {
        panic!(
            "{what}: {text:?} not on the console after {:.0} s; log {}:\n{}",
            vm.elapsed().as_secs_f64(),
            vm.log_path.display(),
            vm.log()
        );
    }
}

/// Sends the ACPI power button and checks that d2v's init stops the app with SIGTERM and the
/// VM powers off by itself.
fn power_button_stops(vm: &mut Running, app_line: Option<&str>) {
    vm.monitor("system_powerdown").expect("QEMU monitor");
    expect(vm, "d2v-init: stopping the app (SIGTERM)", "power button");
    if let Some(line) = app_line {
        expect(vm, &format!("[app] {line}"), "the app's SIGTERM handler");
    }
    expect(
        vm,
        "d2v-init: powering off",
        "power-off after the app stopped",
    );
    vm.expect_power_off(Duration::from_secs(60), "after the guest powered off");
}

#[test]
fn busybox_app_with_a_debian_kernel_serves_http_on_the_ovf_devices() {
    let Some(_) = registry() else { return };
    let dir = work_dir("busybox-debian");
    let (summary, vmdk) = pull(&dir, apps::APP_BUSYBOX, apps::KERNEL_DEBIAN, &[]);
    assert_eq!(summary["vm"]["init"], "d2v", "{summary}");
    assert_eq!(
        summary["vm"]["kernel"]["initramfs"], "kernel image",
        "{summary}"
    );
    let _slot = Slot::take(MAX_QEMUS);
    let port = free_port();
    let mut vm = start(&vmdk, &dir, Machine::SeabiosOvf, port);
    expect(&mut vm, "d2v-init: network: ", "DHCP lease");
    expect(
        &mut vm,
        "10.0.2.15/24 via 10.0.2.2 (dhcp)",
        "QEMU's DHCP address",
    );
    let body = http_get(port, "/", apps::BUSYBOX_INDEX_TEXT, BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("no HTTP answer from the guest:\n{}", vm.log()));
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    // busybox httpd has no SIGTERM handler: it dies by the signal.
    power_button_stops(&mut vm, None);
    assert!(vm.log().contains("app killed by signal 15"), "{}", vm.log());
}

#[test]
fn busybox_app_with_a_linuxkit_kernel_boots_d2vs_initramfs_under_ovmf() {
    let Some(_) = registry() else { return };
    let dir = work_dir("busybox-linuxkit");
    let (summary, vmdk) = pull(&dir, apps::APP_BUSYBOX, apps::KERNEL_LINUXKIT, &[]);
    assert_eq!(summary["vm"]["kernel"]["shape"], "linuxkit", "{summary}");
    assert_eq!(summary["vm"]["kernel"]["initramfs"], "d2v", "{summary}");
    let _slot = Slot::take(MAX_QEMUS);
    let port = free_port();
    let mut vm = start(&vmdk, &dir, Machine::Ovmf, port);
    expect(
        &mut vm,
        "d2v-init: starting app",
        "d2v's early init switching to the root",
    );
    http_get(port, "/", apps::BUSYBOX_INDEX_TEXT, BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("no HTTP answer from the guest:\n{}", vm.log()));
    power_button_stops(&mut vm, None);
}

#[test]
fn python_app_runs_as_its_user_and_its_exit_status_powers_the_vm_off() {
    let Some(_) = registry() else { return };
    let app = apps::load_app(apps::APP_PYTHON);
    let dir = work_dir("python-debian");
    let (summary, vmdk) = pull(&dir, apps::APP_PYTHON, apps::KERNEL_DEBIAN, &[]);
    let user = app.expect.user.clone().expect("app-python's user");
    assert_eq!(summary["vm"]["app"]["uid"], user.uid, "{summary}");
    let _slot = Slot::take(MAX_QEMUS);
    let port = free_port();
    let mut vm = start(&vmdk, &dir, Machine::SeabiosOvf, port);
    let probe = app.expect.probe_line.clone().expect("probe line");
    expect(&mut vm, &format!("[app] {probe}"), "the app's probe line");
    let stderr = app.expect.stderr_line.clone().expect("stderr line");
    expect(&mut vm, &format!("[app:err] {stderr}"), "the app's stderr");
    http_get(port, "/", apps::PYTHON_INDEX_TEXT, BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("no HTTP answer from the guest:\n{}", vm.log()));
    let exit = app.expect.exit_path.clone().expect("exit path");
    let _ = http_get(port, &format!("{exit}3"), "", Duration::from_secs(30));
    expect(
        &mut vm,
        "d2v-init: app exited with status 3",
        "the app's exit status",
    );
    expect(
        &mut vm,
        "d2v-init: powering off",
        "power-off after the app exited",
    );
    vm.expect_power_off(Duration::from_secs(60), "after the app exited");
}

#[test]
fn python_app_gets_sigterm_before_power_off_under_ovmf() {
    let Some(_) = registry() else { return };
    let app = apps::load_app(apps::APP_PYTHON);
    let dir = work_dir("python-linuxkit");
    let (_, vmdk) = pull(&dir, apps::APP_PYTHON, apps::KERNEL_LINUXKIT, &[]);
    let _slot = Slot::take(MAX_QEMUS);
    let port = free_port();
    let mut vm = start(&vmdk, &dir, Machine::Ovmf, port);
    http_get(port, "/", apps::PYTHON_INDEX_TEXT, BOOT_TIMEOUT)
        .unwrap_or_else(|| panic!("no HTTP answer from the guest:\n{}", vm.log()));
    let sigterm = app.expect.sigterm_line.clone().expect("sigterm line");
    power_button_stops(&mut vm, Some(&sigterm));
    assert!(
        vm.log().contains("d2v-init: app exited with status 0"),
        "{}",
        vm.log()
    );
}

/// Boots app-systemd and checks that its own systemd is PID 1 and powers the VM off.
fn systemd_runs_as_its_own_init(kernel: &str, machine: Machine) {
    let Some(_) = registry() else { return };
    let app = apps::load_app(apps::APP_SYSTEMD);
    let dir = work_dir(&format!("systemd-{kernel}"));
    let (summary, vmdk) = pull(&dir, apps::APP_SYSTEMD, kernel, &[]);
    assert_ne!(summary["vm"]["init"], "d2v", "{summary}");
    assert!(summary["vm"]["app"].is_null(), "{summary}");
    let _slot = Slot::take(MAX_QEMUS);
    let mut vm = start(&vmdk, &dir, machine, free_port());
    let marker = app.expect.serial_marker.clone().expect("serial marker");
    // The marker names PID 1 (`pid1=systemd`).
    expect(&mut vm, &marker, "the image's own systemd unit");
    assert!(!vm.log().contains("d2v-init: starting app"), "{}", vm.log());
    vm.expect_power_off(Duration::from_secs(120), "the systemd guest powering off");
}

#[test]
fn an_image_with_systemd_keeps_its_own_init() {
    systemd_runs_as_its_own_init(apps::KERNEL_DEBIAN, Machine::SeabiosOvf);
}

/// The LinuxKit kernel has no initramfs: d2v's early init finds the root and starts systemd.
#[test]
fn an_image_with_systemd_boots_through_d2vs_initramfs_under_ovmf() {
    systemd_runs_as_its_own_init(apps::KERNEL_LINUXKIT, Machine::Ovmf);
}

#[test]
fn a_given_kernel_replaces_the_images_own() {
    let Some(_) = registry() else { return };
    let Some(os) = testkit::fixtures::try_load(testkit::fixtures::SYSTEMD) else {
        assert!(!required(), "the systemd fixture is missing");
        return;
    };
    let dir = work_dir("replace-kernel");
    let kernel = apps::load_app(apps::KERNEL_LINUXKIT).oci_ref();
    let out = Command::new(d2v())
        .args([
            "build",
            &os.oci_ref(),
            "--kernel-from",
            &kernel,
            "--json",
            "-o",
        ])
        .arg(dir.join("vm.ova"))
        .output()
        .expect("run d2v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let replaced = v["vm"]["kernel"]["replaced"].as_array().expect("replaced");
    let notes = v["vm"]["notes"].to_string();
    assert!(
        notes.contains("replaces the image's own"),
        "build did not say so: {notes}"
    );
    assert!(
        replaced.iter().any(|r| r.as_str() == Some(&*os.kernel)),
        "{} not among the replaced: {replaced:?}",
        os.kernel
    );
    // One kernel left to boot: the given one.
    assert_eq!(v["kernels"].as_array().map(Vec::len), Some(1), "{v}");
}

/// Runs d2v expecting failure; its stderr.
fn d2v_fails(args: &[&str]) -> String {
    let out = Command::new(d2v()).args(args).output().expect("run d2v");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "d2v {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// An OCI layout of one layer of `entries`, configured by `spec`.
fn layout(dir: &Path, entries: &[testkit::tar::Entry], spec: testkit::oci::ImageSpec) -> String {
    let spec = spec
        .layer(testkit::tar::tar(entries), testkit::oci::Compression::Gzip)
        .tag("latest");
    testkit::oci::write_image(dir, &spec).expect("write the layout");
    format!("oci:{}:latest", dir.display())
}

#[test]
fn bad_inputs_fail_clearly_before_anything_is_written() {
    use testkit::oci::ImageSpec;
    use testkit::tar::Entry;
    let Some(_) = registry() else { return };
    let dir = work_dir("bad-inputs");
    let busybox = std::fs::read("/bin/busybox").expect("the host's static busybox");
    let debian = apps::load_app(apps::KERNEL_DEBIAN);
    let kernel = debian.expect.kernel.clone().expect("kernel facts");
    let bzimage = std::fs::read(std::env::var("D2V_TEST_KERNEL").expect("D2V_TEST_KERNEL"))
        .expect("the test kernel");
    let app = |name: &str, spec: ImageSpec| {
        let entries = [Entry::file("bin/busybox", &busybox)];
        layout(
            &dir.join(name),
            &entries,
            spec.entrypoint(&["/bin/busybox", "true"]),
        )
    };
    let good_app = app("good", ImageSpec::new());
    let good_kernel = apps::load_app(apps::KERNEL_DEBIAN).oci_ref();
    let out = dir.join("vm.ova");
    let out_s = out.display().to_string();
    let cases: Vec<(&str, String, String, Vec<&str>)> = vec![
        (
            "a kernel source with no kernel",
            good_app.clone(),
            apps::load_app(apps::APP_BUSYBOX).oci_ref(),
            vec!["no kernel", "/boot/vmlinuz-*", "LinuxKit"],
        ),
        (
            "modules of another version",
            good_app.clone(),
            layout(
                &dir.join("mismatch"),
                &[
                    Entry::file(format!("boot/vmlinuz-{}", kernel.version), &bzimage),
                    Entry::file("lib/modules/6.1.0-1-other/modules.dep", b""),
                ],
                ImageSpec::new(),
            ),
            vec![kernel.version.as_str(), "6.1.0-1-other"],
        ),
        (
            "a User the image does not have",
            app("nouser", ImageSpec::new().user("nobody")),
            good_kernel.clone(),
            vec!["\"nobody\"", "/etc/passwd"],
        ),
        (
            "an app for another architecture",
            app("arm64", {
                let mut s = ImageSpec::new();
                s.architecture = "arm64".into();
                s
            }),
            good_kernel.clone(),
            vec!["arm64", "x86-64"],
        ),
    ];
    for (what, app_ref, kernel_ref, needles) in cases {
        let mut args = vec![
            "build",
            &app_ref,
            "--kernel-from",
            &kernel_ref,
            "-o",
            &out_s,
        ];
        if what.contains("architecture") {
            // Picked on purpose: the source would refuse it for linux/amd64 already.
            args.extend(["--platform", "linux/arm64"]);
        }
        let err = d2v_fails(&args);
        for n in needles {
            assert!(err.contains(n), "{what}: {n:?} not in:\n{err}");
        }
        assert!(!out.exists(), "{what}: {} was written", out.display());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{what}: temporary files left: {left:?}");
    }
}

#[test]
fn app_builds_are_reproducible_and_inspect_reports_the_vm() {
    let Some(_) = registry() else { return };
    let dir = work_dir("reproducible");
    let app = apps::load_app(apps::APP_PYTHON).oci_ref();
    let kernel = apps::load_app(apps::KERNEL_LINUXKIT).oci_ref();
    // The second build runs unprivileged: uid/gid 65534, no groups, no capabilities.
    let setpriv = testkit::require_tool("setpriv", "util-linux");
    let mut outputs = Vec::new();
    for run in ["root", "nobody"] {
        let work = dir.join(run);
        std::fs::create_dir_all(&work).unwrap();
        let ova = work.join("vm.ova");
        let mut cmd = if run == "root" {
            Command::new(d2v())
        } else {
            std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
            let mut c = Command::new(&setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(["--inh-caps=-all", "--bounding-set=-all"])
                .arg(d2v());
            c
        };
        let out = cmd
            .args(["build", &app, "--kernel-from", &kernel, "-o"])
            .arg(&ova)
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("HOME", &work)
            .env("TMPDIR", &work)
            .output()
            .expect("run d2v");
        assert!(
            out.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(std::fs::read(&ova).expect("the OVA"));
    }
    assert!(
        outputs[0] == outputs[1],
        "the build as uid 65534 differs from root's (same inputs)"
    );

    let out = Command::new(d2v())
        .args(["inspect", &app, "--kernel-from", &kernel, "--json"])
        .output()
        .expect("run d2v");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let vm = &v["vm"];
    let k = apps::load_app(apps::KERNEL_LINUXKIT)
        .expect
        .kernel
        .expect("kernel facts");
    assert_eq!(vm["kernel"]["version"], k.version, "{vm}");
    assert_eq!(vm["init"], "d2v", "{vm}");
    assert_eq!(vm["app"]["args"][0], "python3", "{vm}");
    assert_eq!(vm["app"]["uid"], apps::APP_UID, "{vm}");
    assert_eq!(vm["app"]["working_dir"], apps::APP_WORKDIR, "{vm}");
    assert_eq!(vm["app"]["exposed_ports"][0], "8080/tcp", "{vm}");
    let drivers = vm["drivers"].as_array().expect("drivers");
    let status = |name: &str| {
        drivers
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["status"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(status("vmw_pvscsi").as_deref(), Some("module"), "{vm}");
    assert_eq!(status("ext4").as_deref(), Some("built-in"), "{vm}");
    assert_eq!(status("vmxnet3").as_deref(), Some("module"), "{vm}");
    let text = Command::new(d2v())
        .args(["inspect", &app, "--kernel-from", &kernel])
        .output()
        .expect("run d2v");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("init:        d2v's init"), "{text}");
    assert!(text.contains("uid 1000 gid 1000"), "{text}");
}

/// Grafting a kernel, putting d2v's init in and writing its initramfs run inside d2v too:
/// strace sees no program started but d2v itself.
#[test]
fn an_app_build_starts_no_other_program() {
    let Some(_) = registry() else { return };
    let strace = testkit::require_tool("strace", "strace");
    let dir = work_dir("strace");
    let log = dir.join("strace.log");
    let out = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(&log)
        .arg(d2v())
        .args([
            "build",
            &apps::load_app(apps::APP_BUSYBOX).oci_ref(),
            "--kernel-from",
        ])
        .arg(apps::load_app(apps::KERNEL_LINUXKIT).oci_ref())
        .arg("-o")
        .arg(dir.join("vm.ova"))
        .output()
        .expect("run strace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&log).expect("strace log");
    let execs: Vec<&str> = log.lines().filter(|l| l.contains("execve(")).collect();
    assert_eq!(execs.len(), 1, "programs started:\n{log}");
    assert!(dir.join("vm.ova").is_file());
}
