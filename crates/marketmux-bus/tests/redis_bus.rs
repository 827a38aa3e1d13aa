//! The Redis adapter against a real Redis (127.0.0.1:6379, or
//! MARKETMUX_TEST_REDIS_URL). Each test works under its own key prefix and
//! deletes its keys at the end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use marketmux_bus::redis::{KeySpace, RedisPriceStore, RedisPublisher};
use marketmux_bus::{PriceStore, Readiness, RedisBus, RedisConfig, TickPublisher};
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_test_support::tick_at;
use marketmux_test_support::wait_for_value;
use marketmux_test_support::OwnRedis;
use parking_lot::Mutex;
use tokio::sync::mpsc;

fn redis_url() -> String {
    std::env::var("MARKETMUX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "mmtest:{test}:{}:{}:{}:",
        std::process::id(),
        Timestamp::now().0,
        N.fetch_add(1, Relaxed)
    )
}

fn config(test: &str) -> RedisConfig {
    RedisConfig {
        url: redis_url(),
        prefix: unique_prefix(test),
        unsubscribe_linger: Duration::from_millis(300),
        ..RedisConfig::default()
    }
}

async fn admin(config: &RedisConfig) -> Client {
    match config.connect_client().await {
        Ok(c) => c,
        Err(e) => panic!(
            "these tests need a Redis server: {e}. Start one with `redis-server` \
             (Debian/Ubuntu: apt-get install redis-server) or point MARKETMUX_TEST_REDIS_URL at one"
        ),
    }
}

async fn cleanup(admin: &Client, keys: &KeySpace, symbols: &[Symbol]) {
    let keys: Vec<String> = symbols.iter().flat_map(|s| keys.symbol_keys(s)).collect();
    let _: i64 = admin.del(keys).await.unwrap();
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

async fn numsub(admin: &Client, channel: &str, sharded: bool) -> i64 {
    let v: Value = if sharded {
        admin.pubsub_shardnumsub(channel).await.unwrap()
    } else {
        admin.pubsub_numsub(channel).await.unwrap()
    };
    let arr: Vec<Value> = v.convert().unwrap();
    arr[1].clone().convert().unwrap()
}

type Received = mpsc::UnboundedReceiver<Tick>;

/// A bus whose handler forwards every tick; `needed` plays the hub.
async fn bus(config: RedisConfig) -> (Arc<RedisBus>, Received, Arc<Mutex<HashSet<Symbol>>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let needed = Arc::new(Mutex::new(HashSet::new()));
    let n = needed.clone();
    let bus = RedisBus::connect(
        config,
        Arc::new(move |ticks: &[Tick]| {
            for t in ticks {
                let _ = tx.send(*t);
            }
        }),
        Arc::new(move |s: &Symbol| n.lock().contains(s)),
    )
    .await
    .unwrap();
    (bus, rx, needed)
}

async fn recv(rx: &mut Received) -> Tick {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no tick within 5 s")
        .expect("handler dropped")
}

#[tokio::test]
async fn an_older_tick_never_replaces_a_newer_latest_price_but_is_still_published() {
    let config = config("order");
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let (bus, mut rx, needed) = bus(config.clone()).await;
    needed.lock().insert(sym("AAPL"));
    bus.follow(sym("AAPL"));
    let channel = keys.channel(&sym("AAPL"));
    wait_for_value("subscribers", 1, Duration::from_secs(5), || {
        numsub(&admin, &channel, false)
    })
    .await;

    // In one batch (one pipeline), then in separate calls.
    bus.publish(vec![
        tick_at("AAPL", 2.0, Timestamp(2_000)),
        tick_at("AAPL", 1.0, Timestamp(1_000)),
    ])
    .await
    .unwrap();
    bus.publish(vec![tick_at("AAPL", 0.5, Timestamp(500))])
        .await
        .unwrap();
    let latest = bus.latest(&sym("AAPL")).await.unwrap().unwrap();
    assert_eq!((latest.price, latest.timestamp), (2.0, Timestamp(2_000)));
    // Clients see every tick, in the order accepted.
    for want in [2.0, 1.0, 0.5] {
        assert_eq!(recv(&mut rx).await.price, want);
    }
    assert_eq!(bus.publisher().counts(), (1, 2));

    // Equal or newer replaces; timestamps beyond 2^53 ns compare exactly.
    let big = 1_778_598_245_123_456_789;
    bus.publish(vec![
        tick_at("AAPL", 3.0, Timestamp(big)),
        tick_at("AAPL", 4.0, Timestamp(big - 1)),
    ])
    .await
    .unwrap();
    assert_eq!(bus.latest(&sym("AAPL")).await.unwrap().unwrap().price, 3.0);
    bus.publish(vec![tick_at("AAPL", 5.0, Timestamp(big + 1))])
        .await
        .unwrap();
    assert_eq!(bus.latest(&sym("AAPL")).await.unwrap().unwrap().price, 5.0);

    // The stored value is the documented JSON, readable with redis-cli.
    let raw: String = admin.get(keys.price_key(&sym("AAPL"))).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["symbol"], "AAPL");
    assert_eq!(v["price"], 5.0);
    assert_eq!(v["ts_ns"], big + 1);
    assert!(v["timestamp"].as_str().unwrap().starts_with("2026-05-12T"));

    bus.shutdown().await;
    cleanup(&admin, &keys, &[sym("AAPL")]).await;
}

