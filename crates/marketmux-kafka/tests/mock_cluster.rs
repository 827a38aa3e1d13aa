//! The Kafka pipeline against librdkafka's mock cluster: a real Kafka
//! protocol server on loopback, no install needed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marketmux_bus::{BusError, Readiness, TickPublisher};
use marketmux_core::{Symbol, Tick, Timestamp};
use marketmux_kafka::{Bridge, ConsumedTick, KafkaConfig, KafkaPublisher, StartFrom, TickConsumer};
use marketmux_test_support::eventually;
use parking_lot::Mutex;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "market_ticks";
const PARTITIONS: i32 = 6;
const SYMBOLS: &[&str] = &[
    "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "NFLX",
];

fn cluster(brokers: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(brokers).expect("librdkafka mock cluster");
    c.create_topic(TOPIC, PARTITIONS, brokers.min(3))
        .expect("create topic");
    c
}

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .with_topic(TOPIC)
        // The mock cluster's group coordinator: rebalance quickly in tests.
        .with("session.timeout.ms", "6000")
        .with("heartbeat.interval.ms", "500")
}

/// `n` ticks over [`SYMBOLS`], each with a unique price `i + 1` so a test can
/// tell which ones arrived.
fn ticks(from: usize, n: usize) -> Vec<Tick> {
    (from..from + n)
        .map(|i| {
            let s = Symbol::new(SYMBOLS[i % SYMBOLS.len()]).unwrap();
            Tick::new(
                s,
                (i + 1) as f64,
                Timestamp(1_700_000_000_000_000_000 + i as i64),
                Some(1.0),
            )
            .unwrap()
        })
        .collect()
}

fn price_ids(ticks: &[ConsumedTick]) -> HashSet<u64> {
    ticks.iter().map(|t| t.tick.price as u64).collect()
}

/// Waits up to `wait` for one batch and keeps its ticks in `got`, without
/// committing it.
async fn read_uncommitted(c: &TickConsumer, got: &mut Vec<ConsumedTick>, wait: Duration) {
    if let Ok(Ok(batch)) = tokio::time::timeout(wait, c.next_batch()).await {
        got.extend(batch.ticks);
    }
}

/// Reads until `want` distinct ticks arrived or `within` passed; commits each batch.
async fn read_distinct(c: &TickConsumer, want: usize, within: Duration) -> Vec<ConsumedTick> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while price_ids(&got).len() < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), c.next_batch()).await {
            Ok(Ok(batch)) => {
                c.commit_and_wait(&batch).expect("commit");
                got.extend(batch.ticks);
            }
            Ok(Err(e)) => eprintln!("read error (retrying): {e}"),
            Err(_) => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_order_and_metadata_and_commits() {
    let cluster = cluster(3);
    let brokers = cluster.bootstrap_servers();
    let cfg = config(&brokers);
    let publisher = KafkaPublisher::new(&cfg, "test").unwrap();
    let sent = ticks(0, 400);
    publisher.publish(sent.clone()).await.expect("acknowledged");
    assert_eq!(publisher.delivered(), 400);
    assert!(publisher.check().is_ok());

    let consumer = TickConsumer::new(&cfg, "round-trip", StartFrom::Earliest).unwrap();
    let got = read_distinct(&consumer, 400, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 400, "every tick exactly once");
    // Per symbol: same order as sent, one partition, sequence 1, 2, 3, ...
    let mut by_symbol: BTreeMap<Symbol, Vec<&ConsumedTick>> = BTreeMap::new();
    for t in &got {
        by_symbol.entry(t.tick.symbol).or_default().push(t);
    }
    for (symbol, list) in &by_symbol {
        let sent_prices: Vec<f64> = sent
            .iter()
            .filter(|t| t.symbol == *symbol)
            .map(|t| t.price)
            .collect();
        let got_prices: Vec<f64> = list.iter().map(|t| t.tick.price).collect();
        assert_eq!(got_prices, sent_prices, "{symbol} in order");
        let seqs: Vec<u64> = list.iter().map(|t| t.meta.sequence).collect();
        assert_eq!(seqs, (1..=list.len() as u64).collect::<Vec<_>>());
        assert!(list.iter().all(|t| t.partition == list[0].partition));
        assert!(list
            .iter()
            .all(|t| t.meta.producer_id == publisher.producer_id() && t.meta.source == "test"));
    }
    let original: Vec<Tick> = sent
        .iter()
        .copied()
        .filter(|t| t.symbol.as_str() == "AAPL")
        .collect();
    let roundtrip: Vec<Tick> = by_symbol[&Symbol::new("AAPL").unwrap()]
        .iter()
        .map(|t| t.tick)
        .collect();
    assert_eq!(
        roundtrip, original,
        "nanosecond timestamps and volumes survive"
    );
    drop(consumer);

    // Committed: the same group resumes after what it handled.
    publisher.publish(ticks(400, 50)).await.unwrap();
    let again = TickConsumer::new(&cfg, "round-trip", StartFrom::Earliest).unwrap();
    let got = read_distinct(&again, 50, Duration::from_secs(30)).await;
    assert_eq!(price_ids(&got), (401..=450).collect::<HashSet<u64>>());
}

/// A sink that records what it accepted and can refuse the first calls.
#[derive(Default)]
struct Recorder {
    ticks: Mutex<Vec<Tick>>,
    refuse_first: AtomicUsize,
}

#[async_trait]
impl TickPublisher for Recorder {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        if self
            .refuse_first
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BusError::Unavailable("refused by the test".into()));
        }
        self.ticks.lock().extend(ticks);
        Ok(())
    }
}

