//! Bounds on what an image's layers may decompress to (`--max-expansion`,
//! `--max-image-size`), counted while decompressing so that a gzip or zstd bomb is stopped
//! after at most one read-ahead buffer past its limit, not after it has filled `$TMPDIR`.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `--max-expansion` by default: a layer may decompress to 200 times its compressed size.
/// Real layers are 2–10× (text and binaries); gzip's own ceiling is about 1 030×, zstd's far
/// higher, so a bomb is stopped long before it would have ended.
pub const DEFAULT_MAX_EXPANSION: u64 = 200;

/// A layer may always decompress to this much, whatever its ratio: a tiny layer (a few
/// directories, an empty file, the tar's zero padding) can compress more than 200×.
pub const EXPANSION_FLOOR: u64 = 1 << 20;

/// How much an image's layers may decompress to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A layer's decompressed bytes over its compressed size (`--max-expansion`).
    pub max_expansion: u64,
    /// All layers' decompressed bytes together (`--max-image-size`); `None`: no limit.
    pub max_image_size: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_expansion: DEFAULT_MAX_EXPANSION,
            max_image_size: None,
        }
    }
}

/// A limit a layer went past.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// One layer decompresses to more than `--max-expansion` times its compressed size.
    #[error(
        "layer {layer}: decompresses to more than {}, {max_expansion}× its compressed size \
         of {} (a decompression bomb?); d2v stopped reading it. If the image is genuine, \
         raise --max-expansion (now {max_expansion})",
        size_text(*limit),
        size_text(*compressed)
    )]
    Expansion {
        /// The layer's digest.
        layer: String,
        /// Its compressed size in bytes.
        compressed: u64,
        /// The ratio allowed.
        max_expansion: u64,
        /// The bytes allowed (the ratio times the compressed size, at least [`EXPANSION_FLOOR`]).
        limit: u64,
    },
    /// The layers together decompress to more than `--max-image-size`.
    #[error(
        "layer {layer}: the image's layers decompress to more than {} \
         (--max-image-size); d2v stopped reading them. If the image is genuine, raise \
         --max-image-size",
        size_text(*limit)
    )]
    ImageSize {
        /// The layer being read when the total went past the limit.
        layer: String,
        /// The limit in bytes.
        limit: u64,
    },
}

/// `bytes` as the messages show sizes: `512 bytes`, `10.3 KiB`, `1.5 MiB`, `2.0 GiB`.
fn size_text(bytes: u64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units.iter().find(|(_, shift)| bytes >= 1 << shift) {
        Some((unit, shift)) => format!("{:.1} {unit}", bytes as f64 / (1u64 << shift) as f64),
        None => format!("{bytes} bytes"),
    }
}

/// The decompressed bytes of one image's layers so far, against its [`Limits`]; shared by the
/// readers of its layers (each on its own read-ahead thread). The first limit a reader hits is
/// kept here, so the caller gets it as a value whatever wrapped the reader's `io::Error`.
#[derive(Debug, Default)]
pub struct Budget {
    limits: Limits,
    used: AtomicU64,
    exceeded: Mutex<Option<LimitExceeded>>,
}

impl Budget {
    /// A budget of `limits` with nothing read yet.
    pub fn new(limits: Limits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            ..Budget::default()
        })
    }

    /// The first limit a layer went past, if any.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        self.exceeded.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Counts `n` more bytes of `layer`, `read` of them so far; the limit it passes, if any.
    fn count(&self, layer: &LayerCount, n: u64) -> Option<LimitExceeded> {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        let over = if layer.read > layer.max {
            Some(LimitExceeded::Expansion {
                layer: layer.digest.clone(),
                compressed: layer.compressed,
                max_expansion: self.limits.max_expansion,
                limit: layer.max,
            })
        } else {
            match self.limits.max_image_size {
                Some(limit) if used > limit => Some(LimitExceeded::ImageSize {
                    layer: layer.digest.clone(),
                    limit,
                }),
                _ => None,
            }
        };
        if let Some(e) = &over {
            if let Ok(mut first) = self.exceeded.lock() {
                first.get_or_insert_with(|| e.clone());
            }
        }
        over
    }
}

/// One layer's count.
struct LayerCount {
    digest: String,
    compressed: u64,
    read: u64,
    /// The most it may decompress to.
    max: u64,
}