#[tokio::test]
async fn scripts_are_reloaded_after_redis_forgets_them() {
    // A server of its own: flushing the scripts of the shared one would make
    // the other tests here, publishing meanwhile, redo calls out of order.
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let mut config = config("noscript");
    config.url = redis.url();
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let client = config.connect_client().await.unwrap();
    let publisher = RedisPublisher::new(client.clone(), keys.clone());
    let store = RedisPriceStore::new(client, keys.clone());
    // Never loaded, and flushed: the first EVALSHA gets NOSCRIPT.
    let () = admin.script_flush(false).await.unwrap();
    let ticks: Vec<Tick> = (1..=50)
        .map(|i| tick_at("MSFT", f64::from(i), Timestamp(i64::from(i))))
        .collect();
    publisher.publish(ticks).await.unwrap();
    let latest = store.latest(&sym("MSFT")).await.unwrap().unwrap();
    assert_eq!(latest.price, 50.0);
    assert_eq!(store.latest(&sym("NOPE")).await.unwrap(), None);
    cleanup(&admin, &keys, &[sym("MSFT")]).await;
}

#[tokio::test]
async fn subscribes_only_to_followed_symbols_and_lingers_before_unsubscribing() {
    let config = config("interest");
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let (bus, mut rx, needed) = bus(config.clone()).await;
    let (aapl, msft) = (sym("AAPL"), sym("MSFT"));
    let (ch_a, ch_m) = (keys.channel(&aapl), keys.channel(&msft));
    assert_eq!(numsub(&admin, &ch_a, false).await, 0);

    needed.lock().insert(aapl);
    bus.follow(aapl);
    wait_for_value("AAPL followed", 1, Duration::from_secs(5), || {
        numsub(&admin, &ch_a, false)
    })
    .await;
    assert_eq!(numsub(&admin, &ch_m, false).await, 0);

    // Only the followed symbol reaches the node.
    bus.publish(vec![
        tick_at("MSFT", 1.0, Timestamp(1)),
        tick_at("AAPL", 2.0, Timestamp(2)),
    ])
    .await
    .unwrap();
    assert_eq!(recv(&mut rx).await.symbol, aapl);

    // A client that flaps within the linger: no unsubscribe, no new command.
    let before = bus.subscriber().stats().subscribe_commands.load(Relaxed);
    needed.lock().remove(&aapl);
    bus.unfollow(aapl);
    needed.lock().insert(aapl);
    bus.follow(aapl);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(numsub(&admin, &ch_a, false).await, 1);
    assert_eq!(
        bus.subscriber().stats().subscribe_commands.load(Relaxed),
        before
    );

    // The last subscriber leaves: still subscribed during the linger, then not.
    needed.lock().remove(&aapl);
    bus.unfollow(aapl);
    assert_eq!(numsub(&admin, &ch_a, false).await, 1);
    wait_for_value(
        "AAPL dropped after the linger",
        0,
        Duration::from_secs(5),
        || numsub(&admin, &ch_a, false),
    )
    .await;
    assert!(bus.check().is_ok());
    bus.shutdown().await;
    cleanup(&admin, &keys, &[aapl, msft]).await;
}

#[tokio::test]
async fn sharded_pubsub_delivers_through_ssubscribe() {
    let mut config = config("sharded");
    config.sharded = true;
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, true).unwrap();
    let (bus, mut rx, needed) = bus(config.clone()).await;
    let s = sym("BINANCE:BTCUSDT");
    needed.lock().insert(s);
    bus.follow(s);
    let channel = keys.channel(&s);
    wait_for_value("shard subscribers", 1, Duration::from_secs(5), || {
        numsub(&admin, &channel, true)
    })
    .await;
    // Plain PUBSUB sees no subscriber: the tick went through SPUBLISH.
    assert_eq!(numsub(&admin, &channel, false).await, 0);
    bus.publish(vec![tick_at("BINANCE:BTCUSDT", 64_000.5, Timestamp(7))])
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await.price, 64_000.5);
    assert_eq!(bus.latest(&s).await.unwrap().unwrap().price, 64_000.5);
    needed.lock().remove(&s);
    bus.unfollow(s);
    wait_for_value("shard unsubscribed", 0, Duration::from_secs(5), || {
        numsub(&admin, &channel, true)
    })
    .await;
    bus.shutdown().await;
    cleanup(&admin, &keys, &[s]).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let config = RedisConfig {
        url: "redis://127.0.0.1:1".into(),
        connect_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    let err = match config.connect_client().await {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cannot connect to Redis at redis://127.0.0.1:1"),
        "{err}"
    );
}

