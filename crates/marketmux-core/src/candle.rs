//! Candles: open, high, low, close, volume and tick count of one symbol over
//! one interval ([`Interval`]: `1s 1m 5m 1h 1d`, aligned to UTC), built from
//! the symbol's ordered stream of accepted ticks.
//!
//! The rules, the same wherever candles are built (in process here; the
//! Redis bus's accept script follows them line for line):
//!
//! - a tick belongs to the interval of its timestamp (`floor(ms / len) * len`);
//! - the first tick of an interval opens its candle; a tick of a later
//!   interval closes the current candle and opens the next (an interval
//!   without a tick has no candle);
//! - the clock closes the current candle at its end plus the grace
//!   ([`CandleConfig::grace_ms`]), also when no tick comes after it;
//! - a tick whose interval is closed (by a later tick or by the clock, or
//!   older than the current candle) does not reopen it: it is *late*, counted
//!   by the caller, and changes no candle of that interval;
//! - at most [`CandleConfig::history`] closed candles are kept per interval
//!   (the oldest is dropped past it).
//!
//! [`SymbolCandles`] holds one symbol's five [`CandleSeries`];
//! [`encode_candle`] and [`push_candle_fields`] write the JSON clients get.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::symbol::Symbol;
use crate::tick::{Tick, Timestamp};

/// Most closed candles one page returns (`GET /candles?limit=`), and the
/// default of `--candle-history`.
pub const MAX_CANDLE_PAGE: usize = 1_000;

/// A candle interval, aligned to UTC (`1d` runs from 00:00:00.000 to
/// 23:59:59.999 UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// One second.
    S1,
    /// One minute.
    M1,
    /// Five minutes.
    M5,
    /// One hour.
    H1,
    /// One UTC day.
    D1,
}

/// A string that names no [`Interval`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown candle interval {0:?}; known are 1s, 1m, 5m, 1h, 1d")]
pub struct UnknownInterval(pub String);

impl Interval {
    /// Every interval, shortest first (the order of [`Interval::index`]).
    pub const ALL: [Interval; 5] = [
        Interval::S1,
        Interval::M1,
        Interval::M5,
        Interval::H1,
        Interval::D1,
    ];

    /// The name clients use: `1s`, `1m`, `5m`, `1h`, `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::H1 => "1h",
            Interval::D1 => "1d",
        }
    }

    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::S1 => 1_000,
            Interval::M1 => 60_000,
            Interval::M5 => 300_000,
            Interval::H1 => 3_600_000,
            Interval::D1 => 86_400_000,
        }
    }

    /// Position in [`Interval::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Start (ms since the Unix epoch, UTC) of the interval holding `ts`.
    pub fn start_of(self, ts: Timestamp) -> i64 {
        let ms = ts.0.div_euclid(1_000_000);
        ms.div_euclid(self.millis()) * self.millis()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = UnknownInterval;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownInterval(s.chars().take(16).collect()))
    }
}

/// One candle. `seq` is the stream position of the last tick it took, so a
/// reader can tell which of two copies is newer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    /// Interval start, ms since the Unix epoch (UTC).
    pub start_ms: i64,
    /// Price of the interval's first tick.
    pub open: f64,
    /// Highest price in the interval.
    pub high: f64,
    /// Lowest price in the interval.
    pub low: f64,
    /// Price of the interval's last tick so far.
    pub close: f64,
    /// Sum of the ticks' volumes (a tick without volume adds 0).
    pub volume: f64,
    /// How many ticks it took.
    pub ticks: u64,
    /// `seq` of the last tick it took (0: ticks not numbered).
    pub seq: u64,
}

impl Candle {
    /// The candle opened by `tick` in the interval starting at `start_ms`.
    pub fn opened_by(tick: &Tick, start_ms: i64) -> Self {
        Self {
            start_ms,
            open: tick.price,
            high: tick.price,
            low: tick.price,
            close: tick.price,
            volume: tick.volume.unwrap_or(0.0),
            ticks: 1,
            seq: tick.seq,
        }
    }

    /// Takes `tick` (of the same interval).
    pub fn take(&mut self, tick: &Tick) {
        self.high = self.high.max(tick.price);
        self.low = self.low.min(tick.price);
        self.close = tick.price;
        self.volume += tick.volume.unwrap_or(0.0);
        self.ticks += 1;
        self.seq = tick.seq;
    }

    /// Whether the clock at `now_ms` has closed this candle of `interval`.
    pub fn is_due(&self, interval: Interval, now_ms: i64, grace_ms: i64) -> bool {
        now_ms >= self.start_ms + interval.millis() + grace_ms
    }
}

