//! The OVF 1.1 descriptor vSphere imports: one VirtualSystem with CPUs, memory, a SCSI
//! controller (PVSCSI or LSI Logic), the streamOptimized disk, a VMXNET3 NIC, and the firmware
//! (`vmw:Config key="firmware"`). Element order follows the DMTF schema (RASD children
//! alphabetical) and VMware's own template. Deploy-time properties (`--property`) go into the
//! `ProductSection`, with the OVF environment's transports on the `VirtualHardwareSection`
//! (see [`super::properties`]).

use std::fmt::Write as _;

use super::guest_os::guest_os;
pub use super::hw::HwVersion;

/// Virtual SCSI controller model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScsiController {
    /// VMware Paravirtual SCSI (`VirtualSCSI`).
    #[default]
    Pvscsi,
    /// LSI Logic Parallel (`lsilogic`).
    LsiLogic,
}

impl ScsiController {
    /// The RASD `ResourceSubType` vSphere expects.
    pub(crate) fn resource_subtype(self) -> &'static str {
        match self {
            ScsiController::Pvscsi => "VirtualSCSI",
            ScsiController::LsiLogic => "lsilogic",
        }
    }
}

impl std::str::FromStr for ScsiController {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pvscsi" => Ok(ScsiController::Pvscsi),
            "lsilogic" => Ok(ScsiController::LsiLogic),
            _ => Err(format!(
                "unknown SCSI controller {s:?}: use pvscsi or lsilogic"
            )),
        }
    }
}

/// VM firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// UEFI.
    #[default]
    Efi,
    /// BIOS.
    Bios,
}

impl Firmware {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Firmware::Efi => "efi",
            Firmware::Bios => "bios",
        }
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "efi" | "uefi" => Ok(Firmware::Efi),
            "bios" => Ok(Firmware::Bios),
            _ => Err(format!("unknown firmware {s:?}: use efi or bios")),
        }
    }
}

/// Secure Boot for a UEFI VM: on only with the image's signed chain on the disk (d2v's own
/// GRUB is unsigned). A `vmw:Config` key names a property of the VM's configuration
/// (`VirtualMachineConfigSpec.bootOptions.efiSecureBootEnabled`), which an OVF import sets;
/// a `vmw:ExtraConfig` key is a `.vmx` line (`uefi.secureBoot.enabled` is one, and an import
/// does not apply it as Secure Boot). vCenter's and OVF Tool's own exports carry this line.
fn secure_boot_config(opts: &OvfOptions) -> String {
    match opts.firmware {
        Firmware::Efi => format!(
            "\n      <vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"{}\"/>",
            opts.secure_boot
        ),
        Firmware::Bios => String::new(),
    }
}

/// The virtual machine described by the OVF.
#[derive(Debug, Clone)]
pub struct OvfOptions {
    /// VM name (VirtualSystem id and Name).
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Virtual hardware version (`vmx-13`: ESXi 6.5 and later).
    pub hw_version: HwVersion,
    /// The SCSI controller the disk is attached to.
    pub controller: ScsiController,
    /// Network the NIC connects to.
    pub network: String,
    /// The firmware the VM boots with.
    pub firmware: Firmware,
    /// UEFI Secure Boot on (the disk carries the image's signed chain; `efi` only).
    pub secure_boot: bool,
    /// `vmw:osType` override (`--os-type`); otherwise derived from `/etc/os-release` and
    /// `kernel_release`, the newest guest ID `hw_version` knows.
    pub os_type: Option<String>,
    /// The version of the kernel the VM boots (`uname -r`), for `other{N}xLinux64Guest`.
    pub kernel_release: Option<String>,
    /// Source image reference, manifest digest and d2v version, recorded in the descriptor.
    pub source_reference: String,
    /// The image's manifest digest.
    pub manifest_digest: String,
    /// The d2v version that wrote the descriptor.
    pub d2v_version: String,
    /// User-configurable properties (`--property`, `--cloud-init`), in their order.
    pub properties: Vec<super::properties::Property>,
}

impl Default for OvfOptions {
    fn default() -> Self {
        OvfOptions {
            name: "d2v-vm".into(),
            cpus: 2,
            memory_mib: 2048,
            hw_version: HwVersion::DEFAULT,
            controller: ScsiController::Pvscsi,
            network: "VM Network".into(),
            firmware: Firmware::Efi,
            secure_boot: false,
            os_type: None,
            kernel_release: None,
            source_reference: String::new(),
            manifest_digest: String::new(),
            d2v_version: env!("CARGO_PKG_VERSION").into(),
            properties: Vec::new(),
        }
    }
}

/// The disk file the descriptor references.
#[derive(Debug, Clone)]
pub struct DiskFile {
    /// File name next to the .ovf (e.g. `app-disk1.vmdk`).
    pub href: String,
    /// Exact size of the VMDK file in bytes.
    pub file_size: u64,
    /// Virtual disk capacity in bytes.
    pub capacity: u64,
    /// Bytes of stored grains.
    pub populated_size: u64,
}

/// Escape text for XML content and attribute values; drops characters XML 1.0 forbids.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => o.push(c),
        }
    }
    o
}

