//! Candles in Redis, built by the accept script as it numbers each tick
//! ([`super::script`]) and read by [`RedisCandles`], with the rules of
//! [`marketmux_core::candle`] (Redis's clock decides what the grace closed).
//!
//! Storage, in the symbol's hash slot (see [`super::keys`]):
//!
//! - the current candles of all five intervals are one value, the field
//!   `candles` of the stream hash `stream:{price:SYM}` (beside `epoch` and
//!   `seq`, which the script reads and writes for every tick anyway): five
//!   records of [`RECORD_LEN`] bytes, `1s 1m 5m 1h 1d`, each eight
//!   little-endian doubles `start open high low close volume ticks seq`.
//!   A record with `ticks` 0 has no current candle, and its `start` is the
//!   start of the newest closed interval (`-inf`: none), so that a late tick
//!   is still recognised (with a current candle, a closed interval is always
//!   older than it). One read and one write of 320 bytes per tick;
//! - `candles:1m:{price:SYM}`, one list of closed candles per interval,
//!   oldest first, capped at `--candle-history`, each candle the same eight
//!   doubles (64 bytes). A list is touched only when a candle closes.
//!
//! Why binary and not text or JSON: this is the ingest hot path of every
//! tick. Redis's Lua packs and unpacks doubles with `struct` in C, exactly;
//! printing numbers exactly (`%.17g`) and parsing them back cost several
//! times as much, per tick, as the rest of the candle step (see
//! `benches/accept_cost.py` and docs/redis.md). `GET /candles` is the
//! readable view.

use fred::prelude::*;
use fred::types::scripts::Script;
use marketmux_core::{Candle, CandleConfig, Interval, Symbol};

use crate::candles::CandlePage;
use crate::redis::keys::KeySpace;
use crate::redis::script::LUA_PRELUDE;
use crate::redis::unavailable;
use crate::BusError;

/// Bytes of one candle: eight doubles.
pub const RECORD_LEN: usize = 64;

/// Lua shared by the accept and read scripts: a record's layout, the empty
/// state, and closing a candle into its list.
pub(crate) const LUA_CANDLES: &str = r#"
local CANDLE = '<dddddddd'
local function candles_none()
  return string.rep(struct.pack(CANDLE, -1 / 0, 0, 0, 0, 0, 0, 0, 0), 5)
end
local function candle_close(list, history, s, o, h, l, c, v, n, q)
  if history > 0 then
    redis.call('RPUSH', list, struct.pack(CANDLE, s, o, h, l, c, v, n, q))
    redis.call('LTRIM', list, -history, -1)
  else
    redis.call('DEL', list)
  end
end
"#;

/// The accept script's candle step, after the tick got `seq` at Redis time
/// `now`: takes the stored state (`nil` or not 320 bytes: none), returns the
/// bit set of the intervals the tick was late for and the new state.
/// `KEYS[4 + i]` the closed list of interval `i`; `ARGV[12]` closed candles
/// kept; `ARGV[13]` grace in ms; `ARGV[14]` the tick's time in ms;
/// `ARGV[15]` its price; `ARGV[16]` its volume (0 without one).
///
/// Each interval is one call of `step` on its record's fields, and the
/// state is unpacked and packed whole, once each per tick: no table, no
/// text, and no string per interval. In Redis 7's Lua `struct.pack` costs
/// about 70 ns per double and `struct.unpack` about 30, and every string
/// made costs on top (joining five 64-byte records about 1 µs): one unpack
/// and one pack of the 40 doubles cost about 2 µs of Redis CPU per tick less
/// than a pack and an unpack per record and their concatenation
/// (`benches/accept_cost.py`, docs/redis.md).
pub(crate) const LUA_ACCEPT_CANDLES: &str = r#"
local CANDLES_ALL = '<' .. string.rep('d', 40)
local function accept_candles(packed, seq, now)
  local history, grace = tonumber(ARGV[12]), tonumber(ARGV[13])
  local ts, price, volume = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
  if not packed or #packed ~= 320 then packed = candles_none() end
  local late = 0
  local function step(i, bit, len, s, o, h, l, c, v, n, q)
    if n > 0 and now >= s + len + grace then
      candle_close(KEYS[4 + i], history, s, o, h, l, c, v, n, q)
      o, h, l, c, v, n, q = 0, 0, 0, 0, 0, 0, 0
    end
    local start = ts - ts % len
    if now >= start + len + grace or start < s or (start == s and n == 0) then
      late = late + bit
    elseif start == s then
      if price > h then h = price end
      if price < l then l = price end
      c, v, n, q = price, v + volume, n + 1, seq
    else
      if n > 0 then candle_close(KEYS[4 + i], history, s, o, h, l, c, v, n, q) end
      s, o, h, l, c, v, n, q = start, price, price, price, price, volume, 1, seq
    end
    return s, o, h, l, c, v, n, q
  end
  local s1, o1, h1, l1, c1, v1, n1, q1,
    s2, o2, h2, l2, c2, v2, n2, q2,
    s3, o3, h3, l3, c3, v3, n3, q3,
    s4, o4, h4, l4, c4, v4, n4, q4,
    s5, o5, h5, l5, c5, v5, n5, q5 = struct.unpack(CANDLES_ALL, packed)
  s1, o1, h1, l1, c1, v1, n1, q1 =
    step(1, 1, 1000, s1, o1, h1, l1, c1, v1, n1, q1)
  s2, o2, h2, l2, c2, v2, n2, q2 =
    step(2, 2, 60000, s2, o2, h2, l2, c2, v2, n2, q2)
  s3, o3, h3, l3, c3, v3, n3, q3 =
    step(3, 4, 300000, s3, o3, h3, l3, c3, v3, n3, q3)
  s4, o4, h4, l4, c4, v4, n4, q4 =
    step(4, 8, 3600000, s4, o4, h4, l4, c4, v4, n4, q4)
  s5, o5, h5, l5, c5, v5, n5, q5 =
    step(5, 16, 86400000, s5, o5, h5, l5, c5, v5, n5, q5)
  return late, struct.pack(CANDLES_ALL,
    s1, o1, h1, l1, c1, v1, n1, q1,
    s2, o2, h2, l2, c2, v2, n2, q2,
    s3, o3, h3, l3, c3, v3, n3, q3,
    s4, o4, h4, l4, c4, v4, n4, q4,
    s5, o5, h5, l5, c5, v5, n5, q5)
