//! Hand-made edge-case images, described declaratively (no binary blobs): each is a list of
//! layers, each layer a list of tar entries built with [`crate::tar`]. Used by the umoci
//! conformance test and by anything else that wants tricky layers (`write_layout` puts them
//! all into one OCI layout, tagged by name).

use std::io;
use std::path::Path;

use crate::oci::{write_image, Compression, ImageSpec, WrittenImage};
use crate::tar::{tar, Entry};

pub struct EdgeCase {
    pub name: &'static str,
    pub layers: Vec<Vec<Entry>>,
    pub compression: Compression,
}

/// A `security.capability` value (v2, CAP_NET_RAW permitted+effective), as `setcap cap_net_raw+ep` writes.
pub const CAP_NET_RAW: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

fn long(n: usize) -> String {
    format!("long/{}", "n".repeat(n))
}

pub fn all() -> Vec<EdgeCase> {
    let gz = Compression::Gzip;
    vec![
        EdgeCase {
            name: "whiteouts",
            compression: gz,
            layers: vec![
                vec![
                    Entry::dir("a"),
                    Entry::file("a/x", "x"),
                    Entry::file("a/d/y", "y"),
                    Entry::file("a/keep", "k"),
                    Entry::file("top", "t"),
                    Entry::symlink("a/s", "x"),
                ],
                vec![
                    Entry::whiteout("a/x"),
                    Entry::whiteout("a/d"),
                    Entry::whiteout("a/s"),
                    Entry::whiteout("nothere"),
                ],
                vec![Entry::whiteout("top"), Entry::file("a/d", "now a file")],
            ],
        },
        EdgeCase {
            name: "whiteout-same-layer",
            compression: gz,
            layers: vec![
                vec![
                    Entry::file("f", "old"),
                    Entry::file("g", "old"),
                    Entry::file("dir/lower", "l"),
                ],
                vec![
                    Entry::file("f", "new f"),
                    Entry::whiteout("f"),
                    Entry::whiteout("g"),
                    Entry::file("g", "new g"),
                    Entry::file("dir/upper", "u"),
                    Entry::whiteout("dir"),
                ],
            ],
        },
        EdgeCase {
            name: "opaque",
            compression: gz,
            layers: vec![
                vec![
                    Entry::file("d/old", "o"),
                    Entry::file("d/sub/lower", "l"),
                    Entry::file("e/old", "o"),
                    Entry::file("other", "z"),
                ],
                vec![
                    Entry::opaque("e"),
                    Entry::file("e/new", "n"),
                    Entry::dir("d").mode(0o750),
                    Entry::file("d/new", "n"),
                    Entry::file("d/sub/deep", "x"),
                    Entry::opaque("d"),
                ],
            ],
        },
        EdgeCase {
            name: "replace-types",
            compression: Compression::Zstd,
            layers: vec![
                vec![
                    Entry::file("a", "f"),
                    Entry::dir("b"),
                    Entry::file("b/c", "x"),
                    Entry::symlink("s", "/a"),
                    Entry::fifo("p"),
                ],
                vec![
                    Entry::dir("a"),
                    Entry::file("a/in", "i"),
                    Entry::symlink("b", "a"),
                    Entry::file("s", "file"),
                    Entry::dir("p"),
                ],
            ],
        },
        EdgeCase {
            name: "hardlinks",
            compression: Compression::None,
            layers: vec![
                vec![
                    Entry::file("bin/a", "data").mode(0o755),
                    Entry::hardlink("bin/b", "bin/a"),
                    Entry::symlink("sym", "bin/a"),
                    Entry::hardlink("sym2", "sym"),
                    Entry::file("orig", "survivor"),
                    Entry::hardlink("copy", "orig"),
                    Entry::file(format!("{}/f", long(120)), "long"),
                    Entry::hardlink(format!("{}/g", long(120)), format!("{}/f", long(120))),
                ],
                vec![
                    Entry::hardlink("bin/c", "bin/a"),
                    Entry::whiteout("orig"),
                    Entry::hardlink("copy2", "copy"),
                ],
            ],
        },
        EdgeCase {
            name: "xattrs",
            compression: gz,
            layers: vec![vec![
                Entry::file("usr/bin/ping", "ping")
                    .mode(0o755)
                    .xattr("security.capability", CAP_NET_RAW),
                Entry::file("note", "n")
                    .xattr("user.comment", "hello")
                    .xattr("user.empty", ""),
                Entry::dir("xdir").xattr("user.dir", "d"),
            ]],
        },
        EdgeCase {
            name: "devices",
            compression: gz,
            layers: vec![vec![
                Entry::char_dev("dev/null", 1, 3).mode(0o666),
                Entry::char_dev("dev/tty0", 4, 0).mode(0o620).owner(0, 5),
                Entry::block_dev("dev/sda1", 8, 1).mode(0o660).owner(0, 6),
                Entry::block_dev("dev/big", 259, 70000),
                Entry::fifo("run/initctl").mode(0o600),
            ]],
        },
        EdgeCase {
            name: "modes-owners-times",
            compression: gz,
            layers: vec![vec![
                Entry::file("suid", "x").mode(0o4755),
                Entry::file("sgid", "x").mode(0o2711).owner(1000, 100),
                Entry::dir("tmp").mode(0o1777),
                Entry::file("none", "x").mode(0),
                Entry::file("big-ids", "x").owner(2_000_000, 3_000_000),
                Entry::file("frac", "x").mtime(1_600_000_000, Some(123_456_789)),
                Entry::symlink("lnk", "frac").owner(7, 8),
            ]],
        },
        EdgeCase {
            name: "long-names",
            compression: gz,
            layers: vec![vec![
                Entry::file(format!("{}/pax", long(150)), "pax"),
                Entry::file(format!("{}/gnu", long(160)), "gnu").gnu(),
                Entry::symlink("pax-link", format!("/{}/pax", long(150))),
                Entry::symlink("gnu-link", format!("/{}/gnu", long(160))).gnu(),
                Entry::hardlink(
                    format!("{}/gnu-hard", long(160)),
                    format!("{}/gnu", long(160)),
                )
                .gnu(),
            ]],
        },
        EdgeCase {
            name: "symlink-parents",
            compression: gz,
            layers: vec![
                vec![
                    Entry::file("usr/lib/ld.so", "ld"),
                    Entry::file("usr/lib/old", "old"),
                    Entry::file("usr/lib/gone", "gone"),
                    Entry::symlink("lib", "usr/lib"),
                    Entry::symlink("abs", "/usr/lib"),
                    Entry::symlink("esc", "../../../usr"),
                    Entry::symlink("loop", "loop"),
                ],
                vec![
                    Entry::file("lib/new", "via relative symlink"),
                    Entry::file("abs/new-abs", "via absolute symlink"),
                    Entry::file("esc/lib/new-esc", "via escaping symlink"),
                    Entry::whiteout("lib/gone"),
                    Entry::hardlink("hl", "lib/old"),
                ],
            ],
        },
        EdgeCase {
            name: "names",
            compression: gz,
            layers: vec![vec![
                Entry::dir("./"),
                Entry::file(b"caf\xe9", "latin-1"),
                Entry::file(b"dir\xff\xfe/inner", "bytes"),
                Entry::file("日本語/ünïcödé.txt", "utf-8"),
                Entry::file("./dot/slash", "d"),
                Entry::file("with space", "s"),
                Entry::symlink(b"lnk\xe9", b"caf\xe9"),
                Entry::file(
                    [b"long-\xff/".as_slice(), "n".repeat(120).as_bytes()].concat(),
                    "pax bytes",
                ),
                Entry::file(
                    [b"gnu-\xfe/".as_slice(), "g".repeat(120).as_bytes()].concat(),
                    "gnu bytes",
                )
                .gnu(),
            ]],
        },
    ]
}

/// Writes every edge case into the OCI layout at `dir`, tagged by its name.
pub fn write_layout(dir: &Path) -> io::Result<Vec<(&'static str, WrittenImage)>> {
    write_layout_with(dir, |c| c)
}

/// Like [`write_layout`], with each case's compression mapped by `compression` (umoci 0.4.7
/// cannot read zstd layers: map zstd to gzip for it; the uncompressed tars stay identical).
pub fn write_layout_with(
    dir: &Path,
    compression: impl Fn(Compression) -> Compression,
) -> io::Result<Vec<(&'static str, WrittenImage)>> {
    let mut out = Vec::new();
    for case in all() {
        let mut spec = ImageSpec::new().tag(case.name).entrypoint(&["/bin/sh"]);
        for l in &case.layers {
            spec = spec.layer(tar(l), compression(case.compression));
        }
        out.push((case.name, write_image(dir, &spec)?));
    }
    Ok(out)
}