impl Recorder {
    fn distinct(&self) -> HashSet<u64> {
        self.ticks.lock().iter().map(|t| t.price as u64).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_retries_a_refused_batch_and_loses_nothing() {
    let cluster = cluster(1);
    let cfg = config(&cluster.bootstrap_servers());
    let publisher = KafkaPublisher::new(&cfg, "test").unwrap();
    publisher.publish(ticks(0, 300)).await.unwrap();

    let sink = Arc::new(Recorder {
        refuse_first: AtomicUsize::new(3),
        ..Recorder::default()
    });
    let consumer = TickConsumer::new(&cfg, "bridge-retry", StartFrom::Earliest).unwrap();
    let bridge = Bridge::new(consumer, sink.clone());
    let stats = bridge.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge.run(stop.clone()));
    eventually("300 ticks in the sink", Duration::from_secs(30), || {
        sink.distinct().len() == 300
    })
    .await;
    assert_eq!(stats.sink_failures.load(Ordering::Relaxed), 3);
    assert_eq!(stats.missing.load(Ordering::Relaxed), 0);
    stop.cancel();
    task.await.unwrap();

    // Everything was committed: a new member of the group finds nothing old.
    publisher.publish(ticks(300, 10)).await.unwrap();
    let consumer = TickConsumer::new(&cfg, "bridge-retry", StartFrom::Earliest).unwrap();
    let got = read_distinct(&consumer, 10, Duration::from_secs(30)).await;
    assert_eq!(price_ids(&got), (301..=310).collect::<HashSet<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_bridge_hands_its_partitions_over_and_nothing_is_lost() {
    let cluster = cluster(1);
    let cfg = config(&cluster.bootstrap_servers());
    let publisher = Arc::new(KafkaPublisher::new(&cfg, "test").unwrap());
    let group = "bridge-rebalance";

    let sink = Arc::new(Recorder::default());
    let start = |sink: Arc<Recorder>| {
        let consumer = TickConsumer::new(&cfg, group, StartFrom::Earliest)
            .unwrap()
            .with_max_batch(20);
        let bridge = Bridge::new(consumer, sink);
        let stop = CancellationToken::new();
        (stop.clone(), bridge.stats(), tokio::spawn(bridge.run(stop)))
    };
    let (stop_a, stats_a, task_a) = start(sink.clone());
    let (stop_b, stats_b, task_b) = start(sink.clone());

    // Produce in the background, steadily, while members come and go.
    const N: usize = 3_000;
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for chunk in 0..N / 50 {
                publisher.publish(ticks(chunk * 50, 50)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    eventually(
        "both bridges to forward ticks",
        Duration::from_secs(30),
        || stats_a.ticks.load(Ordering::Relaxed) > 0 && stats_b.ticks.load(Ordering::Relaxed) > 0,
    )
    .await;
    // Bridge A leaves mid-stream.
    stop_a.cancel();
    task_a.await.unwrap();
    let a_count = stats_a.ticks.load(Ordering::Relaxed);
    producer.await.unwrap();
    eventually("all ticks in the sink", Duration::from_secs(60), || {
        sink.distinct().len() == N
    })
    .await;
    assert_eq!(sink.distinct(), (1..=N as u64).collect::<HashSet<u64>>());
    assert!(
        a_count > 0 && a_count < N as u64,
        "A handled part of the stream: {a_count}"
    );
    assert_eq!(
        stats_b.missing.load(Ordering::Relaxed),
        0,
        "no gap seen by B"
    );
    stop_b.cancel();
    task_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_rebalance_gives_the_survivor_every_partition() {
    let cluster = cluster(1);
    let cfg = config(&cluster.bootstrap_servers());
    let publisher = KafkaPublisher::new(&cfg, "test").unwrap();
    let group = "rebalance";
    let a = TickConsumer::new(&cfg, group, StartFrom::Earliest).unwrap();
    let b = TickConsumer::new(&cfg, group, StartFrom::Earliest).unwrap();
    publisher.publish(ticks(0, 600)).await.unwrap();

    // Both poll until the group has split the six partitions between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    loop {
        // Read but never committed: what a read must come again to b.
        for (c, got) in [(&a, &mut got_a), (&b, &mut got_b)] {
            read_uncommitted(c, got, Duration::from_millis(100)).await;
        }
        let (pa, pb) = (a.assigned_partitions(), b.assigned_partitions());
        // Split, and a has read part of the stream: the case under test is a
        // member that read and leaves without committing.
        let split = !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize;
        if split && !got_a.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never split: a={pa:?} b={pb:?}"
        );
    }
    drop(a); // leaves the group without committing
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.assigned_partitions().len() != PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "b never got every partition: {:?}",
            b.assigned_partitions()
        );
        // Keep what b reads here: the poll that applies the new assignment
        // can already return records of a's partitions, and dropping them
        // (never committed, never read again) would look like a loss.
        read_uncommitted(&b, &mut got_b, Duration::from_millis(100)).await;
    }
    // Nothing was committed: a's partitions start over at b, so b ends up
    // with all 600 (what it read before included).
    let deadline = Instant::now() + Duration::from_secs(30);
    while price_ids(&got_b).len() < 600 && Instant::now() < deadline {
        read_uncommitted(&b, &mut got_b, Duration::from_millis(200)).await;
    }
    let mut all = price_ids(&got_b);
    assert_eq!(all.len(), 600, "nothing lost (a had read {})", got_a.len());
    all.extend(price_ids(&got_a));
    assert_eq!(all.len(), 600);
    assert!(b.stats().assignments.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_back() {
    let cluster = cluster(1);
    let cfg = config(&cluster.bootstrap_servers());
    let mut quick = cfg.clone();
    quick.delivery_timeout = Duration::from_secs(3);
    let quick = quick.with("reconnect.backoff.max.ms", "200");
    let publisher = Arc::new(KafkaPublisher::new(&quick, "test").unwrap());
    publisher.publish(ticks(0, 10)).await.expect("broker up");

    // Down for longer than the delivery timeout: the publish fails (a gateway answers 503).
    cluster.broker_down(1).unwrap();
    let err = publisher
        .publish(ticks(10, 5))
        .await
        .expect_err("no broker");
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(
        publisher.check().is_err(),
        "not ready while the broker is down"
    );

    // Down briefly: the publish waits and succeeds once the broker is back.
    let pending = {
        let p = publisher.clone();
        tokio::spawn(async move { p.publish(ticks(15, 5)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.broker_up(1).unwrap();
    pending
        .await
        .unwrap()
        .expect("delivered after the broker came back");
    assert!(publisher.check().is_ok());

    // The consumer sees the acknowledged ticks, none twice (idempotent producer).
    let consumer = TickConsumer::new(&cfg, "down-and-back", StartFrom::Earliest).unwrap();
    let got = read_distinct(&consumer, 15, Duration::from_secs(30)).await;
    let ids = price_ids(&got);
    assert!((1..=10).chain(16..=20).all(|i| ids.contains(&i)), "{ids:?}");
    let acked: Vec<&ConsumedTick> = got
        .iter()
        .filter(|t| !(11..=15).contains(&(t.tick.price as u64)))
        .collect();
    assert_eq!(acked.len(), 15, "no duplicates of acknowledged ticks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_resumes_after_the_broker_comes_back() {
    let cluster = cluster(1);
    let cfg = config(&cluster.bootstrap_servers()).with("reconnect.backoff.max.ms", "200");
    let publisher = KafkaPublisher::new(&cfg, "test").unwrap();
    let sink = Arc::new(Recorder::default());
    let consumer = TickConsumer::new(&cfg, "bridge-outage", StartFrom::Earliest).unwrap();
    let bridge = Bridge::new(consumer, sink.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge.run(stop.clone()));

    publisher.publish(ticks(0, 100)).await.unwrap();
    eventually("the first 100", Duration::from_secs(30), || {
        sink.distinct().len() == 100
    })
    .await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(1).unwrap();
    publisher.publish(ticks(100, 100)).await.unwrap();
    eventually("all 200 after the outage", Duration::from_secs(30), || {
        sink.distinct().len() == 200
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

/// Records the bridge already forwarded (same producer and sequence, e.g. a
/// broker that kept a retried produce twice) are not published again;
/// records without producer metadata cannot be told apart and all go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_does_not_forward_a_record_it_already_forwarded() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let cfg = config(&brokers);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let symbol = Symbol::new("AAPL").unwrap();
    // (producer id, sequence, price): 2 and 3 come twice; two records carry no metadata.
    let records = [
        (9, 1, 1.0),
        (9, 2, 2.0),
        (9, 3, 3.0),
        (9, 2, 2.0),
        (9, 3, 3.0),
        (9, 4, 4.0),
        (0, 0, 5.0),
        (0, 0, 6.0),
    ];
    for (producer_id, sequence, price) in records {
        let tick = Tick::new(symbol, price, Timestamp::now(), None).unwrap();
        let meta = marketmux_kafka::TickMeta {
            source: "test".into(),
            producer_id,
            sequence,
            accepted: Timestamp::now(),
        };
        let payload = marketmux_kafka::codec::encode(&tick, &meta);
        producer
            .send(
                FutureRecord::to(TOPIC).key("AAPL").payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .expect("produced");
    }

    let sink = Arc::new(Recorder::default());
    let consumer = TickConsumer::new(&cfg, "bridge-dedupe", StartFrom::Earliest).unwrap();
    let bridge = Bridge::new(consumer, sink.clone());
    let stats = bridge.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge.run(stop.clone()));
    eventually("every record read", Duration::from_secs(30), || {
        sink.distinct().len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let prices: Vec<u64> = sink.ticks.lock().iter().map(|t| t.price as u64).collect();
    assert_eq!(
        prices,
        vec![1, 2, 3, 4, 5, 6],
        "each identified record once, in order"
    );
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 2);
    stop.cancel();
    task.await.unwrap();
}
