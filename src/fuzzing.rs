//! Entry points for coverage-guided fuzzing (the `fuzzing` feature; not part of the product).
//!
//! One `pub fn TARGET(data: &[u8])` per parser family of bytes that come from outside d2v: an
//! image reference, manifests/indexes/configs, a layer (tar, gzip, zstd) applied to a staging
//! tree and written as ext4, docker/OCI archives, registries.conf, auth files, registry
//! challenges and token answers, the text files d2v reads in an image, an initramfs, GRUB's
//! ELF modules and EFI image, kernel heads and PE files, and the GPT d2v's init reads. Each
//! calls the real parser and panics only when one of its invariants breaks (an error is a
//! fine answer to bad input; a panic inside the parser is a bug either way).
//!
//! `fuzz/` (cargo-fuzz, nightly) drives them with libFuzzer; `tests/fuzz_regressions.rs`
//! replays every input under `testdata/fuzz/TARGET/` through the same function on stable.
//! [`TARGETS`] names them all.

use std::io::{Read, Write};
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

use crate::source::layer::sniff;
use crate::source::manifest::Compression;
use crate::tree::Tree;

/// A fuzz target: its name (the directory under `testdata/fuzz/` and `fuzz/fuzz_targets/`)
/// and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("reference", reference),
    ("manifest", manifest),
    ("layer_raw", layer_raw),
    ("layer_entries", layer_entries),
    ("archive", archive),
    ("registries_conf", registries_conf),
    ("auth_file", auth_file),
    ("registry_auth", registry_auth),
    ("image_text", image_text),
    ("initramfs", initramfs),
    ("grub_elf", grub_elf),
    ("pe_kernel", pe_kernel),
    ("gpt", gpt),
];

/// Splits `data` at its first NUL: two inputs for targets that take two.
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Image references and source strings: a reference that parses prints as a reference that
/// parses to the same; a platform likewise.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    use crate::source::reference::{parse_source, Reference};
    if let Ok(r) = Reference::parse(s) {
        let shown = r.to_string();
        let again = Reference::parse(&shown)
            .unwrap_or_else(|e| panic!("{s:?} parsed, but its form {shown:?} did not: {e}"));
        assert_eq!(r, again, "{s:?} → {shown:?} parses differently");
        let _ = (r.endpoint(), r.manifest_ref());
    }
    let _ = parse_source(s);
    if let Ok(p) = crate::source::Platform::parse(s) {
        let shown = p.to_string();
        let again = crate::source::Platform::parse(&shown)
            .unwrap_or_else(|e| panic!("platform {s:?} parsed, {shown:?} did not: {e}"));
        assert_eq!(p, again, "platform {s:?} → {shown:?} parses differently");
    }
}

/// The media types a manifest can be served with; the first byte picks one (or none), so
/// the fuzzer mixes them up with whatever the body says.
const MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/json; charset=utf-8",
];

/// Manifests and indexes (with any Content-Type), an OCI layout's `index.json`, image configs.
pub fn manifest(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = MEDIA_TYPES.get(pick as usize % (MEDIA_TYPES.len() + 1));
    let _ = crate::source::manifest::parse_manifest(body, ct.copied(), "fuzz");
    let want = crate::source::Platform::default();
    let _ = crate::source::layout::root_from_index(body, Path::new("index.json"), None, &want);
    let _ = crate::source::layout::root_from_index(body, Path::new("index.json"), Some("1"), &want);
    if let Ok(c) = serde_json::from_slice::<crate::source::ImageConfig>(body) {
        let _ = crate::guest::app::command(&c.config);
        let _ = crate::guest::app::stop_signal(c.config.stop_signal.as_deref());
        let again = serde_json::to_vec(&c).expect("a parsed config serialises");
        let back: crate::source::ImageConfig =
            serde_json::from_slice(&again).expect("a serialised config parses");
        assert_eq!(c, back, "an image config changes through serde");
    }
}

