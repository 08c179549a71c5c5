//! Whole-filesystem unit tests (the integration tests with e2fsck live in tests/ext4.rs).
