use super::*;
use crate::tree::testing::from_layers;
use testkit::tar::Entry;

fn tree(entries: &[Entry]) -> Tree {
    from_layers(&[entries])
}

fn art(path: &str, to: Option<&str>) -> Artifact {
    Artifact {
        path: path.into(),
        resolves_to: to.map(Into::into),
    }
}

const K: &str = "6.1.0-28-cloud-amd64";

fn debian() -> Vec<Entry> {
    vec![
        Entry::symlink("lib", "usr/lib"),
        Entry::symlink("sbin", "usr/sbin"),
        Entry::symlink("usr/sbin/init", "../lib/systemd/systemd"),
        Entry::file("usr/lib/systemd/systemd", "ELF").mode(0o755),
        Entry::file(format!("boot/vmlinuz-{K}"), "kernel"),
        Entry::file(format!("boot/initrd.img-{K}"), "cpio"),
        Entry::file(format!("boot/config-{K}"), "cfg"),
        Entry::symlink("vmlinuz", format!("boot/vmlinuz-{K}")),
        Entry::symlink("initrd.img", format!("/boot/initrd.img-{K}")),
        Entry::symlink("vmlinuz.old", "boot/vmlinuz-gone"),
        Entry::file(format!("usr/lib/modules/{K}/modules.dep"), ""),
        Entry::file("usr/lib/grub/i386-pc/normal.mod", "m"),
        Entry::file("usr/lib/grub/i386-pc/linux.mod", "m"),
        Entry::file("usr/lib/grub/i386-pc/boot.img", "b"),
        Entry::symlink("etc/os-release", "../usr/lib/os-release"),
        Entry::file(
            "usr/lib/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
        ),
        Entry::file(".dockerenv", ""),
    ]
}

