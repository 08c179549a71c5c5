//! The cpio writer: its layout, determinism, and GNU cpio as an independent reader.

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const MTIME: u32 = 1_700_000_000;

fn sample() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), MTIME);
    w.dir("d", 0o750).unwrap();
    w.file("d/f", 0o640, 5, &mut &b"hello"[..]).unwrap();
    w.file("d/empty", 0o600, 0, &mut &b""[..]).unwrap();
    w.file("d/four", 0o755, 4, &mut &b"1234"[..]).unwrap();
    w.symlink("d/l", "f").unwrap();
    w.dir("dev", 0o755).unwrap();
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.finish().unwrap()
}

/// GNU cpio, or `None` (printed why) when it is not installed.
fn gnu_cpio() -> Option<&'static str> {
    let ok = Command::new("cpio").arg("--version").output().is_ok();
    if !ok {
        eprintln!("GNU cpio is not installed: skipping the check by an independent reader");
    }
    ok.then_some("cpio")
}

fn run_cpio(args: &[&str], dir: &Path, input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn layout_and_determinism() {
    let a = sample();
    assert_eq!(a, sample());
    assert_eq!(a.len() % 4, 0);
    assert_eq!(&a[..6], b"070701");
    // First entry: ino 1, mode 040750, uid 0, gid 0, nlink 2, mtime.
    assert_eq!(
        &a[6..54],
        format!("00000001000041E8000000000000000000000002{MTIME:08X}").as_bytes()
    );
    let tail = b"TRAILER!!!\0";
    let at = a.windows(tail.len()).rposition(|w| w == tail).unwrap();
    assert_eq!(a.len(), (at + tail.len()).next_multiple_of(4));
    // Every header starts 4-aligned: the kernel's reader insists.
    let mut pos = 0;
    while pos < a.len() {
        assert_eq!(&a[pos..pos + 6], b"070701", "at {pos}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&a[pos + 6 + 8 * i..pos + 14 + 8 * i]).unwrap();
            usize::from_str_radix(s, 16).unwrap()
        };
        let (size, namesize) = (field(6), field(11));
        pos = (pos + 110 + namesize).next_multiple_of(4) + size.next_multiple_of(4);
    }
    assert_eq!(pos, a.len());
}

#[test]
fn short_data_is_an_error() {
    let mut w = Writer::new(Vec::new(), 0);
    let e = w.file("x", 0o644, 10, &mut &b"abc"[..]).unwrap_err();
    assert!(e.to_string().contains("3 bytes where 10"), "{e}");
}

#[test]
fn gnu_cpio_lists_and_extracts_what_was_written() {
    if gnu_cpio().is_none() {
        return;
    }
    let a = sample();
    let dir = tempfile::tempdir().unwrap();
    let list = run_cpio(&["-it", "--quiet"], dir.path(), &a);
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(
        names,
        ["d", "d/f", "d/empty", "d/four", "d/l", "dev", "dev/console"]
    );
    let verbose = run_cpio(&["-itv", "--numeric-uid-gid", "--quiet"], dir.path(), &a);
    for want in [
        "drwxr-x---",
        "-rw-r-----",
        "lrwxrwxrwx",
        "d/l -> f",
        "crw-------",
    ] {
        assert!(verbose.contains(want), "{want:?} in\n{verbose}");
    }
    let console = verbose
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .unwrap();
    assert!(
        console.contains("5,") && console.split_whitespace().any(|w| w == "1"),
        "{console}"
    );
    run_cpio(&["-idm", "--quiet"], dir.path(), &a);
    let p = dir.path();
    assert_eq!(std::fs::read(p.join("d/f")).unwrap(), b"hello");
    assert_eq!(std::fs::read(p.join("d/four")).unwrap(), b"1234");
    assert_eq!(std::fs::read(p.join("d/empty")).unwrap(), b"");
    assert_eq!(std::fs::read_link(p.join("d/l")).unwrap(), Path::new("f"));
    let f = std::fs::metadata(p.join("d/f")).unwrap();
    assert_eq!(
        (f.permissions().mode() & 0o7777, f.mtime()),
        (0o640, MTIME as i64)
    );
    let four = std::fs::metadata(p.join("d/four")).unwrap();
    assert_eq!(four.permissions().mode() & 0o7777, 0o755);
    // Device nodes need CAP_MKNOD: checked when the test runs as root.
    if let Ok(c) = std::fs::symlink_metadata(p.join("dev/console")) {
        use std::os::unix::fs::FileTypeExt;
        assert!(c.file_type().is_char_device());
        assert_eq!((libc::major(c.rdev()), libc::minor(c.rdev())), (5, 1));
    }
}
