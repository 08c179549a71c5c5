//! d2v: container image → bootable vSphere VM.
//!
//! The pipeline, one module per stage:
//! source (registry, OCI layout, docker-archive) → [`tree`] (staging tree) → guest fixes →
//! disk (gpt, fat, ext4, grub) → output (vmdk, ovf, ova).

pub mod disk;
pub mod guest;
pub mod ids;
pub mod tree;
