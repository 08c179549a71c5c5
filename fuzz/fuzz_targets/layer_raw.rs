//! `cargo fuzz run layer_raw`: d2v::fuzzing::layer_raw (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::layer_raw(data));
