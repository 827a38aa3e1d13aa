//! [`SymbolStreams`]: each symbol's stream kept in memory (the `dev` role's
//! in-process bus): its epoch and last `seq`, the ticks its history keeps,
//! and the last sequence accepted from each producer.
//!
//! Bounds: history holds at most [`HistoryConfig::size`] ticks per symbol,
//! none accepted longer than [`HistoryConfig::ttl`] ago; at most
//! [`MAX_PRODUCERS`] producers are remembered per symbol (past it the one
//! heard from least recently is forgotten), each for [`PRODUCER_TTL`].
//!
//! Each stream also builds its symbol's candles as ticks are numbered
//! ([`SymbolCandles`], at most [`CandleConfig::history`] closed ones per
//! interval), with this process's clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use marketmux_core::{CandleConfig, Epoch, Interval, Position, Symbol, SymbolCandles, Tick};

use crate::candles::{self, CandlePage};
use crate::stream::{HistoryConfig, HistoryPage, Origin, StreamOpen};

/// Most producers remembered per symbol for recognising redeliveries.
pub const MAX_PRODUCERS: usize = 64;

/// How long a producer's last sequence is remembered after its last tick of
/// a symbol (a redelivery after a failover comes within minutes).
pub const PRODUCER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One symbol's stream.
#[derive(Debug, Clone)]
pub(crate) struct SymbolStream {
    pub(crate) epoch: Epoch,
    /// The last assigned seq (0: none yet).
    pub(crate) seq: u64,
    /// Kept ticks in increasing (consecutive) seq, with when each was accepted (ms).
    pub(crate) kept: VecDeque<(u64, Tick)>,
    /// Producer id → (last accepted sequence, when, ms).
    producers: HashMap<u64, (u64, u64)>,
    /// The symbol's candles, built from its numbered ticks.
    pub(crate) candles: SymbolCandles,
}

impl SymbolStream {
    pub(crate) fn new(epoch: Epoch, seq: u64) -> Self {
        Self {
            epoch,
            seq,
            kept: VecDeque::new(),
            producers: HashMap::new(),
            candles: SymbolCandles::default(),
        }
    }

    /// The seq of the oldest kept tick (`seq + 1` when none is kept).
    fn first_kept(&self) -> u64 {
        self.kept.front().map_or(self.seq + 1, |(_, t)| t.seq)
    }

    /// Drops kept ticks past the count or older than the age bound.
    fn trim(&mut self, history: &HistoryConfig, now: u64) {
        let oldest = now.saturating_sub(history.ttl.as_millis() as u64);
        while self.kept.len() > history.size
            || self.kept.front().is_some_and(|(at, _)| *at < oldest)
        {
            self.kept.pop_front();
        }
    }

    /// False (and nothing remembered) when `origin` was already accepted.
    fn admit(&mut self, origin: Option<Origin>, now: u64) -> bool {
        let Some(o) = origin.filter(|o| o.producer_id != 0 && o.sequence != 0) else {
            return true;
        };
        let expired = now.saturating_sub(PRODUCER_TTL.as_millis() as u64);
        match self.producers.get(&o.producer_id) {
            Some(&(last, at)) if at >= expired && o.sequence <= last => return false,
            _ => {}
        }
        if !self.producers.contains_key(&o.producer_id) && self.producers.len() >= MAX_PRODUCERS {
            self.producers.retain(|_, (_, at)| *at >= expired);
            if self.producers.len() >= MAX_PRODUCERS {
                let stalest = self.producers.iter().min_by_key(|(_, (_, at))| *at);
                if let Some((&id, _)) = stalest {
                    self.producers.remove(&id);
                }
            }
        }
        self.producers.insert(o.producer_id, (o.sequence, now));
        true
    }
}

/// Every symbol's stream, in memory. Not synchronised: the owner holds it
/// under the lock that also orders delivery.
#[derive(Debug, Default)]
pub struct SymbolStreams {
    history: HistoryConfig,
    candles: CandleConfig,
    streams: HashMap<Symbol, SymbolStream>,
}

impl SymbolStreams {
    /// No stream yet; history bounded by `history`, candles kept as by default.
    pub fn new(history: HistoryConfig) -> Self {
        Self {
            history,
            candles: CandleConfig::default(),
            streams: HashMap::new(),
        }
    }

