//! Puts d2v's init into the guest: its own static executable at [`INIT_PATH`], the resolved
//! [`AppConfig`] at [`CONFIG_PATH`], the modules to load at [`MODULES_PATH`], and the mount
//! points a container runtime would have provided (an image `FROM scratch` has none).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::AppError;
use crate::guest::{put_file, put_reader, GuestError, Report};
use crate::init::config::{AppConfig, CONFIG_PATH, INIT_PATH, MODULES_PATH};
use crate::tree::{Inode, Metadata, Tree};

/// Directories d2v's init mounts on, with their modes.
const MOUNT_POINTS: [(&str, u32); 5] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
];

/// Writes the init, its config and module list into `tree`; `init` is d2v's own executable
/// ([`own_executable`]).
pub fn install(
    tree: &mut Tree,
    app: &AppConfig,
    modules: &[String],
    init: &mut dyn Read,
) -> Result<Vec<Report>, GuestError> {
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    put_reader(tree, &rel(INIT_PATH), init, 0o755)?;
    let json = serde_json::to_string_pretty(app).expect("JSON of plain values") + "\n";
    put_file(tree, &rel(CONFIG_PATH), json.as_bytes(), 0o644)?;
    let mut list = modules.join("\n");
    if !list.is_empty() {
        list.push('\n');
    }
    put_file(tree, &rel(MODULES_PATH), list.as_bytes(), 0o644)?;
    let mut made = Vec::new();
    for (dir, mode) in MOUNT_POINTS {
        if tree.resolve(dir.as_bytes(), true).is_none() {
            let meta = Metadata {
                mode,
                mtime: super::super::mtime(),
                ..Metadata::default()
            };
            tree.insert(dir.as_bytes(), Inode::dir(meta))
                .map_err(|source| GuestError::Tree {
                    path: dir.into(),
                    source,
                })?;
            made.push(format!("/{dir}"));
        }
    }
    let mut out = vec![Report::info(format!(
        "d2v's init at {INIT_PATH} runs {:?} as uid {} gid {} in {} (config {CONFIG_PATH}, {} modules)",
        app.args,
        app.uid,
        app.gid,
        app.working_dir,
        modules.len()
    ))];
    if !made.is_empty() {
        out.push(Report::info(format!(
            "created mount points {} (a container runtime provides them)",
            made.join(", ")
        )));
    }
    Ok(out)
}

/// d2v's own executable, which becomes the guest's init: it must be a static x86-64 ELF
/// (no program interpreter), since the guest has no d2v libraries and maybe no libc at all.
pub fn own_executable() -> Result<File, AppError> {
    let path = "/proc/self/exe";
    let io = |source| AppError::OwnExecutable { source };
    let mut f = File::open(path).map_err(io)?;
    let mut h = [0u8; 64];
    f.read_exact(&mut h).map_err(io)?;
    let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
    if &h[..4] != b"\x7fELF" || h[4] != 2 || u16_at(18) != 62 {
        return Err(AppError::NotStatic {
            why: "it is not an x86-64 ELF executable".into(),
        });
    }
    let phoff = u64::from_le_bytes(h[0x20..0x28].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u16_at(0x36) as u64, u16_at(0x38) as u64);
    for i in 0..phnum {
        let mut ph = [0u8; 4];
        f.seek(SeekFrom::Start(phoff + i * phentsize)).map_err(io)?;
        f.read_exact(&mut ph).map_err(io)?;
        // PT_INTERP: the program needs a dynamic loader.
        if u32::from_le_bytes(ph) == 3 {
            return Err(AppError::NotStatic {
                why: "it is dynamically linked".into(),
            });
        }
    }
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(f)
}
