use std::io::{Cursor, Read};

use fatfs::{FatType, FileSystem, FsOptions};

use super::plan::fat_name;
use super::*;
use crate::tree::testing::{add_file_with, add_symlink as add_link, file_meta};
use crate::tree::{Metadata, Timestamp};

fn add_file(t: &mut Tree, path: &str, data: &[u8], mtime: i64) {
    let mtime = Timestamp {
        sec: mtime,
        nsec: 0,
    };
    add_file_with(
        t,
        path,
        data,
        Metadata {
            mtime,
            ..file_meta()
        },
    );
}

type Fs = FileSystem<Cursor<Vec<u8>>>;

/// Options copying the tree's `/boot`.
fn boot_opts(volume_id: u32, label: &str) -> FatOptions {
    FatOptions {
        volume_id,
        label: label.into(),
        source: b"boot".to_vec(),
    }
}

/// The partition at `[offset, offset+size)` of `f`, opened by the `fatfs` crate (an
/// implementation independent of d2v's writer).
fn open(f: &File, offset: u64, size: u64) -> Fs {
    let mut bytes = vec![0u8; size as usize];
    std::os::unix::fs::FileExt::read_exact_at(f, &mut bytes, offset).unwrap();
    FileSystem::new(Cursor::new(bytes), FsOptions::new()).unwrap()
}

fn read<T: fatfs::ReadWriteSeek>(fs: &FileSystem<T>, path: &str) -> Vec<u8> {
    let mut v = Vec::new();
    fs.root_dir()
        .open_file(path)
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// One tree with every case FAT meets and the ESP read back once (long on purpose: the cases
/// and their checks side by side, against one image read back).
#[test]
fn copies_boot_resolving_links_and_skipping_what_fat_cannot_hold() {
    let mut t = Tree::in_temp().unwrap();
    add_file(
        &mut t,
        "boot/vmlinuz-6.1.0-13-cloud-amd64",
        b"kernel",
        1_700_000_000,
    );
    add_file(
        &mut t,
        "boot/grub/grub.cfg",
        b"set timeout=0\n",
        1_700_000_000,
    );
    add_file(&mut t, "etc/secret", b"root only", 0);
    add_link(&mut t, "boot/vmlinuz", "vmlinuz-6.1.0-13-cloud-amd64");
    add_link(&mut t, "boot/abs", "/boot/grub/grub.cfg");
    add_link(&mut t, "boot/outside", "../../../etc/secret");
    add_link(&mut t, "boot/dangling", "/nope");
    add_link(&mut t, "boot/boot", ".");
    add_file(&mut t, "boot/a:b", b"x", 0);
    add_file(&mut t, "boot/Case", b"1", 0);
    add_file(&mut t, "boot/case", b"2", 0);
    let f = tempfile::tempfile().unwrap();
    f.set_len(48 << 20).unwrap();
    let opts = boot_opts(0xabcd_1234, "esp");
    let s = write(&t, &f, 1 << 20, 40 << 20, &opts).unwrap();

    let fs = open(&f, 1 << 20, 40 << 20);
    assert_eq!(fs.fat_type(), FatType::Fat32);
    assert_eq!(fs.volume_id(), 0xabcd_1234);
    assert_eq!(read(&fs, "vmlinuz-6.1.0-13-cloud-amd64"), b"kernel");
    assert_eq!(read(&fs, "vmlinuz"), b"kernel");
    assert_eq!(read(&fs, "abs"), b"set timeout=0\n");
    assert_eq!(read(&fs, "grub/grub.cfg"), b"set timeout=0\n");
    // `..` at the image root stays at the root: the link names /etc/secret of the image.
    assert_eq!(read(&fs, "outside"), b"root only");
    let names: Vec<String> = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.contains(&"dangling".to_string()), "{names:?}");
    assert!(!names.contains(&"boot".to_string()), "{names:?}");
    assert!(!names.contains(&"a:b".to_string()), "{names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("case"))
            .count(),
        1
    );
    let kernel = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name().starts_with("vmlinuz-"))
        .unwrap();
    // 1_700_000_000 is 2023-11-14 22:13:20 UTC.
    let m = kernel.modified();
    let got = (
        m.date.year,
        m.date.month,
        m.date.day,
        m.time.hour,
        m.time.min,
    );
    assert!(
        crate::ids::source_date_epoch().is_some() || got == (2023, 11, 14, 22, 13),
        "{got:?}"
    );
    let entry = fs
        .root_dir()
        .iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "grub.cfg");
    assert!(entry.is_none(), "grub.cfg belongs in grub/");
    for w in ["/boot/dangling", "/boot/boot", "/boot/a:b", "/boot/case"] {
        assert!(
            s.warnings.iter().any(|x| x.starts_with(w)),
            "no warning for {w}: {:?}",
            s.warnings
        );
    }
    assert_eq!(s.files, 6);
    assert_eq!(s.dirs, 1);
}

