//! One stream per symbol on a real Redis Cluster started by the test (three
//! masters on free ports, `redis-cli --cluster create`), with sharded pub/sub:
//! symbols spread over every master, each symbol's script call touching its
//! keys in one slot; two nodes get the same ticks and `seq`s; `open`,
//! history and duplicates work there too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::redis::{KeySpace, RedisPublisher};
use marketmux_bus::{HistoryPage, Origin, PriceStore, RedisBus, RedisConfig, TickPublisher};
use marketmux_core::{Position, Symbol, Tick, Timestamp};
use marketmux_test_support::OwnRedisCluster;
use tokio::sync::mpsc;

type Received = mpsc::UnboundedReceiver<Tick>;

async fn node(config: RedisConfig) -> (Arc<RedisBus>, Received) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = RedisBus::connect(
        config,
        Arc::new(move |ticks: &[Tick]| {
            for t in ticks {
                let _ = tx.send(*t);
            }
        }),
        Arc::new(|_: &Symbol| true),
    )
    .await
    .unwrap();
    (bus, rx)
}

async fn recv_n(rx: &mut Received, n: usize) -> Vec<Tick> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(t)) => got.push(t),
            _ => panic!("{} of {n} ticks within 10 s", got.len()),
        }
    }
    got
}

/// `(symbol, seq)` of each tick, per symbol in arrival order.
fn by_symbol(ticks: &[Tick]) -> HashMap<Symbol, Vec<(u64, f64)>> {
    let mut m: HashMap<Symbol, Vec<(u64, f64)>> = HashMap::new();
    for t in ticks {
        m.entry(t.symbol).or_default().push((t.seq, t.price));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_work_across_the_masters_of_a_cluster() {
    let cluster = OwnRedisCluster::start().await;
    let config = RedisConfig {
        url: cluster.url(),
        prefix: format!("mmtest:cluster:{}:", Timestamp::now().0),
        sharded: true,
        ..RedisConfig::default()
    };
    let keys = KeySpace::new(&config.prefix, true).unwrap();
    let symbols: Vec<Symbol> = (0..24)
        .map(|i| Symbol::new(&format!("C{i}")).unwrap())
        .collect();
    // Three masters split the 16,384 slots in thirds: every third is used.
    let thirds: HashSet<u16> = symbols
        .iter()
        .map(|s| fred::util::redis_keyslot(keys.price_key(s).as_bytes()) / 5462)
        .collect();
    assert_eq!(thirds.len(), 3, "symbols on every master");

    let (a, mut rx_a) = node(config.clone()).await;
    let (b, mut rx_b) = node(config.clone()).await;
    for s in &symbols {
        a.follow(*s);
        b.follow(*s);
    }
    for s in &symbols {
        assert_eq!(a.open(s, None).await.unwrap().head.seq, 0);
        b.open(s, None).await.unwrap();
    }
    let publisher = RedisPublisher::connect(&config).await.unwrap();
    let batch = |round: u32| -> Vec<Tick> {
        symbols
            .iter()
            .map(|s| Tick::new(*s, f64::from(round + 1), Timestamp::now(), None).unwrap())
            .collect()
    };
    for round in 0..4 {
        if round % 2 == 0 {
            a.publish(batch(round)).await.unwrap();
        } else {
            publisher.publish(batch(round)).await.unwrap();
        }
    }
    let n = symbols.len() * 4;
    let (got_a, got_b) = (recv_n(&mut rx_a, n).await, recv_n(&mut rx_b, n).await);
    let (per_a, per_b) = (by_symbol(&got_a), by_symbol(&got_b));
    assert_eq!(per_a, per_b, "both nodes got the same ticks and seqs");
    for s in &symbols {
        assert_eq!(per_a[s], [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)], "{s}");
    }

    // Recovery and history on every master.
    for s in &symbols {
        let epoch = got_a.iter().find(|t| t.symbol == *s).unwrap().epoch;
        let open = b.open(s, Some(Position { epoch, seq: 2 })).await.unwrap();
        assert_eq!(open.head, Position { epoch, seq: 4 });
        let replay: Vec<u64> = open.replay.unwrap().iter().map(|t| t.seq).collect();
        assert_eq!(replay, [3, 4], "{s}");
        let HistoryPage::Ticks { ticks, .. } = a.history(s, None, 2).await.unwrap() else {
            panic!("{s}: no history")
        };
        assert_eq!(ticks.iter().map(|t| t.seq).collect::<Vec<_>>(), [3, 4]);
    }

    // A redelivered record is dropped on whichever master holds its symbol.
    let origin = |sequence| {
        Some(Origin {
            producer_id: 5,
            sequence,
        })
    };
    let with_origin: Vec<(Tick, Option<Origin>)> =
        batch(9).into_iter().map(|t| (t, origin(1))).collect();
    assert_eq!(
        publisher.publish_from(with_origin.clone()).await.unwrap(),
        0
    );
    assert_eq!(
        publisher.publish_from(with_origin).await.unwrap(),
        symbols.len()
    );
    let more = recv_n(&mut rx_a, symbols.len()).await;
    assert!(more.iter().all(|t| t.seq == 5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx_a.try_recv().is_err(), "a duplicate was published");
    a.shutdown().await;
    b.shutdown().await;
}
