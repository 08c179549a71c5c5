//! A whole disk from `write_disk`: reproducible byte for byte, a valid GPT (sgdisk), a clean
//! ESP (fsck.fat) holding GRUB's UEFI image, config and modules (mtools), and GRUB's BIOS
//! code patched to load core.img from the BIOS boot partition.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use d2v::disk::layout::{write_disk, DiskOptions, DiskSummary};
use d2v::disk::MIB;
use d2v::tree::testing::{add_file, add_file_with};
use d2v::tree::{Metadata, Tree};
use sha2::{Digest, Sha256};

fn build(path: &Path) -> DiskSummary {
    testkit::require_grub_modules();
    let mut tree = Tree::in_temp().unwrap();
    for (p, data) in [
        ("boot/vmlinuz-6.1.0-9-amd64", &b"old kernel"[..]),
        ("boot/vmlinuz-6.1.0-13-amd64", b"new kernel"),
        ("boot/initrd.img-6.1.0-13-amd64", b"initrd"),
        ("etc/os-release", b"ID=test\n"),
    ] {
        add_file(&mut tree, p, data);
    }
    let out = testkit::create_rw(path);
    let mut opts = DiskOptions::new("sha256:disk-full", 4 * MIB);
    opts.esp_size = 48 * MIB;
    write_disk(&mut tree, &out, &opts, |t, f, off, size| {
        assert!(t.lookup(b"etc/os-release").is_some());
        f.write_all_at(b"ROOTFS", off + size - 6)
            .map_err(Into::into)
    })
    .unwrap()
}

