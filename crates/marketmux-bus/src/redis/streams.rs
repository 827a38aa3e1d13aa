//! [`RedisStreams`]: a symbol's stream as Redis keeps it, read in one script
//! call each: what a new subscriber finds ([`RedisStreams::open`]: head,
//! latest tick, replay after its position) and history pages
//! ([`RedisStreams::history`]).
//!
//! Both scripts drop kept ticks past the age bound first (a symbol with no
//! new tick is trimmed by nobody else), and `open` creates the symbol's
//! epoch when it has none, so the epoch exists from the first subscribe.
//! Kept ticks have consecutive seqs, so the script finds a position by index
//! arithmetic from the oldest one.

use fred::prelude::*;
use fred::types::scripts::Script;
use marketmux_core::{Epoch, Position, Symbol, Tick};

use crate::redis::keys::KeySpace;
use crate::redis::script::LUA_PRELUDE;
use crate::redis::{codec, unavailable};
use crate::stream::{HistoryConfig, HistoryPage, StreamOpen, MAX_HISTORY_PAGE};
use crate::BusError;

/// `KEYS` price, stream, history. `ARGV[1]` the epoch to create if none;
/// `ARGV[2]` the position's epoch (`""`: none); `ARGV[3]` its seq; `ARGV[4]`
/// history age in ms. Returns `{epoch, head seq, latest JSON or nil, replay
/// list or nil}`.
const OPEN_BODY: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then epoch = new_epoch(KEYS[2], KEYS[3], ARGV[1]) end
local head = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local ttl = tonumber(ARGV[4])
trim_age(KEYS[3], ttl, now_ms())
local replay = false
if ARGV[2] == epoch then
  local since = tonumber(ARGV[3])
  if since == head then
    replay = {}
  elseif since < head then
    local first = redis.call('LINDEX', KEYS[3], 0)
    local first_seq = first and tonumber(string.match(first, '"seq":(%d+)'))
    if first_seq and first_seq <= since + 1 then
      replay = redis.call('LRANGE', KEYS[3], since + 1 - first_seq, -1)
    end
  end
end
return {epoch, head, redis.call('GET', KEYS[1]), replay}
"#;

/// `KEYS` price, stream, history. `ARGV[1]` the position's seq (`""`: the
/// newest ticks); `ARGV[2]` the most ticks; `ARGV[3]` history age in ms;
/// `ARGV[4]` the epoch to create for a symbol with a price and no epoch.
/// Returns nil for an unknown symbol, `{epoch, 0}` when the tick after the
/// position is gone, `{epoch, 1, ticks}` otherwise.
const HISTORY_BODY: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  epoch = new_epoch(KEYS[2], KEYS[3], ARGV[4])
end
local head = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
trim_age(KEYS[3], tonumber(ARGV[3]), now_ms())
local limit = tonumber(ARGV[2])
if ARGV[1] == '' then
  return {epoch, 1, redis.call('LRANGE', KEYS[3], -limit, -1)}
end
local since = tonumber(ARGV[1])
if since >= head then return {epoch, 1, {}} end
local first = redis.call('LINDEX', KEYS[3], 0)
local first_seq = first and tonumber(string.match(first, '"seq":(%d+)'))
if not first_seq or first_seq > since + 1 then return {epoch, 0} end
local start = since + 1 - first_seq
return {epoch, 1, redis.call('LRANGE', KEYS[3], start, start + limit - 1)}
"#;

/// Reads symbols' streams from Redis.
pub struct RedisStreams {
    client: Client,
    keys: KeySpace,
    history: HistoryConfig,
    open: Script,
    page: Script,
}

impl RedisStreams {
    /// Streams over a connected `client`; kept ticks older than
    /// `history.ttl` are not served.
    pub fn new(client: Client, keys: KeySpace, history: HistoryConfig) -> Self {
        Self {
            client,
            keys,
            history,
            open: Script::from_lua(format!("{LUA_PRELUDE}{OPEN_BODY}")),
            page: Script::from_lua(format!("{LUA_PRELUDE}{HISTORY_BODY}")),
        }
    }

