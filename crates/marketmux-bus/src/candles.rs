//! Candles where `seq` is assigned: what a candle read returns
//! ([`CandlePage`]) and the count of late ticks on `/metrics`.
//!
//! Both buses build candles as they number ticks, with the rules of
//! [`marketmux_core::candle`]: the in-process bus in [`crate::streams`], the
//! Redis bus in its accept script ([`crate::redis::script`]), so every node
//! reads the same candles.

use marketmux_core::{Candle, Interval};

/// The series counting ticks that came after their candle closed.
pub const LATE_TICKS: &str = "marketmux_candle_late_ticks_total";

/// One page of a symbol's candles of one interval: the last ones, oldest
/// first, the current (open) one last when there is one; each with whether
/// it is closed.
pub type CandlePage = Vec<(Candle, bool)>;

/// Counts a tick that was late for each interval of `late` (a bit set by
/// [`Interval::index`]). Touches the recorder only for a late tick.
pub fn count_late(late: u8) {
    if late == 0 {
        return;
    }
    for i in Interval::ALL {
        if late & (1 << i.index()) != 0 {
            metrics::counter!(LATE_TICKS, "interval" => i.as_str()).increment(1);
        }
    }
}

/// Makes the late-tick series show at 0 before the first late tick.
pub fn register() {
    metrics::describe_counter!(
        LATE_TICKS,
        "Ticks accepted after their candle's interval closed (by a later tick or by the clock); they change no candle of that interval."
    );
    for i in Interval::ALL {
        metrics::counter!(LATE_TICKS, "interval" => i.as_str()).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn late_ticks_are_counted_per_interval() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            register();
            count_late(0);
            count_late((1 << Interval::S1.index()) | (1 << Interval::D1.index()));
            count_late(1 << Interval::S1.index());
        });
        let mut counts: Vec<(String, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == LATE_TICKS)
            .filter_map(|(k, _, _, v)| match v {
                DebugValue::Counter(n) => {
                    let label = k.key().labels().next()?.value().to_owned();
                    Some((label, n))
                }
                _ => None,
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                ("1d".to_owned(), 1),
                ("1h".to_owned(), 0),
                ("1m".to_owned(), 0),
                ("1s".to_owned(), 2),
                ("5m".to_owned(), 0),
            ]
        );
    }
}
