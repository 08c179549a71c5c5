//! Property tests: random sparse disks written by the writer and read back by `reader`.

use super::format::{GRAIN_BYTES, SECTOR};
use super::*;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// xorshift64*: a small seeded generator so failures reproduce from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn opts(threads: usize) -> VmdkOptions {
    VmdkOptions {
        seed: "sha256:test".into(),
        threads,
        ..Default::default()
    }
}

fn roundtrip(raw: &File, threads: usize) -> (Vec<u8>, VmdkSummary) {
    let mut out = Vec::new();
    let sum = write_stream_optimized(raw, &mut out, &opts(threads)).expect("write");
    assert_eq!(sum.file_size, out.len() as u64);
    let disk = reader::read(&out).unwrap_or_else(|e| panic!("reader rejected the VMDK: {e}"));
    let len = raw.metadata().unwrap().len();
    let mut want = vec![0u8; len as usize];
    raw.read_exact_at(&mut want, 0).unwrap();
    want.resize(len.div_ceil(SECTOR) as usize * SECTOR as usize, 0);
    assert_eq!(disk.data.len(), want.len(), "capacity");
    if disk.data != want {
        let at = disk
            .data
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap();
        panic!("content differs at byte {at}");
    }
    // Exactly the non-zero grains are stored.
    let nonzero = want
        .chunks(GRAIN_BYTES as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count();
    assert_eq!(disk.grains, nonzero as u64);
    assert_eq!(sum.grains, nonzero as u64);
    assert_eq!(sum.populated_size, nonzero as u64 * GRAIN_BYTES);
    assert_eq!(sum.capacity, want.len() as u64);
    assert_eq!(disk.header.capacity, len.div_ceil(SECTOR));
    assert_eq!(
        (disk.header.version, disk.header.flags, disk.header.compress),
        (3, 0x30001, 1)
    );
    assert_eq!(
        (disk.footer.grain_size, disk.footer.gtes_per_gt),
        (128, 512)
    );
    assert!(disk.descriptor.contains("createType=\"streamOptimized\""));
    assert!(disk.descriptor.contains(&format!(
        "RW {} SPARSE \"disk1.vmdk\"",
        len.div_ceil(SECTOR)
    )));
    (out, sum)
}

fn random_disk(rng: &mut Rng) -> File {
    let f = tempfile::tempfile().unwrap();
    // Sizes: tiny, not a multiple of a grain or of a sector, several grain tables.
    let len = match rng.below(4) {
        0 => 1 + rng.below(4 * SECTOR),
        1 => rng.below(3) * GRAIN_BYTES + 1 + rng.below(GRAIN_BYTES),
        _ => 1 + rng.below(80 << 20),
    };
    f.set_len(len).unwrap();
    match rng.below(5) {
        0 => {} // all holes
        1 => {
            // full of data (no holes), some grains explicitly zero
            let mut buf = vec![0u8; len as usize];
            for (i, c) in buf.chunks_mut(GRAIN_BYTES as usize).enumerate() {
                if i % 3 != 1 {
                    c.iter_mut().for_each(|b| *b = (rng.next() % 7) as u8);
                }
            }
            f.write_all_at(&buf, 0).unwrap();
        }
        _ => {
            for _ in 0..rng.below(40) {
                let off = rng.below(len);
                let n = (1 + rng.below(300_000)).min(len - off);
                let kind = rng.below(3);
                let data: Vec<u8> = (0..n)
                    .map(|i| match kind {
                        0 => 0,                   // written zeros: data extent, zero grain
                        1 => (i % 251) as u8 + 1, // compressible
                        _ => rng.next() as u8,    // incompressible
                    })
                    .collect();
                f.write_all_at(&data, off).unwrap();
            }
            // Always touch the very last byte sometimes: last partial grain.
            if rng.below(2) == 0 {
                f.write_all_at(&[0xaa], len - 1).unwrap();
            }
        }
    }
    f
}

#[test]
fn random_sparse_disks_read_back_identically() {
    let base = std::env::var("D2V_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    for case in 0..24u64 {
        let seed = base ^ (case.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        let mut rng = Rng(seed);
        let f = random_disk(&mut rng);
        let threads = 1 + (case % 3) as usize;
        eprintln!(
            "case {case} seed {seed:#x} len {} threads {threads}",
            f.metadata().unwrap().len()
        );
        roundtrip(&f, threads);
    }
}

#[test]
fn all_zero_disk_stores_no_grains_but_all_tables() {
    let f = tempfile::tempfile().unwrap();
    f.set_len(100 << 20).unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 5 << 20).unwrap(); // explicit zeros are still zero
    let (out, sum) = roundtrip(&f, 2);
    assert_eq!(sum.grains, 0);
    // header+descriptor grain, 4 GTs with markers, GD marker+GD, footer marker+footer, EOS
    assert_eq!(
        out.len() as u64,
        GRAIN_BYTES + 4 * 5 * SECTOR + 2 * SECTOR + 3 * SECTOR
    );
}

#[test]
fn output_is_deterministic_across_thread_counts() {
    let mut rng = Rng(42);
    let f = tempfile::tempfile().unwrap();
    let len = (20 << 20) + 777;
    f.set_len(len).unwrap();
    for _ in 0..30 {
        let off = rng.below(len - 70_000);
        let data: Vec<u8> = (0..70_000).map(|_| (rng.next() % 5) as u8).collect();
        f.write_all_at(&data, off).unwrap();
    }
    let (a, _) = roundtrip(&f, 1);
    let (b, _) = roundtrip(&f, 3);
    assert!(a == b, "output depends on the thread count");
}

#[test]
fn compression_level_is_validated_and_used() {
    let f = tempfile::tempfile().unwrap();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i % 13 + i / 4096 % 7) as u8)
        .collect();
    f.write_all_at(&data, 0).unwrap();
    let mut o = opts(2);
    o.compression_level = 13;
    assert!(matches!(
        write_stream_optimized(&f, &mut Vec::new(), &o),
        Err(VmdkError::Level(13))
    ));
    let size = |level| {
        let mut o = opts(2);
        o.compression_level = level;
        let mut out = Vec::new();
        write_stream_optimized(&f, &mut out, &o).unwrap();
        reader::read(&out).unwrap();
        out.len()
    };
    assert!(
        size(0) > size(9),
        "level 0 (stored) must be larger than level 9"
    );
}

