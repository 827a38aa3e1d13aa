//! The Lua script that accepts one tick into Redis atomically, in one call:
//!
//! 1. a tick whose producer sequence is at or below the last one accepted
//!    from that producer for that symbol is a redelivery: dropped, nothing
//!    else happens (no seq, no publish, no latest-price change);
//! 2. the tick gets the symbol's next `seq` (the symbol's epoch is created
//!    here on its first tick, or by the first `open`);
//! 3. it is stored as the latest price only if it is not older than the
//!    stored one;
//! 4. it is appended to the symbol's history (trimmed by count and age);
//! 5. it updates the symbol's candles of every interval (or is late for an
//!    interval already closed, and says so in its JSON; see [`super::candles`]):
//!    the current candles are one field of the stream hash, read with `epoch`
//!    and `seq` and written with `seq`, so candles add no command per tick
//!    unless a candle closes;
//! 6. it is published on the symbol's channel, with its `seq` and `epoch`.
//!
//! Why publish a stale tick: clients see every tick of a symbol in the order
//! the system accepted it (DESIGN: "only the latest-price store compares
//! timestamps"). Because one script numbers and publishes, and Redis runs
//! scripts one at a time, ticks of a symbol are published in `seq` order.
//!
//! Timestamps and producer sequences are compared as exact decimal integers,
//! not as Lua numbers: nanoseconds since 1970 exceed a double's 53-bit
//! mantissa. A stored value without `ts_ns` (written by another tool) is
//! replaced.
//!
//! Keys (one hash slot: see [`super::keys`]): `KEYS[1]` the price key,
//! `KEYS[2]` the stream hash (`epoch`, `seq`, `candles`), `KEYS[3]` the
//! history list (`"<accepted ms> <tick JSON>"`, oldest first, consecutive
//! seqs), `KEYS[4]` the producers hash (producer id → `"<sequence> <ms>"`),
//! `KEYS[5..=9]` the closed-candle lists of `1s 1m 5m 1h 1d`.

use fred::types::scripts::Script;

use super::candles::{LUA_ACCEPT_CANDLES, LUA_CANDLES};

/// Shared by the scripts: exact comparison of decimal integers, and the
/// age trimming of a history list.
pub(crate) const LUA_PRELUDE: &str = r#"
local function older(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return na end
  if na then a, b = b:sub(2), a:sub(2) end
  if #a ~= #b then return #a < #b end
  return a < b
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim_age(key, ttl, now)
  while true do
    local first = redis.call('LINDEX', key, 0)
    if not first or tonumber(string.match(first, '^(%d+)')) >= now - ttl then return end
    redis.call('LPOP', key)
  end
end
local function new_epoch(stream, history, epoch)
  redis.call('HSET', stream, 'epoch', epoch, 'seq', 0)
  redis.call('DEL', history)
  return epoch
end
"#;

/// `ARGV[1]` the tick's `ts_ns`; `ARGV[2]` the tick JSON without its closing
/// brace; `ARGV[3]` the channel; `ARGV[4]` `"1"` for `SPUBLISH`; `ARGV[5]` the
/// epoch to create if the symbol has none; `ARGV[6]` history size; `ARGV[7]`
/// history age in ms; `ARGV[8]` producer id (`""`: none); `ARGV[9]` producer
/// sequence; `ARGV[10]` most producers remembered; `ARGV[11]` how long the
/// producers hash outlives its last write, ms; `ARGV[12..=16]` the candle
/// arguments (see [`super::candles`]).
///
/// Returns `{1, seq, late}` when the tick became the latest price, `{0, seq,
/// late}` when a newer one was stored, `{-1, 0, 0}` when it was dropped as a
/// duplicate; `late` is the bit set of the intervals whose candle had closed.
const ACCEPT_TICK_BODY: &str = r#"
local now = nil
if ARGV[8] ~= '' then
  local last = redis.call('HGET', KEYS[4], ARGV[8])
  if last and not older(string.match(last, '^(%d+)') or '0', ARGV[9]) then
    return {-1, 0, 0}
  end
  now = now_ms()
  if not last and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[10]) then
    local all = redis.call('HGETALL', KEYS[4])
    local stalest, at = nil, nil
    for i = 1, #all, 2 do
      local t = tonumber(string.match(all[i + 1], ' (%d+)$')) or 0
      if not at or t < at then stalest, at = all[i], t end
    end
    if stalest then redis.call('HDEL', KEYS[4], stalest) end
  end
  redis.call('HSET', KEYS[4], ARGV[8], ARGV[9] .. ' ' .. now)
  redis.call('PEXPIRE', KEYS[4], ARGV[11])
end
local stream = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'candles')
local epoch, seq = stream[1], (tonumber(stream[2]) or 0) + 1
if not epoch then
  epoch = new_epoch(KEYS[2], KEYS[3], ARGV[5])
  seq = 1
end
now = now or now_ms()
local late, candles = accept_candles(stream[3], seq, now)
redis.call('HSET', KEYS[2], 'seq', seq, 'candles', candles)
local json = ARGV[2] .. ',"seq":' .. seq .. ',"epoch":"' .. epoch
if late > 0 then json = json .. '","late":' .. late .. '}' else json = json .. '"}' end
local stored = 0
local cur = redis.call('GET', KEYS[1])
local at = cur and string.find(cur, '"ts_ns":', 1, true)
local cur_ts = at and string.match(cur, '^%-?%d+', at + 8)
if not cur_ts or not older(ARGV[1], cur_ts) then
  redis.call('SET', KEYS[1], json)
  stored = 1
end
local size, ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
if size > 0 and ttl > 0 then
  redis.call('RPUSH', KEYS[3], now .. ' ' .. json)
  redis.call('LTRIM', KEYS[3], -size, -1)
  trim_age(KEYS[3], ttl, now)
  redis.call('PEXPIRE', KEYS[3], ttl)
else
  -- Kept ticks must have consecutive seqs: a tick not kept ends the history.
  redis.call('DEL', KEYS[3])
end
if ARGV[4] == '1' then
  redis.call('SPUBLISH', ARGV[3], json)
else
  redis.call('PUBLISH', ARGV[3], json)
end
return {stored, seq, late}
"#;

/// The accept script's full source.
pub fn accept_tick_lua() -> String {
    format!("{LUA_PRELUDE}{LUA_CANDLES}{LUA_ACCEPT_CANDLES}{ACCEPT_TICK_BODY}")
}

/// The script with its SHA-1, for `EVALSHA`.
pub fn accept_tick_script() -> Script {
    Script::from_lua(accept_tick_lua())
}
