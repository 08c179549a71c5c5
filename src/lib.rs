//! d2v: container image → bootable vSphere VM.
//!
//! The pipeline, one module per stage:
//! source (registry, OCI layout, docker-archive) → [`tree`] (staging tree) → guest fixes →
//! disk (gpt, fat, ext4, grub) → output (vmdk, ovf, ova).
//!
//! The public API is what d2v's binary, xtask and integration tests use; the rest is
//! `pub(crate)`:
//! - [`cli::Cli`] and [`pipeline::run`]: the command line and the commands;
//! - [`source::resolve`]: an image from a registry, OCI layout, archive or directory, its blobs
//!   verified and cached, and [`source::open_layer`] to read a layer's tar;
//! - [`tree::Tree`]: the staging tree, which [`layers::apply_layer`] fills from a layer's tar
//!   and [`export::write_tar`] writes as one PAX tar;
//! - [`disk::layout::write_disk`]: the GPT disk (BIOS boot partition, FAT32 ESP, ext4 root) with
//!   GRUB, and its parts ([`disk::gpt`], [`disk::fat`], [`disk::ext4`], [`disk::grub`]);
//! - [`output::write_outputs`]: the streamOptimized VMDK, OVF and OVA;
//! - [`ids::uuid_string`] and [`ids::civil_from_days`], shared with xtask and the tests.

#![warn(missing_docs)]

pub(crate) mod bytes;
pub mod cli;
pub mod disk;
pub(crate) mod elf;
mod error;
pub mod export;
pub mod finality;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod guest;
pub mod ids;
pub mod init;
pub(crate) mod inspect;
pub mod interrupt;
pub(crate) mod kernel;
pub mod layers;
pub mod output;
pub(crate) mod pe;
pub mod pipeline;
pub(crate) mod progress;
pub mod source;
pub(crate) mod sparse;
pub(crate) mod text;
pub mod tree;