#[test]
fn descriptor_is_deterministic_and_rejects_bad_names() {
    let o = opts(1);
    let a = descriptor(4096, &o).unwrap();
    assert_eq!(a, descriptor(4096, &o).unwrap());
    let mut o2 = o.clone();
    o2.seed = "sha256:other".into();
    assert_ne!(a, descriptor(4096, &o2).unwrap());
    let cid = a.lines().find_map(|l| l.strip_prefix("CID=")).unwrap();
    let long = a
        .lines()
        .find_map(|l| l.strip_prefix("ddb.longContentID = \""))
        .unwrap();
    assert_eq!(long.len(), 33);
    assert!(
        long.starts_with(&cid.to_string()) || long[24..32] == *cid,
        "{a}"
    );
    for line in [
        "ddb.adapterType = \"lsilogic\"",
        "ddb.geometry.heads = \"255\"",
        "ddb.geometry.sectors = \"63\"",
        "ddb.geometry.cylinders = \"1\"",
        "ddb.virtualHWVersion = \"4\"",
        "ddb.toolsVersion = \"2147483647\"",
        "parentCID=ffffffff",
    ] {
        assert!(a.lines().any(|l| l == line), "missing {line} in\n{a}");
    }
    for bad in ["a\"b.vmdk", "a\nb", ""] {
        let mut o3 = o.clone();
        o3.file_name = bad.into();
        assert!(matches!(descriptor(1, &o3), Err(VmdkError::FileName(_))));
    }
}

#[test]
fn empty_input_is_an_error() {
    let f = tempfile::tempfile().unwrap();
    assert!(matches!(
        write_stream_optimized(&f, &mut Vec::new(), &opts(1)),
        Err(VmdkError::Empty)
    ));
}