/// How candles are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandleConfig {
    /// Closed candles kept per symbol and interval (`--candle-history`).
    pub history: usize,
    /// How long after its end an interval still takes ticks
    /// (`--candle-grace-ms`).
    pub grace_ms: i64,
}

impl Default for CandleConfig {
    /// 1,000 closed candles, 500 ms of grace.
    fn default() -> Self {
        Self {
            history: MAX_CANDLE_PAGE,
            grace_ms: 500,
        }
    }
}

/// What a tick did to one interval's candles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Applied {
    /// It opened a new candle; `closed` is the previous one, when the tick
    /// closed it (rather than the clock earlier).
    Opened {
        /// The candle the tick closed, if the clock had not closed it already.
        closed: Option<Candle>,
    },
    /// It changed the current candle.
    Updated,
    /// Its interval is closed: nothing changed.
    Late,
}

/// One symbol's candles of one interval: the current one and the closed ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CandleSeries {
    /// The open candle, when its interval has had a tick.
    pub current: Option<Candle>,
    /// Closed candles, oldest first.
    pub closed: VecDeque<Candle>,
    /// Start of the newest closed interval (kept when `closed` is trimmed to
    /// nothing, so a late tick is still recognised).
    pub closed_through: Option<i64>,
}

impl CandleSeries {
    /// Closes the current candle if the clock at `now_ms` has passed its end
    /// plus the grace; returns it when it did.
    pub fn close_due(
        &mut self,
        interval: Interval,
        now_ms: i64,
        config: &CandleConfig,
    ) -> Option<Candle> {
        let due = self
            .current
            .filter(|c| c.is_due(interval, now_ms, config.grace_ms))?;
        self.current = None;
        self.push_closed(due, config);
        Some(due)
    }

    fn push_closed(&mut self, candle: Candle, config: &CandleConfig) {
        self.closed_through = Some(candle.start_ms);
        self.closed.push_back(candle);
        while self.closed.len() > config.history {
            self.closed.pop_front();
        }
    }

    /// Applies `tick` at clock `now_ms` (see the module's rules). Candles the
    /// clock closed before it are closed first (not reported here; see
    /// [`CandleSeries::close_due`]).
    pub fn apply(
        &mut self,
        interval: Interval,
        tick: &Tick,
        now_ms: i64,
        config: &CandleConfig,
    ) -> Applied {
        self.close_due(interval, now_ms, config);
        let start = interval.start_of(tick.timestamp);
        let ended_by_clock = now_ms >= start + interval.millis() + config.grace_ms;
        let behind_closed = self.closed_through.is_some_and(|c| start <= c);
        match self.current.as_mut() {
            Some(c) if start < c.start_ms => Applied::Late,
            _ if ended_by_clock || behind_closed => Applied::Late,
            Some(c) if start == c.start_ms => {
                c.take(tick);
                Applied::Updated
            }
            _ => {
                let closed = self.current.take();
                if let Some(c) = closed {
                    self.push_closed(c, config);
                }
                self.current = Some(Candle::opened_by(tick, start));
                Applied::Opened { closed }
            }
        }
    }

    /// The last `limit` candles, oldest first, the current one last; each
    /// with whether it is closed. Close what is due (`close_due`) first.
    pub fn last(&self, limit: usize) -> Vec<(Candle, bool)> {
        let current = self.current.map(|c| (c, false));
        let room = limit.saturating_sub(usize::from(current.is_some()));
        let skip = self.closed.len().saturating_sub(room);
        self.closed
            .iter()
            .skip(skip)
            .map(|c| (*c, true))
            .chain(current)
            .take(limit)
            .collect()
    }
}

/// One symbol's candles, one [`CandleSeries`] per [`Interval`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SymbolCandles {
    /// Indexed by [`Interval::index`].
    pub series: [CandleSeries; 5],
}

impl SymbolCandles {
    /// Applies `tick` to every interval; returns the intervals for which it
    /// was late, as a bit set (bit [`Interval::index`]).
    pub fn apply(&mut self, tick: &Tick, now_ms: i64, config: &CandleConfig) -> u8 {
        let mut late = 0;
        for i in Interval::ALL {
            if self.series[i.index()].apply(i, tick, now_ms, config) == Applied::Late {
                late |= 1 << i.index();
            }
        }
        late
    }

    /// The series of `interval`.
    pub fn series(&self, interval: Interval) -> &CandleSeries {
        &self.series[interval.index()]
    }

    /// The series of `interval`, to change.
    pub fn series_mut(&mut self, interval: Interval) -> &mut CandleSeries {
        &mut self.series[interval.index()]
    }
}

