//! Hub hot path: one tick fanned out to N subscribers, churn, encoding, and
//! a recovering client's replay of 1,000 ticks against the same 1,000 live.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use marketmux_core::{encode_tick, Epoch, Position, Symbol, Tick, Timestamp};
use marketmux_hub::{HubConfig, QueueLimits, StreamStart, SymbolHub};

fn hub() -> SymbolHub {
    SymbolHub::new(
        HubConfig::default(),
        Arc::new(|t: &Tick| Bytes::from(encode_tick(t))),
    )
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_one_tick");
    for n in [1usize, 100, 10_000] {
        let hub = hub();
        let sym = Symbol::new("AAPL").unwrap();
        let clients: Vec<_> = (0..n as u64)
            .map(|id| {
                let q = hub.new_client(id, QueueLimits::default());
                hub.subscribe(sym, &q).expect("an unbounded hub");
                q
            })
            .collect();
        let epoch = Epoch::from_raw(7);
        let mut seq = 0u64;
        let tick = Tick::new(sym, 150.25, Timestamp::now(), None).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0u32;
            b.iter(|| {
                // Numbered as the bus numbers them: every subscriber checks the seq.
                seq += 1;
                hub.publish(&tick.sequenced(Position { epoch, seq }));
                i += 1;
                // Drain like writers would, so queues stay under their bound.
                if i & 63 == 0 {
                    for q in &clients {
                        let _ = q.take_batch(VecDeque::new());
                    }
                }
            })
        });
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    let hub = hub();
    let sym = Symbol::new("AAPL").unwrap();
    // A crowd already on the topic, so churn exercises the removal path.
    let _crowd: Vec<_> = (0..1_000u64)
        .map(|id| {
            let q = hub.new_client(id, QueueLimits::default());
            hub.subscribe(sym, &q).expect("an unbounded hub");
            q
        })
        .collect();
    let q = hub.new_client(u64::MAX, QueueLimits::default());
    c.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            hub.subscribe(sym, &q).expect("an unbounded hub");
            hub.unsubscribe(&sym, q.id());
        })
    });
}

fn encoding(c: &mut Criterion) {
    let tick = Tick::new(
        Symbol::new("BINANCE:BTCUSDT").unwrap(),
        64_123.25,
        Timestamp::now(),
        Some(0.5),
    )
    .unwrap();
    c.bench_function("encode_tick", |b| b.iter(|| encode_tick(&tick)));
    let text = r#"{"action":"subscribe","symbols":["AAPL","MSFT","BINANCE:BTCUSDT"],"id":7}"#;
    c.bench_function("parse_client_request", |b| {
        b.iter(|| marketmux_core::ClientRequest::parse(text))
    });
}

/// 1,000 ticks to one client: replayed on subscribe (each encoded for it)
/// against published live (each encoded once, one subscriber).
fn replay(c: &mut Criterion) {
    const N: u64 = 1_000;
    let sym = Symbol::new("AAPL").unwrap();
    let epoch = Epoch::from_raw(7);
    let ticks: Vec<Tick> = (1..=N)
        .map(|seq| {
            Tick::new(
                sym,
                150.0 + seq as f64 / 100.0,
                Timestamp::now(),
                Some(10.0),
            )
            .unwrap()
            .sequenced(Position { epoch, seq })
        })
        .collect();
    let limits = QueueLimits {
        max_bytes: 1 << 20,
        ..QueueLimits::default()
    };
    let mut group = c.benchmark_group("one_client_1000_ticks");
    group.throughput(Throughput::Elements(N));
    group.bench_function("replayed", |b| {
        let hub = hub();
        let mut id = 0;
        b.iter(|| {
            id += 1;
            let q = hub.new_client(id, limits);
            hub.subscribe_held(sym, &q).expect("an unbounded hub");
            let since = Position { epoch, seq: 0 };
            let started = hub.start(
                &sym,
                &q,
                StreamStart::Replay {
                    since,
                    ticks: ticks.clone(),
                },
            );
            assert_eq!(started.replayed, N as usize);
            hub.unsubscribe(&sym, id);
            q.take_batch(VecDeque::new())
        })
    });
    group.bench_function("live", |b| {
        let hub = hub();
        let mut id = 0;
        b.iter(|| {
            id += 1;
            let q = hub.new_client(id, limits);
            hub.subscribe(sym, &q).expect("an unbounded hub");
            for t in &ticks {
                hub.publish(t);
            }
            hub.unsubscribe(&sym, id);
            q.take_batch(VecDeque::new())
        })
    });
    group.finish();
}

criterion_group!(benches, fan_out, churn, encoding, replay);
criterion_main!(benches);
