//! What a command tells its user on stderr: progress lines (none with `--json`, which keeps
//! stderr for errors) and, with `-v`, each stage's wall time. `--json` carries the same times.

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// The stages a command's time is split into, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Resolving the source: manifest, config and every blob fetched (or found) and verified.
    Pull,
    /// Applying the layers to the staging tree.
    Flatten,
    /// The container → VM changes to the tree.
    Guest,
    /// Writing the ext4 root filesystem.
    Ext4,
    /// The rest of the disk: GPT, the FAT ESP and GRUB.
    EspGrub,
    /// The VMDK, and the OVF/OVA around it (or the raw disk).
    Output,
}

impl Stage {
    /// The name in `-v` lines and `--json`'s `timings`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Pull => "pull",
            Stage::Flatten => "flatten",
            Stage::Guest => "guest",
            Stage::Ext4 => "ext4",
            Stage::EspGrub => "esp_grub",
            Stage::Output => "output",
        }
    }
}

pub(crate) struct Log {
    quiet: bool,
    verbose: bool,
    started: Instant,
    /// Wall time per stage, summed when a stage runs more than once.
    times: RefCell<Vec<(Stage, Duration)>>,
}

impl Log {
    pub(crate) fn new(quiet: bool, verbose: bool) -> Log {
        Log {
            quiet,
            verbose,
            started: Instant::now(),
            times: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    pub(crate) fn step(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            // Progress is best effort: a closed or full stderr must not stop (or panic) d2v.
            let _ = writeln!(io::stderr(), "{}", msg.as_ref());
        }
    }

    /// Runs `f`, adding its wall time to `stage`; with `-v` says how long it took.
    pub(crate) fn time<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.add(stage, t.elapsed());
        out
    }

    /// Adds `d` to `stage` (for a stage measured inside another's call).
    pub(crate) fn add(&self, stage: Stage, d: Duration) {
        let mut times = self.times.borrow_mut();
        match times.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, total)) => *total += d,
            None => times.push((stage, d)),
        }
        drop(times);
        if self.verbose {
            self.step(format!("time: {} {:.2} s", stage.name(), d.as_secs_f64()));
        }
    }

    /// Each stage's seconds in pipeline order, then `total` (since the command started).
    pub(crate) fn timings(&self) -> Vec<(&'static str, f64)> {
        let mut times = self.times.borrow().clone();
        times.sort_by_key(|(s, _)| *s);
        let mut out: Vec<_> = times
            .into_iter()
            .map(|(s, d)| (s.name(), d.as_secs_f64()))
            .collect();
        out.push(("total", self.started.elapsed().as_secs_f64()));
        out
    }

    /// With `-v`: the stage times as one summary line.
    pub(crate) fn summary(&self) {
        if self.verbose {
            let parts: Vec<String> = self
                .timings()
                .iter()
                .map(|(n, s)| format!("{n} {s:.2} s"))
                .collect();
            self.step(format!("times: {}", parts.join(", ")));
        }
    }

    /// `--json`'s `timings`: `{"pull": seconds, …, "total": seconds}`.
    pub(crate) fn timings_json(&self) -> serde_json::Value {
        self.timings()
            .into_iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    serde_json::json!((s * 1000.0).round() / 1000.0),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_sum_in_pipeline_order() {
        let log = Log::new(true, false);
        log.add(Stage::Output, Duration::from_millis(200));
        log.add(Stage::Pull, Duration::from_millis(100));
        log.add(Stage::Pull, Duration::from_millis(50));
        log.add(Stage::EspGrub, Duration::from_millis(100));
        let t = log.timings();
        let names: Vec<_> = t.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["pull", "esp_grub", "output", "total"]);
        assert!((t[0].1 - 0.15).abs() < 1e-9);
        assert!((t[1].1 - 0.1).abs() < 1e-9);
        assert!((t[2].1 - 0.2).abs() < 1e-9);
        let j = log.timings_json();
        assert_eq!(j["pull"], serde_json::json!(0.15));
    }

    #[test]
    fn time_returns_what_the_stage_returns() {
        let log = Log::new(true, true);
        assert_eq!(log.time(Stage::Guest, || 7), 7);
        assert_eq!(log.timings()[0].0, "guest");
    }
}