    /// Keeps candles as `config` says.
    pub fn with_candles(mut self, config: CandleConfig) -> Self {
        self.candles = config;
        self
    }

    /// How candles are kept.
    pub fn candle_config(&self) -> CandleConfig {
        self.candles
    }

    /// The history bounds.
    pub fn history_config(&self) -> HistoryConfig {
        self.history
    }

    /// Accepts `tick`: its symbol's next seq, kept in history. `None` when
    /// `origin` was already accepted (a duplicate: no seq, nothing kept).
    pub fn accept(&mut self, tick: &Tick, origin: Option<Origin>) -> Option<Tick> {
        let now = now_ms();
        let history = self.history;
        let stream = self
            .streams
            .entry(tick.symbol)
            .or_insert_with(|| SymbolStream::new(Epoch::random(), 0));
        if !stream.admit(origin, now) {
            return None;
        }
        stream.seq += 1;
        let mut tick = tick.sequenced(Position {
            epoch: stream.epoch,
            seq: stream.seq,
        });
        tick.candles_late = stream.candles.apply(&tick, now as i64, &self.candles);
        candles::count_late(tick.candles_late);
        if history.enabled() {
            stream.kept.push_back((now, tick));
        }
        stream.trim(&history, now);
        Some(tick)
    }

    /// The head of `symbol`'s stream (created, with a new epoch, if it has
    /// none) and the replay after `since` when it can be served.
    pub fn open(
        &mut self,
        symbol: &Symbol,
        since: Option<Position>,
        latest: Option<Tick>,
    ) -> StreamOpen {
        let history = self.history;
        let stream = self
            .streams
            .entry(*symbol)
            .or_insert_with(|| SymbolStream::new(Epoch::random(), 0));
        stream.trim(&history, now_ms());
        let head = Position {
            epoch: stream.epoch,
            seq: stream.seq,
        };
        let replay = since
            .filter(|p| p.epoch == head.epoch && p.seq <= head.seq)
            .filter(|p| p.seq == head.seq || stream.first_kept() <= p.seq + 1)
            .map(|p| kept_after(stream, p.seq, usize::MAX));
        StreamOpen {
            head,
            latest,
            replay,
        }
    }

    /// One page of `symbol`'s history (`limit` already bounded by the caller).
    pub fn history(&mut self, symbol: &Symbol, since: Option<u64>, limit: usize) -> HistoryPage {
        let history = self.history;
        let Some(stream) = self.streams.get_mut(symbol) else {
            return HistoryPage::Unknown;
        };
        stream.trim(&history, now_ms());
        let epoch = stream.epoch;
        match since {
            Some(s) if s < stream.seq && s + 1 < stream.first_kept() => HistoryPage::Gone { epoch },
            Some(s) => HistoryPage::Ticks {
                epoch,
                ticks: kept_after(stream, s, limit),
            },
            None => {
                let skip = stream.kept.len().saturating_sub(limit);
                HistoryPage::Ticks {
                    epoch,
                    ticks: stream.kept.iter().skip(skip).map(|(_, t)| *t).collect(),
                }
            }
        }
    }
}

impl SymbolStreams {
    /// The last `limit` candles of `symbol` for `interval`, oldest first, the
    /// current one last; `None` for a symbol with no tick yet. Closes the
    /// current candle first when the clock has passed its end plus the grace.
    pub fn candles(
        &mut self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Option<CandlePage> {
        let config = self.candles;
        let stream = self.streams.get_mut(symbol).filter(|s| s.seq > 0)?;
        let series = stream.candles.series_mut(interval);
        series.close_due(interval, now_ms() as i64, &config);
        Some(series.last(limit))
    }

    /// Every stream, for saving.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Symbol, &SymbolStream)> {
        self.streams.iter()
    }

    /// Puts back a saved stream (its kept ticks trimmed to today's bounds).
    pub(crate) fn restore(&mut self, symbol: Symbol, mut stream: SymbolStream) {
        stream.trim(&self.history, now_ms());
        for series in &mut stream.candles.series {
            while series.closed.len() > self.candles.history {
                series.closed.pop_front();
            }
        }
        if !self.history.enabled() {
            stream.kept.clear();
        }
        self.streams.insert(symbol, stream);
    }
}

