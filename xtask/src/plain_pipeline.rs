//! The plain-tools pipeline that `cargo xtask bench pipeline` measures d2v against: the seed
//! article's recipe (container image → partitioned disk → GRUB → streamOptimized VMDK → OVF →
//! OVA) without any step that needs root — no loop device, no `mount`, no `grub-install`:
//!
//! `skopeo copy` from the registry → `umoci unpack --rootless` → `/boot` moved out to become
//! the ESP, an fstab mounting it → `grub-mkimage` for UEFI (`BOOTX64.EFI`) and BIOS
//! (`core.img`) → `sgdisk` (BIOS boot partition, ESP, root) → `mkfs.vfat` + `mcopy` (ESP) →
//! `mke2fs -d` (root) → `dd` of both file systems, `boot.img` and `core.img` into the disk at
//! their offsets (with the two sector numbers `grub-bios-setup` would patch in) → `qemu-img
//! convert -O vmdk -o subformat=streamOptimized` → OVF from a template (`sed` fills in the
//! VMDK's size) + `sha256sum` manifest → `tar` → `sync` of the OVA (d2v fsyncs its outputs).
//!
//! The disk has d2v's layout (read from a disk d2v wrote, see [`Layout::of`]), so both sides
//! write the same partitions. The small text files (GRUB's configurations, fstab, the OVF
//! template) are written before the timing by [`Templates::write`]: a script's author writes
//! them once. [`check`] boots the pipeline's VMDK under SeaBIOS and OVMF with the fixture's
//! self-check (the same check `cargo xtask boot` applies to d2v's output).

use crate::bench::{argv, Side};
use crate::boottest;
use crate::util::Result;
use std::fs;
use std::path::{Path, PathBuf};
use testkit::fixtures::Fixture;

/// Identifiers the script gives the disk (any fixed values do).
const ROOT_FS_UUID: &str = "5d2f4c3a-1b0e-4f6d-8c9a-7e6b5a4d3c2b";
const ROOT_PARTUUID: &str = "0b6e3f1c-2d9a-4c1e-9a53-6f0c2b1d7e42";
/// The ESP's FAT volume serial, as `mkfs.vfat -i` takes it and as GRUB and fstab name it.
const ESP_SERIAL: &str = "D2B05E1F";
const ESP_UUID: &str = "D2B0-5E1F";
/// The VM's name: `plain.ovf`, `plain-disk1.vmdk` in the OVA.
const NAME: &str = "plain";

/// GRUB modules built into both images (`biosdisk` too for i386-pc); dependencies are added
/// by grub-mkimage. Enough for the generated grub.cfg: nothing is loaded from the ESP.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "normal",
    "linux",
    "search",
    "search_fs_uuid",
    "configfile",
    "echo",
    "test",
    "serial",
    "terminal",
    "all_video",
];

/// Where boot.img keeps the sector of core.img's first sector (GRUB's
/// `GRUB_BOOT_MACHINE_KERNEL_SECTOR`), and where core.img's first sector keeps the sector of
/// the rest (its block list, 12 bytes before the sector's end): what `grub-bios-setup` patches.
const BOOT_IMG_KERNEL_SECTOR: u64 = 0x5c;
const CORE_IMG_BLOCKLIST_START: u64 = 0x200 - 12;

/// A partition in 512-byte sectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Part {
    pub start: u64,
    pub size: u64,
}

/// The disk: its size in bytes and its three partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Layout {
    pub bytes: u64,
    pub bios: Part,
    pub esp: Part,
    pub root: Part,
}

impl Layout {
    /// The layout of a raw disk d2v wrote (sfdisk reads its GPT).
    pub(crate) fn of(raw: &Path) -> Result<Layout> {
        let parts = boottest::partitions(raw)?;
        let find = |ty: &str| {
            parts
                .iter()
                .find(|p| p.0.eq_ignore_ascii_case(ty))
                .map(|p| Part {
                    start: p.1,
                    size: p.2,
                })
                .ok_or_else(|| format!("{}: no partition of type {ty}", raw.display()))
        };
        Ok(Layout {
            bytes: fs::metadata(raw)?.len(),
            bios: find("21686148-6449-6E6F-744E-656564454649")?,
            esp: find("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")?,
            root: find("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")?,
        })
    }
}

