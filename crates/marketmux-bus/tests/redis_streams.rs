//! One stream per symbol on a real Redis (127.0.0.1:6379, or
//! MARKETMUX_TEST_REDIS_URL): `seq` assigned by the accept script, the same on
//! every node; duplicates dropped there; history trimmed by count and age;
//! `open` and history pages; a new epoch when Redis loses its data. Each test
//! works under its own key prefix and deletes its keys at the end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use marketmux_bus::redis::{KeySpace, RedisPriceStore, RedisPublisher};
use marketmux_bus::{
    HistoryConfig, HistoryPage, Origin, PriceStore, RedisBus, RedisConfig, TickPublisher,
};
use marketmux_core::{Epoch, Position, Symbol, Tick, Timestamp};
use marketmux_test_support::tick;
use marketmux_test_support::OwnRedis;
use tokio::sync::mpsc;

fn redis_url() -> String {
    std::env::var("MARKETMUX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn config(test: &str) -> RedisConfig {
    static N: AtomicU64 = AtomicU64::new(0);
    RedisConfig {
        url: redis_url(),
        prefix: format!(
            "mmtest:{test}:{}:{}:{}:",
            std::process::id(),
            Timestamp::now().0,
            N.fetch_add(1, Relaxed)
        ),
        unsubscribe_linger: Duration::from_millis(300),
        ..RedisConfig::default()
    }
}

async fn admin(config: &RedisConfig) -> Client {
    config.connect_client().await.unwrap_or_else(|e| {
        panic!(
            "these tests need a Redis server: {e}. Start one with `redis-server` \
             or point MARKETMUX_TEST_REDIS_URL at one"
        )
    })
}

async fn cleanup(admin: &Client, config: &RedisConfig, symbols: &[Symbol]) {
    let keys = KeySpace::new(&config.prefix, config.sharded).unwrap();
    let keys: Vec<String> = symbols.iter().flat_map(|s| keys.symbol_keys(s)).collect();
    let _: i64 = admin.del(keys).await.unwrap();
}

/// A command with one key and an integer answer (this build of fred has no
/// hash or list commands).
async fn int(admin: &Client, command: &'static str, key: String) -> i64 {
    admin
        .custom(
            fred::types::CustomCommand::new_static(command, None, false),
            vec![key],
        )
        .await
        .unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn seqs(ticks: &[Tick]) -> Vec<u64> {
    ticks.iter().map(|t| t.seq).collect()
}

type Received = mpsc::UnboundedReceiver<Tick>;

/// A gateway-style node: a bus whose handler forwards every tick.
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
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(t)) => got.push(t),
            _ => panic!("{} of {n} ticks within 5 s", got.len()),
        }
    }
    got
}

async fn publisher(config: &RedisConfig) -> RedisPublisher {
    RedisPublisher::connect(config).await.unwrap()
}

#[tokio::test]
async fn seq_is_assigned_once_and_every_node_sees_the_same() {
    let config = config("sameseq");
    let admin = admin(&config).await;
    let s = sym("AAPL");
    let (a, mut rx_a) = node(config.clone()).await;
    let (b, mut rx_b) = node(config.clone()).await;
    a.follow(s);
    b.follow(s);
    a.open(&s, None).await.unwrap();
    b.open(&s, None).await.unwrap();
    // Two publishers (a bridge and a gateway's ingest), interleaved.
    let p1 = publisher(&config).await;
    let p2 = publisher(&config).await;
    for round in 0..10 {
        p1.publish(vec![tick("AAPL", 1.0 + f64::from(round)); 3])
            .await
            .unwrap();
        b.publish(vec![tick("AAPL", 100.0 + f64::from(round)); 2])
            .await
            .unwrap();
        p2.publish(vec![tick("AAPL", 200.0 + f64::from(round))])
            .await
            .unwrap();
    }
    let on_a = recv_n(&mut rx_a, 60).await;
    let on_b = recv_n(&mut rx_b, 60).await;
    assert_eq!(seqs(&on_a), (1..=60).collect::<Vec<_>>());
    assert_eq!(on_a, on_b, "both nodes got the same ticks, numbered alike");
    let epoch = on_a[0].epoch;
    assert!(epoch.is_set() && on_a.iter().all(|t| t.epoch == epoch));
    let latest = a.latest(&s).await.unwrap().unwrap();
    assert_eq!((latest.seq, latest.epoch), (60, epoch));
    a.shutdown().await;
    b.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}

