//! d2v's init booted for real: the static release d2v (D2V_BIN) as `/.d2v/init` of an
//! initramfs built here, under Debian's cloud kernel (D2V_TEST_KERNEL, its modules from
//! D2V_TEST_KERNEL_DIR) in QEMU (TCG), with busybox as the app. Checks the console lines,
//! DHCP and static networking (an HTTP GET from the host through a forwarded port), the
//! app's user, groups, environment and working directory, stopping by the ACPI power button,
//! the restart policy, and that the VM powers itself off. And the early init (`/init` of an
//! initramfs) finding, mounting and switching to a GPT/ext4 root disk written with d2v's own
//! library.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use d2v::init::config::{AppConfig, Restart};
use testkit::cpio::{newc_entries, Entry};
use testkit::qemu::{Boot, Firmware, Running};

const INDEX: &str = "<h1>served by d2v's init</h1>\n";
const MODULES: [&str; 3] = [
    "kernel/drivers/net/vmxnet3/vmxnet3.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
];

struct Env {
    d2v: PathBuf,
    kernel: PathBuf,
    /// `lib/modules/VERSION` of the kernel package.
    modules: PathBuf,
}

fn env() -> Option<Env> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let (Some(d2v), Some(kernel), Some(dir)) = (
        var("D2V_BIN"),
        var("D2V_TEST_KERNEL"),
        var("D2V_TEST_KERNEL_DIR"),
    ) else {
        println!("skipped: D2V_BIN, D2V_TEST_KERNEL and D2V_TEST_KERNEL_DIR must be set");
        return None;
    };
    let modules = std::fs::read_dir(dir.join("lib/modules"))
        .expect("D2V_TEST_KERNEL_DIR/lib/modules")
        .flatten()
        .next()
        .expect("a kernel version in lib/modules")
        .path();
    Some(Env {
        d2v,
        kernel,
        modules,
    })
}

fn config(args: &[&str], restart: Restart) -> AppConfig {
    AppConfig {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![
            d2v::init::config::DEFAULT_PATH.into(),
            "GREETING=hello from the app".into(),
            "HOME=/www".into(),
        ],
        working_dir: "/www".into(),
        uid: 1000,
        gid: 1000,
        groups: vec![2000],
        hostname: "d2v-test".into(),
        stop_signal: libc::SIGTERM,
        stop_timeout_secs: 5,
        restart,
        network_timeout_secs: 20,
        exposed_ports: vec!["8080/tcp".into()],
    }
}

/// The initramfs: init, its config and modules, busybox and /www/index.html.
fn initramfs(env: &Env, config: &[u8], dir: &Path) -> PathBuf {
    let dir_entry = |p: &str| Entry::Dir(p.into(), 0o755);
    let mut e = vec![
        dir_entry(".d2v"),
        Entry::File(".d2v/init".into(), 0o755, std::fs::read(&env.d2v).unwrap()),
        Entry::File(".d2v/config.json".into(), 0o644, config.to_vec()),
        dir_entry("bin"),
        Entry::File(
            "bin/busybox".into(),
            0o755,
            std::fs::read("/bin/busybox").unwrap(),
        ),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        dir_entry("etc"),
        dir_entry("www"),
        Entry::File("www/index.html".into(), 0o644, INDEX.as_bytes().to_vec()),
    ];
    let list = module_entries(env, &MODULES, &mut e);
    e.push(Entry::File(".d2v/modules".into(), 0o644, list.into_bytes()));
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, newc_entries(&e)).unwrap();
    path
}

/// Module paths (relative to `lib/modules/VERSION`) and their initramfs entries: directories
/// (once each) and files, in the list's order.
fn module_entries(env: &Env, modules: &[&str], e: &mut Vec<Entry>) -> String {
    let version = env.modules.file_name().unwrap().to_str().unwrap();
    let mut list = String::new();
    for m in modules {
        let guest = format!("lib/modules/{version}/{m}");
        let parts: Vec<&str> = guest.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            let known = e.iter().any(|x| matches!(x, Entry::Dir(n, _) if *n == d));
            if !known {
                e.push(Entry::Dir(d, 0o755));
            }
        }
        let data = std::fs::read(env.modules.join(m)).unwrap();
        e.push(Entry::File(guest.clone(), 0o644, data));
        list.push_str(&format!("/{guest}\n"));
    }
    list
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Boots with `cfg` and the kernel command-line `words`; the guest's port 8080 on
/// `guest_addr` (empty: the DHCP address) is forwarded to the returned host port.
fn boot(env: &Env, cfg: &AppConfig, words: &str, guest_addr: &str) -> Vm {
    let config = serde_json::to_vec(cfg).unwrap();
    boot_with(env, &config, words, guest_addr, true)
}

