//! FUZZING.md's generated tables: every run of `cargo xtask fuzz` is a row between the
//! `<!-- fuzz-runs -->` markers, and the totals per target between `<!-- fuzz-totals -->` are
//! recomputed from those rows, so the running total of seconds per target stays honest.

use std::collections::BTreeMap;

use crate::util::Result;

const RUNS: (&str, &str) = ("<!-- fuzz-runs -->", "<!-- /fuzz-runs -->");
const TOTALS: (&str, &str) = ("<!-- fuzz-totals -->", "<!-- /fuzz-totals -->");
const RUNS_HEAD: &str =
    "| date (UTC) | target | seconds | executions | exec/s | cov | ft | findings |\n\
                         | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n";
const TOTALS_HEAD: &str = "| target | runs | seconds | executions | highest cov | highest ft |\n\
                           | --- | ---: | ---: | ---: | ---: | ---: |\n";

/// One run of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub date: String,
    pub target: String,
    pub seconds: u64,
    pub execs: u64,
    pub cov: u64,
    pub ft: u64,
    pub findings: String,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.date,
            self.target,
            self.seconds,
            self.execs,
            self.execs / self.seconds.max(1),
            self.cov,
            self.ft,
            self.findings
        )
    }

    fn parse(line: &str) -> Option<Row> {
        let c: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if c.len() != 8 {
            return None;
        }
        Some(Row {
            date: c[0].to_string(),
            target: c[1].to_string(),
            seconds: c[2].parse().ok()?,
            execs: c[3].parse().ok()?,
            cov: c[5].parse().ok()?,
            ft: c[6].parse().ok()?,
            findings: c[7].to_string(),
        })
    }
}

/// The text between a pair of markers, and the text before and after them.
fn section<'a>(text: &'a str, (open, close): (&str, &str)) -> Result<(&'a str, &'a str, &'a str)> {
    let a = text
        .find(open)
        .ok_or_else(|| format!("FUZZING.md has no {open} marker"))?
        + open.len();
    let b = text[a..]
        .find(close)
        .ok_or_else(|| format!("FUZZING.md has no {close} marker"))?
        + a;
    Ok((&text[..a], &text[a..b], &text[b..]))
}

/// `text` with `row` added to the runs and the totals recomputed.
pub fn add_run(text: &str, row: &Row) -> Result<String> {
    let (before, runs, after) = section(text, RUNS)?;
    let mut rows: Vec<Row> = runs.lines().filter_map(Row::parse).collect();
    rows.push(row.clone());
    let runs: String = rows.iter().map(Row::line).collect();
    let text = format!("{before}\n{RUNS_HEAD}{runs}{after}");
    let (before, _, after) = section(&text, TOTALS)?;
    Ok(format!("{before}\n{TOTALS_HEAD}{}{after}", totals(&rows)))
}

fn totals(rows: &[Row]) -> String {
    let mut by: BTreeMap<&str, (u64, u64, u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let t = by.entry(&r.target).or_default();
        *t = (
            t.0 + 1,
            t.1 + r.seconds,
            t.2 + r.execs,
            t.3.max(r.cov),
            t.4.max(r.ft),
        );
    }
    by.iter()
        .map(|(t, (n, s, e, c, f))| format!("| {t} | {n} | {s} | {e} | {c} | {f} |\n"))
        .collect()
}

/// Now as `YYYY-MM-DD HH:MM` (UTC).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = d2v::ids::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, seconds: u64, cov: u64) -> Row {
        Row {
            date: "2026-12-05 09:00".into(),
            target: target.into(),
            seconds,
            execs: seconds * 10,
            cov,
            ft: cov * 2,
            findings: "none".into(),
        }
    }

    #[test]
    fn runs_accumulate_into_totals() {
        let md = "# F\n<!-- fuzz-totals -->\n<!-- /fuzz-totals -->\n\n## Runs\n\
                  <!-- fuzz-runs -->\n<!-- /fuzz-runs -->\nend\n";
        let md = add_run(md, &row("gpt", 60, 5)).unwrap();
        let md = add_run(&md, &row("gpt", 120, 4)).unwrap();
        let md = add_run(&md, &row("pe_kernel", 30, 9)).unwrap();
        assert!(md.contains("| gpt | 2 | 180 | 1800 | 5 | 10 |\n"), "{md}");
        assert!(
            md.contains("| pe_kernel | 1 | 30 | 300 | 9 | 18 |\n"),
            "{md}"
        );
        assert_eq!(md.matches("| 2026-12-05 09:00 |").count(), 3, "{md}");
        assert!(md.ends_with("<!-- /fuzz-runs -->\nend\n"), "{md}");
        assert!(add_run("no markers", &row("gpt", 1, 1)).is_err());
    }
}
