//! Hub hot path: a batch of ticks fanned out to N subscribers and written to
//! their sockets (`publish_batch`, what the bus calls), churn, encoding, and
//! a recovering client's replay of 1,000 ticks against the same 1,000 live.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use marketmux_core::{encode_tick, Epoch, Position, Symbol, Tick, Timestamp};
use marketmux_hub::{HubConfig, QueueLimits, StreamStart, SymbolHub};
use marketmux_test_support::FakeSocket;

fn hub() -> SymbolHub {
    SymbolHub::new(
        HubConfig::default(),
        Arc::new(|t: &Tick| Bytes::from(encode_tick(t))),
    )
}

/// Symbols of the fan-out bench; each client follows [`FOLLOWED`] of them.
const SYMBOLS: usize = 50;
const FOLLOWED: usize = 5;

/// `publish_batch` as the bus calls it, each client's frames written to its
/// socket by the hub (a fake socket that takes everything: what is measured
/// is the hub, not the kernel). Client `i` follows symbols `i + k * 10`
/// (mod 50), so a batch of 50 ticks, one per symbol, gives every client 5
/// frames in one write, and a batch of 1 reaches a tenth of the clients.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_batch");
    let symbols: Vec<Symbol> = (0..SYMBOLS)
        .map(|i| Symbol::new(&format!("S{i}")).expect("a valid symbol"))
        .collect();
    let epoch = Epoch::from_raw(7);
    for clients in [1usize, 100, 5_000] {
        let hub = hub();
        let sockets: Vec<_> = (0..clients)
            .map(|id| {
                let q = hub.new_client(id as u64, QueueLimits::default());
                let socket = FakeSocket::sink();
                q.attach_direct(socket.clone());
                for k in 0..FOLLOWED {
                    let sym = symbols[(id + k * (SYMBOLS / FOLLOWED)) % SYMBOLS];
                    hub.subscribe(sym, &q).expect("an unbounded hub");
                }
                (q, socket)
            })
            .collect();
        let mut seq = 0u64;
        for ticks in [1usize, 50] {
            let base: Vec<Tick> = symbols[..ticks]
                .iter()
                .map(|s| Tick::new(*s, 150.25, Timestamp::now(), Some(10.0)).expect("a tick"))
                .collect();
            // Numbered as the bus numbers them: every subscriber checks the seq.
            let mut next = || {
                seq += 1;
                base.iter()
                    .map(|t| t.sequenced(Position { epoch, seq }))
                    .collect::<Vec<_>>()
            };
            // The first tick of each stream comes with a notice of its epoch,
            // queued for the writer task: take it as the writer would.
            hub.publish_batch(&next());
            for (q, _) in &sockets {
                let _ = q.take_batch(VecDeque::new());
                let _ = q.take_batch(VecDeque::new());
            }
            let deliveries = hub.publish_batch(&next());
            assert!(
                sockets.iter().all(|(q, _)| q.queued_bytes() == 0),
                "every batch went out in direct writes"
            );
            group.throughput(Throughput::Elements(deliveries as u64));
            let id = BenchmarkId::new(format!("{ticks}_ticks"), clients);
            group.bench_function(id, |b| {
                b.iter_batched(
                    &mut next,
                    |batch| hub.publish_batch(&batch),
                    BatchSize::SmallInput,
                )
            });
        }
        let written: usize = sockets.iter().map(|(_, s)| s.writes()).sum();
        assert!(written > 0, "the hub wrote to the sockets");
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
                hub.publish_batch(std::slice::from_ref(t));
            }
            hub.unsubscribe(&sym, id);
            q.take_batch(VecDeque::new())
        })
    });
    group.finish();
}

criterion_group!(benches, fan_out, churn, encoding, replay);
criterion_main!(benches);
