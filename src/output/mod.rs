//! vSphere outputs: streamOptimized VMDK, OVF descriptor, OVA archive, and the atomic
//! (temp + rename) writing every output format goes through.

pub mod ovf;
pub mod vmdk;
