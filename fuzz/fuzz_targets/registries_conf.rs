//! `cargo fuzz run registries_conf`: d2v::fuzzing::registries_conf (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::registries_conf(data));