/// The first `limit` kept ticks with seq above `after`.
fn kept_after(stream: &SymbolStream, after: u64, limit: usize) -> Vec<Tick> {
    // Kept seqs are consecutive: index arithmetic, no search.
    let skip = (after + 1).saturating_sub(stream.first_kept()) as usize;
    stream
        .kept
        .iter()
        .skip(skip)
        .take(limit)
        .map(|(_, t)| *t)
        .collect()
}

#[cfg(test)]
mod tests {
    use marketmux_core::Timestamp;

    use super::*;

    fn tick(s: Symbol, price: f64) -> Tick {
        Tick::new(s, price, Timestamp::now(), None).unwrap()
    }

    fn seqs(ticks: &[Tick]) -> Vec<u64> {
        ticks.iter().map(|t| t.seq).collect()
    }

    #[test]
    fn numbers_keeps_and_trims_by_count() {
        let s = Symbol::new("AAPL").unwrap();
        let mut st = SymbolStreams::new(HistoryConfig {
            size: 3,
            ttl: Duration::from_secs(60),
        });
        let accepted: Vec<Tick> = (1..=5)
            .map(|i| st.accept(&tick(s, i as f64), None).unwrap())
            .collect();
        assert_eq!(seqs(&accepted), [1, 2, 3, 4, 5]);
        let epoch = accepted[0].epoch;
        assert!(accepted.iter().all(|t| t.epoch == epoch && epoch.is_set()));
        let at = |seq| Some(Position { epoch, seq });
        let open = st.open(&s, at(2), None);
        assert_eq!(open.head, Position { epoch, seq: 5 });
        assert_eq!(seqs(&open.replay.unwrap()), [3, 4, 5]);
        assert_eq!(st.open(&s, at(1), None).replay, None, "tick 2 is gone");
        assert_eq!(st.open(&s, at(5), None).replay, Some(vec![]));
        assert_eq!(st.open(&s, at(6), None).replay, None, "above the head");
        let other = Some(Position {
            epoch: Epoch::from_raw(epoch.raw() + 1),
            seq: 4,
        });
        assert_eq!(st.open(&s, other, None).replay, None);
        match st.history(&s, Some(3), 1) {
            HistoryPage::Ticks { ticks, .. } => assert_eq!(seqs(&ticks), [4]),
            other => panic!("{other:?}"),
        }
        match st.history(&s, None, 2) {
            HistoryPage::Ticks { ticks, .. } => assert_eq!(seqs(&ticks), [4, 5]),
            other => panic!("{other:?}"),
        }
        assert_eq!(st.history(&s, Some(1), 10), HistoryPage::Gone { epoch });
        let unknown = Symbol::new("NOPE").unwrap();
        assert_eq!(st.history(&unknown, None, 10), HistoryPage::Unknown);
    }

    #[test]
    fn history_off_serves_only_the_head() {
        let s = Symbol::new("AAPL").unwrap();
        let mut st = SymbolStreams::new(HistoryConfig::OFF);
        let t = st.accept(&tick(s, 1.0), None).unwrap();
        let head = t.position();
        assert_eq!(st.open(&s, head, None).replay, Some(vec![]));
        let before = Some(Position {
            epoch: t.epoch,
            seq: 0,
        });
        assert_eq!(st.open(&s, before, None).replay, None);
    }

    #[test]
    fn duplicates_get_no_seq_and_producers_are_bounded() {
        let s = Symbol::new("AAPL").unwrap();
        let mut st = SymbolStreams::new(HistoryConfig::default());
        let from = |producer_id, sequence| {
            Some(Origin {
                producer_id,
                sequence,
            })
        };
        assert_eq!(st.accept(&tick(s, 1.0), from(7, 1)).unwrap().seq, 1);
        assert_eq!(st.accept(&tick(s, 1.0), from(7, 2)).unwrap().seq, 2);
        assert!(st.accept(&tick(s, 1.0), from(7, 2)).is_none());
        assert!(st.accept(&tick(s, 1.0), from(7, 1)).is_none());
        assert_eq!(st.accept(&tick(s, 1.0), from(8, 1)).unwrap().seq, 3);
        assert_eq!(st.accept(&tick(s, 1.0), None).unwrap().seq, 4);
        for p in 100..100 + MAX_PRODUCERS as u64 * 2 {
            assert!(st.accept(&tick(s, 1.0), from(p, 1)).is_some());
        }
        assert!(st.streams[&s].producers.len() <= MAX_PRODUCERS);
    }
}
