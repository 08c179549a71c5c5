//! Kernel modules: the list in [`super::config::MODULES_PATH`], loaded in order with
//! `finit_module(2)` (compressed ones are decompressed by the kernel).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::console::say;

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): the kernel decompresses the file.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// A module that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("module {path}: {source}")]
pub struct ModuleError {
    /// The module file.
    pub path: String,
    /// Opening or `finit_module` failed.
    #[source]
    pub source: io::Error,
}

/// The module paths of a modules list: one absolute path a line; blank lines and `#`
/// comments skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether the kernel must decompress the file (by its name).
pub fn is_compressed(path: &str) -> bool {
    [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|s| path.ends_with(s))
}

/// Loads one module; one already loaded (`EEXIST`) counts as loaded.
pub fn load(path: &str) -> Result<(), ModuleError> {
    let err = |source| ModuleError {
        path: path.into(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    let flags = if is_compressed(path) {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: an open fd and an empty NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), flags) };
    match io::Error::last_os_error() {
        _ if r == 0 => Ok(()),
        e if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        e => Err(err(e)),
    }
}

/// Loads every module listed in `list_path` (a missing list means none); failures are
/// printed. Returns the paths that loaded.
pub fn load_listed(list_path: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(list_path) else {
        return Vec::new();
    };
    let mut loaded = Vec::new();
    for path in parse_list(&text) {
        match load(path) {
            Ok(()) => loaded.push(path.to_string()),
            Err(e) => say(e),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_one_path_a_line() {
        let text = "/lib/modules/6.1/kernel/a.ko\n\n  # comment\n/b.ko.xz \n";
        assert_eq!(
            parse_list(text),
            vec!["/lib/modules/6.1/kernel/a.ko", "/b.ko.xz"]
        );
        assert!(is_compressed("/b.ko.xz"));
        assert!(is_compressed("/b.ko.zst"));
        assert!(is_compressed("/b.ko.gz"));
        assert!(!is_compressed("/lib/modules/6.1/kernel/a.ko"));
    }

    #[test]
    fn a_missing_module_is_an_error_naming_it() {
        let e = load("/nonexistent/x.ko").unwrap_err();
        assert!(
            e.to_string().starts_with("module /nonexistent/x.ko: "),
            "{e}"
        );
    }
}
