//! d2v: container image → bootable vSphere VM.
//!
//! The pipeline, one module per stage:
//! source (registry, OCI layout, docker-archive) → [`tree`] (staging tree) → guest fixes →
//! disk (gpt, fat, ext4, grub) → output (vmdk, ovf, ova).

#![warn(missing_docs)]

pub(crate) mod bytes;
pub mod cli;
pub mod disk;
mod error;
pub mod export;
pub(crate) mod guest;
pub mod ids;
pub(crate) mod inspect;
pub mod layers;
pub mod output;
pub mod pipeline;
pub(crate) mod progress;
pub mod source;
pub(crate) mod sparse;
pub(crate) mod text;
pub mod tree;