/// `settled` returns only once the channels of every follow before it are
/// live in Redis: what `snapshot` waits for, so a first subscriber's snapshot
/// cannot miss a tick published between the read and the SUBSCRIBE.
#[tokio::test]
async fn settled_waits_until_new_channels_are_subscribed() {
    let config = config("settle");
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let (bus, _rx, needed) = bus(config.clone()).await;
    let symbols: Vec<Symbol> = (0..200).map(|i| sym(&format!("SETTLE{i}"))).collect();
    for s in &symbols {
        needed.lock().insert(*s);
        bus.follow(*s);
    }
    assert!(bus.subscriber().settled().await);
    let channels: Vec<String> = symbols.iter().map(|s| keys.channel(s)).collect();
    let v: Value = admin.pubsub_numsub(channels).await.unwrap();
    let counts: Vec<Value> = v.convert().unwrap();
    let live = counts
        .chunks(2)
        .filter(|pair| pair[1].clone().convert::<i64>().ok() == Some(1))
        .count();
    assert_eq!(
        live,
        symbols.len(),
        "every followed channel live once settled"
    );
    assert_eq!(bus.snapshot(&symbols[0]).await.unwrap(), None);
    cleanup(&admin, &keys, &symbols).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_arrive_together_reach_the_node_as_one_batch_in_order() {
    let config = config("batches");
    let admin = admin(&config).await;
    let keys = KeySpace::new(&config.prefix, false).unwrap();
    let batches: Arc<Mutex<Vec<Vec<f64>>>> = Arc::default();
    let seen = batches.clone();
    let bus = RedisBus::connect(
        config.clone(),
        Arc::new(move |ticks: &[Tick]| {
            let first = seen.lock().is_empty();
            seen.lock().push(ticks.iter().map(|t| t.price).collect());
            // A slow first call: everything published meanwhile piles up.
            if first {
                std::thread::sleep(Duration::from_millis(200));
            }
        }),
        Arc::new(|_: &Symbol| true),
    )
    .await
    .unwrap();
    bus.follow(sym("BAT"));
    let channel = keys.channel(&sym("BAT"));
    wait_for_value("subscribers", 1, Duration::from_secs(5), || {
        numsub(&admin, &channel, false)
    })
    .await;

    bus.publish(vec![tick_at("BAT", 1.0, Timestamp(1))])
        .await
        .unwrap();
    let ticks: Vec<Tick> = (2..=501)
        .map(|i| tick_at("BAT", f64::from(i), Timestamp(i64::from(i))))
        .collect();
    bus.publish(ticks).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while batches.lock().iter().map(Vec::len).sum::<usize>() < 501 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every tick arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let batches = batches.lock().clone();
    let prices: Vec<f64> = batches.iter().flatten().copied().collect();
    let want: Vec<f64> = (1..=501).map(f64::from).collect();
    assert_eq!(prices, want, "every tick once, in order");
    assert!(
        batches.len() < 100,
        "ticks that waited came in batches, not one by one: {} calls",
        batches.len()
    );

    bus.shutdown().await;
    cleanup(&admin, &keys, &[sym("BAT")]).await;
}

/// A burst of reads past the bound is refused at once, and the reads after
/// it go out at once: an overflow never leaves the command connection
/// waiting for a later command to flush what it wrote.
#[tokio::test]
async fn reads_after_a_burst_past_the_bound_are_answered_at_once() {
    const BURST: usize = 20_000;
    let redis = OwnRedis::start();
    redis.wait_up().await;
    let config = RedisConfig {
        url: redis.url(),
        max_pending_reads: 1_000,
        // No readiness PING that would flush a stuck connection meanwhile.
        ping_interval: Duration::from_secs(600),
        ..RedisConfig::default()
    };
    let (bus, _rx, _needed) = bus(config).await;
    let aapl = sym("AAPL");
    bus.publish(vec![tick_at("AAPL", 1.5, Timestamp::now())])
        .await
        .unwrap();

    let mut burst = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let (bus, s) = (bus.clone(), sym(&format!("BURST{i}")));
        burst.spawn(async move { bus.latest(&s).await.is_ok() });
    }
    let answered = burst.join_all().await.into_iter().filter(|ok| *ok).count();
    assert!(answered < BURST, "the burst stayed under the bound");

    let mut total = Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let got = bus.latest(&aapl).await.unwrap();
        total += started.elapsed();
        assert_eq!(got.map(|t| t.price), Some(1.5));
    }
    assert!(total < Duration::from_secs(1), "10 reads took {total:?}");
    bus.shutdown().await;
}