#[test]
fn debian_systemd_usrmerge() {
    let r = boot_report(&tree(&debian()));
    assert_eq!(
        r.kernels,
        [
            art(&format!("/boot/vmlinuz-{K}"), None),
            art("/vmlinuz", Some(&format!("/boot/vmlinuz-{K}")))
        ]
    );
    assert_eq!(
        r.initramfs,
        [
            art(&format!("/boot/initrd.img-{K}"), None),
            art("/initrd.img", Some(&format!("/boot/initrd.img-{K}")))
        ]
    );
    assert_eq!(r.init, InitSystem::Systemd);
    assert_eq!(r.init_path.as_deref(), Some("/usr/lib/systemd/systemd"));
    assert_eq!((r.grub_i386_pc.present, r.grub_i386_pc.modules), (true, 2));
    assert_eq!(
        (r.grub_x86_64_efi.present, r.grub_x86_64_efi.modules),
        (false, 0)
    );
    assert_eq!(r.container_markers, ["/.dockerenv"]);
    assert_eq!(r.os_release.id.as_deref(), Some("debian"));
    assert_eq!(r.os_release.version_id.as_deref(), Some("12"));
    assert_eq!(
        r.os_release.pretty_name.as_deref(),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
}

#[test]
fn kernel_in_lib_modules() {
    let r = boot_report(&tree(&[
        Entry::symlink("lib", "usr/lib"),
        Entry::file(format!("usr/lib/modules/{K}/vmlinuz"), "k"),
    ]));
    assert_eq!(
        r.kernels,
        [art(
            &format!("/lib/modules/{K}/vmlinuz"),
            Some(&format!("/usr/lib/modules/{K}/vmlinuz"))
        )]
    );
}

#[test]
fn alpine_openrc_on_busybox_init() {
    let r = boot_report(&tree(&[
        Entry::file("bin/busybox", "bb").mode(0o755),
        Entry::symlink("sbin/init", "/bin/busybox"),
        Entry::file("sbin/openrc", "rc").mode(0o755),
        Entry::file("boot/vmlinuz-virt", "k"),
        Entry::file("boot/initramfs-virt", "i"),
        Entry::file("run/.containerenv", ""),
        Entry::file(
            "etc/os-release",
            "ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME='Alpine Linux v3.20'\n",
        ),
    ]));
    assert_eq!(r.init, InitSystem::OpenRc);
    assert_eq!(r.init_path.as_deref(), Some("/bin/busybox"));
    assert_eq!(r.kernels, [art("/boot/vmlinuz-virt", None)]);
    assert_eq!(r.initramfs, [art("/boot/initramfs-virt", None)]);
    assert_eq!(r.container_markers, ["/run/.containerenv"]);
    assert_eq!(
        r.os_release.pretty_name.as_deref(),
        Some("Alpine Linux v3.20")
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["init"], "openrc");
    assert_eq!(
        json["kernels"][0],
        serde_json::json!({"path": "/boot/vmlinuz-virt"})
    );
}

#[test]
fn debian_openrc_with_sysvinit() {
    let r = boot_report(&tree(&[
        Entry::file("sbin/init", "sysvinit").mode(0o755),
        Entry::file("sbin/openrc", "rc").mode(0o755),
        Entry::file("etc/inittab", "::sysinit:/sbin/openrc sysinit\n"),
    ]));
    assert_eq!(
        (r.init, r.init_path.as_deref()),
        (InitSystem::OpenRc, Some("/sbin/init"))
    );
}

#[test]
fn busybox_sysvinit_other_systemd_without_sbin_init_and_none() {
    let busybox = tree(&[
        Entry::file("bin/busybox", "bb"),
        Entry::symlink("sbin/init", "../bin/busybox"),
    ]);
    assert_eq!(boot_report(&busybox).init, InitSystem::Busybox);
    let sysv = tree(&[
        Entry::file("sbin/init", "init"),
        Entry::file("etc/inittab", "id:2:initdefault:\n"),
    ]);
    assert_eq!(boot_report(&sysv).init, InitSystem::Sysvinit);
    let other = tree(&[Entry::file("sbin/init", "tini")]);
    assert_eq!(boot_report(&other).init, InitSystem::Other);
    // systemd without /sbin/init (no systemd-sysv): the kernel will not start it.
    let systemd = tree(&[Entry::file("lib/systemd/systemd", "ELF")]);
    let r = boot_report(&systemd);
    assert_eq!((r.init, r.init_path.as_deref()), (InitSystem::None, None));
    assert!(super::systemd_without_init(&systemd));
    // The kernel's other places: /etc/init, /bin/init.
    let etc = tree(&[Entry::file("etc/init", "init").mode(0o755)]);
    assert_eq!(
        super::init_system(&etc),
        (
            InitSystem::Other,
            Some(("/etc/init", "/etc/init".to_string()))
        )
    );
    let none = boot_report(&tree(&[
        Entry::file("app", "x"),
        Entry::symlink("sbin/init", "/missing"),
    ]));
    assert_eq!((none.init, none.init_path), (InitSystem::None, None));
    assert!(
        none.kernels.is_empty() && none.initramfs.is_empty() && none.container_markers.is_empty()
    );
    assert_eq!(none.os_release, OsRelease::default());
    assert!(!none.grub_i386_pc.present);
}

#[test]
fn symlink_loops_and_escapes_stay_inside_the_tree() {
    let t = tree(&[
        Entry::symlink("vmlinuz", "vmlinuz.old"),
        Entry::symlink("vmlinuz.old", "vmlinuz"),
        Entry::symlink("initrd.img", "../../../boot/initrd.img-x"),
        Entry::file("boot/initrd.img-x", "i"),
    ]);
    let r = boot_report(&t);
    assert!(r.kernels.is_empty());
    assert_eq!(
        r.initramfs,
        [
            art("/boot/initrd.img-x", None),
            art("/initrd.img", Some("/boot/initrd.img-x"))
        ]
    );
    assert_eq!(resolve(&t, "/vmlinuz"), None);
}

#[test]
fn efi_grub_modules_and_display() {
    let r = boot_report(&tree(&[
        Entry::file("usr/lib/grub/x86_64-efi/part_gpt.mod", "m"),
        Entry::dir("usr/lib/grub/i386-pc"),
    ]));
    assert_eq!(
        (r.grub_x86_64_efi.present, r.grub_x86_64_efi.modules),
        (true, 1)
    );
    assert_eq!((r.grub_i386_pc.present, r.grub_i386_pc.modules), (true, 0));
    let text = r.to_string();
    assert!(
        text.contains("/usr/lib/grub/x86_64-efi: 1 modules"),
        "{text}"
    );
    assert!(text.contains("init:       none"), "{text}");
}

#[test]
fn vmxnet3_driver_as_module_or_built_in() {
    let report = |extra: &[Entry]| {
        let mut e = debian();
        e.extend_from_slice(extra);
        boot_report(&tree(&e)).kernel_modules
    };
    let none = report(&[]);
    assert_eq!(
        none,
        [KernelModules {
            version: K.into(),
            vmxnet3: false
        }]
    );
    let module = report(&[Entry::file(
        format!("usr/lib/modules/{K}/kernel/drivers/net/vmxnet3/vmxnet3.ko.xz"),
        "ko",
    )]);
    assert!(module[0].vmxnet3, "{module:?}");
    let builtin = report(&[Entry::file(
        format!("usr/lib/modules/{K}/modules.builtin"),
        "kernel/drivers/net/ethernet/intel/e1000/e1000.ko\nkernel/drivers/net/vmxnet3/vmxnet3.ko\n",
    )]);
    assert!(builtin[0].vmxnet3, "{builtin:?}");
    // Another module of that name elsewhere does not count; a kernel without modules is not listed.
    let other = report(&[Entry::file(
        format!("usr/lib/modules/{K}/kernel/vmxnet3.txt"),
        "",
    )]);
    assert!(!other[0].vmxnet3, "{other:?}");
    let no_modules = boot_report(&tree(&[Entry::file("boot/vmlinuz-9.9", "k")])).kernel_modules;
    assert_eq!(no_modules, []);
    // The fake initramfs text is no archive: its drivers are not claimed either way.
    let d = &boot_report(&tree(&debian())).initramfs_drivers;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].vmw_pvscsi, d[0].mptspi), (None, None));
    assert!(d[0].unreadable.is_some(), "{d:?}");
}

