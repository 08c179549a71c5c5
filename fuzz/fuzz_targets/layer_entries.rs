//! `cargo fuzz run layer_entries`: d2v::fuzzing::layer_entries (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::layer_entries(data));
