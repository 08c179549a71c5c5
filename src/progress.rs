//! Progress bars on stderr for the long steps (downloads, applying layers, compressing the
//! VMDK): drawn only when stderr is a terminal and the caller shows progress (not `--json`);
//! otherwise hidden, so logs and pipes get none of their control sequences.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

fn target(show: bool) -> ProgressDrawTarget {
    if show && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// `PREFIX [=====>    ] 12 MiB/40 MiB 30 MiB/s`.
pub fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of `total` bytes named `prefix`.
pub fn bar(show: bool, total: u64, prefix: impl Into<String>) -> ProgressBar {
    ProgressBar::with_draw_target(Some(total), target(show))
        .with_style(bytes_style())
        .with_prefix(prefix.into())
}

/// Several bars drawn together (concurrent downloads).
pub fn multi(show: bool) -> MultiProgress {
    MultiProgress::with_draw_target(target(show))
}
