#!/usr/bin/env bash
# A/B of two marketmux binaries on one scenario, runs alternating, so both
# see the same state of this (noisy, shared) machine. One line per run.
#
#   benches/ab.sh OLD_BIN NEW_BIN                       # market500, 3 rounds of 15 s
#   ROUNDS=2 RATE=2000 ARGS="-c 1000 --symbol AAPL --duration 10" benches/ab.sh A B
#   ROLE=gateway benches/ab.sh A B                      # the gateway role over Redis
#
# Build a baseline with e.g. `git stash; cargo build --release -p marketmux;
# cp target/release/marketmux /tmp/old; git stash pop`.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { sed -n '2,10p' "$0"; exit 2; }
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-500}
ARGS=${ARGS:-"-c 5000 --symbols 200 --subs-per-client 5 --duration 15"}
ROLE=${ROLE:-dev}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PORT=${PORT:-18095}
LOADTEST=${LOADTEST_BIN:-target/release/load-test}
ulimit -n "$(ulimit -Hn)"
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

run=0
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    run=$((run + 1))
    if [[ $ROLE == gateway ]]; then
      "$bin" gateway --listen "127.0.0.1:$PORT" --redis-url "$REDIS_URL" \
        --redis-prefix "mmab:$$:$run:" --max-connections-per-ip 0 >"$data/server.log" 2>&1 &
    else
      "$bin" dev --feed-rate 0 --listen "127.0.0.1:$PORT" --data-dir "$data/$run" \
        --max-connections-per-ip 0 >"$data/server.log" 2>&1 &
    fi
    pid=$!
    up=""
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then up=1; break; fi
      sleep 0.1
    done
    if [[ -z $up ]]; then
      echo "$bin did not open port $PORT; its log:" >&2
      cat "$data/server.log" >&2
      exit 1
    fi
    # shellcheck disable=SC2086
    "$LOADTEST" --quiet --json --url "ws://127.0.0.1:$PORT/ws" --server-pid "$pid" \
      --source-ips "127.0.$((run / 250 + 100)).$((run % 250 + 1))" --connect-rate 2000 \
      --publish-rate "$RATE" $ARGS 2>/dev/null |
      jq -r --arg bin "$bin" --arg round "$round" '"\($round) \($bin): p50 \(.latency.p50_ms) p90 \(.latency.p90_ms) p99 \(.latency.p99_ms) p99.9 \(.latency.p999_ms) max \(.latency.max_ms) ms, ingest max \(.publish.batch_accept.max_ms) ms, server \(.server.cpu_us_per_delivery * 100 | round / 100) us/delivery, \(.deliveries.received)/\(.deliveries.expected) delivered"'
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
if [[ $ROLE == gateway ]] && command -v redis-cli >/dev/null; then
  redis-cli -u "$REDIS_URL" --scan --pattern "mmab:$$:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
fi