fn sha(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn tool(name: &str, pkg: &str, args: &[&str]) -> String {
    let out = Command::new(testkit::require_tool(name, pkg))
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let text = testkit::output_text(&out);
    assert!(out.status.success(), "{name} {args:?}:\n{text}");
    text
}

#[test]
fn whole_disk_is_valid_and_reproducible() {
    let dir = testkit::scratch_dir("disk-full");
    let (a, b) = (dir.join("a.raw"), dir.join("b.raw"));
    let s = build(&a);
    build(&b);
    assert_eq!(sha(&a), sha(&b), "two runs on the same input differ");
    let l = &s.layout;
    let meta = std::fs::metadata(&a).unwrap();
    assert_eq!(meta.len(), l.disk_size);
    // Sparse: only metadata, GRUB and file data are allocated.
    use std::os::unix::fs::MetadataExt;
    let allocated = meta.blocks() * 512;
    eprintln!(
        "disk {} MiB, allocated {} KiB",
        l.disk_size >> 20,
        allocated >> 10
    );
    assert!(
        allocated < l.disk_size / 4,
        "{allocated} bytes allocated of {}",
        l.disk_size
    );

    assert!(tool("sgdisk", "gdisk", &["-v", a.to_str().unwrap()]).contains("No problems found"));

    let disk = std::fs::read(&a).unwrap();
    // boot.img: loads core.img from the first sector of the BIOS boot partition.
    assert_eq!(
        u64::from_le_bytes(disk[0x5c..0x64].try_into().unwrap()),
        l.bios_boot.first_lba()
    );
    assert_eq!(&disk[510..512], &[0x55, 0xaa]);
    assert_eq!(disk[0x1be + 4], 0xee, "protective MBR entry kept");
    // core.img's first blocklist: the rest of core.img right after its first sector.
    let core = &disk[l.bios_boot.offset as usize..];
    assert_eq!(
        u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
        l.bios_boot.first_lba() + 1
    );
    let rest = u16::from_le_bytes([core[0x1fc], core[0x1fd]]) as usize;
    assert_eq!(rest + 1, s.grub.core_img.len().div_ceil(512));
    assert_eq!(
        &disk[(l.root.offset + l.root.size - 6) as usize..(l.root.offset + l.root.size) as usize],
        b"ROOTFS"
    );

    let esp = dir.join("esp.img");
    std::fs::write(
        &esp,
        &disk[l.esp.offset as usize..(l.esp.offset + l.esp.size) as usize],
    )
    .unwrap();
    tool(
        "fsck.fat",
        "dosfstools",
        &["-n", "-V", esp.to_str().unwrap()],
    );

    let img = format!("{}@@{}", a.display(), l.esp.offset);
    let cfg_path = dir.join("grub.cfg");
    tool(
        "mcopy",
        "mtools",
        &["-i", &img, "::/grub/grub.cfg", cfg_path.to_str().unwrap()],
    );
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let new = cfg
        .find("linux /vmlinuz-6.1.0-13-amd64 root=PARTUUID=")
        .expect(&cfg);
    let old = cfg.find("linux /vmlinuz-6.1.0-9-amd64 ").expect(&cfg);
    assert!(new < old, "newest kernel first:\n{cfg}");
    assert!(cfg.contains("initrd /initrd.img-6.1.0-13-amd64"), "{cfg}");
    let efi = dir.join("BOOTX64.EFI");
    tool(
        "mcopy",
        "mtools",
        &["-i", &img, "::/EFI/BOOT/BOOTX64.EFI", efi.to_str().unwrap()],
    );
    assert_eq!(&std::fs::read(&efi).unwrap()[..2], b"MZ", "a PE image");
    let listing = tool("mdir", "mtools", &["-i", &img, "-b", "::/grub/i386-pc"]);
    assert!(
        listing.contains("normal.mod") && listing.contains("moddep.lst"),
        "{listing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies the host's module directory for `platform` into the tree, as an image with GRUB
/// installed has it.
fn add_modules(tree: &mut Tree, platform: &str, skip: &str) {
    for e in std::fs::read_dir(format!("/usr/lib/grub/{platform}")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_file() || name == skip {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        let path = format!("usr/lib/grub/{platform}/{name}");
        add_file_with(tree, &path, &data, Metadata::default());
    }
}

#[test]
fn grub_modules_come_from_the_image_when_it_has_them() {
    use d2v::disk::grub::ModuleSource;
    testkit::require_grub_modules();
    // An unusable x86_64-efi directory (no moddep.lst): the host's modules are used.
    let mut tree = kernel_and_modules("", "moddep.lst");
    let p = prepare_for(&mut tree, None, "ABCD-0123");
    assert_eq!(p.bios_modules, ModuleSource::Image);
    assert_eq!(p.efi_modules, ModuleSource::Host);
    // An image directory without normal.mod would give a GRUB that stops at its rescue
    // prompt: the host's is used, and the note says why.
    let mut tree = kernel_and_modules("normal.mod", "");
    let q = prepare_for(&mut tree, None, "ABCD-0123");
    assert_eq!(q.bios_modules, ModuleSource::Host);
    assert_eq!(q.efi_modules, ModuleSource::Image);
    assert!(
        q.notes
            .iter()
            .any(|n| n.contains("i386-pc GRUB modules lack normal") && n.contains("host")),
        "{:?}",
        q.notes
    );
    assert!(
        p.notes.iter().any(
            |n| n.contains("BIOS core.img from the image's /usr/lib/grub/i386-pc")
                && n.contains("BOOTX64.EFI from the host's /usr/lib/grub/x86_64-efi")
        ),
        "{:?}",
        p.notes
    );
    assert!(tree.lookup(b"boot/EFI/BOOT/BOOTX64.EFI").is_some());
    assert!(tree.lookup(b"boot/grub/i386-pc/normal.mod").is_some());
}

/// A tree with a kernel and GRUB modules for both platforms, each without the file named
/// (`""`: complete).
fn kernel_and_modules(bios_without: &str, efi_without: &str) -> Tree {
    let mut t = Tree::in_temp().unwrap();
    add_modules(&mut t, "i386-pc", bios_without);
    add_modules(&mut t, "x86_64-efi", efi_without);
    add_file_with(&mut t, "boot/vmlinuz-6.1", b"kernel", Metadata::default());
    t
}

/// `grub::prepare` with default options for the ESP `serial`.
fn prepare_for(
    tree: &mut Tree,
    images: Option<d2v::disk::grub::Images>,
    serial: &str,
) -> d2v::disk::grub::Prepared {
    use d2v::disk::grub::{prepare, GrubOptions};
    prepare(tree, images, serial, "uuid", &GrubOptions::default()).unwrap()
}

/// GRUB's images built ahead (as a build does, beside the boot report) are the ones `prepare`
/// would build; images built for another ESP serial are not used.
#[test]
fn grub_images_built_ahead_are_used_only_for_their_esp_serial() {
    use d2v::disk::grub::Images;
    testkit::require_grub_modules();
    let core = |serial: &str, ahead: Option<&str>| {
        let mut t = kernel_and_modules("", "");
        let images = ahead.map(|a| Images::build(&t, a));
        let p = prepare_for(&mut t, images, serial);
        let id = t.lookup(b"boot/EFI/BOOT/BOOTX64.EFI").unwrap();
        let d2v::tree::Kind::File(efi) = &t.inode(id).kind else {
            panic!("BOOTX64.EFI is not a file");
        };
        let mut efi_bytes = Vec::new();
        std::io::Read::read_to_end(&mut t.spill().reader(efi), &mut efi_bytes).unwrap();
        (p.core_img, efi_bytes)
    };
    let built_here = core("ABCD-0123", None);
    assert_eq!(core("ABCD-0123", Some("ABCD-0123")), built_here);
    assert_eq!(core("ABCD-0123", Some("FFFF-0000")), built_here);
    // The serial is in both images: images for another serial would differ.
    let other = core("FFFF-0000", None);
    assert_ne!(other.0, built_here.0);
    assert_ne!(other.1, built_here.1);
}
