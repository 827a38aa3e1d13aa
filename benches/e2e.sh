#!/usr/bin/env bash
# End-to-end benchmark: the standard scenarios against a release
# MarketMux (`marketmux dev --feed-rate 0`), against NATS's WebSocket
# listener (benches/nats.conf) and against Sockudo, a Pusher-protocol server
# (benches/sockudo.json), then one table with ratios against the better peer.
#
# Every server is restarted for every run, and every run binds its clients to
# a fresh loopback source address (no TIME_WAIT reuse across runs).
# Quick run:  MARKET_DURATION=5 BROADCAST_DURATION=3 IDLE_CLIENTS=2000 benches/e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"broadcast1000 broadcast2000 market500 market2000 market500steady market2000steady slow500 idle"}
PROTOCOLS=${PROTOCOLS:-"marketmux nats sockudo"}
BROADCAST_RATES=${BROADCAST_RATES:-"100 250 500 1000 1500 2000 3000 4000 6000 8000"}  # ticks/s, tried in order
BROADCAST_LOW_RATES=${BROADCAST_LOW_RATES:-"50 25 10"}  # tried in order only when the first rate fails
BROADCAST_DURATION=${BROADCAST_DURATION:-10}
BROADCAST_P99_MS=${BROADCAST_P99_MS:-100}
MARKET_CLIENTS=${MARKET_CLIENTS:-5000}
MARKET_SYMBOLS=${MARKET_SYMBOLS:-200}
MARKET_SUBS=${MARKET_SUBS:-5}
MARKET_DURATION=${MARKET_DURATION:-30}
# The market scenarios publish one batch per MARKET_INTERVAL: at 500 ticks/s a
# burst of 5 ticks (625 deliveries) every 10 ms. The *steady variants publish
# every STEADY_INTERVAL instead, as a live feed arrives: one tick every 2 ms at
# 500/s, two every 1 ms at 2,000/s.
MARKET_INTERVAL=${MARKET_INTERVAL:-10ms}
STEADY_INTERVAL=${STEADY_INTERVAL:-1ms}
SLOW_FRACTION=${SLOW_FRACTION:-0.1}
IDLE_CLIENTS=${IDLE_CLIENTS:-15000}
IDLE_DURATION=${IDLE_DURATION:-10}
CONNECT_RATE=${CONNECT_RATE:-2000}
# Runs per scenario and server (the table shows the median by p99): the machine is shared, figures are noisy.
REPEAT=${REPEAT:-1}
MM_PORT=${MM_PORT:-18090}
NATS_WS_PORT=18080   # as in benches/nats.conf
NATS_PORT=14222
# As in benches/sockudo.json (the port is checked in Sockudo's log at each start).
SOCKUDO_VERSION=5.2.0
SOCKUDO_PORT=16001
SOCKUDO_APP_ID=marketmux-bench
SOCKUDO_KEY=marketmux-bench-key
SOCKUDO_SECRET=marketmux-bench-secret
OUT=${OUT:-target/e2e/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -p marketmux -p load-test
fi
# Sockudo from crates.io, pinned, installed only when that version is not on the
# PATH (about 25 minutes cold on 2 cores; its build needs protoc).
export PATH="$HOME/.cargo/bin:$PATH"
if [[ " $PROTOCOLS " == *" sockudo "* ]] && ! sockudo --version 2>/dev/null | grep -qF " $SOCKUDO_VERSION"; then
  if ! command -v protoc >/dev/null 2>&1; then
    echo "e2e.sh: Sockudo's build needs protoc: installing Debian's protobuf-compiler" >&2
    if [[ $(id -u) -eq 0 ]]; then apt-get install -y protobuf-compiler; else sudo apt-get install -y protobuf-compiler; fi
  fi
  echo "e2e.sh: installing sockudo $SOCKUDO_VERSION (cargo install --locked)" >&2
  cargo install sockudo --version "$SOCKUDO_VERSION" --locked
fi
MARKETMUX=${MARKETMUX_BIN:-target/release/marketmux}
LOADTEST=${LOADTEST_BIN:-target/release/load-test}
ulimit -n "$(ulimit -Hn)"

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not open port $1" >&2
  return 1
}

start_server() {  # protocol name
  stop_server
  case "$1" in
    marketmux)
      "$MARKETMUX" dev --feed-rate 0 --listen "127.0.0.1:$MM_PORT" --data-dir "$OUT/data" --max-connections-per-ip 0 \
        >>"$OUT/marketmux.log" 2>&1 &
      SERVER_PID=$!
      wait_port "$MM_PORT" ;;
    nats)
      nats-server -c benches/nats.conf >>"$OUT/nats.log" 2>&1 &
      SERVER_PID=$!
      wait_port "$NATS_WS_PORT"; wait_port "$NATS_PORT" ;;
    sockudo)
      # An empty environment: Sockudo lets HOST, PORT and hundreds of other
      # variables override its config file.
      local from
      from=1
      if [[ -f "$OUT/sockudo.log" ]]; then from=$(($(wc -l <"$OUT/sockudo.log") + 1)); fi
      env -i PATH="$PATH" HOME="$HOME" sockudo --config benches/sockudo.json >>"$OUT/sockudo.log" 2>&1 &
      SERVER_PID=$!
      wait_port "$SOCKUDO_PORT"
      check_sockudo_log "$from" ;;
  esac
}

