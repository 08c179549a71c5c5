//! `cargo xtask bench ext4-scale`: how the peak memory (and time) of `d2v debug ext4` and of
//! `mke2fs -d` change with (a) the bytes of file data at a fixed file count (case B vs A) and
//! (b) the number of files at a fixed file size (case C vs A), on synthetic single-layer
//! images generated here into `target/bench/scale/` (once; deterministic content).
//!
//! Each case is measured like the `ext4` comparison in [`crate::bench`]: an untimed d2v run
//! gives the automatic filesystem size (and fills d2v's blob cache), then d2v and mke2fs (same
//! size) run alternately, each under `/usr/bin/time -f %M`.

use crate::bench::{self, Comparison, Outcome, Runs, Sample};
use crate::util::{step, Result};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use testkit::oci::{Compression, ImageSpec};

/// One synthetic image: `files` regular files of `file_size` bytes each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) files: u64,
    pub(crate) file_size: u64,
}

/// A: the base; B: 16× the file size, so 16× the data, same entries; C: 4× the files.
pub(crate) const CASES: [Case; 3] = [
    Case {
        name: "A",
        files: 10_000,
        file_size: 4096,
    },
    Case {
        name: "B",
        files: 10_000,
        file_size: 65_536,
    },
    Case {
        name: "C",
        files: 40_000,
        file_size: 4096,
    },
];

/// Files per directory (`/data/dNNNN/fNNN`).
const FILES_PER_DIR: u64 = 100;

/// Bumped when the generated images change, so stale ones are regenerated.
const GENERATOR: &str = "ext4-scale images v1";

impl Case {
    /// Directories holding the files (not counting `/data` itself).
    pub(crate) fn dirs(&self) -> u64 {
        self.files.div_ceil(FILES_PER_DIR)
    }

    /// Entries of the image's tree below `/`: the files, their directories and `/data`.
    pub(crate) fn entries(&self) -> u64 {
        self.files + self.dirs() + 1
    }

    pub(crate) fn data_bytes(&self) -> u64 {
        self.files * self.file_size
    }

    /// Directory name under target/bench/scale/.
    fn dir_name(&self) -> String {
        format!(
            "{}-{}x{}",
            self.name.to_lowercase(),
            self.files,
            self.file_size
        )
    }
}

/// Path (in the layer) of directory `d`.
fn dir_path(d: u64) -> String {
    format!("data/d{d:04}/")
}

/// Path (in the layer) of file `i`.
fn file_path(i: u64) -> String {
    format!("data/d{:04}/f{:03}", i / FILES_PER_DIR, i % FILES_PER_DIR)
}

/// Fills `buf` with the content of file `index`: an xorshift64 stream seeded from the index
/// (by splitmix64). Deterministic; no 8-byte word is zero (xorshift's state never is), so
/// no block of it is a hole candidate.
pub(crate) fn fill(index: u64, buf: &mut [u8]) {
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut x = (z ^ (z >> 31)) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// A ustar header of the synthetic layers: root-owned, fixed mtime.
pub(crate) fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(crate::fixtures::oci::EPOCH);
    h.set_size(size);
    h
}

/// Writes the case's layer tar (ustar, root-owned, fixed mtime): `data/`, then each
/// directory followed by its files.
pub(crate) fn write_tar<W: Write>(case: &Case, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    let dir = |b: &mut tar::Builder<W>, path: &str| {
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            path,
            &[][..],
        )
    };
    dir(&mut b, "data/")?;
    let mut data = vec![0u8; case.file_size as usize];
    for i in 0..case.files {
        if i % FILES_PER_DIR == 0 {
            dir(&mut b, &dir_path(i / FILES_PER_DIR))?;
        }
        fill(i, &mut data);
        let mut h = header(tar::EntryType::Regular, 0o644, case.file_size);
        b.append_data(&mut h, file_path(i), &data[..])?;
    }
    Ok(b.into_inner()?)
}

/// A generated case on disk.
struct Input {
    /// OCI image layout, tag `latest`.
    layout: PathBuf,
    /// The layer extracted (the tree mke2fs -d reads).
    rootfs: PathBuf,
}

