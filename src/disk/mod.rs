//! Disk image writers.

pub mod ext4;
