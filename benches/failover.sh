#!/usr/bin/env bash
# Failover: two gateway nodes on one Redis, load-test clients split over both
# in the reconnect mode (both URLs, resubscribing with `since`), ticks posted
# to the first node, the second node killed mid-run (and started again a few
# seconds later). Prints delivered / recovered / missing / duplicated; exits 1
# when a tick is missing or duplicated. Loopback only, about 35 s in all.
#
#   benches/failover.sh                                  # 1,000 clients, 500 ticks/s for 20 s
#   CLIENTS=200 DURATION=10 KILL_AT=4 benches/failover.sh
#   KILL_SIGNAL=TERM benches/failover.sh                 # a drain (1012) instead of a crash
#   RESTART_AFTER= RECONNECT_EVERY=0 benches/failover.sh  # B stays down; reconnect only on loss
#   RECOVERY=off benches/failover.sh                     # resubscribe without `since`: what it saves
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-1000}
SYMBOLS=${SYMBOLS:-50}
SUBS=${SUBS:-2}
RATE=${RATE:-500}                     # ticks/s, all posted to node A
DURATION=${DURATION:-20}              # seconds of publishing
KILL_AT=${KILL_AT:-8}                 # seconds after the load test starts
KILL_SIGNAL=${KILL_SIGNAL:-KILL}
RESTART_AFTER=${RESTART_AFTER-4}      # seconds B stays down; empty: it stays down
RECONNECT_EVERY=${RECONNECT_EVERY:-5} # every client also reconnects this often; 0: only on loss
RECOVERY=${RECOVERY:-on}              # off: resubscribe without positions
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PREFIX="mmfailover:$$:"
PORT_A=${PORT_A:-18101}
PORT_B=${PORT_B:-18102}
OUT=${OUT:-target/failover/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -p marketmux -p load-test
fi
MARKETMUX=${MARKETMUX_BIN:-target/release/marketmux}
LOADTEST=${LOADTEST_BIN:-target/release/load-test}
ulimit -n "$(ulimit -Hn)"

PID_A=""
PID_B=""
cleanup() {
  for pid in $PID_A $PID_B; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  fi
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "no node on port $1; see $OUT/node-*.log" >&2
  return 1
}

start_node() {  # port name variable: starts a gateway, its pid into the variable
  "$MARKETMUX" gateway --listen "127.0.0.1:$1" --redis-url "$REDIS_URL" --redis-prefix "$PREFIX" \
    --max-connections-per-ip 0 >>"$OUT/node-$2.log" 2>&1 &
  printf -v "$3" '%s' "$!"
}

start_node "$PORT_A" a PID_A
start_node "$PORT_B" b PID_B
wait_port "$PORT_A"
wait_port "$PORT_B"

every=()
if [[ "$RECONNECT_EVERY" != 0 ]]; then every=(--reconnect-every "$RECONNECT_EVERY"); fi
if [[ "$RECOVERY" == off ]]; then every+=(--no-recovery); fi
timeout $((DURATION + 60)) "$LOADTEST" --quiet --json --label failover \
  --url "ws://127.0.0.1:$PORT_A/ws,ws://127.0.0.1:$PORT_B/ws" --reconnect "${every[@]}" \
  -c "$CLIENTS" --symbols "$SYMBOLS" --subs-per-client "$SUBS" \
  --publish-rate "$RATE" --duration "$DURATION" --server-pid "$PID_A" \
  >"$OUT/report.json" 2>"$OUT/load-test.log" &
LT=$!

sleep "$KILL_AT"
echo "t=${KILL_AT}s: SIG$KILL_SIGNAL to node B (pid $PID_B)" >&2
kill -s "$KILL_SIGNAL" "$PID_B" 2>/dev/null || true
wait "$PID_B" 2>/dev/null || true
PID_B=""
if [[ -n "$RESTART_AFTER" ]]; then
  sleep "$RESTART_AFTER"
  echo "t=$((KILL_AT + RESTART_AFTER))s: node B started again" >&2
  start_node "$PORT_B" b PID_B
fi

status=0
wait "$LT" || status=$?
cat "$OUT/load-test.log" >&2
if [[ $status -ne 0 || ! -s "$OUT/report.json" ]]; then
  echo "load-test failed (exit $status); see $OUT/load-test.log" >&2
  exit 2
fi
jq -r '
  .deliveries as $d | .recovery as $r |
  "delivered   \($d.received) of \($d.expected) (\(if $d.expected > 0 then ($d.received * 10000 / $d.expected | floor) / 100 else 100 end) %)",
  "recovered   \($d.recovered) ticks replayed; \($r.resumed) streams resumed, \($r.recovered) recovered, \($r.refused) refused, \($r.new_epochs) new epochs",
  "missing     \($d.missing) (\($r.seam_gaps) skipped at a resubscribe, \($d.conflated) conflated apart)",
  "duplicated  \($d.duplicated)",
  "reconnects  \(.reconnects) reopened: \($r.forced_reconnects) on schedule, \(.closed_by_server) after a close",
  "latency     p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms (live ticks only)",
  if $r.unnumbered > 0 then "warning     \($r.unnumbered) subscribes named no epoch: these nodes number ticks per connection, the counts above are not exact" else empty end
' "$OUT/report.json" | tee "$OUT/summary.txt"
echo "report: $OUT/report.json" >&2
jq -e '.deliveries.missing == 0 and .deliveries.duplicated == 0' "$OUT/report.json" >/dev/null
