use super::*;

fn hw(n: u32) -> HwVersion {
    HwVersion::new(n).unwrap()
}

fn chosen(os_release: &str, kernel: Option<&str>, n: u32) -> String {
    guest_os(Some(os_release), kernel, None, hw(n)).os_type
}

/// govmomi `vim25/types/enum.go`, `minAPIVersionForEnumValue["VirtualMachineGuestOsIdentifier"]`:
/// every 64-bit Linux ID it lists that d2v's table has, verbatim.
const GOVMOMI_SINCE: &[(&str, &str)] = &[
    ("rhel9_64Guest", "7.0.1.0"),
    ("centos9_64Guest", "7.0.1.0"),
    ("oracleLinux9_64Guest", "7.0.1.0"),
    ("sles16_64Guest", "7.0.1.0"),
    ("debian12_64Guest", "8.0.0.1"),
    ("other5xLinux64Guest", "7.0.1.0"),
    ("other6xLinux64Guest", "8.0.0.1"),
    ("amazonlinux3_64Guest", "7.0.1.0"),
    ("rockylinux_64Guest", "8.0.0.1"),
    ("almalinux_64Guest", "8.0.0.1"),
];

#[test]
fn table_matches_its_sources() {
    for (id, since) in GOVMOMI_SINCE {
        assert_eq!(GuestId::find(id).map(|g| g.since), Some(*since), "{id}");
    }
    // govmomi lists every ID added from 7.0.1.0 on: the table's others are older.
    for g in GUEST_IDS {
        if !GOVMOMI_SINCE.iter().any(|(id, _)| *id == g.id) {
            assert!(
                ApiRelease::parse(g.since) < ApiRelease::parse("7.0.1.0"),
                "{}",
                g.id
            );
        }
        assert!(g.id.ends_with("64Guest"), "{}", g.id);
    }
    // The API reference's "Since vSphere API" of a few older ones.
    for (id, since) in [
        ("centos7_64Guest", "6.5"),
        ("centos8_64Guest", "6.7"),
        ("amazonlinux2_64Guest", "6.7.1"),
    ] {
        assert_eq!(GuestId::find(id).unwrap().since, since, "{id}");
    }
    // govmomi `ovf/cim.go` GuestIDToCIMOSType.
    for (id, cim) in [
        ("debian12_64Guest", 96),
        ("ubuntu64Guest", 94),
        ("rhel9_64Guest", 80),
        ("centos7_64Guest", 107),
        ("oracleLinux8_64Guest", 109),
        ("sles15_64Guest", 85),
        ("opensuse64Guest", 83),
        ("rockylinux_64Guest", 101),
        ("vmwarePhoton64Guest", 101),
        ("other5xLinux64Guest", 101),
        ("otherLinux64Guest", 101),
    ] {
        assert_eq!(GuestId::find(id).unwrap().cim, cim, "{id}");
    }
}

#[test]
fn debian_falls_back_to_what_the_hardware_version_knows() {
    let deb12 = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n";
    for (n, want) in [
        (13, "debian10_64Guest"),
        (14, "debian10_64Guest"),
        (17, "debian11_64Guest"),
        (18, "debian11_64Guest"),
        (20, "debian11_64Guest"),
        (21, "debian12_64Guest"),
    ] {
        assert_eq!(chosen(deb12, None, n), want, "vmx-{n}");
    }
    let g = guest_os(Some(deb12), None, None, hw(13));
    assert_eq!(
        (g.cim_id, g.description.as_str()),
        (96, "Debian GNU/Linux 12 (bookworm)")
    );
    assert_eq!(g.wished.as_deref(), Some("debian12_64Guest"));
    let n = note(&g, hw(13), false).unwrap();
    assert!(
        n.contains("8.0.0.1") && n.contains("--hw-version 21"),
        "{n}"
    );
    assert!(note(&guest_os(Some(deb12), None, None, hw(21)), hw(21), false).is_none());
    // Debian 13 is not in vSphere 8: the newest Debian ID there is.
    assert_eq!(
        chosen("ID=debian\nVERSION_ID=13", None, 21),
        "debian12_64Guest"
    );
    assert_eq!(
        chosen("ID=debian\nVERSION_ID=9", None, 21),
        "debian9_64Guest"
    );
}

#[test]
fn other_distributions_and_generic_linux() {
    let alpine = "ID=alpine\nVERSION_ID=3.20.0";
    for (n, want) in [
        (13, "other3xLinux64Guest"),
        (17, "other4xLinux64Guest"),
        (18, "other5xLinux64Guest"),
        (20, "other5xLinux64Guest"),
        (21, "other6xLinux64Guest"),
    ] {
        assert_eq!(chosen(alpine, Some("6.6.31-0-virt"), n), want, "vmx-{n}");
    }
    assert_eq!(chosen(alpine, Some("5.10.0"), 21), "other5xLinux64Guest");
    assert_eq!(chosen(alpine, None, 21), "otherLinux64Guest");
    assert_eq!(
        guest_os(None, None, None, hw(13)).os_type,
        "otherLinux64Guest"
    );
    let rocky = "ID=\"rocky\"\nVERSION_ID=\"9.3\"";
    assert_eq!(chosen(rocky, None, 13), "rhel7_64Guest");
    assert_eq!(chosen(rocky, None, 18), "rhel9_64Guest");
    assert_eq!(chosen(rocky, None, 21), "rockylinux_64Guest");
    assert_eq!(
        chosen("ID=ubuntu\nVERSION_ID=\"24.04\"", None, 13),
        "ubuntu64Guest"
    );
    assert_eq!(
        chosen("ID=\"centos\"\nVERSION_ID=\"7\"", None, 13),
        "centos7_64Guest"
    );
    assert_eq!(
        chosen("ID=sles\nVERSION_ID=15.5", None, 13),
        "sles12_64Guest"
    );
    assert_eq!(
        chosen("ID=sles\nVERSION_ID=15.5", None, 14),
        "sles15_64Guest"
    );
    assert_eq!(
        chosen("ID=amzn\nVERSION_ID=2023", None, 15),
        "amazonlinux2_64Guest"
    );
    assert_eq!(
        chosen("ID=linuxmint\nID_LIKE=\"ubuntu debian\"", None, 13),
        "debian10_64Guest"
    );
}

#[test]
fn os_type_is_taken_as_given_and_checked() {
    let g = guest_os(
        Some("ID=debian\nVERSION_ID=12"),
        None,
        Some("debian12_64Guest"),
        hw(13),
    );
    assert_eq!((g.os_type.as_str(), g.cim_id), ("debian12_64Guest", 96));
    assert_eq!(g.wished, None);
    let n = note(&g, hw(13), true).unwrap();
    assert!(
        n.starts_with("--os-type debian12_64Guest") && n.contains("--hw-version 21"),
        "{n}"
    );
    let g = guest_os(None, None, Some("windows9_64Guest"), hw(13));
    assert_eq!((g.os_type.as_str(), g.cim_id), ("windows9_64Guest", 101));
    assert!(
        note(&g, hw(13), true).is_none(),
        "an ID outside the table is not judged"
    );
}