/// A layer blob as downloaded: sniffed, decompressed, applied to a staging tree; a tree that
/// took the layer is written as ext4 and as d2v's export tar without error.
pub fn layer_raw(data: &[u8]) {
    apply_and_write(&[data]);
}

/// Decompresses a blob as its first bytes say, as [`crate::source::open_layer`] does.
fn decompress(blob: &[u8]) -> Box<dyn Read + '_> {
    match sniff(blob) {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(blob) {
            Ok(d) => Box::new(d),
            Err(_) => Box::new(&[][..]),
        },
    }
}

/// Applies `layers` in turn; when every one applied, the exporter must accept the tree, and
/// the ext4 writer too, short of what ext4 cannot hold (an xattr outside its namespaces, a
/// name over 255 bytes, more than 65000 links, ...), which it refuses by name.
fn apply_and_write(layers: &[&[u8]]) {
    let mut tree = Tree::in_temp().expect("a staging tree in TMPDIR");
    for (i, blob) in layers.iter().enumerate() {
        // As the pipeline reads a layer: special entries (PAX, GNU long names) bounded.
        let name = format!("layer{i}");
        let mut r = crate::layers::SpecialLimit::new(decompress(blob), &name);
        if crate::layers::apply_layer(&mut tree, &mut r, &name).is_err() {
            return;
        }
    }
    if let Err(e) = crate::export::write_tar(&tree, &mut std::io::sink()) {
        panic!("the tree took the layers but export refused it: {e}");
    }
    use crate::disk::ext4::{self, Ext4Error as E};
    let out = tempfile::tempfile().expect("a temporary file");
    match ext4::write(&tree, &out, 0, &ext4::Ext4Options::from_seed("fuzz")) {
        Ok(_)
        | Err(
            E::Xattr { .. }
            | E::XattrsTooLarge { .. }
            | E::NameTooLong { .. }
            | E::SymlinkTooLong { .. }
            | E::TooManyLinks { .. }
            | E::FileTooLarge { .. }
            | E::DirTooLarge { .. },
        ) => {}
        Err(e) => panic!("the tree took the layers but ext4 refused it: {e}"),
    }
}

/// A name component, mostly from a small set so that entries meet (whiteouts, parents,
/// symlinked directories), sometimes any bytes.
#[derive(Debug, Arbitrary)]
enum Component {
    Known(u8),
    Raw(Vec<u8>),
}

const KNOWN: &[&[u8]] = &[
    b"a",
    b"b",
    b"lib",
    b"usr",
    b"etc",
    b".",
    b"..",
    b".wh.a",
    b".wh.b",
    b".wh..wh..opq",
    b"",
    b"./",
];

/// One tar entry of a structure-aware layer.
#[derive(Debug, Arbitrary)]
struct FuzzEntry {
    path: Vec<Component>,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Vec<Component>,
    device: (u32, u32),
    pax: Vec<(u8, Vec<u8>)>,
}

const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "uid",
    "gid",
    "mtime",
    "size",
    "SCHILY.xattr.user.x",
    "SCHILY.xattr.security.capability",
    "SCHILY.xattr.trusted.overlay.opaque",
    "LIBARCHIVE.xattr.user.y",
    "GNU.sparse.size",
];

fn path_of(c: &[Component]) -> Vec<u8> {
    let parts: Vec<&[u8]> = c
        .iter()
        .map(|c| match c {
            Component::Known(i) => KNOWN[*i as usize % KNOWN.len()],
            Component::Raw(b) => b.as_slice(),
        })
        .collect();
    parts.join(&b'/')
}

