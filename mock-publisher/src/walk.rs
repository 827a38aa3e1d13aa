//! [`RandomWalk`]: geometric random-walk prices that look like a market.

use marketmux_core::{Epoch, Symbol, Tick, Timestamp};
use rand::Rng;

/// The default universe: (symbol, starting price).
pub const DEFAULT_SYMBOLS: &[(&str, f64)] = &[
    ("AAPL", 189.5),
    ("MSFT", 415.2),
    ("GOOGL", 172.3),
    ("AMZN", 182.1),
    ("META", 492.6),
    ("NVDA", 903.4),
    ("TSLA", 177.8),
    ("NFLX", 612.0),
    ("AMD", 158.9),
    ("INTC", 31.2),
    ("ORCL", 124.7),
    ("CRM", 281.3),
    ("ADBE", 478.9),
    ("IBM", 168.2),
    ("CSCO", 48.3),
    ("JPM", 197.6),
    ("BAC", 38.1),
    ("GS", 456.2),
    ("V", 274.8),
    ("MA", 458.1),
    ("KO", 61.4),
    ("PEP", 168.9),
    ("WMT", 60.3),
    ("DIS", 111.7),
    ("NKE", 93.2),
    ("XOM", 118.4),
    ("CVX", 157.3),
    ("BA", 179.6),
    ("UBER", 71.9),
    ("SPY", 521.4),
    ("QQQ", 445.6),
    ("BRK.B", 408.3),
    ("BINANCE:BTCUSDT", 64_250.0),
    ("BINANCE:ETHUSDT", 3_120.5),
    ("BINANCE:SOLUSDT", 145.2),
    ("BINANCE:DOGEUSDT", 0.1523),
    ("OANDA:EUR_USD", 1.0842),
    ("OANDA:GBP_USD", 1.2641),
    ("OANDA:USD_JPY", 154.31),
    ("COINBASE:BTC-USD", 64_240.0),
];

/// One symbol's price, moving by small random steps (about 2 bp per step),
/// shaped so its candles look like a market's:
///
/// - the step size clusters: a volatility *regime* drifts slowly (calm
///   stretches, then busy ones), so candle ranges vary as real ones do;
/// - short trends: a small drift that persists for a while and fades;
/// - prices move on the instrument's tick size (about 1/10,000 of its
///   starting price, a power of ten), so cheap instruments (DOGE, FX) move
///   too instead of rounding to the same price every step;
/// - volume grows with the size of the move and the regime.
#[derive(Debug, Clone)]
pub struct RandomWalk {
    pub symbol: Symbol,
    price: f64,
    /// Typical step, as a fraction of the price.
    volatility: f64,
    /// Log of the current volatility multiplier, mean-reverting to 0.
    regime: f64,
    /// Drift per step, mean-reverting to 0.
    trend: f64,
    /// Prices are whole multiples of `1 / scale`.
    scale: f64,
    /// Typical volume of one tick.
    volume: f64,
}

/// An approximately standard normal number (Irwin–Hall, 4 uniforms).
fn normal(rng: &mut impl Rng) -> f64 {
    let sum: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
    (sum - 2.0) * 3f64.sqrt()
}

impl RandomWalk {
    /// Starts `symbol` at `price`.
    pub fn new(symbol: Symbol, price: f64) -> Self {
        let magnitude = price.max(1e-9).log10().floor() as i32;
        Self {
            symbol,
            price,
            volatility: 0.0002,
            regime: 0.0,
            trend: 0.0,
            scale: 10f64.powi((4 - magnitude).max(0)),
            volume: 100.0,
        }
    }

    /// Walks for every symbol of [`DEFAULT_SYMBOLS`].
    pub fn defaults() -> Vec<Self> {
        DEFAULT_SYMBOLS
            .iter()
            .filter_map(|(s, p)| Symbol::new(s).ok().map(|s| Self::new(s, *p)))
            .collect()
    }

