//! `cargo fuzz run pe_kernel`: d2v::fuzzing::pe_kernel (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::pe_kernel(data));
