//! `cargo fuzz run auth_file`: d2v::fuzzing::auth_file (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::auth_file(data));
