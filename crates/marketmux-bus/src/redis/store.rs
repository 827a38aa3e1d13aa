//! [`RedisPriceStore`]: the latest price of a symbol, read from `price:SYMBOL`.

use async_trait::async_trait;
use fred::prelude::*;
use marketmux_core::{Symbol, Tick};

use crate::metrics::{self, Component};
use crate::redis::keys::KeySpace;
use crate::redis::{codec, unavailable};
use crate::{BusError, PriceStore};

/// Reads the latest tick of a symbol from Redis.
pub struct RedisPriceStore {
    client: Client,
    keys: KeySpace,
}

impl RedisPriceStore {
    /// A store over a connected `client`.
    pub fn new(client: Client, keys: KeySpace) -> Self {
        Self { client, keys }
    }
}

#[async_trait]
impl PriceStore for RedisPriceStore {
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Tick>, BusError> {
        let key = self.keys.price_key(symbol);
        let raw: Option<Vec<u8>> = self.client.get(&key).await.map_err(|e| {
            metrics::error(Component::Redis, "read");
            unavailable(e)
        })?;
        raw.map(|b| codec::decode(&b))
            .transpose()
            .map_err(|e| BusError::Rejected(format!("{key}: {e}")))
    }
}
