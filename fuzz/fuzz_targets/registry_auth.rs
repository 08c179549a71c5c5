//! `cargo fuzz run registry_auth`: d2v::fuzzing::registry_auth (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::registry_auth(data));