/// Serialises `entries` as a tar the way image builders write them (ustar headers, GNU long
/// names, PAX records), so that the fuzzer gets past the header checksums.
fn tar_of(entries: &[FuzzEntry]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            let recs: Vec<(&str, &[u8])> = e
                .pax
                .iter()
                .map(|(k, v)| (PAX_KEYS[*k as usize % PAX_KEYS.len()], v.as_slice()))
                .collect();
            b.append_pax_extensions(recs)?;
        }
        let mut h = tar::Header::new_gnu();
        let kind = match e.kind % 8 {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Directory,
            2 => tar::EntryType::Symlink,
            3 => tar::EntryType::Link,
            4 => tar::EntryType::Char,
            5 => tar::EntryType::Block,
            6 => tar::EntryType::Fifo,
            _ => tar::EntryType::new(e.kind),
        };
        h.set_entry_type(kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_device_major(e.device.0).ok();
        h.set_device_minor(e.device.1).ok();
        let data: &[u8] = if kind == tar::EntryType::Regular {
            &e.data
        } else {
            &[]
        };
        h.set_size(data.len() as u64);
        let path = path_of(&e.path);
        if kind.is_symlink() || kind.is_hard_link() {
            b.append_link(&mut h, bytes_path(&path), bytes_path(&path_of(&e.link)))?;
        } else {
            b.append_data(&mut h, bytes_path(&path), data)?;
        }
    }
    b.into_inner()
}

fn bytes_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Layers generated as lists of tar entries (each compressed as its flag says), applied in
/// turn; then as [`layer_raw`].
pub fn layer_entries(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(layers) = Vec::<(u8, Vec<FuzzEntry>)>::arbitrary(&mut u) else {
        return;
    };
    let mut blobs = Vec::new();
    for (compression, entries) in layers.iter().take(4) {
        let Ok(tar) = tar_of(entries) else {
            return; // a name the tar writer cannot write: not a layer
        };
        blobs.push(match compression % 3 {
            0 => tar,
            1 => {
                let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                g.write_all(&tar).expect("gzip into memory");
                g.finish().expect("gzip into memory")
            }
            _ => zstd::encode_all(&tar[..], 1).expect("zstd into memory"),
        });
    }
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    apply_and_write(&refs);
}

/// A `docker save` / `skopeo copy docker-archive:` / kaniko `--tar-path` archive or an
/// oci-archive: its members found in place; its manifest.json turned into a manifest, its
/// index.json read.
pub fn archive(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("archive.tar");
    std::fs::write(&file, data).expect("write the archive");
    let Ok(mut imported) = crate::source::archive::Imported::load(&file) else {
        return;
    };
    let _ = imported.docker_manifest(None);
    let _ = imported.docker_manifest(Some("a:1"));
    if let Ok(index) = imported.small("index.json") {
        let want = crate::source::Platform::default();
        let _ = crate::source::layout::root_from_index(&index, &file, None, &want);
    }
}

/// containers-registries.conf text, then the endpoints of a reference (the part after the
/// first NUL) under it.
pub fn registries_conf(data: &[u8]) {
    let (conf, reference) = split2(data);
    let (Ok(conf), Ok(reference)) = (std::str::from_utf8(conf), std::str::from_utf8(reference))
    else {
        return;
    };
    let mut c = crate::source::registries::RegistriesConf::default();
    if c.add(conf, Path::new("registries.conf")).is_err() {
        return;
    }
    let r = crate::source::reference::Reference::parse(reference)
        .or_else(|_| crate::source::reference::Reference::parse("docker.io/library/a:1"))
        .expect("a fixed reference parses");
    let _ = c.endpoints(&r);
}

