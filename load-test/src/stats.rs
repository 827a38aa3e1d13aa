//! What the clients count while they run: shared counters and latency
//! histograms (each client's `seq` positions are in [`crate::recovery`]).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Highest latency recorded, in microseconds (one hour); above it values saturate.
const MAX_MICROS: u64 = 3_600_000_000;
/// Latency histograms are sharded so thousands of clients rarely contend.
const SHARDS: usize = 16;

/// A new histogram of microseconds, 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are within bounds"))
}

/// Counters every client adds to. Deliveries count only live ticks to clients that read.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub subscribed: AtomicU64,
    /// Clients done with their setup, successfully or not.
    pub settled: AtomicU64,
    pub received: AtomicU64,
    /// Of `received`, ticks replayed after a resubscribe with `since`.
    pub recovered: AtomicU64,
    /// Ticks skipped according to per-symbol `seq` jumps on a live socket (conflated away).
    pub seq_gaps: AtomicU64,
    /// Ticks skipped where a resubscribe's replay should have covered them.
    pub seam_gaps: AtomicU64,
    /// A `seq` at or below one already seen for that symbol in the same epoch.
    pub duplicated: AtomicU64,
    /// Ticks older than the start of publishing (the snapshot after subscribe).
    pub snapshots: AtomicU64,
    pub malformed: AtomicU64,
    pub server_errors: AtomicU64,
    /// Sockets the server closed or that broke after setup.
    pub closed_by_server: AtomicU64,
    /// Sockets reopened after a close (`--reconnect`, `--reconnect-every`).
    pub reconnects: AtomicU64,
    /// Sockets the clients closed themselves to reconnect (`--reconnect-every`).
    pub forced_reconnects: AtomicU64,
    /// Streams resubscribed with a position (`since`).
    pub resumed: AtomicU64,
    /// Of `resumed`, those the server recovered (`recovered:true`).
    pub recovered_streams: AtomicU64,
    /// Of `resumed`, those not recovered (`recovered:false`, or no answer).
    pub refused: AtomicU64,
    /// Streams whose epoch changed under a client (the sequence started again).
    pub new_epochs: AtomicU64,
    /// Subscribes whose reply named no epoch for a symbol (per-connection `seq`).
    pub unnumbered: AtomicU64,
    /// `{"type":"candle"}` messages received (`--candles`), live updates and
    /// the current candle sent on subscribe alike.
    pub candles: AtomicU64,
    /// Of `candles`, those with `closed:true`.
    pub candles_closed: AtomicU64,
    /// Bytes read off the sockets (frames as sent: compressed where agreed).
    pub bytes_in: AtomicU64,
    /// Sockets opened with permessage-deflate agreed.
    pub compressed: AtomicU64,
}

/// One shard's samples: all of them, and those of each window.
struct Shard {
    all: Histogram<u64>,
    /// Window `i` holds the samples recorded between `i` and `i + 1`
    /// windows after the start.
    windows: Vec<Histogram<u64>>,
}

/// A histogram for one window: 2 significant digits, enough for a
/// percentile per minute, and about a tenth of the size of a full one.
fn window_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_MICROS, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits are within bounds"))
}

/// Latency samples in microseconds, sharded; also kept per window of time
/// (a minute by default) so that a long run shows how they drift.
pub struct Latencies {
    shards: Vec<Mutex<Shard>>,
    start: Instant,
    window: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::with_window(Duration::from_secs(60))
    }
}

impl Latencies {
    /// Empty, with windows of `window` (at least 1 ms) from now.
    pub fn with_window(window: Duration) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        all: micros_histogram(),
                        windows: Vec::new(),
                    })
                })
                .collect(),
            start: Instant::now(),
            window: window.max(Duration::from_millis(1)),
        }
    }

    /// The length of a window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records `samples` (µs) into the shard of client `key`.
    pub fn record(&self, key: usize, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let window = (self.start.elapsed().as_nanos() / self.window.as_nanos()) as usize;
        let mut shard = match self.shards[key % SHARDS].lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        while shard.windows.len() <= window {
            shard.windows.push(window_histogram());
        }
        for &s in samples {
            shard.all.saturating_record(s.max(1));
            shard.windows[window].saturating_record(s.max(1));
        }
    }

    /// Each window's samples, merged over the shards, from the first window
    /// to the last one that has a sample.
    pub fn per_window(&self) -> Vec<Percentiles> {
        let mut merged: Vec<Histogram<u64>> = Vec::new();
        for s in &self.shards {
            let shard = match s.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            for (i, h) in shard.windows.iter().enumerate() {
                while merged.len() <= i {
                    merged.push(window_histogram());
                }
                let _ = merged[i].add(h);
            }
        }
        merged.iter().map(Percentiles::of).collect()
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = micros_histogram();
        for s in &self.shards {
            let shard = match s.lock() {
                Ok(h) => h,
                Err(p) => p.into_inner(),
            };
            let _ = all.add(&shard.all);
        }
        all
    }
}

/// Adds `n` to `c` unless it is zero (skips a shared cache-line write).
pub fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Relaxed);
    }
}

/// p50/p90/p99/p99.9/max of a microsecond histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_merge_across_shards() {
        let l = Latencies::default();
        l.record(0, &[1000, 2000]);
        l.record(1, &[3000]);
        l.record(17, &[0]);
        let h = l.merged();
        assert_eq!(h.len(), 4);
        let p = Percentiles::of(&h);
        assert_eq!(p.samples, 4);
        assert!((p.max_ms - 3.0).abs() < 0.01, "{p:?}");
        assert!((p.p50_ms - 1.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn samples_fall_into_the_window_of_their_recording() {
        let l = Latencies::with_window(Duration::from_millis(200));
        l.record(0, &[1000]);
        l.record(3, &[1000, 1000]);
        std::thread::sleep(Duration::from_millis(450));
        l.record(5, &[9000]);
        let w = l.per_window();
        assert!(w.len() >= 3, "{w:?}");
        assert_eq!(w[0].samples, 3);
        let last = w.last().unwrap();
        assert_eq!(last.samples, 1);
        assert!((last.max_ms - 9.0).abs() < 0.1, "{last:?}");
        assert_eq!(w.iter().map(|p| p.samples).sum::<u64>(), 4);
        assert_eq!(l.merged().len(), 4);
    }

    #[test]
    fn empty_percentiles_are_zero() {
        assert_eq!(Percentiles::of(&micros_histogram()), Percentiles::default());
    }
}
