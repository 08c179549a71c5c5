//! The kernel command line an image asks for in `/etc/default/grub` and
//! `/etc/default/grub.d/*.cfg` (read in that order, as grub-mkconfig sources them):
//! `GRUB_CMDLINE_LINUX` then `GRUB_CMDLINE_LINUX_DEFAULT`, which grub-mkconfig puts on every
//! normal menu entry. The files are shell; d2v reads the plain assignments only — a value in
//! double or single quotes or bare, where `$GRUB_CMDLINE_LINUX(_DEFAULT)` / `${…}` expand to
//! what was read so far. An assignment using anything else (other variables, command
//! substitution) is skipped and reported.

use crate::tree::Tree;

const LINUX: &str = "GRUB_CMDLINE_LINUX";
const DEFAULT: &str = "GRUB_CMDLINE_LINUX_DEFAULT";

/// What the image's defaults give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CmdlineDefaults {
    /// `GRUB_CMDLINE_LINUX` then `GRUB_CMDLINE_LINUX_DEFAULT`, split into words.
    pub(crate) args: Vec<String>,
    /// The files that set either variable.
    pub(crate) files: Vec<String>,
    /// Assignments d2v could not read, as `file: line`.
    pub(crate) skipped: Vec<String>,
}

/// The value of `raw` (what follows `NAME=`), `None` when it is more than d2v reads.
fn value(raw: &str, linux: &str, default: &str) -> Option<String> {
    let raw = raw.trim();
    let (body, expand) = if let Some(s) = raw.strip_prefix('\'') {
        (s.strip_suffix('\'')?, false)
    } else if let Some(s) = raw.strip_prefix('"') {
        (s.strip_suffix('"')?, true)
    } else {
        (raw, true)
    };
    if !expand {
        return (!body.contains('\'')).then(|| body.to_string());
    }
    if body.contains(['`', '\\', '"', '\'']) || body.contains("$(") {
        return None;
    }
    let mut out = body.to_string();
    for (name, v) in [(DEFAULT, default), (LINUX, linux)] {
        out = out.replace(&format!("${{{name}}}"), v);
        // The longer name first, so `$GRUB_CMDLINE_LINUX` does not eat its prefix.
        out = out.replace(&format!("${name}"), v);
    }
    (!out.contains('$')).then_some(out)
}

/// Reads the image's GRUB defaults.
pub(crate) fn cmdline_defaults(tree: &Tree) -> CmdlineDefaults {
    let mut files = vec!["etc/default/grub".to_string()];
    if let Some(d) = tree.resolve_dir(b"etc/default/grub.d") {
        files.extend(
            d.entries
                .keys()
                .filter_map(|n| std::str::from_utf8(n).ok())
                .filter(|n| n.ends_with(".cfg"))
                .map(|n| format!("etc/default/grub.d/{n}")),
        );
    }
    let (mut linux, mut default) = (String::new(), String::new());
    let mut out = CmdlineDefaults::default();
    for f in files {
        let Some(text) = tree.read_text(f.as_bytes(), 64 << 10) else {
            continue;
        };
        let mut used = false;
        for line in text.lines() {
            let l = line.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            let Some((name, raw)) = l.split_once('=') else {
                continue;
            };
            if name != LINUX && name != DEFAULT {
                continue;
            }
            used = true;
            match value(raw, &linux, &default) {
                Some(v) if name == LINUX => linux = v,
                Some(v) => default = v,
                None => out.skipped.push(format!("/{f}: {l}")),
            }
        }
        if used {
            out.files.push(format!("/{f}"));
        }
    }
    out.args = linux
        .split_whitespace()
        .chain(default.split_whitespace())
        .map(str::to_string)
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::testing::add_file;

    #[test]
    fn debian_and_cloud_image_settings() {
        let mut t = Tree::in_temp().unwrap();
        add_file(
            &mut t,
            "etc/default/grub",
            b"# If you change this file, run 'update-grub'\nGRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n\
              GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n",
        );
        add_file(
            &mut t,
            "etc/default/grub.d/50-cloud.cfg",
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT net.ifnames=0\"\n\
              export GRUB_CMDLINE_LINUX='biosdevname=0'\n",
        );
        add_file(
            &mut t,
            "etc/default/grub.d/README",
            b"GRUB_CMDLINE_LINUX=x\n",
        );
        let d = cmdline_defaults(&t);
        assert_eq!(d.args, ["biosdevname=0", "quiet", "net.ifnames=0"]);
        assert_eq!(
            d.files,
            ["/etc/default/grub", "/etc/default/grub.d/50-cloud.cfg"]
        );
        assert!(d.skipped.is_empty());
    }

    #[test]
    fn what_d2v_cannot_read_is_skipped_and_reported() {
        let mut t = Tree::in_temp().unwrap();
        add_file(
            &mut t,
            "etc/default/grub",
            b"GRUB_CMDLINE_LINUX=\"a $(cat /proc/cmdline)\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"${X} b\"\n\
              GRUB_CMDLINE_LINUX_DEFAULT=c\n",
        );
        let d = cmdline_defaults(&t);
        assert_eq!(d.args, ["c"]);
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        assert!(d.skipped[0].starts_with("/etc/default/grub: GRUB_CMDLINE_LINUX="));
    }

    #[test]
    fn no_files_no_args() {
        let t = Tree::in_temp().unwrap();
        assert_eq!(cmdline_defaults(&t), CmdlineDefaults::default());
    }
}
