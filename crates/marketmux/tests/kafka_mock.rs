//! The full pipeline on librdkafka's mock cluster (no install) and Redis:
//! two gateways producing to Kafka, two bridges (one killed mid-stream),
//! sockets on both gateways; every record read twice by a second bridge.
//! See `kafka_common`.

mod kafka_common;
mod scrape;

use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_ticks_reach_kafka_redis_and_every_socket_when_a_bridge_dies() {
    let cluster = MockCluster::new(3).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 6, 3)
        .expect("create market_ticks");
    kafka_common::pipeline(&cluster.bootstrap_servers(), 2_000, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_read_again_by_another_bridge_reaches_no_client_twice() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 3, 1)
        .expect("create market_ticks");
    kafka_common::every_record_read_twice(&cluster.bootstrap_servers()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finnhub_trades_go_through_ingest_kafka_bridge_redis_to_a_socket() {
    let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
    cluster
        .create_topic("market_ticks", 6, 1)
        .expect("create market_ticks");
    kafka_common::ingest_pipeline(&cluster.bootstrap_servers()).await;
}