/// The files the script reads, written once before the timing.
pub(crate) struct Templates {
    early_cfg: PathBuf,
    grub_cfg: PathBuf,
    fstab: PathBuf,
    ovf: PathBuf,
    /// 8 bytes each: the sector numbers patched into boot.img and core.img.
    boot_lba: PathBuf,
    core_lba: PathBuf,
}

impl Templates {
    pub(crate) fn write(dir: &Path, f: &Fixture, l: &Layout) -> Result<Templates> {
        fs::create_dir_all(dir)?;
        let t = Templates {
            early_cfg: dir.join("early.cfg"),
            grub_cfg: dir.join("grub.cfg"),
            fstab: dir.join("fstab"),
            ovf: dir.join(format!("{NAME}.ovf.in")),
            boot_lba: dir.join("boot-lba.bin"),
            core_lba: dir.join("core-lba.bin"),
        };
        let file = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        fs::write(&t.early_cfg, early_cfg())?;
        fs::write(&t.grub_cfg, grub_cfg(&file(&f.kernel), &file(&f.initrd)))?;
        fs::write(&t.fstab, fstab())?;
        fs::write(&t.ovf, ovf_template(l.bytes))?;
        fs::write(&t.boot_lba, l.bios.start.to_le_bytes())?;
        fs::write(&t.core_lba, (l.bios.start + 1).to_le_bytes())?;
        Ok(t)
    }
}

fn early_cfg() -> String {
    format!("search --no-floppy --fs-uuid --set=root {ESP_UUID}\nset prefix=($root)/grub\n")
}

/// The menu: the image's kernel and initramfs from the ESP (mounted on /boot in the guest).
fn grub_cfg(kernel: &str, initrd: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=1\n\
         menuentry 'Debian GNU/Linux' {{\n\
         \tlinux /{kernel} root=PARTUUID={ROOT_PARTUUID} ro console=tty0 console=ttyS0,115200\n\
         \tinitrd /{initrd}\n\
         }}\n"
    )
}

fn fstab() -> String {
    format!("UUID={ROOT_FS_UUID} / ext4 errors=remount-ro 0 1\nUUID={ESP_UUID} /boot vfat defaults 0 0\n")
}