    /// `n` walks: the default universe first, then `SYM0001`… with random prices.
    pub fn universe(n: usize, rng: &mut impl Rng) -> Vec<Self> {
        let mut v = Self::defaults();
        v.truncate(n);
        let mut i = 1;
        while v.len() < n {
            if let Ok(s) = Symbol::new(&format!("SYM{i:04}")) {
                v.push(Self::new(s, rng.random_range(5.0..500.0)));
            }
            i += 1;
        }
        v
    }

    /// Moves one step and returns the tick, stamped now.
    pub fn step(&mut self, rng: &mut impl Rng) -> Tick {
        // Busy and calm stretches: half-life of about 35 steps, multiplier
        // mostly between 0.5 and 2.
        self.regime = 0.98 * self.regime + 0.07 * normal(rng);
        // Short trends worth a fraction of a step, fading over ~100 steps.
        self.trend = 0.99 * self.trend + 0.01 * self.volatility * normal(rng);
        let shock = normal(rng);
        let step = self.trend + self.volatility * self.regime.exp() * shock;
        let floor = 1.0 / self.scale;
        self.price = (self.price * (1.0 + step)).max(floor);
        let price = ((self.price * self.scale).round() / self.scale).max(floor);
        let size = self.regime.exp() * (0.5 + shock.abs()) * rng.random_range(0.5..1.5);
        let volume = (self.volume * size).round().max(1.0);
        Tick {
            symbol: self.symbol,
            price,
            timestamp: Timestamp::now(),
            volume: Some(volume),
            seq: 0,
            epoch: Epoch::default(),
            candles_late: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use marketmux_core::candle::CandleSeries;
    use marketmux_core::{Candle, CandleConfig, Interval};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    /// One-minute candles of `walk` at 4 ticks a second, for `minutes`.
    fn minute_candles(walk: &mut RandomWalk, minutes: i64, rng: &mut impl Rng) -> Vec<Candle> {
        let mut series = CandleSeries::default();
        let config = CandleConfig::default();
        for i in 0..minutes * 240 {
            let mut t = walk.step(rng);
            t.timestamp = Timestamp((1_764_633_600_000 + i * 250) * 1_000_000);
            series.apply(Interval::M1, &t, 1_764_633_600_000 + i * 250, &config);
        }
        series
            .last(usize::MAX)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn candles_move_on_every_instrument_and_their_ranges_vary() {
        let mut rng = StdRng::seed_from_u64(21);
        for mut walk in RandomWalk::defaults() {
            let start = walk.price;
            let candles = minute_candles(&mut walk, 60, &mut rng);
            assert_eq!(candles.len(), 60, "{}", walk.symbol);
            // No flat bars: the price moves within (almost) every minute,
            // cheap instruments included (they move on their tick size).
            let flat = candles.iter().filter(|c| c.high == c.low).count();
            assert!(flat <= 1, "{}: {flat} flat minutes of 60", walk.symbol);
            // Calm and busy minutes: ranges differ by a wide margin.
            let mut ranges: Vec<f64> = candles.iter().map(|c| (c.high - c.low) / c.open).collect();
            ranges.sort_by(f64::total_cmp);
            let (calm, busy) = (ranges[6], ranges[53]);
            assert!(
                busy > 2.0 * calm,
                "{}: ranges {calm} .. {busy}",
                walk.symbol
            );
            // A believable hour: within a few percent.
            let end = candles.last().unwrap().close;
            assert!(
                (end / start - 1.0).abs() < 0.2,
                "{}: {start} -> {end}",
                walk.symbol
            );
            assert!(candles.iter().all(|c| c.volume >= c.ticks as f64));
        }
    }

    #[test]
    fn walks_stay_positive_and_valid() {
        let mut rng = rand::rng();
        let mut walks = RandomWalk::universe(50, &mut rng);
        assert_eq!(walks.len(), 50);
        for _ in 0..1000 {
            for w in &mut walks {
                let t = w.step(&mut rng);
                assert!(Tick::new(t.symbol, t.price, t.timestamp, t.volume).is_ok());
            }
        }
    }
}
