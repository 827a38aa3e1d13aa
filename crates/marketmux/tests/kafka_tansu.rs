//! The full pipeline on tansu, an independent Kafka-compatible broker, and
//! Redis. `scripts/test` starts tansu, creates `market_ticks` (6 partitions)
//! and sets MARKETMUX_TEST_KAFKA_BROKERS. See `kafka_common`.

mod kafka_common;
mod scrape;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_tansu() {
    let Ok(brokers) = std::env::var("MARKETMUX_TEST_KAFKA_BROKERS") else {
        panic!(
            "MARKETMUX_TEST_KAFKA_BROKERS is not set: run ./scripts/test, which starts a tansu \
             broker and sets it (tansu: `cargo install tansu --features dynostore`), or point it \
             at a Kafka broker on loopback that has the topic market_ticks"
        );
    };
    kafka_common::pipeline(&brokers, 2_000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_pipeline_on_tansu() {
    let Ok(brokers) = std::env::var("MARKETMUX_TEST_KAFKA_BROKERS") else {
        panic!("MARKETMUX_TEST_KAFKA_BROKERS is not set: run ./scripts/test (it starts tansu)");
    };
    kafka_common::ingest_pipeline(&brokers).await;
}
