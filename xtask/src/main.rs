//! `cargo xtask` — project tooling written in Rust (the rust-analyzer xtask pattern).
//!
//! - `cargo xtask test [CARGO-TEST-OPTS] [-- TEST-ARGS]`: install missing Debian packages,
//!   build the OS fixtures (cached by recipe hash; each new fixture boot-checked once without
//!   d2v) and the app / kernel-image ones (each new one run-checked once, as root), build a release d2v for the heavy tests (D2V_BIN) and its container image
//!   (D2V_IMAGE), run `cargo test --workspace -- --include-ignored`, print a summary; non-zero
//!   exit on failure.
//! - `cargo xtask deps`: only the Debian package step.
//! - `cargo xtask fixtures [--force] [--boot-check|--keep-markers] [--run-check] [NAME…]`: only the fixtures
//!   (OS fixtures and the app / kernel-image ones).
//! - `cargo xtask demo`: its Debian packages → fixture → local registry → `d2v pull` → boot the
//!   VMDK in QEMU (SeaBIOS, OVMF); run under strace, its packages must provide every program it starts.
//! - `cargo xtask man`: d2v's manual pages into `target/dist/man/`.
//! - `cargo xtask image [--source URL]`: d2v's own OCI image (layout and oci-archive), see image.rs.
//! - `cargo xtask bench [NAME…]`: comparisons against the reference tools, results in BENCHMARKS.md.
//! - `cargo xtask fuzz [TARGET…] [--seconds N]`: coverage-guided fuzzing (cargo fuzz, nightly),
//!   results in FUZZING.md, crash inputs in testdata/fuzz/ (see fuzz.rs).

mod bench;
mod bench_app;
mod bench_grub;
mod bench_local;
mod bench_pipeline;
mod bench_scale;
mod bench_size;
mod boottest;
mod debian;
mod demo;
mod dist;
mod fixtures;
mod fuzz;
mod fuzz_md;
mod fuzz_seeds;
mod image;
mod plain_pipeline;
mod programs;
mod qemu;
mod synth;
mod testcmd;
mod uncompressed;
mod util;

use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <command>
  test [OPTS] [-- ARGS] install Debian packages, build fixtures, run every test, ignored ones
                        included (CI entry point); OPTS go to cargo test, ARGS to the tests
  deps                  install missing Debian packages only
  fixtures [--force] [--boot-check|--keep-markers] [--run-check] [NAME...]
                        build (or reuse) the fixtures: OS ones (systemd, openrc, trixie) and app /
                        kernel images (kernel-debian, kernel-linuxkit, app-busybox, app-python,
                        app-systemd); --boot-check boots the OS ones
                        without d2v (umoci + mke2fs -d + qemu -kernel) to prove the self-check;
                        --keep-markers: the same with /.dockerenv kept, which must fail;
                        --run-check runs the app ones (runc; app-systemd in QEMU) as root
  boot [NAME...]        end-to-end boot tests only: d2v build each fixture, check the disk
                        (sgdisk, fsck.fat, e2fsck), boot under SeaBIOS and OVMF, compare self-check
  demo                  install its packages, build the demo image, serve it from a local registry,
                        d2v pull it, boot it; checks that its packages provide every program it ran
  man                   d2v's manual pages into target/dist/man (release artifacts)
  image [--source URL]  d2v's own container image, written without a container engine:
                        target/image/oci (OCI layout) and target/image/d2v.oci.tar (oci-archive)
  bench [NAME...]       benchmarks (export, ext4, ext4-tar, vmdk, ext4-scale, grub, app,
                        local, pipeline, scale)
                        -> BENCHMARKS.md
  fuzz [TARGET...] [--seconds N]
                        fuzz each parser target (default all) for N s (default 60) with cargo fuzz
                        (nightly; installed if missing) -> FUZZING.md, crashes -> testdata/fuzz/
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        Some("test") => testcmd::run(rest),
        Some("deps") => debian::ensure(debian::PACKAGES),
        Some("fixtures") => fixtures::run(rest).map(|_| ()),
        Some("demo") => demo::run(rest),
        Some("boot") => boottest::run(rest),
        Some("bench") => bench::run(rest),
        Some("man") => dist::man(),
        Some("image") => image::run(rest),
        Some("fuzz") => fuzz::run(rest),
        Some("help" | "-h" | "--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n{HELP}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