/// The OVF descriptor, `@VMDK_SIZE@` left for the script to fill in: a vmx-13 VM with 2 CPUs,
/// 2 GiB, the disk on a paravirtual SCSI controller, a VMXNET3 NIC, UEFI firmware.
pub(crate) fn ovf_template(capacity: u64) -> String {
    // RASD elements come in the schema's order (alphabetical).
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:id="file1" ovf:href="{NAME}-disk1.vmdk" ovf:size="@VMDK_SIZE@"/>
  </References>
  <DiskSection>
    <Info>The virtual disk</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The network</Info>
    <Network ovf:name="VM Network">
      <Description>VM Network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{NAME}">
    <Info>A virtual machine made with plain tools</Info>
    <Name>{NAME}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian10_64Guest">
      <Info>Debian 64-bit</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{NAME}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048 MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// The VMDK a run of [`side`] leaves in `scratch`.
pub(crate) fn vmdk(scratch: &Path) -> PathBuf {
    scratch.join("out").join(vmdk_name())
}

fn vmdk_name() -> String {
    format!("{NAME}-disk1.vmdk")
}

/// A command line: `words` split at blanks (fixed words only, no paths), then `args`.
fn cmd(words: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    let words = words.split_whitespace().map(String::from);
    words.chain(argv(args)).collect()
}

/// The files of a run, all in its scratch directory.
struct Files {
    bundle: PathBuf,
    rootfs: PathBuf,
    /// The ESP's content (the image's /boot, GRUB's files).
    esp: PathBuf,
    /// The OVA's members.
    out: PathBuf,
    disk: PathBuf,
    esp_img: PathBuf,
    root_img: PathBuf,
    core_img: PathBuf,
    ova: PathBuf,
}

impl Files {
    fn new(scratch: &Path) -> Files {
        let p = |f: &str| scratch.join(f);
        Files {
            bundle: p("bundle"),
            rootfs: p("bundle/rootfs"),
            esp: p("esp"),
            out: p("out"),
            disk: p("disk.raw"),
            esp_img: p("esp.img"),
            root_img: p("root.img"),
            core_img: p("core.img"),
            ova: p(&format!("{NAME}.ova")),
        }
    }
}

/// The pipeline as one benchmark side: `image` (HOST/REPO:TAG, plain HTTP) to
/// `scratch/plain.ova`, every intermediate in `scratch`.
pub(crate) fn side(image: &str, t: &Templates, l: &Layout, scratch: &Path) -> Side {
    let f = Files::new(scratch);
    let oci = format!("{}:latest", scratch.join("oci").display());
    let mut cmds = vec![
        cmd(
            "skopeo copy --quiet --src-tls-verify=false",
            &[&format!("docker://{image}"), &format!("oci:{oci}")],
        ),
        cmd("umoci unpack --rootless --image", &[&oci, &f.bundle]),
        // /boot becomes the ESP's content; the root keeps an empty /boot to mount it on.
        cmd("mv", &[&f.rootfs.join("boot"), &f.esp]),
        cmd(
            "mkdir -p",
            &[
                &f.rootfs.join("boot"),
                &f.esp.join("grub"),
                &f.esp.join("EFI/BOOT"),
                &f.out,
            ],
        ),
        cmd("cp", &[&t.fstab, &f.rootfs.join("etc/fstab")]),
        cmd("cp", &[&t.grub_cfg, &f.esp.join("grub/grub.cfg")]),
        grub_mkimage(
            "x86_64-efi",
            &t.early_cfg,
            &f.esp.join("EFI/BOOT/BOOTX64.EFI"),
        ),
        grub_mkimage("i386-pc", &t.early_cfg, &f.core_img),
    ];
    cmds.extend(disk(t, l, &f));
    cmds.extend([
        cmd(
            "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized",
            &[&f.disk, &vmdk(scratch)],
        ),
        cmd("sh -c", &[&ovf_and_manifest(&f.out, &t.ovf)]),
        cmd(
            "tar --format=ustar -cf",
            &[
                &f.ova,
                &"-C",
                &f.out,
                &format!("{NAME}.ovf"),
                &format!("{NAME}.mf"),
                &vmdk_name(),
            ],
        ),
        cmd("sync", &[&f.ova]),
    ]);
    Side {
        label: "plain tools (skopeo … tar)".into(),
        cmds,
        output: Some(f.ova),
    }
}

/// The raw disk: partitions, the two file systems made apart, then everything put in place
/// with `dd` (GRUB's boot.img and core.img, with the sectors grub-bios-setup would patch).
fn disk(t: &Templates, l: &Layout, f: &Files) -> Vec<Vec<String>> {
    let dd = |input: &dyn AsRef<std::ffi::OsStr>, at: u64, extra: &str| {
        let (i, o) = (Path::new(input).display(), f.disk.display());
        let how = "bs=1M oflag=seek_bytes conv=notrunc,sparse status=none";
        cmd(
            &format!("dd {how} seek={at} {extra}"),
            &[&format!("if={i}"), &format!("of={o}")],
        )
    };
    let bios = l.bios.start * 512;
    vec![
        cmd("truncate -s", &[&l.bytes.to_string(), &f.disk]),
        sgdisk(l, &f.disk),
        cmd(
            &format!("mkfs.vfat -F 32 -i {ESP_SERIAL} -n ESP -C"),
            &[&f.esp_img, &(l.esp.size / 2).to_string()],
        ),
        // mcopy -s of each top-level entry (mcopy copies a directory as a subdirectory).
        [
            cmd("find", &[&f.esp]),
            cmd("-mindepth 1 -maxdepth 1 -exec mcopy -s -i", &[&f.esp_img]),
            cmd("{} ::/ ;", &[]),
        ]
        .concat(),
        cmd(
            &format!("mke2fs -q -F -t ext4 -E nodiscard -U {ROOT_FS_UUID} -L root -d"),
            &[&f.rootfs, &f.root_img, &format!("{}k", l.root.size / 2)],
        ),
        dd(&f.esp_img, l.esp.start * 512, ""),
        dd(&f.root_img, l.root.start * 512, ""),
        dd(
            &"/usr/lib/grub/i386-pc/boot.img",
            0,
            "count=440 iflag=count_bytes",
        ),
        dd(&t.boot_lba, BOOT_IMG_KERNEL_SECTOR, ""),
        dd(&f.core_img, bios, ""),
        dd(&t.core_lba, bios + CORE_IMG_BLOCKLIST_START, ""),
    ]
}

fn grub_mkimage(target: &str, early_cfg: &Path, out: &Path) -> Vec<String> {
    let mut a = argv(&[
        &"grub-mkimage",
        &"-O",
        &target,
        &"-d",
        &Path::new("/usr/lib/grub").join(target),
        &"-c",
        &early_cfg,
        &"-p",
        &"/grub",
        &"-o",
        &out,
    ]);
    a.extend(GRUB_MODULES.iter().map(|m| m.to_string()));
    if target == "i386-pc" {
        a.push("biosdisk".into());
    }
    a
}

/// `sgdisk` making d2v's three partitions: BIOS boot, ESP, root (x86-64 root type).
fn sgdisk(l: &Layout, disk: &Path) -> Vec<String> {
    let mut a = vec!["sgdisk".to_string()];
    for (n, part, code) in [(1, l.bios, "EF02"), (2, l.esp, "EF00"), (3, l.root, "8304")] {
        let end = part.start + part.size - 1;
        a.extend([
            "-n".into(),
            format!("{n}:{}:{end}", part.start),
            "-t".into(),
            format!("{n}:{code}"),
        ]);
    }
    a.extend(["-u".into(), format!("3:{ROOT_PARTUUID}")]);
    a.push(disk.display().to_string());
    a
}

/// The shell line writing the OVF (the template with the VMDK's size) and the manifest
/// (`SHA256(name)= hex`, OVF's format, from `sha256sum --tag`) in `out`.
fn ovf_and_manifest(out: &Path, template: &Path) -> String {
    let disk = vmdk_name();
    format!(
        "cd '{}' && sed \"s/@VMDK_SIZE@/$(stat -c %s {disk})/\" '{}' > {NAME}.ovf && \
         sha256sum --tag {NAME}.ovf {disk} | sed -E 's/^SHA256 \\((.*)\\) = /SHA256(\\1)= /' \
         > {NAME}.mf",
        out.display(),
        template.display()
    )
}

/// The pipeline's disk (left in `scratch` by a run of [`side`]) checked as `cargo xtask boot`
/// checks d2v's — `sgdisk -v`, `fsck.fat -n` on the ESP, `e2fsck -fn` on the root — and its
/// VMDK booted under SeaBIOS and OVMF to the fixture's self-check. Logs in `work`.
pub(crate) fn check(
    f: &Fixture,
    scratch: &Path,
    work: &Path,
) -> Vec<(String, std::result::Result<String, String>)> {
    let mut checks = Vec::new();
    let _ = fs::create_dir_all(work);
    boottest::disk_checks(&scratch.join("disk.raw"), work, &mut checks);
    for (fw, r) in boottest::boot_both(f, &vmdk(scratch), work) {
        checks.push((
            format!("boot {} self-check", fw.name()),
            r.map_err(|e| e.to_string()),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovf_template_is_valid_ovf_once_filled_in() {
        let ovf = ovf_template(1815085056).replace("@VMDK_SIZE@", "150694400");
        assert!(ovf.contains(r#"ovf:capacity="1815085056""#));
        if let Some(r) = testkit::ovf_schema::validate(&ovf) {
            r.unwrap();
        }
    }

    /// sgdisk's partitions read back as the layout they were made from (d2v's type GUIDs).
    #[test]
    fn sgdisk_makes_the_layout() {
        testkit::require_tool("sgdisk", "gdisk");
        testkit::require_tool("sfdisk", "fdisk");
        let dir = std::env::temp_dir().join(format!("xtask-plain-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("d.raw");
        let l = Layout {
            bytes: 64 << 20,
            bios: Part {
                start: 2048,
                size: 2048,
            },
            esp: Part {
                start: 4096,
                size: 32768,
            },
            root: Part {
                start: 36864,
                size: 90112,
            },
        };
        fs::File::create(&disk).unwrap().set_len(l.bytes).unwrap();
        let a = sgdisk(&l, &disk);
        crate::util::exec(std::process::Command::new(&a[0]).args(&a[1..])).unwrap();
        assert_eq!(Layout::of(&disk).unwrap(), l);
        fs::remove_dir_all(&dir).unwrap();
    }
}
