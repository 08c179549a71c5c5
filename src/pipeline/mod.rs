//! The commands, joining the stages: source → staging tree → guest fixes → disk → output.
//!
//! `build.rs`: `pull`/`build` (the whole pipeline); `show.rs`: `inspect` and `export`.

mod build;
mod show;

use build::build;
use show::{export, inspect};

use std::io::{self, Write};

use crate::cli::{Cli, Command, SourceArgs};
use crate::disk::{ext4, DiskError};
use crate::output;
use crate::source::{self, Image, Platform, SourceOptions};
use crate::tree::Tree;
use crate::{guest, layers};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
    #[error("layer {layer}: {source}")]
    LayerStream { layer: String, source: io::Error },
    #[error("{0}")]
    NoKernel(String),
    #[error("guest fixes: {0}")]
    Guest(#[from] guest::GuestError),
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

pub fn run(cli: &Cli) -> Result<(), Error> {
    let log = Log { quiet: cli.json };
    match &cli.command {
        Command::Pull(args) | Command::Build(args) => build(args, cli.json, &log),
        Command::Inspect { source, src } => inspect(source, src, cli.json, &log),
        Command::Export {
            source,
            output,
            src,
        } => export(source, output, src, &log),
        Command::Debug(cmd) => crate::debug::run(cmd, &log),
    }
}

/// Progress lines on stderr (suppressed with `--json`, which keeps stderr for errors).
pub(crate) struct Log {
    quiet: bool,
}

impl Log {
    pub(crate) fn step(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            // Progress is best effort: a closed or full stderr must not stop (or panic) d2v.
            let _ = writeln!(io::stderr(), "{}", msg.as_ref());
        }
    }
}

/// Writes results to stdout; a closed pipe or full disk is an error, not a panic.
pub(crate) fn print_stdout(text: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io_err("writing to stdout"))
}

pub(crate) fn source_options(src: &SourceArgs, json: bool) -> Result<SourceOptions, Error> {
    if let Some(d) = &src.cert_dir {
        if !d.is_dir() {
            return Err(Error::Usage(format!(
                "--cert-dir {}: not a directory; give a directory holding the registry's CA \
                 certificate(s) as *.crt files",
                d.display()
            )));
        }
    }
    let platform: Platform = src
        .platform
        .parse()
        .map_err(|e: source::SourceError| Error::Usage(e.to_string()))?;
    Ok(SourceOptions {
        platform,
        cache_dir: src.cache_dir.clone(),
        creds: src.creds.clone(),
        authfile: src.authfile.clone(),
        cert_dir: src.cert_dir.clone(),
        tls_verify: src.tls_verify,
        progress: !json,
        ..SourceOptions::default()
    })
}

/// Resolves the source (downloading and verifying every blob) and applies its layers in order.
pub(crate) fn flatten(
    source: &str,
    src: &SourceArgs,
    json: bool,
    log: &Log,
) -> Result<(Image, Tree), Error> {
    let image = source::resolve(source, &source_options(src, json)?)?;
    log.step(format!(
        "image {} ({})",
        image.reference, image.manifest_digest
    ));
    let mut tree = Tree::in_temp().map_err(|e| Error::Io {
        what: "staging tree spill file".into(),
        source: io::Error::other(e.to_string()),
    })?;
    for layer in &image.layers {
        let mut r = source::open_layer(layer)?;
        layers::apply_layer(&mut tree, &mut r, &layer.digest)?;
        // Read to the end so the uncompressed digest (diff_id) is checked.
        io::copy(&mut r, &mut io::sink()).map_err(|source| Error::LayerStream {
            layer: layer.digest.clone(),
            source,
        })?;
    }
    tree.shrink_to_fit();
    log.step(format!("applied {} layers", image.layers.len()));
    Ok((image, tree))
}
