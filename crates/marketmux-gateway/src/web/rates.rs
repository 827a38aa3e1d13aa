//! [`RateWindow`]: per-second rates from monotonic counters, sampled when asked.
//!
//! No task runs in the background: each `/api/v1/stats` request adds a sample,
//! and the rate is taken against the oldest sample still in the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Samples older than this are dropped (while two newer ones remain).
const WINDOW: Duration = Duration::from_secs(5);
/// Most samples kept: many pages polling at once cannot grow the window.
const MAX_SAMPLES: usize = 64;
/// A rate over less time than this is too noisy to show.
const MIN_SPAN: Duration = Duration::from_millis(200);

/// Rates over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub ticks_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// Seconds between the two samples compared.
    pub window_secs: f64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ticks_in: u64,
    deliveries: u64,
}

/// A bounded window of counter samples (at most [`MAX_SAMPLES`], [`WINDOW`] long).
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateWindow {
    /// Records the counters now and returns the rates since the oldest sample
    /// in the window; `None` until samples span [`MIN_SPAN`].
    pub fn sample(&self, ticks_in: u64, deliveries: u64) -> Option<Rates> {
        self.sample_at(Instant::now(), ticks_in, deliveries)
    }

    /// [`RateWindow::sample`] at a given instant (for tests).
    pub fn sample_at(&self, at: Instant, ticks_in: u64, deliveries: u64) -> Option<Rates> {
        let mut samples = self.samples.lock();
        while samples.len() >= MAX_SAMPLES || (samples.len() >= 2 && samples[1].at + WINDOW < at) {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at,
            ticks_in,
            deliveries,
        });
        let first = samples.front()?;
        let span = at.checked_duration_since(first.at)?;
        if span < MIN_SPAN {
            return None;
        }
        let secs = span.as_secs_f64();
        Some(Rates {
            ticks_per_sec: ticks_in.saturating_sub(first.ticks_in) as f64 / secs,
            deliveries_per_sec: deliveries.saturating_sub(first.deliveries) as f64 / secs,
            window_secs: secs,
        })
    }
}
