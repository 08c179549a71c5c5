//! `cargo fuzz run archive`: d2v::fuzzing::archive (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::archive(data));
