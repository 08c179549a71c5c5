//! The ext4 writer checked with e2fsprogs (`e2fsck -fn` must find nothing to fix, `debugfs` must
//! read back what the tree holds) and, optionally, a real kernel.

mod deferred;
mod features;
mod host;
mod scale;
mod streaming;
mod support;