#[test]
fn a_build_looks_for_its_controllers_driver_only() {
    let initrd = testkit::cpio::newc(&[(
        &format!("usr/lib/modules/{K}/kernel/drivers/scsi/vmw_pvscsi.ko")[..],
        &b""[..],
    )]);
    let mut entries = debian();
    entries.retain(|e| !e.path.starts_with(b"boot/initrd"));
    entries.push(Entry::file(format!("boot/initrd.img-{K}"), initrd));
    let t = tree(&entries);
    let d = &boot_report(&t).initramfs_drivers[0];
    assert_eq!((d.vmw_pvscsi, d.mptspi), (Some(true), Some(false)), "{d:?}");
    let d = &boot_report_for(&t, &["vmw_pvscsi"]).initramfs_drivers[0];
    assert_eq!((d.vmw_pvscsi, d.mptspi), (Some(true), None), "{d:?}");
    let d = &boot_report_for(&t, &["mptspi"]).initramfs_drivers[0];
    assert_eq!((d.vmw_pvscsi, d.mptspi), (None, Some(false)), "{d:?}");
}

#[test]
fn ovf_environment_readers_are_found() {
    let mut entries = debian();
    let t = tree(&entries);
    let r = boot_report(&t);
    assert_eq!(r.ovf_environment, ovfenv::OvfEnvReaders::default());
    assert!(r.to_string().contains("ovf properties: nothing reads them"));

    entries.extend([
        Entry::file("usr/bin/cloud-init", "#!/usr/bin/python3").mode(0o755),
        Entry::file("etc/cloud/cloud.cfg", "datasource_list: [ NoCloud ]\n"),
        // The drop-in, read after cloud.cfg, wins.
        Entry::file(
            "etc/cloud/cloud.cfg.d/90_dpkg.cfg",
            "datasource_list:\n  - OVF\n  - None\n",
        ),
        Entry::file("etc/cloud/cloud.cfg.d/README", "datasource_list: [ Ec2 ]\n"),
        Entry::file("usr/bin/vmware-rpctool", "ELF").mode(0o755),
    ]);
    let r = boot_report(&tree(&entries));
    let env = &r.ovf_environment;
    assert_eq!(env.cloud_init.as_deref(), Some("/usr/bin/cloud-init"));
    assert_eq!(
        env.datasource_list,
        Some(vec!["OVF".to_string(), "None".to_string()])
    );
    assert_eq!(
        env.vmware_rpctool.as_deref(),
        Some("/usr/bin/vmware-rpctool")
    );
    let text = r.to_string();
    assert!(
        text.contains("ovf properties: read by cloud-init (OVF data source), vmware-rpctool"),
        "{text}"
    );
    assert!(
        text.contains("cloud-init data sources: OVF, None"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["ovf_environment"]["datasource_list"][0], "OVF");
}
