//! Against the host: a benchmark versus `mke2fs -d` and a real kernel mounting the image
//! under QEMU (both `#[ignore]`d: they need a directory or a kernel to be given).

use crate::support::*;

/// Loads a host directory into a tree (regular files, directories, symlinks; owner and mode).
fn load_host_dir(t: &mut Tree, root: &Path, rel: &Path) {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let md = e.metadata().unwrap();
        let path = rel.join(e.file_name());
        let m = Metadata {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: Timestamp {
                sec: md.mtime(),
                nsec: md.mtime_nsec() as u32,
            },
            xattrs: Default::default(),
        };
        let key = path.as_os_str().as_bytes();
        if md.is_dir() {
            t.insert(key, Inode::dir(m)).unwrap();
            load_host_dir(t, root, &path);
        } else if md.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            t.insert(
                key,
                Inode {
                    meta: m,
                    kind: Kind::Symlink(target.as_os_str().as_bytes().to_vec().into()),
                },
            )
            .unwrap();
        } else if md.is_file() {
            let fd = t.store(&mut File::open(e.path()).unwrap()).unwrap();
            t.insert(
                key,
                Inode {
                    meta: m,
                    kind: Kind::File(fd),
                },
            )
            .unwrap();
        }
    }
}

/// `D2V_BENCH_DIR=/usr/share cargo test --release --test ext4 bench -- --ignored --nocapture`:
/// d2v's writer against `mke2fs -d` on the same directory, both into a sparse file.
#[test]
#[ignore]
fn bench_against_mke2fs() {
    let dir = PathBuf::from(std::env::var_os("D2V_BENCH_DIR").expect("set D2V_BENCH_DIR"));
    let mut t = Tree::in_temp().unwrap();
    load_host_dir(&mut t, &dir, Path::new(""));
    let tmp = tempfile::tempdir().unwrap();
    let o = opts();
    let size = ext4::plan_size(&t, &o).unwrap();
    let start = std::time::Instant::now();
    let f = File::create(tmp.path().join("d2v.img")).unwrap();
    let s = ext4::write(&t, &f, 0, &o).unwrap();
    f.sync_all().unwrap();
    let ours = start.elapsed();
    fsck(&tmp.path().join("d2v.img"));
    let img = tmp.path().join("mke2fs.img");
    File::create(&img).unwrap().set_len(size).unwrap();
    let start = std::time::Instant::now();
    let st = Command::new(testkit::require_tool("mke2fs", "e2fsprogs"))
        .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard", "-d"])
        .arg(&dir)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    File::open(&img).unwrap().sync_all().unwrap();
    let theirs = start.elapsed();
    eprintln!(
        "size {} MiB, {} inodes used: d2v {ours:?}, mke2fs -d {theirs:?}",
        size >> 20,
        s.inodes - s.free_inodes
    );
}

