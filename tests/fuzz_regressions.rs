//! Replays every input under `testdata/fuzz/TARGET/` through `d2v::fuzzing::TARGET` on
//! stable Rust, so that the bugs fuzzing found (see FUZZING.md) stay fixed without nightly
//! or cargo-fuzz. Fails when an input panics and when a directory names no known target.

use std::path::{Path, PathBuf};

use d2v::fuzzing::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz")
}

/// `(target, file)` for every regression input; an error names directories that are no
/// target.
fn inputs(dir: &Path, targets: &[Target]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut unknown = Vec::new();
    for d in rd {
        let d = d.map_err(|e| e.to_string())?.path();
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        if !d.is_dir() {
            continue;
        }
        if !targets.iter().any(|(t, _)| *t == name) {
            unknown.push(name);
            continue;
        }
        for f in std::fs::read_dir(&d).map_err(|e| e.to_string())? {
            out.push((name.clone(), f.map_err(|e| e.to_string())?.path()));
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "{}: no fuzz target named {unknown:?} (targets: {:?})",
            dir.display(),
            targets.iter().map(|t| t.0).collect::<Vec<_>>()
        ));
    }
    out.sort();
    Ok(out)
}

/// Runs each input through its target, returning the ones that panicked.
fn replay(targets: &[Target], inputs: &[(String, PathBuf)]) -> Vec<String> {
    let mut failed = Vec::new();
    for (target, file) in inputs {
        let entry = targets.iter().find(|(t, _)| t == target).unwrap().1;
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failed.push(format!("{target}: {}", file.display()));
        }
    }
    failed
}

#[test]
fn every_regression_input_passes_its_target() {
    let inputs = inputs(&fuzz_dir(), TARGETS).unwrap();
    let failed = replay(TARGETS, &inputs);
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
    eprintln!("{} regression inputs replayed", inputs.len());
}

#[test]
fn a_directory_naming_no_target_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("reference")).unwrap();
    std::fs::write(dir.path().join("reference/x"), b"debian:12").unwrap();
    assert_eq!(inputs(dir.path(), TARGETS).unwrap().len(), 1);
    std::fs::create_dir_all(dir.path().join("no_such_target")).unwrap();
    let e = inputs(dir.path(), TARGETS).unwrap_err();
    assert!(e.contains("no_such_target"), "{e}");
}

#[test]
fn a_panicking_input_is_reported() {
    fn boom(data: &[u8]) {
        assert!(data != b"boom", "boom");
    }
    let targets: &[Target] = &[("boom", boom)];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boom")).unwrap();
    std::fs::write(dir.path().join("boom/fine"), b"fine").unwrap();
    let found = inputs(dir.path(), targets).unwrap();
    assert!(replay(targets, &found).is_empty());
    std::fs::write(dir.path().join("boom/crash"), b"boom").unwrap();
    let found = inputs(dir.path(), targets).unwrap();
    let failed = replay(targets, &found);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("boom/crash"), "{failed:?}");
}

#[test]
fn every_target_takes_empty_and_small_inputs() {
    for (name, entry) in TARGETS {
        for data in [&b""[..], b"\0", b"\x01a\0b", &[0xff; 600]] {
            assert!(
                std::panic::catch_unwind(|| entry(data)).is_ok(),
                "{name} panicked on {data:?}"
            );
        }
    }
}
