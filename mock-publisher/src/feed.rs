//! [`Feed`]: paces random walks at a steady rate and hands ticks to a sink.

use std::time::Duration;

use marketmux_core::Tick;
use rand::Rng;

use crate::walk::RandomWalk;

/// How fast and over which symbols the feed runs.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Ticks per second per symbol (0 stops the feed).
    pub rate_per_symbol: f64,
    /// Number of symbols (the default universe first).
    pub symbols: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            rate_per_symbol: 4.0,
            symbols: crate::walk::DEFAULT_SYMBOLS.len(),
        }
    }
}

/// A paced random-walk feed.
pub struct Feed {
    walks: Vec<RandomWalk>,
    config: FeedConfig,
}

impl Feed {
    /// A feed over `config.symbols` walks.
    pub fn new(config: FeedConfig) -> Self {
        let walks = RandomWalk::universe(config.symbols, &mut rand::rng());
        Self { walks, config }
    }

    /// Runs until `sink` returns false. Every 10 ms each symbol moves with
    /// probability `rate / 100`, so ticks arrive spread out, not in bursts.
    pub async fn run(mut self, mut sink: impl FnMut(Vec<Tick>) -> bool) {
        if self.config.rate_per_symbol <= 0.0 || self.walks.is_empty() {
            return;
        }
        let step = Duration::from_millis(10);
        let p = (self.config.rate_per_symbol * step.as_secs_f64()).min(1.0);
        let mut every = tokio::time::interval(step);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        loop {
            every.tick().await;
            let batch: Vec<Tick> = self
                .walks
                .iter_mut()
                .filter_map(|w| rng.random_bool(p).then(|| w.step(&mut rng)))
                .collect();
            if !batch.is_empty() && !sink(batch) {
                return;
            }
        }
    }
}

use rand::SeedableRng as _;
