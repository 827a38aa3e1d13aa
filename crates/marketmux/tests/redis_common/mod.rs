//! The Redis the integration tests share (the machine's own, or
//! `MARKETMUX_TEST_REDIS_URL`): its address, a command connection, and the
//! cleanup of a test's keys. Included by `gateway_common` and `kafka_common`.

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

/// What to do when the tests' Redis is not there.
pub const REDIS_HINT: &str =
    "start one with `redis-server` (Debian/Ubuntu: apt-get install redis-server) \
     or point MARKETMUX_TEST_REDIS_URL at one";

/// The tests' Redis: `MARKETMUX_TEST_REDIS_URL`, else the machine's own.
pub fn redis_url() -> String {
    std::env::var("MARKETMUX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A command connection for checks and cleanup.
pub async fn admin(url: &str) -> Client {
    let config = marketmux_bus::RedisConfig {
        url: url.into(),
        ..Default::default()
    };
    match config.connect_client().await {
        Ok(c) => c,
        Err(e) => panic!("this test needs a Redis server: {e}; {REDIS_HINT}"),
    }
}

/// Deletes every key under `prefix`.
pub async fn cleanup(admin: &Client, prefix: &str) {
    let keys: Vec<String> = admin
        .custom(
            CustomCommand::new_static("KEYS", ClusterHash::FirstKey, false),
            vec![format!("{prefix}*")],
        )
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = admin.del(keys).await.unwrap();
    }
}