/// [`boot`] with the config file's bytes, with or without the network card.
/// `quiet` on the kernel command line: kernel messages would cut into the lines checked.
fn boot_with(env: &Env, config: &[u8], words: &str, guest_addr: &str, nic: bool) -> Vm {
    let lock = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(env, config, dir.path());
    let port = free_port();
    let mut b = Boot::new("", Firmware::Bios, "");
    b.nic = nic.then(|| "vmxnet3".into());
    b.hostfwd = vec![format!("tcp:127.0.0.1:{port}-{guest_addr}:8080")];
    b.monitor = Some(dir.path().join("monitor.sock"));
    b.log = Some(dir.path().join("serial.log"));
    b.extra_args = vec![
        "-kernel".into(),
        env.kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        format!("console=ttyS0 quiet rdinit=/.d2v/init panic=-1 {words}"),
    ];
    Vm {
        running: b.spawn(),
        port,
        _dir: dir,
        _lock: lock,
    }
}

/// A booted guest; its files and the one-at-a-time lock live as long as it does.
impl Drop for Vm {
    fn drop(&mut self) {
        // Shown with --nocapture (and with a failure's output).
        println!("serial log:\n{}", self.running.log());
    }
}

struct Vm {
    running: Running,
    port: u16,
    _dir: tempfile::TempDir,
    _lock: std::sync::MutexGuard<'static, ()>,
}