/// A docker `config.json` / containers `auth.json`, looked up for a registry. Credential
/// helpers it names are not run: `PATH` is emptied for the fuzzing process first.
pub fn auth_file(data: &[u8]) {
    static NO_HELPERS: std::sync::Once = std::sync::Once::new();
    NO_HELPERS.call_once(|| std::env::set_var("PATH", "/nonexistent-d2v-fuzz"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("auth.json");
    std::fs::write(&file, data).expect("write the auth file");
    for (registry, repository) in [("docker.io", "library/a"), ("ghcr.io", "org/app")] {
        let _ = crate::source::auth::from_file(&file, registry, repository);
    }
}

/// A `WWW-Authenticate` header (before the first NUL) and a token endpoint's answer (after).
pub fn registry_auth(data: &[u8]) {
    let (header, body) = split2(data);
    let header = String::from_utf8_lossy(header);
    let _ = crate::source::registry::fuzz_auth(&header, body);
}

/// Text files d2v reads in an image: the first byte picks `/etc/os-release`,
/// `/etc/default/grub`, `/etc/passwd` + `/etc/group` (with a `User` after a NUL),
/// `modules.dep` and friends, or GRUB's `moddep.lst`.
pub fn image_text(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (text, second) = split2(rest);
    let text = String::from_utf8_lossy(text);
    let second = String::from_utf8_lossy(second);
    match pick % 5 {
        0 => {
            let os = crate::output::guest_os::guest_os(
                Some(&text),
                Some(&second),
                None,
                crate::output::hw::HwVersion::DEFAULT,
            );
            let _ =
                crate::output::guest_os::note(&os, crate::output::hw::HwVersion::DEFAULT, false);
        }
        1 => {
            let mut t = Tree::in_temp().expect("a staging tree in TMPDIR");
            crate::tree::testing::add_file(&mut t, "etc/default/grub", text.as_bytes());
            crate::tree::testing::add_file(&mut t, "etc/default/grub.d/1.cfg", second.as_bytes());
            let _ = crate::disk::grub::defaults::cmdline_defaults(&t);
        }
        2 => {
            let mut t = Tree::in_temp().expect("a staging tree in TMPDIR");
            let (passwd, group) = text.split_once("\n\n").unwrap_or((&text, ""));
            crate::tree::testing::add_file(&mut t, "etc/passwd", passwd.as_bytes());
            crate::tree::testing::add_file(&mut t, "etc/group", group.as_bytes());
            let _ = crate::guest::app::resolve_user(&t, &second);
        }
        3 => {
            let mut parts = text.split("\n\n");
            let mut next = || parts.next().unwrap_or("");
            let (dep, builtin, softdep, alias) = (next(), next(), next(), next());
            let _ = crate::kernel::modules::ModuleIndex::parse(
                "/lib/modules/6.1.0",
                dep,
                builtin,
                softdep,
                alias,
            );
        }
        _ => {
            let _ = crate::disk::grub::mkimage::modules::parse_moddep(&text);
        }
    }
}

/// An initramfs (cpio newc, concatenated archives, compressed or not) scanned for modules.
pub fn initramfs(data: &[u8]) {
    let _ = crate::inspect::initramfs::scan_for(data, &[]);
    let _ = crate::inspect::initramfs::scan_for(data, &["vmw_pvscsi", "mptspi"]);
}

/// GRUB's module ELF files and the module area of a signed GRUB EFI image.
pub fn grub_elf(data: &[u8]) {
    use crate::disk::grub::mkimage::elf::{Elf, SHT_REL, SHT_RELA, SHT_SYMTAB};
    if let Ok(elf) = Elf::parse(data) {
        for (i, s) in elf.sections.iter().enumerate() {
            let _ = elf.section_data(i);
            match s.kind {
                SHT_SYMTAB => drop(elf.symbols(i)),
                SHT_REL | SHT_RELA => drop(elf.relocations(i)),
                _ => {}
            }
        }
    }
    let _ = crate::disk::grub::mkimage::embedded::objects(data);
    let _ = crate::disk::grub::mkimage::embedded::read(data);
}

/// The first bytes of a kernel (bzImage header, ELF machine, arm64 Image) and PE files
/// (shim, signed GRUB).
pub fn pe_kernel(data: &[u8]) {
    let _ = crate::kernel::bzimage::parse(data);
    let _ = crate::elf::machine(data);
    let _ = crate::pe::Pe::parse(data);
}

/// A disk's GPT as d2v's init reads it to find the root partition, with 512- and 4096-byte
/// sectors.
pub fn gpt(data: &[u8]) {
    let read_at = |buf: &mut [u8], at: u64| -> std::io::Result<()> {
        let at = usize::try_from(at).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = data
            .get(at..)
            .and_then(|d| d.get(..buf.len()))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let want = [0x11; 16];
    for sector in [512, 4096] {
        let _ = crate::init::gpt::find_partition(read_at, sector, &want);
    }
}
