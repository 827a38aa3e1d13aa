//! Candles in Redis, built by the accept script as it numbers each tick
//! ([`super::script`]) and read by [`RedisCandles`], with the rules of
//! [`marketmux_core::candle`] (Redis's clock decides what the grace closed).
//!
//! Keys, in the symbol's hash slot (see [`super::keys`]):
//! `candle:{price:SYM}`, a hash with the current candle of each interval
//! (field `1m`) and the start of its newest closed interval (field `x1m`),
//! and `candles:1m:{price:SYM}`, one list of closed candles per interval,
//! oldest first, capped at `--candle-history`. A candle is one string,
//! `"<start ms> <open> <high> <low> <close> <volume> <ticks> <seq>"`, numbers
//! printed with 17 significant digits so they read back exactly.

use fred::prelude::*;
use fred::types::scripts::Script;
use marketmux_core::{Candle, CandleConfig, Interval, Symbol};

use crate::candles::CandlePage;
use crate::redis::keys::KeySpace;
use crate::redis::script::LUA_PRELUDE;
use crate::redis::unavailable;
use crate::BusError;

/// Lua shared by the accept and read scripts: the intervals, and a candle's
/// text. Uses `KEYS[5]` (the candle hash) and `KEYS[5 + i]` (closed list of
/// interval `i`).
pub(crate) const LUA_CANDLES: &str = r#"
local CANDLE_NAMES = {'1s', '1m', '5m', '1h', '1d'}
local CANDLE_LENS = {1000, 60000, 300000, 3600000, 86400000}
local function candle_text(c)
  return string.format('%.0f %.17g %.17g %.17g %.17g %.17g %.0f %.0f',
    c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8])