end
"#;

/// `KEYS` price, stream, the interval's closed list. `ARGV[1]` the
/// interval's position (1 for `1s` … 5 for `1d`); `ARGV[2]` its length in
/// ms; `ARGV[3]` grace in ms; `ARGV[4]` the most candles; `ARGV[5]` closed
/// candles kept. Closes the current candle when Redis's clock has passed its
/// end plus the grace. Returns nil for a symbol with no tick, else `{closed
/// list, current record or nil}`.
const READ_BODY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local i, len, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, history = tonumber(ARGV[4]), tonumber(ARGV[5])
local packed = redis.call('HGET', KEYS[2], 'candles')
local cur = false
if packed and #packed == 320 then
  local at = (i - 1) * 64 + 1
  local s, o, h, l, c, v, n, q = struct.unpack(CANDLE, packed, at)
  if n > 0 and now_ms() >= s + len + grace then
    candle_close(KEYS[3], history, s, o, h, l, c, v, n, q)
    packed = packed:sub(1, at - 1) .. struct.pack(CANDLE, s, 0, 0, 0, 0, 0, 0, 0)
      .. packed:sub(at + 64)
    redis.call('HSET', KEYS[2], 'candles', packed)
  elseif n > 0 then
    cur = packed:sub(at, at + 63)
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
            self.keys.stream_key(symbol),
            self.keys.candles_key(symbol, interval),
        ];
        let args = vec![
            (interval.index() + 1).to_string(),
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
                let bytes = item.as_bytes().ok_or_else(|| bad("not a string".into()))?;
                page.push((decode(bytes).map_err(&bad)?, true));
            }
        }
        if let Some(bytes) = current.as_bytes() {
            page.push((decode(bytes).map_err(&bad)?, false));
        }
        Ok(Some(page))
    }
}

/// Reads one stored candle: eight little-endian doubles, `start open high
/// low close volume ticks seq`, as the scripts pack them.
pub fn decode(bytes: &[u8]) -> Result<Candle, String> {
    let Ok(record) = <[u8; RECORD_LEN]>::try_from(bytes) else {
        return Err(format!(
            "a stored candle has {} bytes, not {RECORD_LEN}",
            bytes.len()
        ));
    };
    let field = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&record[i * 8..i * 8 + 8]);
        f64::from_le_bytes(b)
    };
    const NAMES: [&str; 8] = [
        "start", "open", "high", "low", "close", "volume", "ticks", "seq",
    ];
    let [start, open, high, low, close, volume, ticks, seq] = std::array::from_fn(field);
    for (i, v) in [start, open, high, low, close, volume, ticks, seq]
        .into_iter()
        .enumerate()
    {
        if !v.is_finite() {
            return Err(format!("a stored candle's {} is {v}", NAMES[i]));
        }
    }
    // Doubles hold integers exactly up to 2^53.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let whole = |v: f64, name: &str, min: f64| {
        if v.fract() == 0.0 && (min..=EXACT).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "a stored candle's {name} is {v}, not a whole number from {min}"
            ))
        }
    };
    Ok(Candle {
        start_ms: whole(start, "start", -EXACT)? as i64,
        open,
        high,
        low,
        close,
        volume,
        ticks: whole(ticks, "ticks", 1.0)? as u64,
        seq: whole(seq, "seq", 0.0)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: [f64; 8]) -> Vec<u8> {
        fields.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_the_scripts_records() {
        let c = decode(&record([
            1_764_687_840_000.0,
            100.0,
            104.5,
            98.25,
            0.1 + 0.2,
            7.0,
            5.0,
            42.0,
        ]))
        .unwrap();
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
        // Before 1970.
        let c = decode(&record([-1_000.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])).unwrap();
        assert_eq!(c.start_ms, -1_000);
        let good = [1_000.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        for (i, bad) in [
            (0, f64::NEG_INFINITY),
            (0, 0.5),
            (4, f64::NAN),
            (5, f64::INFINITY),
            (6, 0.0),
            (6, 1.5),
            (7, -1.0),
            (7, 1e300),
        ] {
            let mut fields = good;
            fields[i] = bad;
            assert!(decode(&record(fields)).is_err(), "field {i} = {bad}");
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&record(good)[..63]).is_err());
        assert!(decode(b"1764687840000 100 104.5 98.25 0.30000000000000004 7 5 42").is_err());
    }
}
