//! `cargo fuzz run initramfs`: d2v::fuzzing::initramfs (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::initramfs(data));
