//! Candle building where `seq` is assigned: the cost per accepted tick of
//! moving one symbol's candles of all five intervals, and of encoding one
//! candle update for clients (once per change per node).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use marketmux_core::candle::encode_candle;
use marketmux_core::{CandleConfig, Interval, Symbol, SymbolCandles, Tick, Timestamp};

/// Ticks 10 ms apart from a whole day: a new 1s candle every 100 ticks.
fn ticks(n: usize) -> Vec<Tick> {
    let symbol = Symbol::new("AAPL").unwrap();
    let start_ms: i64 = 1_764_633_600_000;
    (0..n)
        .map(|i| {
            let price = 150.0 + ((i * 7919) % 200) as f64 / 100.0;
            let mut t = Tick::new(
                symbol,
                price,
                Timestamp((start_ms + i as i64 * 10) * 1_000_000),
                Some(10.0),
            )
            .unwrap();
            t.seq = i as u64 + 1;
            t
        })
        .collect()
}

fn apply(c: &mut Criterion) {
    let config = CandleConfig::default();
    let all = ticks(100_000);
    let mut group = c.benchmark_group("candles");
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_one_tick_5_intervals", |b| {
        let mut candles = SymbolCandles::default();
        let mut i = 0usize;
        b.iter(|| {
            let t = &all[i % all.len()];
            if i.is_multiple_of(all.len()) {
                candles = SymbolCandles::default();
            }
            let now = t.timestamp.0 / 1_000_000 + 5;
            i += 1;
            std::hint::black_box(candles.apply(t, now, &config))
        })
    });
    let symbol = Symbol::new("AAPL").unwrap();
    let mut candles = SymbolCandles::default();
    for t in &all[..1000] {
        candles.apply(t, t.timestamp.0 / 1_000_000, &config);
    }
    let current = candles.series(Interval::M1).current.unwrap();
    group.bench_function("encode_one_update", |b| {
        b.iter(|| std::hint::black_box(encode_candle(&symbol, Interval::M1, &current, false)))
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
