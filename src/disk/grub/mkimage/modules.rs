//! The modules GRUB's kernel finds after itself: which modules (the requested ones and what
//! `moddep.lst` says they need, each after its dependencies) and the area holding them
//! (GRUB's `include/grub/kernel.h`: a `grub_module_info` header, then objects each behind a
//! `grub_module_header`, padded to the pointer size).

use std::collections::{HashMap, HashSet};

use super::MkimageError;

/// `GRUB_MODULE_MAGIC`: "mimg".
pub(crate) const MODULE_MAGIC: u32 = 0x676d_696d;
/// `grub_module_header.type` values.
pub(crate) const OBJ_TYPE_ELF: u32 = 0;
pub(crate) const OBJ_TYPE_CONFIG: u32 = 2;
pub(crate) const OBJ_TYPE_PREFIX: u32 = 3;
/// `sizeof (struct grub_module_header)`.
const OBJ_HEADER: usize = 8;

/// `moddep.lst`: each line `module: dependency...`. A module listed twice keeps its last line.
pub(crate) fn parse_moddep(text: &str) -> Result<HashMap<String, Vec<String>>, MkimageError> {
    let mut deps = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line.split_once(':').ok_or_else(|| MkimageError::Moddep {
            line: n + 1,
            text: line.to_string(),
        })?;
        deps.insert(
            name.trim().to_string(),
            rest.split_whitespace().map(str::to_string).collect(),
        );
    }
    Ok(deps)
}

/// The modules to embed for `wanted`, each after the modules it depends on, in the order
/// GRUB's `grub_util_resolve_dependencies` gives (a module's dependencies are visited last
/// listed first), so images match grub-mkimage's byte for byte.
pub(crate) fn resolve(wanted: &[&str], deps: &HashMap<String, Vec<String>>) -> Vec<String> {
    fn visit(
        name: &str,
        deps: &HashMap<String, Vec<String>>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        for d in deps.get(name).into_iter().flatten().rev() {
            visit(d, deps, seen, out);
        }
        out.push(name.to_string());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in wanted {
        visit(m, deps, &mut seen, &mut out);
    }
    out
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The module area for a kernel whose pointers are `ptr_size` bytes (4 for i386-pc, 8 for
/// x86_64-efi): `grub_module_info{32,64}`, the ELF modules in order, then the embedded
/// config and the prefix, each NUL-terminated.
pub(crate) fn area(ptr_size: usize, modules: &[Vec<u8>], config: &str, prefix: &str) -> Vec<u8> {
    let info = if ptr_size == 8 { 24 } else { 12 };
    let mut out = vec![0u8; info];
    let mut object = |kind: u32, body: &[u8], padded: usize| {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&((padded + OBJ_HEADER) as u32).to_le_bytes());
        let start = out.len();
        out.extend_from_slice(body);
        out.resize(start + padded, 0);
    };
    for m in modules {
        object(OBJ_TYPE_ELF, m, align(m.len(), ptr_size));
    }
    object(
        OBJ_TYPE_CONFIG,
        config.as_bytes(),
        align(config.len() + 1, ptr_size),
    );
    object(
        OBJ_TYPE_PREFIX,
        prefix.as_bytes(),
        align(prefix.len() + 1, ptr_size),
    );
    let total = out.len() as u64;
    out[0..4].copy_from_slice(&MODULE_MAGIC.to_le_bytes());
    if ptr_size == 8 {
        out[8..16].copy_from_slice(&(info as u64).to_le_bytes());
        out[16..24].copy_from_slice(&total.to_le_bytes());
    } else {
        out[4..8].copy_from_slice(&(info as u32).to_le_bytes());
        out[8..12].copy_from_slice(&(total as u32).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_last_listed_first() {
        let deps = parse_moddep("normal: crypto boot extcmd\nextcmd:\nboot:\ncrypto:\nlinux: boot relocator\nrelocator: mmap\nmmap:\n").unwrap();
        assert_eq!(
            resolve(&["normal", "linux"], &deps),
            [
                "extcmd",
                "boot",
                "crypto",
                "normal",
                "mmap",
                "relocator",
                "linux"
            ]
        );
        // Unknown names are kept (the caller finds their file missing); no module twice.
        assert_eq!(resolve(&["x", "x"], &deps), ["x"]);
    }

    #[test]
    fn a_cycle_does_not_recurse_forever() {
        let deps = parse_moddep("a: b\nb: a\n").unwrap();
        assert_eq!(resolve(&["a"], &deps), ["b", "a"]);
    }

    #[test]
    fn moddep_without_a_colon_is_an_error() {
        assert!(matches!(
            parse_moddep("normal boot\n"),
            Err(MkimageError::Moddep { line: 1, .. })
        ));
    }

    #[test]
    fn area_layout_follows_grub_module_info() {
        let a = area(8, &[vec![1, 2, 3]], "ab", "(hd0)/grub");
        // info (24) + module (8 + 8) + config "ab\0" (8 + 8) + prefix (8 + 16).
        assert_eq!(a.len(), 24 + 16 + 16 + 24);
        assert_eq!(&a[0..4], b"mimg");
        assert_eq!(u64::from_le_bytes(a[8..16].try_into().unwrap()), 24);
        assert_eq!(u64::from_le_bytes(a[16..24].try_into().unwrap()), 80);
        assert_eq!(&a[24..32], &[0, 0, 0, 0, 16, 0, 0, 0]);
        assert_eq!(&a[32..40], &[1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(&a[40..48], &[2, 0, 0, 0, 16, 0, 0, 0]);
        assert_eq!(&a[48..51], b"ab\0");
        assert_eq!(&a[56..64], &[3, 0, 0, 0, 24, 0, 0, 0]);
        assert_eq!(&a[64..75], b"(hd0)/grub\0");

        let a = area(4, &[vec![1, 2, 3, 4]], "", "p");
        // info (12) + module (8 + 4) + config "\0" (8 + 4) + prefix "p\0" (8 + 4).
        assert_eq!(a.len(), 12 + 12 + 12 + 12);
        assert_eq!(u32::from_le_bytes(a[4..8].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(a[8..12].try_into().unwrap()), 48);
    }
}
