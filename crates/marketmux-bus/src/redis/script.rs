//! The Lua script that accepts one tick into Redis atomically: it stores the
//! tick as the latest price only if it is not older than the stored one, and
//! publishes it on the symbol's channel either way.
//!
//! Why publish a stale tick: clients see every tick of a symbol in the order
//! the system accepted it (DESIGN: "only the latest-price store compares
//! timestamps"). The script returns 1 if the tick became the latest price and
//! 0 if a newer one was already stored.
//!
//! Timestamps are compared as exact decimal integers (`ts_ns`), not as Lua
//! numbers: nanoseconds since 1970 exceed a double's 53-bit mantissa. A stored
//! value without `ts_ns` (written by another tool) is replaced.

use fred::types::scripts::Script;

/// `KEYS[1]` price key; `ARGV[1]` the tick's `ts_ns`; `ARGV[2]` the tick JSON;
/// `ARGV[3]` the channel; `ARGV[4]` `"1"` for `SPUBLISH`, else `PUBLISH`.
pub const ACCEPT_TICK_LUA: &str = r#"
local function older(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return na end
  if na then a, b = b:sub(2), a:sub(2) end
  if #a ~= #b then return #a < #b end
  return a < b
end
local stored = 0
local cur = redis.call('GET', KEYS[1])
local cur_ts = cur and string.match(cur, '"ts_ns":(%-?%d+)')
if not cur_ts or not older(ARGV[1], cur_ts) then
  redis.call('SET', KEYS[1], ARGV[2])
  stored = 1
end
if ARGV[4] == '1' then
  redis.call('SPUBLISH', ARGV[3], ARGV[2])
else
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return stored
"#;

/// The script with its SHA-1, for `EVALSHA`.
pub fn accept_tick_script() -> Script {
    Script::from_lua(ACCEPT_TICK_LUA)
}