/// One TCG guest at a time: they are CPU-bound.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP/1.0 GET of `/` on the host port, retried until `timeout`.
fn http_get(port: u16, timeout: Duration) -> Option<String> {
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        let got = (|| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            body.contains("200").then_some(body)
        })();
        if got.is_some() {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

const BOOT: Duration = Duration::from_secs(120);

fn expect(vm: &mut Running, text: &str) {
    assert!(
        vm.wait_for(text, BOOT),
        "the console never showed {text:?}; serial log:\n{}",
        vm.log()
    );
}

/// Powers the VM off with the ACPI button and checks that init stops the app and QEMU exits.
fn power_button(vm: &mut Running) {
    stop_with(vm, "system_powerdown", "d2v-init: power button pressed");
}

/// Stops the VM by a monitor command (which init reports as `why`), as [`power_button`].
fn stop_with(vm: &mut Running, command: &str, why: &str) {
    vm.monitor(command).expect("monitor");
    expect(vm, why);
    expect(vm, "d2v-init: stopping the app (SIGTERM)");
    expect(vm, "d2v-init: app killed by signal 15 (SIGTERM)");
    expect(vm, "d2v-init: powering off");
    vm.expect_power_off(Duration::from_secs(60), "after the power button");
}

#[test]
fn dhcp_http_as_a_user_and_the_power_button() {
    let Some(env) = env() else { return };
    let app = [
        "busybox",
        "sh",
        "-c",
        "id; hostname; cat /etc/resolv.conf; exec busybox httpd -f -p 8080 -h /www",
    ];
    let mut guest = boot(&env, &config(&app, Restart::No), "", "");
    let port = guest.port;
    let vm = &mut guest.running;
    expect(
        vm,
        "d2v-init: network: eth0 10.0.2.15/24 via 10.0.2.2 (dhcp), dns 10.0.2.3",
    );
    expect(vm, "d2v-init: starting app: busybox sh -c 'id; hostname; cat /etc/resolv.conf; exec busybox httpd -f -p 8080 -h /www' (uid 1000, gid 1000, in /www)");
    expect(vm, "[app] uid=1000 gid=1000 groups=2000");
    expect(vm, "[app] d2v-test"); // the hostname
    expect(vm, "[app] nameserver 10.0.2.3"); // resolv.conf from the lease
    let page = http_get(port, Duration::from_secs(60));
    assert!(
        page.as_deref().is_some_and(|p| p.ends_with(INDEX)),
        "GET / through the forwarded port: {page:?}; serial log:\n{}",
        vm.log()
    );
    power_button(vm);
}

#[test]
fn user_groups_env_workdir_stderr_and_exit_status_without_network() {
    let Some(env) = env() else { return };
    let app = [
        "busybox",
        "sh",
        "-c",
        // An orphan (the subshell's sleep, reparented to PID 1) must be reaped: no zombie.
        "id; pwd; echo \"$GREETING\"; echo oops >&2; (busybox sleep 0.2 &); busybox sleep 2; \
         busybox ps -o stat | busybox grep -q STAT && echo ps-works; \
         echo zombies=$(busybox ps -o stat | busybox grep -c Z); exit 3",
    ];
    let mut guest = boot(&env, &config(&app, Restart::No), "d2v.network=none", "");
    let vm = &mut guest.running;
    expect(vm, "d2v-init: app exited with status 3");
    let log = vm.expect_power_off(Duration::from_secs(60), "after the app exited");
    testkit::qemu::assert_log_has(
        &log,
        &[
            "d2v-init: network: none (d2v.network=none)",
            "[app] uid=1000 gid=1000 groups=2000",
            "[app] /www",
            "[app] hello from the app",
            "[app:err] oops",
            "[app] ps-works",
            "[app] zombies=0",
            "d2v-init: powering off",
        ],
    );
    assert!(
        !log.contains("(dhcp)"),
        "DHCP ran with d2v.network=none:\n{log}"
    );
}

#[test]
fn static_network_restart_on_failure_and_ctrl_alt_del() {
    let Some(env) = env() else { return };
    // Fails twice (exit 1), then serves: on-failure restarts it until it does.
    let script = "n=$(cat /tmp/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/runs; \
                  if [ $n -lt 3 ]; then echo \"run $n fails\"; exit 1; fi; \
                  printf 'partial '; sleep 1; echo \"run $n serves\"; \
                  exec busybox httpd -f -p 8080 -h /www";
    let app = ["busybox", "sh", "-c", script];
    let words = "d2v.network=static d2v.ip=10.0.2.16/24 d2v.gateway=10.0.2.2 d2v.dns=10.0.2.3";
    let mut guest = boot(&env, &config(&app, Restart::OnFailure), words, "10.0.2.16");
    let port = guest.port;
    let vm = &mut guest.running;
    expect(
        vm,
        "d2v-init: network: eth0 10.0.2.16/24 via 10.0.2.2 (static), dns 10.0.2.3",
    );
    // A partial line is shown after a short delay, the rest as the next line.
    expect(vm, "[app] partial \r\n[app] run 3 serves");
    let log = vm.log();
    assert_eq!(
        log.matches("d2v-init: app exited with status 1").count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("[app] run 1 fails") && log.contains("[app] run 2 fails"),
        "{log}"
    );
    let page = http_get(port, Duration::from_secs(60));
    assert!(
        page.as_deref().is_some_and(|p| p.ends_with(INDEX)),
        "GET / on the static address: {page:?}; serial log:\n{}",
        vm.log()
    );
    // Ctrl-Alt-Del: the kernel sends init SIGINT (init turned the immediate reboot off).
    stop_with(vm, "sendkey ctrl-alt-delete", "d2v-init: SIGINT received");
}

/// Without a network card DHCP gives up after `network_timeout_secs` and the app starts
/// anyway; an executable that is not in PATH is exit status 127; the VM powers off.
#[test]
fn no_network_card_and_a_missing_executable() {
    let Some(env) = env() else { return };
    let mut cfg = config(&["no-such-app", "--flag"], Restart::No);
    cfg.network_timeout_secs = 3;
    let config = serde_json::to_vec(&cfg).unwrap();
    let mut guest = boot_with(&env, &config, "", "", false);
    let vm = &mut guest.running;
    expect(vm, "d2v-init: app exited with status 127");
    let log = vm.expect_power_off(Duration::from_secs(60), "after the app exited");
    testkit::qemu::assert_log_has(
        &log,
        &[
            "d2v-init: network: no Ethernet interface",
            "d2v-init: network did not come up within 3 s; starting the app anyway",
            "d2v-init: no-such-app: executable file not found in $PATH (/usr/local/sbin:",
            "d2v-init: powering off",
        ],
    );
}

/// A config that is not an AppConfig: init says why and powers off after 10 s.
#[test]
fn a_broken_config_powers_off() {
    let Some(env) = env() else { return };
    let mut guest = boot_with(&env, b"{\"args\": 1}", "d2v.network=none", "", false);
    let vm = &mut guest.running;
    let log = vm.expect_power_off(BOOT, "after the broken config");
    testkit::qemu::assert_log_has(
        &log,
        &[
            "d2v-init: /.d2v/config.json is not a valid configuration: invalid type: integer `1`",
            "d2v-init: powering off in 10 s",
        ],
    );
    let off = log
        .lines()
        .any(|l| l.trim_end() == "d2v-init: powering off");
    assert!(off, "no power-off line in the serial log:\n{log}");
}

/// Boots the early init: `/init` of an initramfs with the virtio modules, and a GPT disk
/// (written with d2v's layout and ext4 writer) whose root holds `/.d2v/init`, busybox and a
/// config running `busybox cat /proc/mounts`. `root=PARTUUID=` names the root partition, or
/// another GUID when `wrong_partuuid`. Returns the serial log once QEMU exited by itself.
fn early_boot(env: &Env, wrong_partuuid: bool) -> String {
    use d2v::tree::testing::add_file_with;
    use d2v::tree::{Inode, Metadata, Tree};
    let _lock = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["busybox", "cat", "/proc/mounts"], Restart::No);
    let mut t = Tree::in_temp().unwrap();
    let meta = |mode| Metadata {
        mode,
        ..Metadata::default()
    };
    for d in ["dev", "proc", "sys", "www"] {
        t.insert(d.as_bytes(), Inode::dir(meta(0o755))).unwrap();
    }
    let d2v_exe = std::fs::read(&env.d2v).unwrap();
    let config_json = serde_json::to_vec(&cfg).unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    add_file_with(&mut t, ".d2v/init", &d2v_exe, meta(0o755));
    add_file_with(&mut t, ".d2v/config.json", &config_json, meta(0o644));
    add_file_with(&mut t, "bin/busybox", &busybox, meta(0o755));
    let layout = d2v::disk::layout::Layout::plan("init-boot", 0, 64 << 20);
    let disk_path = dir.path().join("disk.raw");
    let disk = std::fs::File::create(&disk_path).unwrap();
    d2v::disk::layout::write_partition_table(&layout, &disk).unwrap();
    let mut opts = d2v::disk::ext4::Ext4Options::from_seed("init-boot");
    opts.size = Some(layout.root.size);
    d2v::disk::ext4::write(&t, &disk, layout.root.offset, &opts).unwrap();
    drop(disk);

    let mut e = vec![
        Entry::File("init".into(), 0o755, d2v_exe),
        Entry::Dir(".d2v".into(), 0o755),
    ];
    let list = module_entries(env, &VIRTIO_BLK, &mut e);
    e.push(Entry::File(".d2v/modules".into(), 0o644, list.into_bytes()));
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, newc_entries(&e)).unwrap();

    let root = if wrong_partuuid {
        layout.esp_uuid.map(|b| !b)
    } else {
        layout.root_uuid
    };
    let partuuid = d2v::ids::uuid_string(&root);
    let mut b = Boot::new(&disk_path, Firmware::Bios, "");
    b.log = Some(dir.path().join("serial.log"));
    b.extra_args = vec![
        "-kernel".into(),
        env.kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        format!("console=ttyS0 quiet panic=-1 root=PARTUUID={partuuid} init=/.d2v/init d2v.network=none"),
    ];
    let mut vm = b.spawn();
    let exited = vm.wait_exit(BOOT);
    let log = vm.log();
    println!("serial log:\n{log}");
    assert!(exited.is_some(), "QEMU did not exit; serial log:\n{log}");
    log
}