/// A layer's decompressed stream, counted against a [`Budget`]: a read that takes it past a
/// limit fails with [`LimitExceeded`] (carried in the `io::Error`) and so does every later one.
pub(crate) struct Bounded<R> {
    inner: R,
    count: LayerCount,
    budget: Arc<Budget>,
    failed: Option<LimitExceeded>,
}

impl<R> Bounded<R> {
    /// `inner`, the decompressed stream of the layer `digest` whose blob is `compressed`
    /// bytes; `compressed: false` for an uncompressed layer (only the image size applies).
    pub(crate) fn new(
        inner: R,
        digest: &str,
        compressed: Option<u64>,
        budget: Arc<Budget>,
    ) -> Bounded<R> {
        let max = match compressed {
            Some(size) => size
                .saturating_mul(budget.limits.max_expansion)
                .max(EXPANSION_FLOOR),
            None => u64::MAX,
        };
        Bounded {
            inner,
            count: LayerCount {
                digest: digest.to_string(),
                compressed: compressed.unwrap_or(0),
                read: 0,
                max,
            },
            budget,
            failed: None,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(e.clone()));
        }
        let n = self.inner.read(buf)?;
        self.count.read += n as u64;
        if let Some(e) = self.budget.count(&self.count, n as u64) {
            self.failed = Some(e.clone());
            return Err(io::Error::other(e));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut impl Read) -> io::Result<u64> {
        io::copy(r, &mut io::sink())
    }

    #[test]
    fn a_layer_past_its_ratio_is_stopped_near_the_limit() {
        let budget = Budget::new(Limits {
            max_expansion: 10,
            max_image_size: None,
        });
        // 200 KiB compressed × 10 = 2 000 KiB allowed; 4 MiB of zeros is more.
        let zeros = io::repeat(0).take(4 << 20);
        let mut r = Bounded::new(zeros, "sha256:bomb", Some(200 << 10), budget.clone());
        let e = drain(&mut r).unwrap_err();
        let hit = budget.exceeded().expect("recorded");
        assert_eq!(e.to_string(), hit.to_string());
        let LimitExceeded::Expansion { limit, .. } = hit else {
            panic!("{hit:?}")
        };
        assert_eq!(limit, 2000 << 10);
        assert!(r.count.read <= limit + (64 << 10), "{}", r.count.read);
        assert!(e.to_string().contains("--max-expansion (now 10)"), "{e}");
        // And it stays failed.
        assert!(r.read(&mut [0; 10]).is_err());
    }

    #[test]
    fn the_floor_lets_tiny_layers_through_and_uncompressed_ones_have_no_ratio() {
        let budget = Budget::new(Limits::default());
        let mut r = Bounded::new(io::repeat(0).take(EXPANSION_FLOOR), "a", Some(1), budget);
        assert_eq!(drain(&mut r).unwrap(), EXPANSION_FLOOR);
        let budget = Budget::new(Limits::default());
        let mut r = Bounded::new(io::repeat(0).take(8 << 20), "b", None, budget.clone());
        assert_eq!(drain(&mut r).unwrap(), 8 << 20);
        assert_eq!(budget.exceeded(), None);
    }

    #[test]
    fn sizes_are_shown_in_their_unit() {
        assert_eq!(size_text(512), "512 bytes");
        assert_eq!(size_text(10 << 10), "10.0 KiB");
        assert_eq!(size_text(3 << 19), "1.5 MiB");
        assert_eq!(size_text(2 << 30), "2.0 GiB");
    }

    #[test]
    fn the_image_size_counts_every_layer() {
        let budget = Budget::new(Limits {
            max_expansion: 1000,
            max_image_size: Some(3 << 20),
        });
        let layer = |d: &str, len: u64| {
            let mut r = Bounded::new(io::repeat(1).take(len), d, None, budget.clone());
            drain(&mut r)
        };
        layer("sha256:one", 2 << 20).unwrap();
        let e = layer("sha256:two", 2 << 20).unwrap_err().to_string();
        assert!(
            e.contains("sha256:two") && e.contains("--max-image-size") && e.contains("3.0 MiB"),
            "{e}"
        );
        assert!(matches!(
            budget.exceeded(),
            Some(LimitExceeded::ImageSize { .. })
        ));
    }
}