/// The OVF descriptor text. One template, long on purpose: it reads as the descriptor it writes
/// (DSP0243's section order), which a split into pieces would hide.
pub fn descriptor(opts: &OvfOptions, os_release: Option<&str>, disk: &DiskFile) -> String {
    let e = xml_escape;
    let os = guest_os(
        os_release,
        opts.kernel_release.as_deref(),
        opts.os_type.as_deref(),
        opts.hw_version,
    );
    let name = e(&opts.name);
    let net = e(&opts.network);
    let mut x = String::with_capacity(8192);
    let w = &mut x;
    let _ = write!(
        w,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{href}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{cap}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="{pop}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{net}">
      <Description>The {net} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <AnnotationSection>
      <Info>A human-readable annotation</Info>
      <Annotation>Built by d2v {ver} from {src} (manifest {digest})</Annotation>
    </AnnotationSection>
    <ProductSection>
      <Info>The container image this virtual machine was built from</Info>
      <Product>{src}</Product>
      <Vendor>d2v {ver}</Vendor>
      <Version>{digest}</Version>
      <FullVersion>{src}@{digest}</FullVersion>{props}
    </ProductSection>
    <OperatingSystemSection ovf:id="{cim}" vmw:osType="{ostype}">
      <Info>The kind of installed guest operating system</Info>
      <Description>{osdesc}</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection{transport}>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-{hw:02}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>{scsi}</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{net}</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;{net}&quot;</rasd:Description>
        <rasd:ElementName>Ethernet 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>{cdrom}
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{fw}"/>{secure}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        href = e(&disk.href),
        size = disk.file_size,
        cap = disk.capacity,
        pop = disk.populated_size,
        ver = e(&opts.d2v_version),
        src = e(&opts.source_reference),
        digest = e(&opts.manifest_digest),
        cim = os.cim_id,
        ostype = e(&os.os_type),
        osdesc = e(&os.description),
        hw = opts.hw_version.number(),
        cpus = opts.cpus,
        mem = opts.memory_mib,
        scsi = opts.controller.resource_subtype(),
        fw = opts.firmware.as_str(),
        props = super::properties::render(&opts.properties),
        // Properties reach the guest as the OVF environment, through these transports; the
        // ISO needs a CD-ROM drive.
        transport = if opts.properties.is_empty() {
            String::new()
        } else {
            format!(" ovf:transport=\"{}\"", super::properties::TRANSPORTS)
        },
        cdrom = if opts.properties.is_empty() {
            ""
        } else {
            super::properties::CDROM_ITEMS
        },
        secure = secure_boot_config(opts),
    );
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;");
        let o = OvfOptions {
            name: "x&<y>".into(),
            ..Default::default()
        };
        let d = DiskFile {
            href: "d.vmdk".into(),
            file_size: 1,
            capacity: 2,
            populated_size: 0,
        };
        let x = descriptor(&o, None, &d);
        assert!(x.contains("<Name>x&amp;&lt;y&gt;</Name>"));
        assert!(!x.contains("x&<y>"));
    }

    #[test]
    fn options_appear_in_the_descriptor() {
        let o = OvfOptions {
            cpus: 4,
            memory_mib: 4096,
            hw_version: HwVersion::new(19).unwrap(),
            controller: ScsiController::LsiLogic,
            firmware: Firmware::Bios,
            network: "Prod Net".into(),
            os_type: Some("other5xLinux64Guest".into()),
            ..Default::default()
        };
        let d = DiskFile {
            href: "vm-disk1.vmdk".into(),
            file_size: 1234,
            capacity: 1 << 30,
            populated_size: 65536,
        };
        let x = descriptor(&o, Some("ID=debian\nVERSION_ID=12"), &d);
        for want in [
            "ovf:size=\"1234\"",
            "ovf:capacity=\"1073741824\"",
            "ovf:populatedSize=\"65536\"",
            "<vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>",
            "<rasd:VirtualQuantity>4</rasd:VirtualQuantity>",
            "<rasd:VirtualQuantity>4096</rasd:VirtualQuantity>",
            "<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>",
            "vmw:key=\"firmware\" vmw:value=\"bios\"",
            "<rasd:Connection>Prod Net</rasd:Connection>",
            "vmw:osType=\"other5xLinux64Guest\"",
        ] {
            assert!(x.contains(want), "missing {want}");
        }
        assert!(!x.contains("SecureBoot"), "no Secure Boot key for BIOS");
        let efi = descriptor(&OvfOptions::default(), None, &d);
        assert!(efi.contains("vmw:key=\"firmware\" vmw:value=\"efi\""));
        assert!(efi.contains("vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"false\""));
        assert!(
            !efi.contains("uefi.secureBoot"),
            "a .vmx key an import ignores"
        );
        assert!("bogus".parse::<Firmware>().is_err());
        assert!("bogus".parse::<ScsiController>().is_err());
    }

    #[test]
    fn secure_boot_is_the_config_key_an_import_applies() {
        let d = DiskFile {
            href: "vm-disk1.vmdk".into(),
            file_size: 1,
            capacity: 1 << 20,
            populated_size: 0,
        };
        let o = OvfOptions {
            secure_boot: true,
            ..Default::default()
        };
        let x = descriptor(&o, None, &d);
        assert!(x.contains(
            "<vmw:Config ovf:required=\"false\" vmw:key=\"bootOptions.efiSecureBootEnabled\" vmw:value=\"true\"/>"
        ));
    }
}
