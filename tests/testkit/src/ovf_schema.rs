//! Shared by the output tests: validate an OVF with xmllint against the DMTF OVF 1.1.1 schema.

use std::path::PathBuf;
use std::process::Command;

fn schema_dir() -> Option<PathBuf> {
    let d = crate::workspace_root().join("../shared/reference/ovf-schema");
    let d = if d.is_dir() {
        d
    } else {
        PathBuf::from("/work/shared/reference/ovf-schema")
    };
    d.join("dsp8023_1.1.1.xsd").is_file().then_some(d)
}

/// Validate `xml` with xmllint against the schema; `None` when the schema folder is absent.
pub fn validate(xml: &str) -> Option<Result<(), String>> {
    let Some(s) = schema_dir() else {
        eprintln!("NOTICE: OVF schema folder not found; skipping the schema validation assertion");
        return None;
    };
    crate::require_tool("xmllint", "libxml2-utils");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vm.ovf");
    std::fs::write(&f, xml).unwrap();
    let o = Command::new("xmllint")
        .env("XML_CATALOG_FILES", s.join("catalog.xml"))
        .args(["--noout", "--nonet", "--schema"])
        .arg(s.join("dsp8023_1.1.1.xsd"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    Some(if o.status.success() {
        Ok(())
    } else {
        Err(text)
    })
}
