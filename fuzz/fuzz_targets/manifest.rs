//! `cargo fuzz run manifest`: d2v::fuzzing::manifest (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::manifest(data));
