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

/// One symbol's price, moving by small random steps (about 2 bp per step).
#[derive(Debug, Clone)]
pub struct RandomWalk {
    pub symbol: Symbol,
    price: f64,
    volatility: f64,
}

impl RandomWalk {
    /// Starts `symbol` at `price`.
    pub fn new(symbol: Symbol, price: f64) -> Self {
        Self {
            symbol,
            price,
            volatility: 0.0002,
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
        let shock: f64 = rng.random_range(-1.0..1.0);
        self.price = (self.price * (1.0 + shock * self.volatility * 3f64.sqrt())).max(1e-6);
        let decimals = if self.price < 10.0 { 1e4 } else { 1e2 };
        let price = ((self.price * decimals).round() / decimals).max(1.0 / decimals);
        let volume = rng.random_range(1.0..500.0f64).round();
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
    use super::*;

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
