//! The bridge drops (and counts) ticks dated further in the future than its
//! clock-skew bound, against librdkafka's mock cluster: a price from the
//! year 2262 must not become its symbol's latest price for good.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marketmux_bus::{BusError, TickPublisher};
use marketmux_core::{ClockSkew, Symbol, Tick, Timestamp};
use marketmux_kafka::{Bridge, KafkaConfig, KafkaPublisher, StartFrom, TickConsumer};
use parking_lot::Mutex;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "market_ticks";

#[derive(Default)]
struct Recorder(Mutex<Vec<Tick>>);

#[async_trait]
impl TickPublisher for Recorder {
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), BusError> {
        self.0.lock().extend(ticks);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_drops_ticks_dated_in_the_future() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster.create_topic(TOPIC, 1, 1).expect("create topic");
    let cfg = KafkaConfig::new(cluster.bootstrap_servers()).with_topic(TOPIC);
    let publisher = KafkaPublisher::new(&cfg, "test").unwrap();
    let symbol = Symbol::new("FUT2").unwrap();
    let secs = |s: i64| Timestamp(Timestamp::now().0 + s * 1_000_000_000);
    let far = Timestamp::parse_rfc3339("2262-04-11T23:47:16Z").unwrap();
    // (price, timestamp): the 2nd and 4th are too far ahead of the 30 s bound.
    let sent = [
        (1.0, secs(-5)),
        (999.0, far),
        (2.0, secs(10)),
        (998.0, secs(300)),
        (3.0, secs(0)),
    ];
    let ticks: Vec<Tick> = sent
        .iter()
        .map(|&(p, ts)| Tick::new(symbol, p, ts, None).unwrap())
        .collect();
    publisher.publish(ticks).await.unwrap();

    let sink = Arc::new(Recorder::default());
    let consumer = TickConsumer::new(&cfg, "bridge-skew", StartFrom::Earliest).unwrap();
    let bridge = Bridge::new(consumer, sink.clone())
        .with_clock_skew(ClockSkew::new(Duration::from_secs(30)));
    let stats = bridge.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(bridge.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.future_timestamps.load(Ordering::Relaxed) + (sink.0.lock().len() as u64) < 5 {
        assert!(
            Instant::now() < deadline,
            "the bridge did not read all five"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let prices: Vec<f64> = sink.0.lock().iter().map(|t| t.price).collect();
    assert_eq!(prices, [1.0, 2.0, 3.0], "only ticks within the bound");
    assert_eq!(stats.future_timestamps.load(Ordering::Relaxed), 2);
    stop.cancel();
    task.await.unwrap();
}
