//! `cargo xtask man`: d2v's manual pages (clap_mangen, from the same command-line definition
//! the binary parses), one per command, into the release artifacts, `target/dist/man/`.

use crate::util::{root, step, Result};
use clap::CommandFactory;
use std::fs;
use std::path::{Path, PathBuf};

/// Writes `d2v.1` and `d2v-COMMAND.1` for each visible command into `dir`; returns the paths.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let cmd = d2v::cli::Cli::command();
    let mut written = vec![render(&cmd, "d2v", dir)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("d2v-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        written.push(render(&sub, &name, dir)?);
    }
    Ok(written)
}

fn render(cmd: &clap::Command, name: &str, dir: &Path) -> Result<PathBuf> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    fs::write(&path, page)?;
    Ok(path)
}

/// `cargo xtask man`.
pub fn man() -> Result<()> {
    step("manual pages");
    let dir = root().join("target/dist/man");
    for p in write_man_pages(&dir)? {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// groff (man-db's formatter, with preconv for UTF-8 as man runs it) renders every page without a warning, and each names its
    /// command and options.
    #[test]
    fn man_pages_render_cleanly() {
        let dir = std::env::temp_dir().join(format!("xtask-man-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "d2v.1",
            "d2v-pull.1",
            "d2v-build.1",
            "d2v-inspect.1",
            "d2v-completion.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n == "d2v-debug.1"),
            "hidden command documented"
        );
        for p in &pages {
            let out = Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(p)
                .output()
                .expect("groff (groff-base) is installed");
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && warnings.is_empty(),
                "{}: {warnings}",
                p.display()
            );
        }
        let pull = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-P-cbou"]) // plain text, no overstrike
            .arg(dir.join("d2v-pull.1"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&pull.stdout);
        assert!(text.contains("--compression-level"), "{text}");
        fs::remove_dir_all(dir).unwrap();
    }
}