/// virtio_blk and what it needs, dependencies first (modules.dep of Debian's 6.1 kernel).
const VIRTIO_BLK: [&str; 6] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
];

/// Mode 1: `/init` loads the virtio modules, finds the root partition by `root=PARTUUID=`,
/// mounts it read-only, moves /dev, /proc and /sys into it and starts `/.d2v/init` there,
/// which remounts it read-write and runs the app.
#[test]
fn early_init_switches_to_the_root_partition() {
    let Some(env) = env() else { return };
    let log = early_boot(&env, false);
    testkit::qemu::assert_log_has(
        &log,
        &[
            "[app] /dev/vda3 / ext4 rw",
            "d2v-init: app exited with status 0",
            "d2v-init: powering off",
        ],
    );
}

/// Mode 1 with a PARTUUID no partition has: after 30 s the early init says so, lists the
/// block devices and modules it saw, and powers off 10 s later (no kernel panic).
#[test]
fn early_init_without_its_root_powers_off() {
    let Some(env) = env() else { return };
    let log = early_boot(&env, true);
    testkit::qemu::assert_log_has(
        &log,
        &[
            "appeared within 30 s",
            "d2v-init: block devices: vda",
            "d2v-init: modules loaded: /lib/modules/",
            "virtio_blk.ko",
            "d2v-init: powering off in 10 s",
        ],
    );
    assert!(!log.contains("Kernel panic"), "{log}");
}
