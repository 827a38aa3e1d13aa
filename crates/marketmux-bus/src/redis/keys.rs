//! [`KeySpace`]: the names of the Redis keys and channels of one deployment.
//!
//! With the default empty prefix, the latest price of `AAPL` is the key
//! `price:AAPL` and its ticks go to the channel `ticks:AAPL`. A prefix (e.g.
//! `staging:`) is put in front of both, so tests and deployments can share a
//! Redis without seeing each other.
//!
//! Sharded pub/sub (Redis Cluster) names the channel `ticks:{price:AAPL}`: the
//! hash tag puts the channel in the same slot as the key, so the one Lua call
//! that sets the key may also `SPUBLISH` to the channel.
//!
//! A symbol's stream lives beside its price, under the same hash tag (so in
//! the same cluster slot, and `price:AAPL` keeps its plain, redis-cli
//! friendly name): `stream:{price:AAPL}` (a hash: `epoch`, last `seq`, and
//! `candles`, the current candle of each interval),
//! `history:{price:AAPL}` (a list of the kept ticks) and
//! `producers:{price:AAPL}` (a hash: the last sequence accepted from each
//! producer, for recognising redeliveries). Its closed candles too:
//! `candles:1m:{price:AAPL}` (one list per interval).

use marketmux_core::{Interval, Symbol};

use crate::BusError;

/// Key and channel names for one prefix and one pub/sub mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
    sharded: bool,
}

impl KeySpace {
    /// Names under `prefix`; `sharded` picks slot-aligned channel names.
    /// A prefix may not contain `{` or `}` (they would change the hash slot).
    pub fn new(prefix: &str, sharded: bool) -> Result<Self, BusError> {
        if prefix.contains(['{', '}']) {
            return Err(BusError::Rejected(format!(
                "redis prefix {prefix:?} may not contain '{{' or '}}'"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            sharded,
        })
    }

    /// Whether channels are sharded (`SPUBLISH`/`SSUBSCRIBE`).
    pub fn sharded(&self) -> bool {
        self.sharded
    }

    /// The prefix in front of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key holding the latest tick of `symbol` (`price:SYMBOL`).
    pub fn price_key(&self, symbol: &Symbol) -> String {
        format!("{}price:{}", self.prefix, symbol)
    }

    /// `NAME:{price:SYMBOL}` under the prefix: in the price key's slot.
    fn tagged(&self, name: &str, symbol: &Symbol) -> String {
        format!("{p}{name}:{{{p}price:{symbol}}}", p = self.prefix)
    }

    /// The hash of `symbol`'s stream: its `epoch`, last `seq`, and its
    /// current candles (see [`super::candles`]).
    pub fn stream_key(&self, symbol: &Symbol) -> String {
        self.tagged("stream", symbol)
    }

    /// The list of `symbol`'s kept ticks, oldest first.
    pub fn history_key(&self, symbol: &Symbol) -> String {
        self.tagged("history", symbol)
    }

    /// The hash of the last sequence accepted from each producer of `symbol`.
    pub fn producers_key(&self, symbol: &Symbol) -> String {
        self.tagged("producers", symbol)
    }

    /// The list of `symbol`'s closed candles of `interval`, oldest first.
    pub fn candles_key(&self, symbol: &Symbol, interval: Interval) -> String {
        self.tagged(&format!("candles:{interval}"), symbol)
    }

    /// Every key of `symbol`, in the order the accept script takes them:
    /// price, stream, history, producers, then the closed candles of each
    /// interval in [`Interval::ALL`] order. All in one hash slot.
    pub fn symbol_keys(&self, symbol: &Symbol) -> [String; 9] {
        let [s1, m1, m5, h1, d1] = Interval::ALL.map(|i| self.candles_key(symbol, i));
        [
            self.price_key(symbol),
            self.stream_key(symbol),
            self.history_key(symbol),
            self.producers_key(symbol),
            s1,
            m1,
            m5,
            h1,
            d1,
        ]
    }

    /// The pub/sub channel carrying the ticks of `symbol`.
    pub fn channel(&self, symbol: &Symbol) -> String {
        if self.sharded {
            self.tagged("ticks", symbol)
        } else {
            format!("{}ticks:{}", self.prefix, symbol)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_the_design() {
        let k = KeySpace::new("", false).unwrap();
        let s = Symbol::new("BINANCE:BTCUSDT").unwrap();
        assert_eq!(k.price_key(&s), "price:BINANCE:BTCUSDT");
        assert_eq!(k.channel(&s), "ticks:BINANCE:BTCUSDT");
    }

    #[test]
    fn prefix_and_sharded_names() {
        let k = KeySpace::new("t1:", true).unwrap();
        let s = Symbol::new("AAPL").unwrap();
        assert_eq!(k.price_key(&s), "t1:price:AAPL");
        assert_eq!(k.channel(&s), "t1:ticks:{t1:price:AAPL}");
        // The channel's hash tag is exactly the key: same cluster slot.
        assert_eq!(
            fred::util::redis_keyslot(k.channel(&s).as_bytes()),
            fred::util::redis_keyslot(k.price_key(&s).as_bytes())
        );
        assert!(KeySpace::new("a{b}", false).is_err());
        assert_eq!(k.stream_key(&s), "t1:stream:{t1:price:AAPL}");
        assert_eq!(k.history_key(&s), "t1:history:{t1:price:AAPL}");
        assert_eq!(k.producers_key(&s), "t1:producers:{t1:price:AAPL}");
        assert_eq!(
            k.candles_key(&s, Interval::M1),
            "t1:candles:1m:{t1:price:AAPL}"
        );
        for key in k.symbol_keys(&s) {
            assert_eq!(
                fred::util::redis_keyslot(key.as_bytes()),
                fred::util::redis_keyslot(k.price_key(&s).as_bytes()),
                "{key}"
            );
        }
    }
}
