//! ELF identification, shared by the checks that refuse an executable or a kernel built for
//! another machine than the VM's (x86-64): `e_machine` from an ELF header and its name.

/// `e_machine` of x86-64.
pub(crate) const EM_X86_64: u16 = 62;
/// `e_machine` of arm64 (AArch64).
pub(crate) const EM_AARCH64: u16 = 183;

/// `e_machine` of the ELF file whose first bytes are `head` (little-endian, as every machine
/// d2v names is); `None` when it is not an ELF file.
pub(crate) fn machine(head: &[u8]) -> Option<u16> {
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    Some(u16::from_le_bytes([*head.get(18)?, *head.get(19)?]))
}

/// A name for an `e_machine` value.
pub(crate) fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "x86 (32-bit)",
        40 => "arm (32-bit)",
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "arm64 (aarch64)",
        243 => "riscv",
        21 => "ppc64",
        22 => "s390x",
        _ => "another machine",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn machines() {
        let mut h = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        assert_eq!(super::machine(&h), None);
        h.extend_from_slice(&183u16.to_le_bytes());
        assert_eq!(super::machine(&h), Some(183));
        assert_eq!(super::machine_name(183), "arm64 (aarch64)");
        assert_eq!(super::machine(b"MZ\0\0"), None);
    }
}
