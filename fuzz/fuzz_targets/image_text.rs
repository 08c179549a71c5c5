//! `cargo fuzz run image_text`: d2v::fuzzing::image_text (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::image_text(data));