end
local function candle_parse(text)
  local c = {}
  for v in string.gmatch(text, '%S+') do c[#c + 1] = tonumber(v) end
  return c
end
local function candle_close(list, c, history)
  if history > 0 then
    redis.call('RPUSH', list, candle_text(c))
    redis.call('LTRIM', list, -history, -1)
  else
    redis.call('DEL', list)
  end
end
"#;

/// The accept script's candle step, after the tick got `seq` at Redis time
/// `now`. `ARGV[12]` closed candles kept; `ARGV[13]` grace in ms;
/// `ARGV[14]` the tick's time in ms; `ARGV[15]` its price; `ARGV[16]` its
/// volume (0 without one). Returns the bit set of intervals it was late for.
pub(crate) const LUA_ACCEPT_CANDLES: &str = r#"
local function accept_candles(seq, now)
  local history, grace = tonumber(ARGV[12]), tonumber(ARGV[13])
  local ts, price, volume = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
  local fields = {}
  for i = 1, 5 do
    fields[i] = CANDLE_NAMES[i]
    fields[5 + i] = 'x' .. CANDLE_NAMES[i]
  end
  local stored = redis.call('HMGET', KEYS[5], unpack(fields))
  local set, del, late = {}, {}, 0
  for i = 1, 5 do
    local name, len = CANDLE_NAMES[i], CANDLE_LENS[i]
    local cur = stored[i] and candle_parse(stored[i])
    local through = stored[5 + i] and tonumber(stored[5 + i])
    local function close(c)
      candle_close(KEYS[5 + i], c, history)
      through = c[1]
      set[#set + 1] = 'x' .. name
      set[#set + 1] = string.format('%.0f', through)
    end
    if cur and now >= cur[1] + len + grace then
      close(cur)
      cur = nil
      del[#del + 1] = name
    end
    local start = ts - (ts % len)
    if (cur and start < cur[1]) or now >= start + len + grace or (through and start <= through) then
      late = late + 2 ^ (i - 1)
    else
      if cur and start == cur[1] then
        cur[3] = math.max(cur[3], price)
        cur[4] = math.min(cur[4], price)
        cur[5] = price
        cur[6] = cur[6] + volume
        cur[7] = cur[7] + 1
        cur[8] = seq
      else
        if cur then close(cur) end
        cur = {start, price, price, price, price, volume, 1, seq}
      end
      if del[#del] == name then del[#del] = nil end
      set[#set + 1] = name
      set[#set + 1] = candle_text(cur)
    end
  end
  if #del > 0 then redis.call('HDEL', KEYS[5], unpack(del)) end
  if #set > 0 then redis.call('HSET', KEYS[5], unpack(set)) end
  return late
end
"#;

/// `KEYS` price, candle hash, the interval's closed list. `ARGV[1]` the
/// interval's name; `ARGV[2]` its length in ms; `ARGV[3]` grace in ms;
/// `ARGV[4]` the most candles; `ARGV[5]` closed candles kept. Closes the
/// current candle when Redis's clock has passed its end plus the grace.
/// Returns nil for a symbol with no tick, else `{closed list, current or nil}`.
const READ_BODY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local name, len, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, history = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[2], name)
if cur then
  local c = candle_parse(cur)
  if now_ms() >= c[1] + len + grace then
    candle_close(KEYS[3], c, history)
    redis.call('HSET', KEYS[2], 'x' .. name, string.format('%.0f', c[1]))
    redis.call('HDEL', KEYS[2], name)
    cur = false
  end
end
local room = limit
if cur then room = limit - 1 end
local closed = {}
if room > 0 then closed = redis.call('LRANGE', KEYS[3], -room, -1) end
return {closed, cur}
"#;

/// Reads a symbol's candles from Redis, one script call per page.
pub struct RedisCandles {
    client: Client,
    keys: KeySpace,
    config: CandleConfig,
    read: Script,
}

impl RedisCandles {
    /// Candles over a connected `client`, closed by the clock with `config`'s grace.
    pub fn new(client: Client, keys: KeySpace, config: CandleConfig) -> Self {
        Self {
            client,
            keys,
            config,
            read: Script::from_lua(format!("{LUA_PRELUDE}{LUA_CANDLES}{READ_BODY}")),
        }
    }

    /// The last `limit` candles of `symbol` for `interval`; `None` for a
    /// symbol with no tick.
    pub async fn page(
        &self,
        symbol: &Symbol,
        interval: Interval,
        limit: usize,
    ) -> Result<Option<CandlePage>, BusError> {
        let keys = vec![
            self.keys.price_key(symbol),
            self.keys.candle_key(symbol),
            self.keys.candles_key(symbol, interval),
        ];
        let args = vec![
            interval.as_str().to_owned(),
            interval.millis().to_string(),
            self.config.grace_ms.to_string(),
            limit.to_string(),
            self.config.history.to_string(),
        ];
        let reply: Value = self
            .read
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(unavailable)?;
        let bad = |why: String| BusError::Rejected(format!("redis: candles of {symbol}: {why}"));
        let Value::Array(parts) = reply else {
            return Ok(None);
        };
        let [closed, current]: [Value; 2] = parts
            .try_into()
            .map_err(|_| bad("unexpected reply shape".into()))?;
        let mut page = Vec::new();
        if let Value::Array(items) = closed {
            for item in items {
                let text = item.as_str().ok_or_else(|| bad("not a string".into()))?;
                page.push((decode(&text).map_err(&bad)?, true));
            }
        }
        if let Some(text) = current.as_str() {
            page.push((decode(&text).map_err(&bad)?, false));
        }
        Ok(Some(page))
    }
}

/// Reads a candle's text (`"<start> <open> <high> <low> <close> <volume> <ticks> <seq>"`).
pub fn decode(text: &str) -> Result<Candle, String> {
    let mut parts = text.split_ascii_whitespace();
    let mut next = |name: &str| {
        parts
            .next()
            .ok_or_else(|| format!("candle {text:?} has no {name}"))
    };
    let int = |s: &str, name: &str| {
        s.parse::<i64>()
            .map_err(|e| format!("candle {text:?}: {name}: {e}"))
    };
    let num = |s: &str, name: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("candle {text:?}: {name} is not a finite number"))
    };
    let start_ms = int(next("start")?, "start")?;
    let open = num(next("open")?, "open")?;
    let high = num(next("high")?, "high")?;
    let low = num(next("low")?, "low")?;
    let close = num(next("close")?, "close")?;
    let volume = num(next("volume")?, "volume")?;
    let ticks = int(next("ticks")?, "ticks")?;
    let seq = int(next("seq")?, "seq")?;
    Ok(Candle {
        start_ms,
        open,
        high,
        low,
        close,
        volume,
        ticks: u64::try_from(ticks).map_err(|e| format!("candle {text:?}: ticks: {e}"))?,
        seq: u64::try_from(seq).map_err(|e| format!("candle {text:?}: seq: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_scripts_text() {
        let c = decode("1764687840000 100 104.5 98.25 0.30000000000000004 7 5 42").unwrap();
        assert_eq!(
            c,
            Candle {
                start_ms: 1_764_687_840_000,
                open: 100.0,
                high: 104.5,
                low: 98.25,
                close: 0.1 + 0.2,
                volume: 7.0,
                ticks: 5,
                seq: 42,
            }
        );
        for bad in [
            "",
            "1 2 3",
            "x 1 1 1 1 1 1 1",
            "1 1 1 1 nan 1 1 1",
            "1 1 1 1 1 1 -1 1",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
