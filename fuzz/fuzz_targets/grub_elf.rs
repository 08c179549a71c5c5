//! `cargo fuzz run grub_elf`: d2v::fuzzing::grub_elf (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| d2v::fuzzing::grub_elf(data));
