//! d2v's own mkimage against GRUB's: the host's `grub-mkimage` (Debian's grub-common 2.06)
//! given the same module directory, modules, early config and prefix. The UEFI image must be
//! the same bytes but for the MS-DOS stub and the COFF time stamp (GRUB writes a fixed date,
//! d2v 0); core.img the same boot sector and decompressor (but for the sizes each patches in)
//! and, decompressed by Python's liblzma, the same kernel and modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use d2v::disk::grub::{early_config, mkimage, Platform, PREFIX};

fn module_dir(p: Platform) -> PathBuf {
    let dir = Path::new("/usr/lib/grub").join(p.name());
    assert!(
        dir.join("kernel.img").is_file(),
        "{} missing: install Debian's {} (cargo xtask test installs it)",
        dir.display(),
        p.debian_package()
    );
    dir
}

fn modules(p: Platform) -> Vec<&'static str> {
    p.available_modules(&module_dir(p))
}

fn grub_mkimage(p: Platform, modules: &[&str], cfg: &str) -> Vec<u8> {
    let exe = testkit::require_tool("grub-mkimage", "grub-common");
    let dir = testkit::scratch_dir(&format!("grub-mkimage-{}", p.name()));
    std::fs::write(dir.join("early.cfg"), cfg).unwrap();
    let out = dir.join("image");
    let st = Command::new(exe)
        .arg("-O")
        .arg(p.name())
        .arg("-d")
        .arg(module_dir(p))
        .arg("-c")
        .arg(dir.join("early.cfg"))
        .arg("-p")
        .arg(PREFIX)
        .arg("-o")
        .arg(&out)
        .args(modules)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn uefi_image_is_grub_mkimages_but_for_stub_and_time_stamp() {
    let p = Platform::X86_64Efi;
    let cfg = early_config("ABCD-0123");
    let mods = modules(p);
    assert!(mods.len() > 20, "{mods:?}");
    let ours = mkimage::build(&module_dir(p), p, &mods, &cfg, PREFIX).unwrap();
    let theirs = grub_mkimage(p, &mods, &cfg);
    assert_eq!(ours.len(), theirs.len());
    for img in [&ours, &theirs] {
        assert_eq!(&img[0..2], b"MZ");
        assert_eq!(u32_at(img, 0x3c), 0x80, "PE header offset");
        assert_eq!(&img[0x80..0x84], b"PE\0\0");
    }
    // COFF header: TimeDateStamp at +4.
    assert_eq!(u32_at(&ours, 0x88), 0);
    assert_eq!(ours[0x80..0x88], theirs[0x80..0x88]);
    let differing: Vec<usize> = (0x8c..ours.len())
        .filter(|&i| ours[i] != theirs[i])
        .take(10)
        .collect();
    assert!(differing.is_empty(), "bytes differ at {differing:x?}");
}

/// Decompresses the raw LZMA stream with liblzma (via Python), an implementation other than
/// the encoder's.
fn unlzma(packed: &[u8], size: usize) -> Vec<u8> {
    let py = testkit::require_tool("python3", "python3");
    let script = format!(
        "import lzma,sys\n\
         d=lzma.LZMADecompressor(lzma.FORMAT_RAW,filters=[{{'id':lzma.FILTER_LZMA1,'lc':3,'lp':0,'pb':2,'dict_size':1<<16}}])\n\
         sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read(),{size}))\n"
    );
    let mut child = Command::new(py)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = packed.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// core.img's parts: sectors in diskboot's blocklist, decompressor, the decompressed payload.
fn core_parts(img: &[u8], decompressor_len: usize) -> (u16, Vec<u8>, Vec<u8>) {
    let sectors = u16::from_le_bytes(img[512 - 4..512 - 2].try_into().unwrap());
    let d = &img[512..512 + decompressor_len];
    let (packed_len, size) = (u32_at(d, 8) as usize, u32_at(d, 12) as usize);
    let packed = &img[512 + decompressor_len..];
    assert_eq!(packed.len(), packed_len, "compressed size field");
    assert_eq!(
        sectors as usize,
        (decompressor_len + packed_len).div_ceil(512),
        "blocklist sector count"
    );
    let mut fixed = d.to_vec();
    fixed[8..16].fill(0);
    (sectors, fixed, unlzma(packed, size))
}

#[test]
fn bios_core_img_decompresses_to_grub_mkimages() {
    let p = Platform::I386Pc;
    let cfg = early_config("ABCD-0123");
    let mods = modules(p);
    let ours = mkimage::build(&module_dir(p), p, &mods, &cfg, PREFIX).unwrap();
    let theirs = grub_mkimage(p, &mods, &cfg);
    let dlen = std::fs::read(module_dir(p).join("lzma_decompress.img"))
        .unwrap()
        .len();
    // diskboot.img: the same but for the sector count.
    assert_eq!(ours[..512 - 4], theirs[..512 - 4]);
    assert_eq!(ours[512 - 2..512], theirs[512 - 2..512]);
    let (our_sectors, our_dec, our_payload) = core_parts(&ours, dlen);
    let (_, their_dec, their_payload) = core_parts(&theirs, dlen);
    assert_eq!(our_dec, their_dec);
    assert_eq!(our_payload.len(), their_payload.len());
    assert!(our_payload == their_payload, "decompressed payloads differ");
    // It fits the 1 MiB BIOS boot partition with room to spare.
    assert!(our_sectors < 1024, "{our_sectors} sectors");
}

/// A copy of the host's x86_64-efi directory to damage.
fn copied_dir(name: &str) -> testkit::Scratch {
    let from = module_dir(Platform::X86_64Efi);
    let dir = testkit::scratch_dir(name);
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    dir
}

fn build_err(dir: &Path, p: Platform) -> String {
    mkimage::build(dir, p, &["normal", "linux"], "", PREFIX)
        .unwrap_err()
        .to_string()
}

#[test]
fn an_incomplete_or_damaged_module_directory_is_named() {
    let p = Platform::X86_64Efi;
    let dir = copied_dir("mkimage-no-moddep");
    std::fs::remove_file(dir.join("moddep.lst")).unwrap();
    let e = build_err(&dir, p);
    assert!(e.contains("moddep.lst") && e.contains("incomplete"), "{e}");

    // normal needs extcmd (moddep.lst): its absence is named.
    let dir = copied_dir("mkimage-no-dependency");
    std::fs::remove_file(dir.join("extcmd.mod")).unwrap();
    let e = build_err(&dir, p);
    assert!(e.contains("extcmd.mod"), "{e}");

    let dir = copied_dir("mkimage-truncated-kernel");
    let k = std::fs::read(dir.join("kernel.img")).unwrap();
    std::fs::write(dir.join("kernel.img"), &k[..k.len() / 2]).unwrap();
    let e = build_err(&dir, p);
    assert!(e.contains("kernel.img") && e.contains("truncated"), "{e}");

    // The BIOS kernel where the UEFI one belongs, and the other way round.
    let dir = copied_dir("mkimage-wrong-kernel");
    std::fs::copy(
        module_dir(Platform::I386Pc).join("kernel.img"),
        dir.join("kernel.img"),
    )
    .unwrap();
    let e = build_err(&dir, p);
    assert!(e.contains("not an x86-64 relocatable"), "{e}");
    let e = build_err(&copied_dir("mkimage-efi-as-pc"), Platform::I386Pc);
    assert!(e.contains("not an i386 ELF executable"), "{e}");
}

/// A kernel.img comes from the image, so it is untrusted input: damaged copies of the real
/// ones (bytes changed at pseudo-random places, and cut short) give errors or images, never
/// a panic or a runaway allocation.
#[test]
fn damaged_kernels_never_panic() {
    use d2v::disk::grub::mkimage::{efi, pc};
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for p in [Platform::X86_64Efi, Platform::I386Pc] {
        let good = std::fs::read(module_dir(p).join("kernel.img")).unwrap();
        let (mut ok, mut err) = (0, 0);
        for round in 0..3000 {
            let mut k = good.clone();
            for _ in 0..1 + round % 4 {
                let at = (next() % k.len() as u64) as usize;
                k[at] = next() as u8;
            }
            if round % 10 == 0 {
                k.truncate((next() % k.len() as u64) as usize);
            }
            let result = match p {
                Platform::X86_64Efi => efi::load_kernel(&k).map(|k| efi::pe_image(&k, &[]).len()),
                Platform::I386Pc => pc::load_kernel(&k).map(|k| k.image.len()),
            };
            match result {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        // Most single-byte changes hit code or data, which loads fine; the header hits fail.
        assert!(ok > 0 && err > 0, "{p:?}: {ok} loaded, {err} refused");
    }
}
