//! Extended attributes a VM's root filesystem cannot hold. Linux knows four namespaces
//! (`user.`, `trusted.`, `security.`, `system.`; xattr(7)) and its filesystems store only the
//! POSIX ACLs of `system.`; a name outside them (`com.apple.provenance` from a macOS tar, a
//! `system.nfs4_acl`) gets `EOPNOTSUPP` from every filesystem. Docker and containerd apply
//! such a layer, drop the attribute and warn; d2v does the same, once per layer.

use std::fmt;

/// Whether a Linux filesystem can store an attribute of this name.
pub(super) fn storable(name: &[u8]) -> bool {
    const NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    NAMESPACES.iter().any(|ns| name.starts_with(ns))
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// The attributes dropped from one layer: how many, and the first, for the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedXattrs {
    /// The layer as named to `apply_layer`.
    pub layer: String,
    /// Attributes dropped.
    pub count: u64,
    /// The first entry that had one.
    pub path: String,
    /// That attribute's name.
    pub name: String,
}

impl DroppedXattrs {
    /// Notes that `path` had attribute `name`, which was dropped.
    pub(super) fn note(dropped: &mut Option<DroppedXattrs>, layer: &str, path: &str, name: &[u8]) {
        match dropped {
            Some(d) => d.count += 1,
            None => {
                *dropped = Some(DroppedXattrs {
                    layer: layer.to_string(),
                    count: 1,
                    path: path.to_string(),
                    name: crate::text::printable(&String::from_utf8_lossy(name)),
                })
            }
        }
    }
}

impl fmt::Display for DroppedXattrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others = match self.count {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        write!(
            f,
            "layer {}: dropped extended attribute {:?} of {:?}{others}: outside the namespaces \
             Linux filesystems store (user., trusted., security., POSIX ACLs), as Docker and \
             containerd drop it",
            self.layer, self.name, self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_names() {
        for ok in [
            "user.a",
            "trusted.overlay.opaque",
            "security.capability",
            "security.selinux",
        ] {
            assert!(storable(ok.as_bytes()), "{ok}");
        }
        assert!(storable(b"system.posix_acl_access"));
        for bad in [
            "com.apple.provenance",
            "system.nfs4_acl",
            "system.data",
            "weird",
            "",
        ] {
            assert!(!storable(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn counts_after_the_first() {
        let mut d = None;
        DroppedXattrs::note(&mut d, "l", "/a", b"com.apple.x");
        DroppedXattrs::note(&mut d, "l", "/b", b"y.z");
        let d = d.unwrap();
        assert_eq!(
            (d.count, d.path.as_str(), d.name.as_str()),
            (2, "/a", "com.apple.x")
        );
        assert!(d.to_string().contains("and 1 more"), "{d}");
    }
}