#[test]
fn output_is_deterministic() {
    let build = || {
        let mut t = Tree::in_temp().unwrap();
        add_file(
            &mut t,
            "boot/initrd.img-6.1",
            &vec![7u8; 100_000],
            1_600_000_000,
        );
        add_file(
            &mut t,
            "boot/efi/EFI/BOOT/BOOTX64.EFI",
            b"MZ",
            1_600_000_000,
        );
        let f = tempfile::tempfile().unwrap();
        let opts = boot_opts(1, "ESP");
        write(&t, &f, 0, 40 << 20, &opts).unwrap();
        let mut v = Vec::new();
        let mut f2 = &f;
        std::io::Seek::seek(&mut f2, std::io::SeekFrom::Start(0)).unwrap();
        f2.read_to_end(&mut v).unwrap();
        v
    };
    assert!(build() == build());
}

#[test]
fn dos_times_follow_the_calendar() {
    // 2000-03-01 12:34:56 UTC
    let t = dos_time(951_914_096);
    assert_eq!((t.year, t.month, t.day), (2000, 3, 1));
    assert_eq!((t.hour, t.min, t.sec), (12, 34, 56));
    // Before 1980 clamps to FAT's epoch.
    assert_eq!(dos_time(0).year, 1980);
    assert_eq!(crate::ids::civil_from_days(0), (1970, 1, 1));
    assert_eq!(crate::ids::civil_from_days(-1), (1969, 12, 31));
}

#[test]
fn fat_names() {
    assert_eq!(
        fat_name(b"System.map-6.1").as_deref(),
        Some("System.map-6.1")
    );
    assert!(fat_name(b"a?b").is_none());
    assert!(fat_name(b"trailing.").is_none());
    assert!(fat_name(&[0xff, 0xfe]).is_none());
}

#[test]
fn a_full_esp_is_an_error_naming_boot_size() {
    let mut t = Tree::in_temp().unwrap();
    add_file(&mut t, "boot/huge", &vec![1u8; 41 << 20], 0);
    let f = tempfile::tempfile().unwrap();
    let opts = boot_opts(1, "ESP");
    let err = write(&t, &f, 0, 40 << 20, &opts).unwrap_err().to_string();
    assert!(
        err.contains("/boot/huge") && err.contains("--boot-size"),
        "{err}"
    );
}

#[test]
fn every_entry_carries_its_own_mtime() {
    use testkit::tar::Entry;
    // 1_600_000_000 is 2020-09-13 12:26:40 UTC; 1_650_000_000 is 2022-04-15 05:20:00 UTC.
    let t = crate::tree::testing::from_layers(&[&[
        Entry::dir("boot").mtime(1_500_000_000, None),
        Entry::dir("boot/grub").mtime(1_600_000_000, None),
        Entry::file("boot/grub/grub.cfg", "x").mtime(1_650_000_000, None),
    ]]);
    let f = tempfile::tempfile().unwrap();
    f.set_len(48 << 20).unwrap();
    let opts = boot_opts(1, "esp");
    write(&t, &f, 1 << 20, 40 << 20, &opts).unwrap();
    let fs = open(&f, 1 << 20, 40 << 20);
    let stamp = |d: fatfs::DateTime| (d.date.year, d.date.month, d.date.day, d.time.hour);
    fn entry<'a, T: fatfs::ReadWriteSeek>(
        dir: &fatfs::Dir<'a, T>,
        name: &str,
    ) -> fatfs::DirEntry<'a, T> {
        dir.iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }
    let want_dir = if crate::ids::source_date_epoch().is_some_and(|s| s < 1_600_000_000) {
        None
    } else {
        Some((2020, 9, 13, 12))
    };
    let grub = entry(&fs.root_dir(), "grub");
    if let Some(w) = want_dir {
        assert_eq!(stamp(grub.created()), w);
        // The directory's own `.` entry too.
        assert_eq!(stamp(entry(&grub.to_dir(), ".").created()), w);
    }
    let cfg = entry(&grub.to_dir(), "grub.cfg");
    if crate::ids::source_date_epoch().is_none() {
        assert_eq!(stamp(cfg.modified()), (2022, 4, 15, 5));
        assert_eq!(stamp(cfg.created()), (2022, 4, 15, 5));
        assert_eq!(cfg.accessed().year, 2022);
        // Modified when its last entry (grub.cfg) was written into it.
        assert_eq!(stamp(grub.modified()), (2022, 4, 15, 5));
    }
    // Nothing is stamped with FAT's epoch.
    assert_ne!(grub.created().date.year, 1980);
}