#[tokio::test]
async fn a_redelivered_tick_gets_no_seq_and_reaches_nobody() {
    let config = config("dups");
    let admin = admin(&config).await;
    let s = sym("MSFT");
    let (node, mut rx) = node(config.clone()).await;
    node.follow(s);
    node.open(&s, None).await.unwrap();
    let p = publisher(&config).await;
    let from = |producer_id, sequence| {
        Some(Origin {
            producer_id,
            sequence,
        })
    };
    let batch = vec![
        (tick("MSFT", 1.0), from(u64::MAX, 1)),
        (tick("MSFT", 2.0), from(u64::MAX, 2)),
        (tick("MSFT", 3.0), from(7, 1)),
    ];
    assert_eq!(p.publish_from(batch.clone()).await.unwrap(), 0);
    // The same batch again (a redelivery, a second bridge after a failover),
    // then one older record and one new one.
    assert_eq!(p.publish_from(batch).await.unwrap(), 3);
    let again = vec![
        (tick("MSFT", 9.0), from(u64::MAX, 1)),
        (tick("MSFT", 4.0), from(u64::MAX, 3)),
    ];
    assert_eq!(node.publish_from(again).await.unwrap(), 1);
    let got = recv_n(&mut rx, 4).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4]);
    assert_eq!(
        got.iter().map(|t| t.price).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a duplicate was published");
    let latest = node.latest(&s).await.unwrap().unwrap();
    assert_eq!((latest.price, latest.seq), (4.0, 4));
    assert_eq!(p.duplicates(), 3);
    // Bounded, expiring state.
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let ttl: i64 = admin.pttl(keys.producers_key(&s)).await.unwrap();
    assert!(ttl > 0, "the producers hash expires ({ttl})");
    let many: Vec<(Tick, Option<Origin>)> = (1..=200)
        .map(|p| (tick("MSFT", 5.0), from(1000 + p, 1)))
        .collect();
    assert_eq!(p.publish_from(many).await.unwrap(), 0);
    let producers: i64 = int(&admin, "HLEN", keys.producers_key(&s)).await;
    assert!(producers <= 64, "{producers} producers remembered");
    node.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}

#[tokio::test]
async fn history_is_trimmed_by_count_and_pages_follow_it() {
    let mut config = config("count");
    config.history = HistoryConfig {
        size: 5,
        ttl: Duration::from_secs(60),
    };
    let admin = admin(&config).await;
    let s = sym("IBM");
    let p = publisher(&config).await;
    let store = RedisPriceStore::new(config.connect_client().await.unwrap(), keys(&config))
        .with_history(config.history);
    assert_eq!(
        store.history(&s, None, 10).await.unwrap(),
        HistoryPage::Unknown
    );
    p.publish((1..=12).map(|i| tick("IBM", f64::from(i))).collect())
        .await
        .unwrap();
    let keys = keys(&config);
    let kept: i64 = int(&admin, "LLEN", keys.history_key(&s)).await;
    assert_eq!(kept, 5);
    let HistoryPage::Ticks { epoch, ticks } = store.history(&s, None, 3).await.unwrap() else {
        panic!("no page")
    };
    assert_eq!(seqs(&ticks), [10, 11, 12]);
    assert_eq!(ticks[2].price, 12.0);
    let page = store.history(&s, Some(8), 2).await.unwrap();
    assert_eq!(
        page,
        HistoryPage::Ticks {
            epoch,
            ticks: store_ticks(&store, &s, 8, 2).await
        }
    );
    let HistoryPage::Ticks { ticks, .. } = page else {
        unreachable!()
    };
    assert_eq!(seqs(&ticks), [9, 10]);
    assert_eq!(
        store.history(&s, Some(6), 10).await.unwrap(),
        HistoryPage::Gone { epoch }
    );
    let HistoryPage::Ticks { ticks, .. } = store.history(&s, Some(7), 100).await.unwrap() else {
        panic!("7 is served: 8 is kept")
    };
    assert_eq!(seqs(&ticks), [8, 9, 10, 11, 12]);
    assert_eq!(
        store.history(&s, Some(12), 10).await.unwrap(),
        HistoryPage::Ticks {
            epoch,
            ticks: vec![]
        }
    );
    cleanup(&admin, &config, &[s]).await;
}