/// Generates the case's OCI layout and extracted tree under `dir`, unless already there.
fn ensure_case(dir: &Path, case: &Case) -> Result<Input> {
    let base = dir.join(case.dir_name());
    let input = Input {
        layout: base.join("oci"),
        rootfs: base.join("rootfs"),
    };
    let stamp = base.join("stamp");
    let want = format!("{GENERATOR}\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(&want)
        && input.layout.join("index.json").is_file()
        && input.rootfs.is_dir()
    {
        println!("[{}] {} up to date", case.name, base.display());
        return Ok(input);
    }
    step(&format!(
        "bench input: case {} ({} files × {} bytes) into {}",
        case.name,
        case.files,
        case.file_size,
        base.display()
    ));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let tar_path = base.join("layer.tar");
    let out = BufWriter::with_capacity(1 << 20, fs::File::create(&tar_path)?);
    write_tar(case, out)?.flush()?;
    let image = ImageSpec::new()
        .layer_file(&tar_path, Compression::None)
        .tag("latest");
    let written = testkit::oci::write_image(&input.layout, &image)?;
    fs::remove_file(&tar_path)?;
    // The layer blob is the uncompressed tar itself.
    let mut archive = tar::Archive::new(fs::File::open(&written.layers[0].path)?);
    archive.set_preserve_permissions(true);
    archive.unpack(&input.rootfs)?;
    fs::write(&stamp, want)?;
    Ok(input)
}

struct Measured {
    case: Case,
    /// d2v's automatic filesystem size, given to mke2fs too.
    fs_bytes: u64,
    cmp: Comparison<'static>,
    outcome: Outcome,
}

pub(crate) fn run(d2v: &Path, work: &Path, load_before: &str) -> Result<String> {
    let dir = work.join("scale");
    let cache = dir.join("cache");
    fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    for case in CASES {
        let input = ensure_case(&dir, &case)?;
        let image = format!("oci:{}:latest", input.layout.display());
        let fs_bytes = bench::ext4_auto_size(d2v, &image, &dir, &cache)?;
        let scratch = dir.join(format!("scratch-{}", case.name.to_lowercase()));
        let cmp = Comparison {
            name: "ext4-scale",
            title: "",
            a: bench::d2v_side(d2v, "ext4", &image, &scratch, Some(&cache)),
            b: bench::mke2fs_side(&input.rootfs, &scratch.join("root.ext4"), fs_bytes),
            scratch,
            notes: Vec::new(),
        };
        step(&format!(
            "bench ext4-scale, case {}: {} files × {} bytes, {fs_bytes} byte filesystem",
            case.name, case.files, case.file_size
        ));
        let outcome = bench::measure(&cmp)?;
        let _ = fs::remove_dir_all(&cmp.scratch);
        results.push(Measured {
            case,
            fs_bytes,
            cmp,
            outcome,
        });
    }
    Ok(render(&results, load_before))
}

/// Median peak RSS (KiB) of successful runs.
fn rss(r: &Runs) -> Option<f64> {
    r.as_ref()
        .ok()
        .map(|v| bench::median_of(v, |s| s.max_rss_kib as f64))
}

/// Bytes of peak RSS per extra entry between two cases: (RSS(more) − RSS(base)) × 1024 /
/// (entries(more) − entries(base)), the RSS values in KiB.
pub(crate) fn bytes_per_entry(base_kib: f64, more_kib: f64, base: u64, more: u64) -> f64 {
    (more_kib - base_kib) * 1024.0 / (more as f64 - base as f64)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB ({kib:.0} KiB)", kib / 1024.0)
}

fn signed_kib(kib: f64) -> String {
    format!("{kib:+.0} KiB")
}

fn render(results: &[Measured], load_before: &str) -> String {
    let mut s = String::from(
        "## ext4-scale\n\nPeak RSS and time of `d2v debug ext4` and `mke2fs -d` on synthetic \
         single-layer images: more file data at the same file count (B vs A), more files at \
         the same file size (C vs A)\n\n",
    );
    s.push_str(
        "| case | files | directories | data bytes | filesystem bytes | d2v median time | \
         d2v median flatten / ext4 write | d2v median peak RSS | d2v peak anon RSS (sampled) | \
         mke2fs median time | mke2fs median peak RSS | mke2fs peak anon RSS (sampled) |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let failed = |e: &String| {
        format!(
            "failed: {}",
            e.lines().next().unwrap_or("").replace('|', "\\|")
        )
    };
    for m in results {
        let c = &m.case;
        let anon = |r: &Runs| r.as_ref().map(|v| bench::anon_cell(v)).unwrap_or_default();
        let (d2v_time, stages, d2v_rss) = match &m.outcome.a {
            Ok(v) => {
                let stage = |f: fn(&Sample) -> Option<f64>| {
                    let x: Vec<f64> = v.iter().filter_map(f).collect();
                    if x.len() == v.len() {
                        format!("{:.2} s", bench::median(&x))
                    } else {
                        "–".into()
                    }
                };
                (
                    format!("{:.2} s", bench::median_of(v, |s| s.secs)),
                    format!(
                        "{} / {}",
                        stage(|s| s.flatten_secs),
                        stage(|s| s.write_secs)
                    ),
                    mib(rss(&m.outcome.a).unwrap_or(f64::NAN)),
                )
            }
            Err(e) => (failed(e), String::new(), String::new()),
        };
        let (mke2fs_time, mke2fs_rss) = match &m.outcome.b {
            Ok(v) => (
                format!("{:.2} s", bench::median_of(v, |s| s.secs)),
                mib(rss(&m.outcome.b).unwrap_or(f64::NAN)),
            ),
            Err(e) => (failed(e), String::new()),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {d2v_time} | {stages} | {d2v_rss} | {} | {mke2fs_time} | \
             {mke2fs_rss} | {} |\n",
            c.name,
            c.files,
            c.dirs() + 1,
            c.data_bytes(),
            m.fs_bytes,
            anon(&m.outcome.a),
            anon(&m.outcome.b),
        ));
    }

    s.push_str("\nAll runs (wall time s / peak RSS KiB, in run order):\n\n");
    s.push_str("| case | side | runs |\n| --- | --- | --- |\n");
    for m in results {
        for (side, runs) in [(&m.cmp.a, &m.outcome.a), (&m.cmp.b, &m.outcome.b)] {
            let text = match runs {
                Ok(v) => v
                    .iter()
                    .map(|r| format!("{:.2} / {}", r.secs, r.max_rss_kib))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => failed(e),
            };
            s.push_str(&format!("| {} | {} | {text} |\n", m.case.name, side.label));
        }
    }

    s.push_str("\nDifferences of the median peak RSS:\n\n");
    let find = |n: &str| results.iter().find(|m| m.case.name == n);
    if let (Some(a), Some(b), Some(c)) = (find("A"), find("B"), find("C")) {
        type Pick = fn(&Outcome) -> &Runs;
        let sides: [(&str, Pick); 2] = [("d2v", |o| &o.a), ("mke2fs -d", |o| &o.b)];
        for (label, pick) in sides {
            match (rss(pick(&a.outcome)), rss(pick(&b.outcome))) {
                (Some(ra), Some(rb)) => s.push_str(&format!(
                    "- {label}: RSS(B) − RSS(A) = {} for {:+} bytes of file data ({:.0}× A's), \
                     same entry count\n",
                    signed_kib(rb - ra),
                    b.case.data_bytes() as i128 - a.case.data_bytes() as i128,
                    b.case.data_bytes() as f64 / a.case.data_bytes() as f64,
                )),
                _ => s.push_str(&format!("- {label}: RSS(B) − RSS(A): a run failed\n")),
            }
            match (rss(pick(&a.outcome)), rss(pick(&c.outcome))) {
                (Some(ra), Some(rc)) => s.push_str(&format!(
                    "- {label}: (RSS(C) − RSS(A)) / {} more entries ({} files, {} \
                     directories) = {} / {} = {:.1} bytes of peak RSS per extra entry\n",
                    c.case.entries() - a.case.entries(),
                    c.case.files - a.case.files,
                    c.case.dirs() - a.case.dirs(),
                    signed_kib(rc - ra),
                    c.case.entries() - a.case.entries(),
                    bytes_per_entry(ra, rc, a.case.entries(), c.case.entries()),
                )),
                _ => s.push_str(&format!("- {label}: RSS(C) − RSS(A): a run failed\n")),
            }
        }
    }

    s.push_str(&format!(
        "\nEach image: one uncompressed tar layer (`application/vnd.oci.image.layer.v1.tar`) \
         in an OCI layout, generated by `cargo xtask bench` into `target/bench/scale/`: \
         directory `/data` with {FILES_PER_DIR} files per subdirectory, each file of \
         pseudo-random (xorshift64) content, no holes; directory counts above include \
         `/data`. mke2fs reads the tree extracted from the same tar beforehand (extraction \
         not timed). d2v reads the OCI layout with its `--cache-dir` already filled by an \
         untimed first run, which also gives its automatic filesystem size; mke2fs gets the \
         same size. d2v's time and peak RSS are of the whole process (flatten included); its \
         flatten and ext4 write stage times are its own, from its stderr. Peak RSS is \
         `/usr/bin/time -f %M` (maximum resident set size).\n"
    ));
    s.push_str(
        "\nCommand lines (per case d2v and mke2fs alternately, each under \
         `/usr/bin/time -f %M`, outputs removed between runs):\n\n```\n",
    );
    for m in results {
        for side in [&m.cmp.a, &m.cmp.b] {
            for cmd in &side.cmds {
                s.push_str(&format!("{}\n", bench::command_line(cmd)));
            }
        }
    }
    s.push_str(&format!("```\n\n{}", bench::machine_line(load_before)));
    bench::relative_paths(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_has_no_zero_words() {
        let (mut a, mut b, mut c) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        fill(7, &mut a);
        fill(7, &mut b);
        fill(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.chunks(8).all(|w| w.iter().any(|&x| x != 0)));
        // A length that is not a multiple of 8 is a prefix of the longer stream.
        let mut short = vec![0u8; 13];
        fill(7, &mut short);
        assert_eq!(short, a[..13]);
    }

    #[test]
    fn case_arithmetic() {
        let [a, b, c] = CASES;
        assert_eq!((a.dirs(), a.entries()), (100, 10_101));
        assert_eq!((c.dirs(), c.entries()), (400, 40_401));
        assert_eq!(b.data_bytes(), 16 * a.data_bytes());
        assert_eq!(b.entries(), a.entries());
        let odd = Case {
            name: "x",
            files: 250,
            file_size: 1,
        };
        assert_eq!(odd.dirs(), 3);
    }

    #[test]
    fn bytes_per_extra_entry() {
        // 2000 KiB more over 30 300 more entries.
        let x = bytes_per_entry(10_000.0, 12_000.0, 10_101, 40_401);
        assert!((x - 2000.0 * 1024.0 / 30_300.0).abs() < 1e-9);
        assert!(bytes_per_entry(12_000.0, 10_000.0, 1, 2) < 0.0);
    }

    #[test]
    fn tar_holds_the_case() {
        let case = Case {
            name: "t",
            files: 250,
            file_size: 100,
        };
        let tar = write_tar(&case, Vec::new()).unwrap();
        assert_eq!(tar, write_tar(&case, Vec::new()).unwrap());
        let mut archive = tar::Archive::new(&tar[..]);
        let (mut dirs, mut files) = (Vec::new(), 0);
        let mut want = vec![0u8; 100];
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if e.header().entry_type().is_dir() {
                dirs.push(path);
                continue;
            }
            assert_eq!(path, file_path(files));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut got).unwrap();
            fill(files, &mut want);
            assert_eq!(got, want);
            files += 1;
        }
        assert_eq!(files, 250);
        assert_eq!(dirs, ["data/", "data/d0000/", "data/d0001/", "data/d0002/"]);
        assert_eq!(dirs.len() as u64 + files, case.entries());
    }
}
