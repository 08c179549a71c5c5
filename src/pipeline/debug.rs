//! `d2v debug …` (hidden): single stages of the pipeline on their own, for benchmarks and
//! debugging. `debug ext4 SOURCE -o FILE` writes the flattened image as a bare ext4 filesystem
//! (auto size, no guest fixes); `debug vmdk RAW -o FILE` turns a raw disk file into a
//! streamOptimized VMDK; `debug grub -O PLATFORM -d DIR -c CFG -o FILE` assembles GRUB's
//! core.img or BOOTX64.EFI as grub-mkimage would. Stage times go to stderr with the other
//! progress lines.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use super::{flatten, io_err, Error, Log};
use crate::cli::{DebugCommand, SourceArgs};
use crate::disk::ext4::{self, Ext4Options};
use crate::disk::grub::{self, mkimage, Platform};
use crate::output::atomic::AtomicFile;
use crate::output::vmdk::{self, VmdkOptions};

pub(super) fn run(cmd: &DebugCommand, log: &Log) -> Result<(), Error> {
    match cmd {
        DebugCommand::Ext4 {
            source,
            output,
            src,
        } => ext4_image(source, src, output, log),
        DebugCommand::Grub {
            format,
            directory,
            config,
            output,
            modules,
        } => grub_image(format, directory, config.as_deref(), output, modules, log),
        DebugCommand::Vmdk {
            raw,
            output,
            compression_level,
        } => vmdk_of_raw(raw, output, *compression_level, log),
    }
}

/// `debug ext4`: the flattened image as a bare ext4 filesystem (auto size, no guest fixes).
fn ext4_image(source: &str, src: &SourceArgs, output: &Path, log: &Log) -> Result<(), Error> {
    let t = Instant::now();
    let (image, tree, _logged) = flatten(source, src, false, log)?;
    let flatten_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let opts = Ext4Options::from_seed(&image.manifest_digest);
    let f = AtomicFile::create(output).map_err(io_err(format!("creating {}", output.display())))?;
    let s = ext4::write(&tree, f.file(), 0, &opts)?;
    f.commit()
        .map_err(io_err(format!("committing {}", output.display())))?;
    // Stage times on stderr, for `cargo xtask bench` (which compares the write stage with
    // `mke2fs -d`).
    log.step(format!(
        "wrote {} ({} MiB ext4, {} inodes used); flatten {flatten_secs:.3} s, \
         ext4 write {:.3} s",
        output.display(),
        s.size >> 20,
        s.inodes - s.free_inodes,
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `debug grub`: core.img or BOOTX64.EFI from a module directory, as grub-mkimage makes them.
fn grub_image(
    format: &str,
    directory: &Path,
    config: Option<&Path>,
    output: &Path,
    modules: &[String],
    log: &Log,
) -> Result<(), Error> {
    let platform = match format {
        "i386-pc" => Platform::I386Pc,
        _ => Platform::X86_64Efi,
    };
    let modules: Vec<&str> = if modules.is_empty() {
        platform.available_modules(directory)
    } else {
        modules.iter().map(String::as_str).collect()
    };
    let config = match config {
        Some(p) => {
            std::fs::read_to_string(p).map_err(io_err(format!("reading {}", p.display())))?
        }
        None => String::new(),
    };
    let t = Instant::now();
    let img = mkimage::build(directory, platform, &modules, &config, grub::PREFIX)?;
    let f = AtomicFile::create(output).map_err(io_err(format!("creating {}", output.display())))?;
    f.file()
        .write_all(&img)
        .map_err(io_err(format!("writing {}", output.display())))?;
    f.commit()
        .map_err(io_err(format!("committing {}", output.display())))?;
    log.step(format!(
        "wrote {} ({} bytes) in {:.3} s; modules: {}",
        output.display(),
        img.len(),
        t.elapsed().as_secs_f64(),
        modules.join(" ")
    ));
    Ok(())
}

/// `debug vmdk`: a raw disk file as a streamOptimized VMDK.
fn vmdk_of_raw(raw: &Path, output: &Path, level: u32, log: &Log) -> Result<(), Error> {
    let r = File::open(raw).map_err(io_err(format!("opening {}", raw.display())))?;
    let opts = VmdkOptions {
        seed: raw.display().to_string(),
        file_name: file_name(output),
        compression_level: level,
        ..VmdkOptions::default()
    };
    let mut f =
        AtomicFile::create(output).map_err(io_err(format!("creating {}", output.display())))?;
    let s = {
        let mut w = io::BufWriter::with_capacity(1 << 20, f.file_mut());
        let s = vmdk::write_stream_optimized(&r, &mut w, &opts)
            .map_err(crate::output::OutputError::from)?;
        w.flush()
            .map_err(io_err(format!("writing {}", output.display())))?;
        s
    };
    f.commit()
        .map_err(io_err(format!("committing {}", output.display())))?;
    log.step(format!(
        "wrote {} ({} bytes, {} grains)",
        output.display(),
        s.file_size,
        s.grains
    ));
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk1.vmdk".into())
}
