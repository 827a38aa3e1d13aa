//! `mock-publisher --redis-url` against a real Redis (127.0.0.1:6379, or
//! MARKETMUX_TEST_REDIS_URL): ticks land in `price:SYMBOL` under the prefix.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use marketmux_bus::redis::{KeySpace, RedisPriceStore};
use marketmux_bus::{PriceStore, RedisConfig};
use marketmux_core::{Symbol, Timestamp};

#[tokio::test]
async fn publishes_latest_prices_into_redis() {
    let url = std::env::var("MARKETMUX_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "mmtest:mockpub:{}:{}:",
        std::process::id(),
        Timestamp::now().0
    );
    let config = RedisConfig {
        url: url.clone(),
        prefix: prefix.clone(),
        ..RedisConfig::default()
    };
    let client = config.connect_client().await.unwrap_or_else(|e| {
        panic!("this test needs a Redis server: {e}; start one with `redis-server` (apt-get install redis-server)")
    });
    let store = RedisPriceStore::new(client.clone(), KeySpace::new(&prefix, false).unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-publisher"))
        .args(["--redis-url", &url, "--redis-prefix", &prefix])
        .args(["--symbols", "3", "--rate", "50"])
        .env_remove("MARKETMUX_KAFKA_BROKERS")
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let aapl = Symbol::new("AAPL").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latest = None;
    while latest.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        latest = store.latest(&aapl).await.unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    let keys: Vec<String> = client
        .custom(
            CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false),
            vec![format!("{prefix}*")],
        )
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = client.del(keys).await.unwrap();
    }
    let tick = latest.expect("no price:AAPL within 10 s");
    assert!(tick.price > 0.0);
    assert!(tick.volume.is_some());
}