# A config file Sockudo cannot parse is ignored without a word (defaults apply:
# port 6001, rate limits on), so check that this start used ours.
check_sockudo_log() {  # first line of this start in the log
  local log
  for _ in $(seq 50); do
    log=$(tail -n +"$1" "$OUT/sockudo.log" | sed 's/\x1b\[[0-9;]*m//g')
    if grep -q "http server listening.*listen_addr=127.0.0.1:$SOCKUDO_PORT" <<<"$log"; then
      if ! grep -q "http api rate limiting disabled" <<<"$log" || ! grep -q "websocket rate limiting disabled" <<<"$log"; then
        echo "Sockudo's rate limiter is on: benches/sockudo.json was not applied" >&2
        exit 1
      fi
      return 0
    fi
    sleep 0.1
  done
  echo "Sockudo did not log listening on 127.0.0.1:$SOCKUDO_PORT: benches/sockudo.json was not applied; its log:" >&2
  tail -n +"$1" "$OUT/sockudo.log" >&2
  exit 1
}

RUN=0
# run LABEL PROTOCOL load-test-args... : appends one JSON report to $RESULTS.
run() {
  local label=$1 server=$2; shift 2
  RUN=$((RUN + 1))
  local src="127.0.$((RUN / 250 + 10)).$((RUN % 250 + 1))"
  local url proto=$server
  case "$server" in
    nats) url="ws://127.0.0.1:$NATS_WS_PORT/" ;;
    sockudo) url="ws://127.0.0.1:$SOCKUDO_PORT/"; proto=pusher ;;
    *) url="ws://127.0.0.1:$MM_PORT/ws" ;;
  esac
  start_server "$server"
  echo "--- $label ($server)" >&2
  "$LOADTEST" --quiet --json --label "$label" --protocol "$proto" --url "$url" \
    --nats-addr "127.0.0.1:$NATS_PORT" --pusher-app-id "$SOCKUDO_APP_ID" --pusher-key "$SOCKUDO_KEY" \
    --pusher-secret "$SOCKUDO_SECRET" --server-pid "$SERVER_PID" --source-ips "$src" \
    --connect-rate "$CONNECT_RATE" "$@" >>"$RESULTS" 2>>"$OUT/load-test.log" \
    || echo "{\"label\":\"$label\",\"scenario\":{\"protocol\":\"$proto\"},\"failed\":true}" >>"$RESULTS"
  tail -n 12 "$OUT/load-test.log" | sed -n '/^== /,$p' >&2
  stop_server
}

# The broadcast ladder: stop at the first rate that misses p99 or loses ticks.
# When even the first rate misses, walk down BROADCAST_LOW_RATES until one
# passes, so every server gets a figure.
broadcast() {
  local clients=$1 proto=$2 passed=""
  for rate in $BROADCAST_RATES; do
    broadcast_run "$clients" "$proto" "$rate" || break
    passed=1
  done
  if [[ -z $passed ]]; then
    for rate in $BROADCAST_LOW_RATES; do
      broadcast_run "$clients" "$proto" "$rate" && break
    done
  fi
}

broadcast_run() {  # clients proto rate: fails when the run missed p99 or lost ticks
  run "broadcast$1@$3" "$2" -c "$1" --symbol AAPL --publish-rate "$3" --duration "$BROADCAST_DURATION"
  tail -n 1 "$RESULTS" | jq -e --argjson p99 "$BROADCAST_P99_MS" \
    '.latency.p99_ms < $p99 and .deliveries.missing == 0 and .deliveries.conflated == 0 and .connections.failed == 0' >/dev/null
}

market() {  # label proto rate interval [extra args]
  local label=$1 proto=$2 rate=$3 interval=$4; shift 4
  run "$label" "$proto" -c "$MARKET_CLIENTS" --symbols "$MARKET_SYMBOLS" \
    --subs-per-client "$MARKET_SUBS" --publish-rate "$rate" --duration "$MARKET_DURATION" \
    --publish-interval "$interval" "$@"
}

for s in $SCENARIOS; do
  for _ in $(seq "$REPEAT"); do
  for p in $PROTOCOLS; do
    case "$s" in
      broadcast1000) broadcast 1000 "$p" ;;
      broadcast2000) broadcast 2000 "$p" ;;
      market500) market market500 "$p" 500 "$MARKET_INTERVAL" ;;
      market2000) market market2000 "$p" 2000 "$MARKET_INTERVAL" ;;
      market500steady) market market500steady "$p" 500 "$STEADY_INTERVAL" ;;
      market2000steady) market market2000steady "$p" 2000 "$STEADY_INTERVAL" ;;
      slow500) market slow500 "$p" 500 "$MARKET_INTERVAL" --slow-fraction "$SLOW_FRACTION" ;;
      idle) run idle "$p" -c "$IDLE_CLIENTS" --symbols "$MARKET_SYMBOLS" --duration "$IDLE_DURATION" ;;
      *) echo "unknown scenario $s" >&2; exit 2 ;;
    esac
  done
  done
done

{
  echo "marketmux: $("$MARKETMUX" --version 2>/dev/null || echo "$MARKETMUX"), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nats-server --version 2>/dev/null || echo "nats-server: missing"
  sockudo --version 2>/dev/null || echo "sockudo: missing"
} >"$OUT/versions.txt"
python3 benches/table.py "$RESULTS" | tee "$OUT/table.md"
echo "results: $RESULTS" >&2
