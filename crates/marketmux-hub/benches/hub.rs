//! Hub hot path: one tick fanned out to N subscribers, churn, and encoding.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use marketmux_core::{encode_tick, Symbol, Tick, Timestamp};
use marketmux_hub::{HubConfig, QueueLimits, SymbolHub};

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
                hub.subscribe(sym, &q);
                q
            })
            .collect();
        let tick = Tick::new(sym, 150.25, Timestamp::now(), None).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0u32;
            b.iter(|| {
                hub.publish(&tick);
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
            hub.subscribe(sym, &q);
            q
        })
        .collect();
    let q = hub.new_client(u64::MAX, QueueLimits::default());
    c.bench_function("subscribe_unsubscribe", |b| {
        b.iter(|| {
            hub.subscribe(sym, &q);
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

criterion_group!(benches, fan_out, churn, encoding);
criterion_main!(benches);
