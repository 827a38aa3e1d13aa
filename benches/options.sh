#!/usr/bin/env bash
# What a subscriber may ask for, measured: compression and max_rate against
# the plain run, on one release binary, variants alternating so each sees the
# same state of this (noisy, shared) machine. One line per run.
#
#   benches/options.sh                      # 2 rounds: market500 plain vs compressed,
#                                           # 2,000 ticks/s uncapped vs max_rate 2
#   ROUNDS=3 DURATION=20 benches/options.sh
#
# Needs `cargo build --release -p marketmux -p load-test` and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15}
PORT=${PORT:-18096}
BIN=${MARKETMUX_BIN:-target/release/marketmux}
LOADTEST=${LOADTEST_BIN:-target/release/load-test}
MARKET="-c 5000 --symbols 200 --subs-per-client 5 --duration $DURATION"
VARIANTS=(
  "market500|--publish-rate 500"
  "market500-compressed|--publish-rate 500 --compression"
  "capped2000-none|--publish-rate 2000"
  "capped2000-max_rate2|--publish-rate 2000 --max-rate 2"
)
ulimit -n "$(ulimit -Hn)"
data=$(mktemp -d)
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$data"' EXIT

run=0
for round in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    run=$((run + 1))
    label=${v%%|*}
    args=${v#*|}
    "$BIN" dev --feed-rate 0 --listen "127.0.0.1:$PORT" --data-dir "$data/$run" \
      --max-connections-per-ip 0 >"$data/server.log" 2>&1 &
    pid=$!
    up=""
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then up=1; break; fi
      sleep 0.1
    done
    if [[ -z $up ]]; then
      echo "$BIN did not open port $PORT; its log:" >&2
      cat "$data/server.log" >&2
      exit 1
    fi
    # shellcheck disable=SC2086
    "$LOADTEST" --quiet --json --url "ws://127.0.0.1:$PORT/ws" --server-pid "$pid" \
      --source-ips "127.0.$((run / 250 + 110)).$((run % 250 + 1))" --connect-rate 2000 \
      $MARKET $args 2>/dev/null |
      jq -r --arg name "$label" --arg round "$round" '"\($round) \($name): \(.deliveries.received)/\(.deliveries.expected) delivered (\(.deliveries.conflated) skipped), \(.deliveries.bytes_per_delivery * 10 | round / 10) B/delivery on the wire, server \(.server.cpu_s * 100 | round / 100) CPU s, \(.server.cpu_us_per_delivery * 100 | round / 100) us/delivery, p50 \(.latency.p50_ms) p99 \(.latency.p99_ms) ms, \(.connections.compressed) sockets compressed"'
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