/// A real kernel mounts the image read-write, reads and changes it, unmounts; then e2fsck must
/// still find it clean. Needs an extracted Debian kernel package (`dpkg-deb -x
/// linux-image-*-cloud-amd64*.deb DIR`) in `D2V_TEST_KERNEL_DIR`, a static busybox, cpio and
/// QEMU: `D2V_TEST_KERNEL_DIR=DIR cargo test --test ext4 kernel -- --ignored`.
#[test]
#[ignore]
fn kernel_mounts_read_write() {
    let kdir =
        PathBuf::from(std::env::var_os("D2V_TEST_KERNEL_DIR").expect("set D2V_TEST_KERNEL_DIR"));
    let find = |dir: &Path, prefix: &str| -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap()
    };
    let vmlinuz = find(&kdir.join("boot"), "vmlinuz-");
    let moddir = find(&kdir.join("lib/modules"), "");
    let busybox = testkit::require_tool("busybox", "busybox-static");
    let cpio = testkit::require_tool("cpio", "cpio");
    let qemu = testkit::require_tool("qemu-system-x86_64", "qemu-system-x86");

    let mut t = full_tree();
    for i in 0..3000 {
        add_fifo(&mut t, &format!("big/entry-{i:05}"));
    }
    // Two-level hashed index: more than 507 leaf blocks.
    for i in 0..50_000 {
        let name = format!("huge/a-rather-long-name-to-fill-leaves-{i:06}");
        let fifo = Inode {
            meta: meta(0o644, 0, 0),
            kind: Kind::Fifo,
        };
        t.insert(name.as_bytes(), fifo).unwrap();
    }
    let (img, _) = write_image(&t, &opts(), 0);
    assert!(debugfs(&img.path, "htree_dump /huge").contains("Indirect levels: 1"));
    // The disk grows by 3 GiB (a VM disk expanded): the guest resizes online.
    let fs_size = std::fs::metadata(&img.path).unwrap().len();
    File::options()
        .write(true)
        .open(&img.path)
        .unwrap()
        .set_len(fs_size + (3 << 30))
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("initrd");
    for d in ["bin", "m", "proc", "sys", "dev", "mnt"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    // resize2fs and its libraries, as the host has them.
    let resize2fs = testkit::require_tool("resize2fs", "e2fsprogs");
    let ldd = Command::new("ldd").arg(&resize2fs).output().unwrap();
    let mut files = vec![resize2fs.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    let mods = [
        // virtio depends on virtio_ring in Debian's 6.1 cloud kernel: load it first.
        "virtio_ring",
        "virtio",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "virtio_blk",
    ];
    for m in mods {
        let found = Command::new("find")
            .arg(&moddir)
            .args(["-name", &format!("{m}.ko")])
            .output()
            .unwrap();
        let p = String::from_utf8(found.stdout).unwrap();
        std::fs::copy(
            p.lines().next().unwrap_or_else(|| panic!("module {m}")),
            root.join(format!("m/{m}.ko")),
        )
        .unwrap();
    }
    let script = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in {mods}; do insmod /m/$m.ko; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 1; done
mount -t ext4 -o rw,errors=remount-ro /dev/vda /mnt && echo D2V-MOUNT-OK
cat /mnt/etc/hostname.link
echo "BIG $(md5sum /mnt/usr/lib/big.bin | cut -d' ' -f1)"
echo "COUNT $(ls /mnt/big | wc -l)"
echo "OWNER $(stat -c '%a %u %g' /mnt/home/u/file)"
echo "DEV $(stat -c '%t %T' /mnt/dev/sda)"
readlink /mnt/longlink | wc -c
echo new > /mnt/new.txt && mkdir /mnt/big/newdir && for i in $(seq 1 2000); do touch /mnt/big/x$i; done
rm /mnt/big/entry-00001 && mv /mnt/big/entry-00002 /mnt/moved && rm -r /mnt/usr/lib/islands
echo "HUGE $(ls /mnt/huge | wc -l) $(stat -c %F /mnt/huge/a-rather-long-name-to-fill-leaves-031337)"
touch /mnt/huge/new && rm /mnt/huge/a-rather-long-name-to-fill-leaves-000042 && rm /mnt/usr/bin/su /mnt/usr/bin/su2
dd if=/dev/urandom of=/mnt/random bs=1M count=20 2>/dev/null && sync
echo "AFTER $(ls /mnt/big | wc -l)"
BEFORE=$(df -k /mnt | tail -1 | awk '{{print $2}}')
/usr/sbin/resize2fs /dev/vda >/dev/null 2>&1 || echo RESIZE-FAILED
AFTER=$(df -k /mnt | tail -1 | awk '{{print $2}}')
[ $((AFTER - BEFORE)) -gt 3000000 ] && echo D2V-GREW-ONLINE
umount /mnt && echo D2V-UMOUNT-OK
dmesg | grep -i -E 'ext4|jbd2' | grep -v 'mounted filesystem\|unmounting'
echo D2V-DONE
poweroff -f
"#,
        mods = mods.join(" ")
    );
    std::fs::write(root.join("init"), script).unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = work.path().join("initrd.cpio");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | {} -o -H newc --quiet > {}",
            root.display(),
            cpio.display(),
            initrd.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("timeout")
        .arg("300")
        .arg(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-drive"])
        .arg(format!("file={},format=raw,if=virtio", img.path.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("D2V-MOUNT-OK") && log.contains("D2V-UMOUNT-OK") && log.contains("D2V-DONE"),
        "{log}"
    );
    let mut want = Vec::new();
    std::io::Read::read_to_end(
        &mut t
            .spill()
            .reader(match &t.inode(t.lookup(b"usr/lib/big.bin").unwrap()).kind {
                Kind::File(fd) => fd,
                _ => unreachable!(),
            }),
        &mut want,
    )
    .unwrap();
    let md5 = Command::new("sh")
        .arg("-c")
        .arg("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut md5.stdin.as_ref().unwrap(), &want).unwrap();
    let sum = String::from_utf8(md5.wait_with_output().unwrap().stdout).unwrap();
    for line in [
        "d2v",
        &format!("BIG {}", sum.split_whitespace().next().unwrap()),
        "COUNT 3000",
        "OWNER 640 70000 80000",
        "DEV 8 0",
        "201",
        "AFTER 4999",
        "HUGE 50000 fifo",
        "D2V-GREW-ONLINE",
    ] {
        assert!(
            log.lines().any(|l| l.trim() == line),
            "missing {line:?} in\n{log}"
        );
    }
    assert!(
        !log.contains("EXT4-fs error") && !log.contains("EXT4-fs warning"),
        "{log}"
    );
    fsck(&img.path);
}
