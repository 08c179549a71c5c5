//! The OVF descriptor validated against the DMTF OVF 1.1.1 schema with xmllint.

use d2v::output::ovf::{descriptor, DiskFile, Firmware, HwVersion, OvfOptions, ScsiController};
use testkit::ovf_schema::validate;

fn disk() -> DiskFile {
    DiskFile {
        href: "vm-disk1.vmdk".into(),
        file_size: 123_456_789,
        capacity: 2 << 30,
        populated_size: 450 << 20,
    }
}

#[test]
fn default_descriptor_validates() {
    let o = OvfOptions {
        name: "app <test> & co".into(),
        source_reference: "docker.io/library/debian:12".into(),
        manifest_digest: "sha256:0123abcd".into(),
        ..Default::default()
    };
    let x = descriptor(
        &o,
        Some("ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian 12\""),
        &disk(),
    );
    if let Some(r) = validate(&x) {
        r.unwrap_or_else(|e| panic!("schema validation failed:\n{e}\n{x}"));
    }
}

#[test]
fn option_variants_validate() {
    let o = OvfOptions {
        cpus: 8,
        memory_mib: 16384,
        hw_version: HwVersion::new(19).unwrap(),
        controller: ScsiController::LsiLogic,
        firmware: Firmware::Bios,
        network: "Lab \"net\"".into(),
        os_type: Some("ubuntu64Guest".into()),
        ..Default::default()
    };
    let x = descriptor(&o, None, &disk());
    if let Some(r) = validate(&x) {
        r.unwrap_or_else(|e| panic!("schema validation failed:\n{e}\n{x}"));
    }
}

#[test]
fn schema_check_can_fail() {
    // The validator must reject a descriptor with RASD elements out of order.
    let x = descriptor(&OvfOptions::default(), None, &disk()).replacen(
        "<rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>",
        "<rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:InstanceID>1</rasd:InstanceID>",
        1,
    );
    if let Some(r) = validate(&x) {
        assert!(r.is_err(), "out-of-order RASD elements were accepted");
    }
}

/// Every `--hw-version` × firmware × controller the CLI offers: the descriptor passes the DMTF
/// schema, names its `vmx-NN`, and declares a guest ID that version's ESXi knows (Debian 12:
/// `debian12_64Guest` needs vSphere API 8.0.0.1, after vmx-20's ESXi 8.0).
#[test]
fn every_hardware_version_firmware_and_controller_validates() {
    let os_release = "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"";
    for hw in HwVersion::all() {
        let want_os = match hw.number() {
            13..=15 => "debian10_64Guest",
            17..=20 => "debian11_64Guest",
            _ => "debian12_64Guest",
        };
        for firmware in [Firmware::Efi, Firmware::Bios] {
            for controller in [ScsiController::Pvscsi, ScsiController::LsiLogic] {
                // Deploy-time properties (cloud-init's) and, under UEFI, Secure Boot on: the
                // elements every variant may carry.
                let o = OvfOptions {
                    hw_version: hw,
                    firmware,
                    controller,
                    source_reference: "ghcr.io/org/app:1.0".into(),
                    manifest_digest: "sha256:0123abcd".into(),
                    properties: d2v::output::properties::cloud_init("vm", "iid-vm"),
                    secure_boot: firmware == Firmware::Efi,
                    ..Default::default()
                };
                let x = descriptor(&o, Some(os_release), &disk());
                let case = format!("{hw} {firmware:?} {controller:?}");
                assert_transport_and_properties_placed(&x, &case);
                assert_eq!(
                    x.contains("vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\""),
                    firmware == Firmware::Efi,
                    "{case}: Secure Boot key"
                );
                let vmx = format!(
                    "<vssd:VirtualSystemType>vmx-{}</vssd:VirtualSystemType>",
                    hw.number()
                );
                assert!(x.contains(&vmx), "{case}: no {vmx}");
                let os = format!("<OperatingSystemSection ovf:id=\"96\" vmw:osType=\"{want_os}\">");
                assert!(x.contains(&os), "{case}: no {os}\n{x}");
                if let Some(r) = validate(&x) {
                    r.unwrap_or_else(|e| panic!("{case}: schema validation failed:\n{e}\n{x}"));
                }
            }
        }
    }
}

/// Where DSP0243 (the OVF specification, its OVF environment clauses) puts them: the transports are an attribute of the
/// `VirtualHardwareSection`, the properties `Property` children of the VirtualSystem's
/// `ProductSection`, after its `Product`…`FullVersion` header and before `</ProductSection>`.
fn assert_transport_and_properties_placed(x: &str, case: &str) {
    let at = |s: &str| x.find(s).unwrap_or_else(|| panic!("{case}: no {s}\n{x}"));
    assert!(at("<VirtualHardwareSection ovf:transport=\"iso com.vmware.guestInfo\">") > 0);
    let (product, end) = (at("<ProductSection"), at("</ProductSection>"));
    assert!(
        at("<VirtualSystem ") < product,
        "{case}: ProductSection in the VirtualSystem"
    );
    for key in ["instance-id", "hostname", "user-data"] {
        let p = at(&format!("<Property ovf:key=\"{key}\""));
        assert!(
            at("</FullVersion>") < p && p < end,
            "{case}: {key} in the ProductSection"
        );
    }
}

#[test]
fn properties_validate_and_declare_the_transports() {
    use d2v::output::properties::{assemble, cloud_init, PropertyArgs};
    let given: Vec<String> = [
        "greeting=hello <world> & \"you\"",
        "hostname=web01",
        "empty=",
    ]
    .map(String::from)
    .to_vec();
    let labels = vec!["greeting=Greeting".to_string()];
    let props = assemble(
        cloud_init("vm", "iid-vm"),
        &PropertyArgs {
            properties: &given,
            labels: &labels,
            descriptions: &[],
        },
    )
    .unwrap();
    let o = OvfOptions {
        properties: props,
        ..Default::default()
    };
    let x = descriptor(&o, None, &disk());
    if let Some(r) = validate(&x) {
        r.unwrap_or_else(|e| panic!("schema validation failed:\n{e}\n{x}"));
    }
    assert!(x.contains("<VirtualHardwareSection ovf:transport=\"iso com.vmware.guestInfo\">"));
    assert!(x.contains("ovf:key=\"hostname\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"web01\""));
    assert!(x.contains("ovf:key=\"password\" ovf:type=\"string\" ovf:userConfigurable=\"true\" ovf:value=\"\" ovf:password=\"true\""));
    // In the ProductSection, after FullVersion, in the order given.
    let at = |s: &str| x.find(s).unwrap_or_else(|| panic!("no {s}"));
    assert!(at("</FullVersion>") < at("ovf:key=\"instance-id\""));
    assert!(at("ovf:key=\"password\"") < at("ovf:key=\"greeting\""));
    assert!(at("ovf:key=\"greeting\"") < at("ovf:key=\"empty\""));
    assert!(at("ovf:key=\"empty\"") < at("</ProductSection>"));
    assert!(
        x.contains("<rasd:ResourceType>15</rasd:ResourceType>"),
        "a CD-ROM for the ISO"
    );
    assert_eq!(x, descriptor(&o, None, &disk()), "same input, same bytes");
    // Without properties: no transport, no Property.
    let plain = descriptor(&OvfOptions::default(), None, &disk());
    assert!(!plain.contains("ovf:transport") && !plain.contains("<Property "));
    assert!(!plain.contains("CD-ROM"));
}
