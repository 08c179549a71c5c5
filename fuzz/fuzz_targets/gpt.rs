//! `cargo fuzz run gpt`: d2v::fuzzing::gpt (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::gpt(data));