/// Writes `"start":"…","open":…,"high":…,"low":…,"close":…,"volume":…,
/// "ticks":N,"closed":B` (no braces): the fields of a candle on the wire.
pub fn push_candle_fields(out: &mut String, candle: &Candle, closed: bool) {
    out.push_str(r#""start":""#);
    out.push_str(&Timestamp(candle.start_ms.saturating_mul(1_000_000)).to_rfc3339());
    out.push('"');
    for (name, v) in [
        ("open", candle.open),
        ("high", candle.high),
        ("low", candle.low),
        ("close", candle.close),
        ("volume", candle.volume),
    ] {
        let _ = write!(out, r#","{name}":"#);
        if v.is_finite() {
            let _ = write!(out, "{v}");
        } else {
            out.push_str("null");
        }
    }
    let _ = write!(out, r#","ticks":{},"closed":{closed}"#, candle.ticks);
}

/// Encodes a candle update for clients:
/// `{"type":"candle","symbol":"AAPL","interval":"1m","start":"2026-12-02T15:04:00Z",
/// "open":…,"high":…,"low":…,"close":…,"volume":…,"ticks":N,"closed":false}`.
pub fn encode_candle(symbol: &Symbol, interval: Interval, candle: &Candle, closed: bool) -> String {
    let mut out = String::with_capacity(200);
    out.push_str(r#"{"type":"candle","symbol":""#);
    out.push_str(symbol.as_str());
    out.push_str(r#"","interval":""#);
    out.push_str(interval.as_str());
    out.push_str(r#"","#);
    push_candle_fields(&mut out, candle, closed);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: CandleConfig = CandleConfig {
        history: 3,
        grace_ms: 500,
    };

    fn at(rfc3339: &str) -> Timestamp {
        Timestamp::parse_rfc3339(rfc3339).unwrap()
    }

    fn ms(rfc3339: &str) -> i64 {
        at(rfc3339).0 / 1_000_000
    }

    fn tick(ts: &str, price: f64, volume: Option<f64>, seq: u64) -> Tick {
        let mut t = Tick::new(Symbol::new("AAPL").unwrap(), price, at(ts), volume).unwrap();
        t.seq = seq;
        t
    }

    #[test]
    fn exact_ohlc_volume_and_count_for_a_known_sequence() {
        let mut c = SymbolCandles::default();
        let seq = [
            ("2026-12-02T15:04:00.000Z", 100.0, Some(1.0)),
            ("2026-12-02T15:04:10Z", 104.5, Some(2.5)),
            ("2026-12-02T15:04:20Z", 98.25, None),
            ("2026-12-02T15:04:30Z", 101.0, Some(0.5)),
            ("2026-12-02T15:04:59.999Z", 102.75, Some(3.0)),
        ];
        for (i, (ts, p, v)) in seq.into_iter().enumerate() {
            // Each tick accepted 100 ms after its timestamp: none is late.
            let now = ms(ts) + 100;
            assert_eq!(c.apply(&tick(ts, p, v, i as u64 + 1), now, &CONFIG), 0);
        }
        let m1 = c.series(Interval::M1).current.unwrap();
        assert_eq!(
            m1,
            Candle {
                start_ms: ms("2026-12-02T15:04:00Z"),
                open: 100.0,
                high: 104.5,
                low: 98.25,
                close: 102.75,
                volume: 7.0,
                ticks: 5,
                seq: 5,
            }
        );
        // The same ticks make one candle of 5m, 1h and 1d too.
        for i in [Interval::M5, Interval::H1, Interval::D1] {
            let k = c.series(i).current.unwrap();
            assert_eq!(
                (k.open, k.high, k.low, k.close),
                (100.0, 104.5, 98.25, 102.75)
            );
            assert_eq!((k.volume, k.ticks), (7.0, 5));
        }
        // 1s: one candle per second; the last is open, four are closed but
        // only three kept (history 3).
        let s1 = c.series(Interval::S1);
        assert_eq!(s1.current.unwrap().start_ms, ms("2026-12-02T15:04:59Z"));
        assert_eq!(s1.closed.len(), 3);
        assert_eq!(s1.closed[0].start_ms, ms("2026-12-02T15:04:10Z"));
        let json: serde_json::Value = serde_json::from_str(&encode_candle(
            &Symbol::new("AAPL").unwrap(),
            Interval::M1,
            &m1,
            false,
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"candle","symbol":"AAPL","interval":"1m",
                "start":"2026-12-02T15:04:00Z","open":100,"high":104.5,"low":98.25,
                "close":102.75,"volume":7,"ticks":5,"closed":false})
        );
    }

    #[test]
    fn utc_day_boundary() {
        let mut c = SymbolCandles::default();
        let now = ms("2026-12-03T00:00:00.100Z");
        assert_eq!(
            c.apply(
                &tick("2026-12-02T23:59:59.999Z", 10.0, None, 1),
                now,
                &CONFIG
            ),
            0
        );
        assert_eq!(
            c.apply(
                &tick("2026-12-03T00:00:00.000Z", 11.0, None, 2),
                now,
                &CONFIG
            ),
            0
        );
        for i in Interval::ALL {
            let s = c.series(i);
            let closed = s.closed.back().copied().unwrap();
            let current = s.current.unwrap();
            assert_eq!(
                closed.start_ms + i.millis(),
                ms("2026-12-03T00:00:00Z"),
                "{i}"
            );
            assert_eq!((closed.close, closed.ticks), (10.0, 1), "{i}");
            assert_eq!(current.start_ms, ms("2026-12-03T00:00:00Z"), "{i}");
            assert_eq!((current.open, current.ticks), (11.0, 1), "{i}");
        }
        assert_eq!(
            Interval::D1.start_of(at("2026-12-02T23:59:59.999Z")),
            ms("2026-12-02T00:00:00Z")
        );
        // Before 1970: floor, not truncation towards zero.
        assert_eq!(Interval::S1.start_of(Timestamp(-1)), -1_000);
    }

    #[test]
    fn the_clock_closes_without_a_tick_and_a_late_tick_does_not_reopen() {
        let mut s = CandleSeries::default();
        let m1 = Interval::M1;
        let start = ms("2026-12-02T15:04:00Z");
        let t = tick("2026-12-02T15:04:30Z", 5.0, Some(1.0), 1);
        assert!(matches!(
            s.apply(m1, &t, start + 30_000, &CONFIG),
            Applied::Opened { closed: None }
        ));
        // Within the grace: still open, and a tick of it is taken.
        assert_eq!(s.close_due(m1, start + 60_499, &CONFIG), None);
        let inside = tick("2026-12-02T15:04:59Z", 6.0, None, 2);
        assert_eq!(
            s.apply(m1, &inside, start + 60_499, &CONFIG),
            Applied::Updated
        );
        // End plus grace: closed by the clock, with no tick after it.
        let closed = s.close_due(m1, start + 60_500, &CONFIG).unwrap();
        assert_eq!((closed.open, closed.close, closed.ticks), (5.0, 6.0, 2));
        assert_eq!(s.current, None);
        assert_eq!(s.last(10), vec![(closed, true)]);
        // A tick of the closed interval is late and changes nothing.
        let late = tick("2026-12-02T15:04:59.900Z", 99.0, Some(9.0), 3);
        assert_eq!(s.apply(m1, &late, start + 60_600, &CONFIG), Applied::Late);
        assert_eq!(s.last(10), vec![(closed, true)]);
        // A tick of an interval that ended long ago, never opened: late too.
        let old = tick("2026-12-02T15:01:00Z", 1.0, None, 4);
        assert_eq!(s.apply(m1, &old, start + 60_600, &CONFIG), Applied::Late);
        // The next interval opens normally.
        let next = tick("2026-12-02T15:05:00.100Z", 7.0, None, 5);
        assert!(matches!(
            s.apply(m1, &next, start + 60_600, &CONFIG),
            Applied::Opened { closed: None }
        ));
        // A tick older than the current candle is late even before the clock
        // closes its interval (a later tick closed it).
        let mut s = CandleSeries::default();
        let now = start + 61_000;
        s.apply(
            m1,
            &tick("2026-12-02T15:05:00Z", 1.0, None, 1),
            now,
            &CONFIG,
        );
        assert_eq!(
            s.apply(
                m1,
                &tick("2026-12-02T15:04:59Z", 2.0, None, 2),
                start + 60_100,
                &CONFIG
            ),
            Applied::Late
        );
    }

    #[test]
    fn a_later_tick_closes_and_last_pages_from_the_end() {
        let mut s = CandleSeries::default();
        let s1 = Interval::S1;
        let base = ms("2026-12-02T15:04:00Z");
        for i in 0..5 {
            let t = Tick::new(
                Symbol::new("AAPL").unwrap(),
                1.0 + i as f64,
                Timestamp((base + i * 1_000) * 1_000_000),
                None,
            )
            .unwrap();
            s.apply(s1, &t, base + i * 1_000, &CONFIG);
        }
        assert_eq!(s.closed.len(), 3, "history bound");
        let page = s.last(2);
        assert_eq!(page.len(), 2);
        assert_eq!((page[0].0.open, page[0].1), (4.0, true));
        assert_eq!((page[1].0.open, page[1].1), (5.0, false));
        assert_eq!(s.last(100).len(), 4);
        assert_eq!(s.last(0), vec![]);
    }

    #[test]
    fn intervals_parse_by_name() {
        for i in Interval::ALL {
            assert_eq!(i.as_str().parse::<Interval>(), Ok(i));
        }
        assert!("2m".parse::<Interval>().is_err());
        assert!("1M".parse::<Interval>().is_err());
    }
}
