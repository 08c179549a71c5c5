//! d2v: container image → bootable vSphere VM.
//!
//! The pipeline, one module per stage:
//! source (registry, OCI layout, docker-archive) → [`tree`] (staging tree) → guest fixes →
//! disk (gpt, fat, ext4, grub) → output (vmdk, ovf, ova).

pub mod bytes;
pub mod cli;
pub mod disk;
mod error;
pub mod export;
pub mod guest;
pub mod ids;
pub mod inspect;
pub mod layers;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod source;
pub mod sparse;
pub mod text;
pub mod tree;
