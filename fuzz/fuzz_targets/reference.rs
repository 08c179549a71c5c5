//! `cargo fuzz run reference`: d2v::fuzzing::reference (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::reference(data));