/// A volume with what trips FAT writers: a directory over many clusters, long and
/// non-ASCII names, names that are their own short names, lower-case 8.3 names, an empty
/// file, a file of exactly one cluster, deep nesting. `fsck.fat -n` (dosfstools) finds
/// nothing to fix, and `fatfs` reads every name and byte back.
#[test]
fn fsck_fat_finds_nothing_to_fix_and_every_file_reads_back() {
    let fsck = testkit::require_tool("fsck.fat", "dosfstools");
    let mut t = Tree::in_temp().unwrap();
    let mut want: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |t: &mut Tree, path: &str, data: Vec<u8>| {
        add_file(t, &format!("boot/{path}"), &data, 1_700_000_000);
        want.push((path.to_string(), data));
    };
    for k in 0..60 {
        add(
            &mut t,
            &format!("grub/x86_64-efi/module-number-{k}.mod"),
            vec![k as u8; 700 + k],
        );
    }
    add(&mut t, "EFI/BOOT/BOOTX64.EFI", b"MZ".repeat(3000));
    add(&mut t, "grub/grub.cfg", b"set timeout=0\n".to_vec());
    add(&mut t, "grub/empty", Vec::new());
    add(&mut t, "one-cluster", vec![9u8; 512]);
    add(&mut t, "ünïcödé nämé with spaces.txt", b"utf-16".to_vec());
    add(&mut t, "a/b/c/d/e/deep", vec![1u8; 3 << 20]);
    add(
        &mut t,
        "initrd.img-6.1.0-13-cloud-amd64",
        vec![5u8; 100_000],
    );
    add(
        &mut t,
        "initrd.img-6.1.0-14-cloud-amd64",
        vec![6u8; 100_001],
    );
    // 512-byte clusters (up to 260 MiB) and 4 KiB ones.
    for size in [64u64 << 20, 1 << 30] {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        let opts = boot_opts(0x1234_5678, "ESP");
        let finality = Finality::new();
        let s = write_reporting(&t, f.as_file(), 0, size, &opts, &finality).unwrap();
        assert_eq!(s.files, want.len() as u64);
        // Every byte written is final: the watermark is past the last file's last cluster.
        let crate::finality::Ready::Below(final_to) = finality.wait_beyond(0) else {
            panic!("nothing reported final");
        };
        assert!(final_to > 3 << 20, "watermark {final_to}");

        let out = std::process::Command::new(&fsck)
            .arg("-n")
            .arg(f.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fsck.fat -n:\n{text}");
        // Its version line and its summary: any problem would be a line of its own.
        assert_eq!(text.lines().count(), 2, "fsck.fat -n:\n{text}");
        assert!(text.contains(" files, "), "fsck.fat -n:\n{text}");
        assert_eq!(s.dirs, 9);

        let fs = FileSystem::new(f.reopen().unwrap(), FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0x1234_5678);
        assert_eq!(
            fs.read_volume_label_from_root_dir().unwrap().as_deref(),
            Some("ESP")
        );
        for (path, data) in &want {
            assert_eq!(&read(&fs, path), data, "{path}");
        }
    }
}

#[test]
fn a_partition_too_small_for_fat32_is_an_error_naming_boot_size() {
    let t = Tree::in_temp().unwrap();
    let f = tempfile::tempfile().unwrap();
    let opts = boot_opts(1, "ESP");
    let err = write(&t, &f, 0, 32 << 20, &opts).unwrap_err().to_string();
    assert!(
        err.contains("33 MiB") && err.contains("--boot-size"),
        "{err}"
    );
}