async fn store_ticks(store: &RedisPriceStore, s: &Symbol, since: u64, limit: usize) -> Vec<Tick> {
    match store.history(s, Some(since), limit).await.unwrap() {
        HistoryPage::Ticks { ticks, .. } => ticks,
        other => panic!("{other:?}"),
    }
}

fn keys(config: &RedisConfig) -> KeySpace {
    KeySpace::new(&config.prefix, config.sharded).unwrap()
}

#[tokio::test]
async fn history_is_trimmed_by_age() {
    let mut config = config("age");
    config.history = HistoryConfig {
        size: 100,
        ttl: Duration::from_millis(600),
    };
    let admin = admin(&config).await;
    let s = sym("OLD");
    let p = publisher(&config).await;
    let store = RedisPriceStore::new(config.connect_client().await.unwrap(), keys(&config))
        .with_history(config.history);
    p.publish(vec![tick("OLD", 1.0), tick("OLD", 2.0)])
        .await
        .unwrap();
    let head = store.open(&s, None).await.unwrap().head;
    let start = Position {
        epoch: head.epoch,
        seq: 0,
    };
    assert_eq!(
        seqs(&store.open(&s, Some(start)).await.unwrap().replay.unwrap()),
        [1, 2]
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    p.publish(vec![tick("OLD", 3.0)]).await.unwrap();
    // Ticks 1 and 2 aged out: position 0 is not served, position 2 is.
    assert_eq!(store.open(&s, Some(start)).await.unwrap().replay, None);
    let at2 = Position { seq: 2, ..start };
    assert_eq!(
        seqs(&store.open(&s, Some(at2)).await.unwrap().replay.unwrap()),
        [3]
    );
    assert_eq!(
        store.history(&s, Some(1), 10).await.unwrap(),
        HistoryPage::Gone { epoch: head.epoch }
    );
    // Nobody publishes: the reads themselves do not serve an aged tick.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(store.open(&s, Some(at2)).await.unwrap().replay, None);
    let open = store
        .open(&s, Some(Position { seq: 3, ..start }))
        .await
        .unwrap();
    assert_eq!(open.replay, Some(vec![]), "the head is always served");
    assert_eq!(open.latest.map(|t| t.seq), Some(3));
    cleanup(&admin, &config, &[s]).await;
}

#[tokio::test]
async fn open_serves_a_kept_position_and_refuses_the_others() {
    let config = config("open");
    let admin = admin(&config).await;
    let s = sym("TSLA");
    let (node, mut rx) = node(config.clone()).await;
    node.follow(s);
    // The first subscribe creates the epoch; the first tick keeps it.
    let first = node.open(&s, None).await.unwrap();
    assert!(first.head.epoch.is_set());
    assert_eq!(
        (first.head.seq, first.latest, first.replay),
        (0, None, None)
    );
    let epoch = first.head.epoch;
    node.publish((1..=10).map(|i| tick("TSLA", f64::from(i))).collect())
        .await
        .unwrap();
    let live = recv_n(&mut rx, 10).await;
    assert!(live.iter().all(|t| t.epoch == epoch));
    let at = |seq| Some(Position { epoch, seq });
    let open = node.open(&s, at(4)).await.unwrap();
    assert_eq!(open.head, Position { epoch, seq: 10 });
    assert_eq!(open.latest.map(|t| (t.seq, t.price)), Some((10, 10.0)));
    let replay = open.replay.unwrap();
    assert_eq!(seqs(&replay), [5, 6, 7, 8, 9, 10]);
    assert_eq!(replay, live[4..], "replayed ticks are the live ticks");
    assert_eq!(
        seqs(&node.open(&s, at(0)).await.unwrap().replay.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(node.open(&s, at(10)).await.unwrap().replay, Some(vec![]));
    assert_eq!(
        node.open(&s, at(11)).await.unwrap().replay,
        None,
        "above head"
    );
    let other = Epoch::from_raw(epoch.raw() % 1000 + 1);
    let foreign = Some(Position {
        epoch: other,
        seq: 4,
    });
    let open = node.open(&s, foreign).await.unwrap();
    assert_eq!((open.replay, open.head.seq), (None, 10));
    node.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}

#[tokio::test]
async fn history_off_keeps_nothing_and_serves_only_the_head() {
    let mut config = config("off");
    config.history = HistoryConfig {
        size: 0,
        ttl: Duration::from_secs(600),
    };
    let admin = admin(&config).await;
    let s = sym("NOH");
    let p = publisher(&config).await;
    let store = RedisPriceStore::new(config.connect_client().await.unwrap(), keys(&config))
        .with_history(config.history);
    p.publish(vec![tick("NOH", 1.0), tick("NOH", 2.0)])
        .await
        .unwrap();
    let exists: i64 = admin.exists(keys(&config).history_key(&s)).await.unwrap();
    assert_eq!(exists, 0);
    let head = store.open(&s, None).await.unwrap().head;
    assert_eq!(head.seq, 2);
    assert_eq!(
        store.open(&s, Some(head)).await.unwrap().replay,
        Some(vec![])
    );
    let before = Position { seq: 1, ..head };
    assert_eq!(store.open(&s, Some(before)).await.unwrap().replay, None);
    cleanup(&admin, &config, &[s]).await;
}

/// The seam: a node opens a symbol while it is being published fast; every
/// tick after the head it was given reaches it live, none is missing.
#[tokio::test]
async fn every_tick_after_the_head_of_open_arrives_live() {
    let config = config("seam");
    let admin = admin(&config).await;
    let s = sym("FAST");
    let p = Arc::new(publisher(&config).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (p, stop) = (p.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                p.publish(vec![tick("FAST", 1.0); 5]).await.unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (node, mut rx) = node(config.clone()).await;
    // Many symbols followed at once before this one: its SUBSCRIBE goes out
    // behind a few large ones, so reading before it took effect would leave
    // a hole.
    for i in 0..3_000 {
        node.follow(sym(&format!("PAD{i}")));
    }
    node.follow(s);
    let open = node.open(&s, None).await.unwrap();
    assert!(open.head.seq > 0, "the feed was running");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Relaxed);
    feeder.await.unwrap();
    let end = node.latest(&s).await.unwrap().unwrap().seq;
    let mut live = HashSet::new();
    while let Ok(Some(t)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        live.insert(t.seq);
    }
    let missing: Vec<u64> = (open.head.seq + 1..=end)
        .filter(|q| !live.contains(q))
        .collect();
    assert!(end > open.head.seq + 10, "ticks kept coming after open");
    assert!(
        missing.is_empty(),
        "missing after head {}: {missing:?}",
        open.head.seq
    );
    node.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}

#[tokio::test]
async fn a_new_epoch_when_redis_loses_its_data() {
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let mut config = config("flush");
    config.url = redis.url();
    let admin = admin(&config).await;
    let s = sym("AAPL");
    let p = publisher(&config).await;
    let store = RedisPriceStore::new(config.connect_client().await.unwrap(), keys(&config));
    p.publish(vec![tick("AAPL", 1.0), tick("AAPL", 2.0)])
        .await
        .unwrap();
    let before = store.open(&s, None).await.unwrap().head;
    assert_eq!(before.seq, 2);
    let () = admin.flushall(false).await.unwrap();
    p.publish(vec![tick("AAPL", 3.0)]).await.unwrap();
    let after = store.open(&s, Some(before)).await.unwrap();
    assert_ne!(after.head.epoch, before.epoch, "the sequence started again");
    assert_eq!(after.head.seq, 1);
    assert_eq!(after.replay, None, "the old position is not served");
    assert_eq!(
        after.latest.map(|t| (t.seq, t.epoch)),
        Some((1, after.head.epoch))
    );
}

/// Every key of a symbol is in the price key's slot, so one script call may
/// touch them all on a Redis Cluster (asked of a cluster node's `CLUSTER KEYSLOT`).
#[tokio::test]
async fn a_symbols_keys_share_one_cluster_slot() {
    let redis = OwnRedis::start_cluster_node();
    redis.wait_up().await;
    let mut config = config("slots");
    config.url = redis.url();
    let admin = admin(&config).await;
    for sharded in [false, true] {
        let keys = KeySpace::new(&config.prefix, sharded).unwrap();
        for s in ["AAPL", "BINANCE:BTCUSDT", "BRK.B", "x/y_z-1"] {
            let s = sym(s);
            let slot = |key: String| {
                let admin = admin.clone();
                async move {
                    let v: i64 = admin
                        .custom(
                            fred::types::CustomCommand::new_static("CLUSTER", None, false),
                            vec!["KEYSLOT".to_string(), key],
                        )
                        .await
                        .unwrap();
                    v
                }
            };
            let price = slot(keys.price_key(&s)).await;
            for key in keys.symbol_keys(&s) {
                assert_eq!(slot(key.clone()).await, price, "{key}");
            }
            if sharded {
                assert_eq!(slot(keys.channel(&s)).await, price);
            }
        }
    }
}

/// The accept script builds candles as it numbers ticks and tells every
/// node, in the published tick, which intervals a tick was late for.
#[tokio::test]
async fn candles_are_built_by_the_script_and_late_ticks_are_marked() {
    use marketmux_core::Interval;
    let config = config("candles");
    let admin = admin(&config).await;
    let s = Symbol::new("CNDL").unwrap();
    let (bus, mut rx) = node(config.clone()).await;
    bus.follow(s);
    bus.open(&s, None).await.unwrap();
    let now = Timestamp::now();
    let on_time = Tick::new(s, 10.0, now, Some(2.0)).unwrap();
    let ten_minutes_ago = Timestamp(now.0 - 600_000_000_000);
    let late = Tick::new(s, 99.0, ten_minutes_ago, Some(5.0)).unwrap();
    bus.publish(vec![on_time, late]).await.unwrap();
    let got = recv_n(&mut rx, 2).await;
    assert_eq!(got[0].candles_late, 0);
    let closed = [Interval::S1, Interval::M1, Interval::M5];
    for i in closed {
        assert_ne!(got[1].candles_late & (1 << i.index()), 0, "late for {i}");
    }
    let page = bus.candles(&s, Interval::S1, 10).await.unwrap().unwrap();
    assert_eq!(page.len(), 1, "{page:?}");
    let (c, closed_flag) = page[0];
    assert_eq!(
        (c.open, c.close, c.volume, c.ticks, c.seq),
        (10.0, 10.0, 2.0, 1, 1)
    );
    assert!(!closed_flag);
    let other = Symbol::new("NEVER").unwrap();
    assert_eq!(bus.candles(&other, Interval::M1, 10).await.unwrap(), None);
    bus.shutdown().await;
    cleanup(&admin, &config, &[s, other]).await;
}

/// The accept script builds exactly the candles of the rules in
/// `marketmux_core::candle`, applied tick by tick: for a long stream with
/// ticks out of order, gaps of minutes and hours, ticks for intervals the
/// clock closed long ago, fractional and missing volumes, and closed lists
/// trimmed to the history, every interval's stored candles (`seq` included)
/// and every tick's late marks equal the model's.
#[tokio::test]
async fn the_script_builds_the_candles_of_the_core_rules() {
    use marketmux_core::{CandleConfig, Interval, SymbolCandles};
    let mut config = config("candlemodel");
    let candles = CandleConfig {
        history: 40,
        grace_ms: 500,
    };
    config.candles = candles;
    let admin = admin(&config).await;
    let s = sym("MODEL");
    let (bus, mut rx) = node(config.clone()).await;
    bus.follow(s);
    bus.open(&s, None).await.unwrap();

    // Times from two days ahead on: Redis's clock closes none of those
    // intervals, so the script's clock and the model's agree; ticks two
    // days back are late for every interval by the clock, both ways.
    let now_ms = Timestamp::now().0 / 1_000_000;
    let day = Interval::D1.millis();
    let mut ts = (now_ms / day + 2) * day + 59_000;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut price = 100.0_f64;
    let mut sent = Vec::new();
    for i in 0..600 {
        let at = match next(40) {
            0 => now_ms - 2 * day,
            1 | 2 => {
                ts -= next(3_000) as i64;
                ts
            }
            3 => {
                ts += 3_600_000 + next(600_000) as i64;
                ts
            }
            4 => {
                ts += 61_000;
                ts
            }
            5 => {
                ts += day + next(3_600_000) as i64;
                ts
            }
            _ => {
                ts += next(700) as i64;
                ts
            }
        };
        price = (price + (next(201) as f64 - 100.0) / 100.0).max(0.01);
        let volume = match i % 3 {
            0 => None,
            1 => Some(next(1_000) as f64 / 10.0),
            _ => Some(0.1 + next(7) as f64),
        };
        sent.push(Tick::new(s, price, Timestamp(at * 1_000_000), volume).unwrap());
    }
    for batch in sent.chunks(50) {
        bus.publish(batch.to_vec()).await.unwrap();
    }
    let got = recv_n(&mut rx, sent.len()).await;

    let mut model = SymbolCandles::default();
    let mut late_ticks = 0;
    for (i, (sent, got)) in sent.iter().zip(&got).enumerate() {
        let mut t = *sent;
        t.seq = i as u64 + 1;
        assert_eq!(got.seq, t.seq);
        let late = model.apply(&t, now_ms, &candles);
        assert_eq!(got.candles_late, late, "late marks of tick {}", t.seq);
        late_ticks += usize::from(late != 0);
    }
    assert!(late_ticks > 20, "the stream has late ticks: {late_ticks}");
    for interval in Interval::ALL {
        let want = model.series(interval).last(1_000);
        let page = bus.candles(&s, interval, 1_000).await.unwrap().unwrap();
        assert_eq!(page, want, "{interval}");
        assert!(page.len() > 1, "{interval}: {page:?}");
    }
    assert_eq!(
        model.series(Interval::S1).closed.len(),
        40,
        "1s candles trimmed to the history"
    );
    bus.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}

/// A candle the clock closed stays closed even for a publisher whose grace
/// would still take its ticks: a reader with a shorter grace closes the 1s
/// candle of a tick five seconds old, and the next tick of that second is
/// late for 1s (and changes no 1s candle), while 1d takes it.
#[tokio::test]
async fn a_candle_closed_by_a_reader_stays_closed() {
    use marketmux_core::{CandleConfig, Interval};
    let config = config("closedbyreader");
    let admin = admin(&config).await;
    let s = sym("SHUT");
    let (bus, mut rx) = node(config.clone()).await;
    bus.follow(s);
    bus.open(&s, None).await.unwrap();
    let mut patient = config.clone();
    patient.candles = CandleConfig {
        grace_ms: 600_000,
        ..config.candles
    };
    let publisher = publisher(&patient).await;
    let second = (Timestamp::now().0 / 1_000_000_000 - 5) * 1_000_000_000;
    let first = Tick::new(s, 10.0, Timestamp(second), Some(1.0)).unwrap();
    publisher.publish(vec![first]).await.unwrap();
    assert_eq!(recv_n(&mut rx, 1).await[0].candles_late, 0);
    // The node's grace (500 ms) has passed: reading closes the candle.
    let page = bus.candles(&s, Interval::S1, 10).await.unwrap().unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0].1, "closed by the reader's clock: {page:?}");
    let again = Tick::new(s, 20.0, Timestamp(second + 300_000_000), Some(2.0)).unwrap();
    publisher.publish(vec![again]).await.unwrap();
    let late = recv_n(&mut rx, 1).await[0].candles_late;
    assert_ne!(
        late & 1 << Interval::S1.index(),
        0,
        "late for 1s: {late:#b}"
    );
    assert_eq!(
        late & 1 << Interval::D1.index(),
        0,
        "not late for 1d: {late:#b}"
    );
    let page = bus.candles(&s, Interval::S1, 10).await.unwrap().unwrap();
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(
        (page[0].0.close, page[0].0.ticks, page[0].1),
        (10.0, 1, true)
    );
    let day = bus.candles(&s, Interval::D1, 10).await.unwrap().unwrap();
    // (Closed too if the test runs in the first seconds of a UTC day.)
    let (d1, _) = *day.last().unwrap();
    assert_eq!(
        (d1.open, d1.close, d1.volume, d1.ticks),
        (10.0, 20.0, 3.0, 2)
    );
    bus.shutdown().await;
    cleanup(&admin, &config, &[s]).await;
}