#[test]
fn progress_ends_full_and_grains_are_counted_once() {
    // Data in grains 0, 1–2 (one write across a boundary) and 40; the rest holes.
    let f = tempfile::tempfile().unwrap();
    f.set_len(64 * GRAIN_BYTES + 100).unwrap();
    f.write_all_at(b"a", 10).unwrap();
    f.write_all_at(&[7u8; 100], 2 * GRAIN_BYTES - 50).unwrap();
    f.write_all_at(b"z", 40 * GRAIN_BYTES + 5).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let o = VmdkOptions {
        progress: Some(bar.clone()),
        ..opts(2)
    };
    let sum = write_stream_optimized(&f, &mut Vec::new(), &o).unwrap();
    assert_eq!(sum.grains, 4);
    assert_eq!(bar.length(), Some(64 * GRAIN_BYTES + 100));
    assert_eq!(bar.position(), 64 * GRAIN_BYTES + 100);
    let grains = |e: &[(u64, u64)]| super::compress::grains(e).collect::<Vec<_>>();
    assert_eq!(
        grains(&[(0, 1), (10, 20), (GRAIN_BYTES, 3 * GRAIN_BYTES + 1)]),
        [0, 1, 2, 3]
    );
    assert!(grains(&[]).is_empty());
}

/// A `Write` into a vector others can watch.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A disk compressed while it is written (ascending data behind a watermark, some of it
/// holes) comes out byte for byte as the same disk compressed once written whole; its grains
/// go out before the disk is finished; and a writer that gives up stops the compression.
#[test]
fn compressing_while_the_disk_is_written_matches_compressing_it_whole() {
    use crate::finality::{Finality, Finisher};
    let mut rng = Rng(0x5eed_d15c);
    let len = 300 * GRAIN_BYTES + 1234;
    let raw = tempfile::tempfile().unwrap();
    raw.set_len(len).unwrap();
    let finality = Finality::new();
    let streamed = Shared::default();
    let sum = std::thread::scope(|s| {
        let mut out = streamed.clone();
        let (raw, finality) = (&raw, &finality);
        let reader = s.spawn(move || compress(raw, len, finality, &opts(2), &mut out));
        let done = Finisher::new(finality);
        let mut at = 0;
        while at < len {
            let n = rng.below(3 * GRAIN_BYTES).min(len - at);
            if rng.below(3) > 0 {
                let data: Vec<u8> = (0..n).map(|_| rng.below(4) as u8).collect();
                raw.write_all_at(&data, at).unwrap();
            }
            at += n;
            finality.advance(at);
        }
        // Every byte is final but the disk is not finished: the grains go out already.
        let started = std::time::Instant::now();
        while streamed.len() < 2 * GRAIN_BYTES as usize {
            assert!(
                started.elapsed().as_secs() < 30,
                "no grain went out before the disk was finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        done.done();
        reader.join().unwrap().unwrap()
    });
    let streamed = streamed.0.lock().unwrap().clone();
    assert_eq!(sum.file_size, streamed.len() as u64);
    let mut whole = Vec::new();
    write_stream_optimized(&raw, &mut whole, &opts(1)).unwrap();
    assert!(streamed == whole, "the streamed VMDK differs");
    let (read, _) = roundtrip(&raw, 2);
    assert_eq!(read, whole);

    let finality = Finality::new();
    let gave_up = std::thread::scope(|s| {
        let reader = s.spawn(|| compress(&raw, len, &finality, &opts(2), &mut Vec::new()));
        drop(Finisher::new(&finality));
        reader.join().unwrap()
    });
    assert!(
        matches!(gave_up, Err(VmdkError::Aborted)),
        "{:?}",
        gave_up.err()
    );
}

/// With `consume`, the raw disk's space is given back as it is read, and the VMDK is the same.
#[test]
fn consuming_gives_back_the_raw_disk() {
    use std::os::unix::fs::MetadataExt;
    let mut rng = Rng(0xc0ff_ee00);
    let len = 80 << 20;
    let raw = tempfile::tempfile().unwrap();
    raw.set_len(len).unwrap();
    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    raw.write_all_at(&data, 0).unwrap();
    let mut whole = Vec::new();
    write_stream_optimized(&raw, &mut whole, &opts(2)).unwrap();
    let allocated = |f: &File| f.metadata().unwrap().blocks() * 512;
    assert!(allocated(&raw) >= len);

    let consuming = VmdkOptions {
        consume: true,
        ..opts(2)
    };
    let mut streamed = Vec::new();
    let finality = crate::finality::Finality::complete();
    compress(&raw, len, &finality, &consuming, &mut streamed).unwrap();
    assert_eq!(allocated(&raw), 0, "the raw disk was read whole");
    assert!(streamed == whole, "consuming changed the VMDK");
}