    /// The age bound in ms (history off: 0, nothing is served).
    fn ttl_ms(&self) -> String {
        if self.history.enabled() {
            self.history.ttl.as_millis().to_string()
        } else {
            "0".into()
        }
    }

    fn script_keys(&self, symbol: &Symbol) -> Vec<String> {
        vec![
            self.keys.price_key(symbol),
            self.keys.stream_key(symbol),
            self.keys.history_key(symbol),
        ]
    }

    /// Head, latest tick and the replay after `since` when it can be served;
    /// creates the symbol's epoch when it has none. The caller makes sure
    /// that ticks published after this read reach it live.
    pub async fn open(
        &self,
        symbol: &Symbol,
        since: Option<Position>,
    ) -> Result<StreamOpen, BusError> {
        let (since_epoch, since_seq) = match since {
            Some(p) => (p.epoch.to_string(), p.seq.to_string()),
            None => (String::new(), "0".into()),
        };
        let args = vec![
            Epoch::random().to_string(),
            since_epoch,
            since_seq,
            self.ttl_ms(),
        ];
        let reply: Vec<Value> = self
            .open
            .evalsha_with_reload(&self.client, self.script_keys(symbol), args)
            .await
            .map_err(unavailable)?;
        let bad = |why: &str| BusError::Rejected(format!("redis: stream of {symbol}: {why}"));
        let [epoch, head, latest, replay]: [Value; 4] = reply
            .try_into()
            .map_err(|_| bad("open answered an unexpected shape"))?;
        let epoch = parse_epoch(&epoch).ok_or_else(|| bad("invalid epoch"))?;
        let head = head.as_u64().ok_or_else(|| bad("invalid seq"))?;
        let latest = match latest.as_bytes() {
            Some(b) => Some(codec::decode(b).map_err(|e| bad(&e.to_string()))?),
            None => None,
        };
        let replay = match replay {
            Value::Array(items) => Some(kept_ticks(items).map_err(|e| bad(&e))?),
            _ => None,
        };
        Ok(StreamOpen {
            head: Position { epoch, seq: head },
            latest,
            replay,
        })
    }

    /// One page of `symbol`'s history (`limit` at most [`MAX_HISTORY_PAGE`]).
    pub async fn history(
        &self,
        symbol: &Symbol,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BusError> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let args = vec![
            since.map(|s| s.to_string()).unwrap_or_default(),
            limit.to_string(),
            self.ttl_ms(),
            Epoch::random().to_string(),
        ];
        let reply: Value = self
            .page
            .evalsha_with_reload(&self.client, self.script_keys(symbol), args)
            .await
            .map_err(unavailable)?;
        let bad = |why: &str| BusError::Rejected(format!("redis: history of {symbol}: {why}"));
        let Value::Array(mut parts) = reply else {
            return Ok(HistoryPage::Unknown);
        };
        if parts.len() < 2 {
            return Err(bad("unexpected reply shape"));
        }
        let ticks = if parts.len() > 2 { parts.pop() } else { None };
        let served = parts.pop().and_then(|v| v.as_u64()) == Some(1);
        let epoch = parts
            .pop()
            .as_ref()
            .and_then(parse_epoch)
            .ok_or_else(|| bad("invalid epoch"))?;
        if !served {
            return Ok(HistoryPage::Gone { epoch });
        }
        let ticks = match ticks {
            Some(Value::Array(items)) => kept_ticks(items).map_err(|e| bad(&e))?,
            _ => Vec::new(),
        };
        Ok(HistoryPage::Ticks { epoch, ticks })
    }
}

fn parse_epoch(v: &Value) -> Option<Epoch> {
    v.as_str()?.parse().ok()
}

/// Decodes history entries (`"<accepted ms> <tick JSON>"`).
fn kept_ticks(items: Vec<Value>) -> Result<Vec<Tick>, String> {
    items
        .iter()
        .map(|v| {
            let bytes = v.as_bytes().ok_or("a kept tick is not a string")?;
            let json = bytes
                .iter()
                .position(|&b| b == b' ')
                .map(|i| &bytes[i + 1..])
                .ok_or("a kept tick has no time")?;
            codec::decode(json).map_err(|e| e.to_string())
        })
        .collect()
}
