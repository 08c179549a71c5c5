//! d2v's init: what runs in the guest of an app image (one without an init system).
//!
//! d2v is a multi-call binary: a static copy of itself goes into the guest at
//! [`config::INIT_PATH`] (and at `/init` of the initramfs d2v writes), and when started under
//! one of those names it runs as init instead of as the command-line tool.
//! [`config`] is the contract between the build (which writes it) and the guest (which reads
//! it).

pub mod config;
