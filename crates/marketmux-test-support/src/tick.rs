//! [`tick()`] and [`tick_at`]: a valid tick in one call, for tests.

use marketmux_core::{Symbol, Tick, Timestamp};

/// A tick of `symbol` at `price`, stamped now, without volume.
///
/// # Panics
/// When `symbol` is not a valid symbol or `price` not a valid price (a test's mistake).
pub fn tick(symbol: &str, price: f64) -> Tick {
    tick_at(symbol, price, Timestamp::now())
}

/// A tick of `symbol` at `price`, stamped `at`, without volume.
///
/// # Panics
/// When `symbol` is not a valid symbol or `price` not a valid price (a test's mistake).
pub fn tick_at(symbol: &str, price: f64, at: Timestamp) -> Tick {
    let symbol = Symbol::new(symbol).unwrap_or_else(|e| panic!("symbol {symbol:?}: {e}"));
    Tick::new(symbol, price, at, None).unwrap_or_else(|e| panic!("tick {symbol} {price}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_tick_asked_for() {
        let t = tick_at("AAPL", 1.5, Timestamp(7));
        assert_eq!(
            (t.symbol.as_str(), t.price, t.timestamp),
            ("AAPL", 1.5, Timestamp(7))
        );
        assert!(t.volume.is_none());
    }

    #[test]
    #[should_panic(expected = "symbol")]
    fn an_invalid_symbol_is_the_test_s_mistake() {
        tick("not a symbol", 1.0);
    }
}
