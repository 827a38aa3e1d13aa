#!/usr/bin/env bash
# End-to-end benchmark: the standard scenarios against a release
# MarketMux (`marketmux dev --feed-rate 0`), against NATS's WebSocket
# listener (benches/nats.conf) and against Sockudo, a Pusher-protocol server
# (benches/sockudo.json), then one table with ratios against the better peer.
#
# The production shape: scenarios named `<market scenario>-redis` (for example
# market500-redis) run two `marketmux gateway` nodes on one redis-server of the
# script's own (a free port, no persistence), clients split over both nodes and
# ticks posted to the first; and two Sockudo processes with its Redis adapter
# on such a Redis, published to through the first. Redis's CPU is reported
# beside the nodes'. NATS has no Redis shape and sits those rows out.
#
# Pinning (PIN=auto, the default: on where there are at least 2 CPUs; PIN=on,
# PIN=off): the servers and Redis run on SERVER_CPUS, load-test on LOAD_CPUS
# (default: the first half of the CPUs and the rest), with taskset; the table
# says which.
#
# Every server is restarted for every run, and every run binds its clients to
# a fresh loopback source address (no TIME_WAIT reuse across runs).
# Quick run:  MARKET_DURATION=5 BROADCAST_DURATION=3 IDLE_CLIENTS=2000 benches/e2e.sh
# The production shape only:  SCENARIOS="market500-redis market2000-redis" benches/e2e.sh
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
# Extra load-test flags for every run, e.g. LOADTEST_ARGS="--wake-interval 200us".
read -r -a LOADTEST_EXTRA <<<"${LOADTEST_ARGS:-}"
# Runs per scenario and server (the table shows the median by p99): the machine is shared, figures are noisy.
REPEAT=${REPEAT:-1}
MM_PORT=${MM_PORT:-18090}
MM_PORT_B=${MM_PORT_B:-18091}  # the second gateway node of the -redis scenarios
NATS_WS_PORT=18080   # as in benches/nats.conf
NATS_PORT=14222
# As in benches/sockudo.json (the port is checked in Sockudo's log at each start).
SOCKUDO_VERSION=5.2.0
SOCKUDO_PORT=16001
SOCKUDO_APP_ID=marketmux-bench
SOCKUDO_KEY=marketmux-bench-key
SOCKUDO_SECRET=marketmux-bench-secret
SOCKUDO_PORT_B=16011           # the second Sockudo node of the -redis scenarios
SOCKUDO_METRICS_PORT_B=16012
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
  # Its Redis adapter is behind the `redis` feature (not a default one): without
  # it `adapter.driver = redis` falls back to one local node without a word.
  echo "e2e.sh: installing sockudo $SOCKUDO_VERSION (cargo install --locked --features redis)" >&2
  cargo install sockudo --version "$SOCKUDO_VERSION" --locked --features redis
fi
MARKETMUX=${MARKETMUX_BIN:-target/release/marketmux}
LOADTEST=${LOADTEST_BIN:-target/release/load-test}
ulimit -n "$(ulimit -Hn)"

# Pinning: servers (and Redis) on one set of CPUs, the load generator on the other.
NPROC=$(nproc)
PIN=${PIN:-auto}
if [[ $PIN == auto ]]; then
  if [[ $NPROC -ge 2 ]] && command -v taskset >/dev/null; then PIN=on; else PIN=off; fi
fi
if [[ $PIN == on ]]; then
  SERVER_CPUS=${SERVER_CPUS:-0-$((NPROC / 2 - 1))}
  LOAD_CPUS=${LOAD_CPUS:-$((NPROC / 2))-$((NPROC - 1))}
  SERVER_PIN=(taskset -c "$SERVER_CPUS")
  LOAD_PIN=(taskset -c "$LOAD_CPUS")
  PINNING="servers and Redis on CPUs $SERVER_CPUS, load-test on CPUs $LOAD_CPUS (taskset; $NPROC CPUs)"
else
  SERVER_PIN=()
  LOAD_PIN=()
  PINNING="not pinned ($NPROC CPUs shared by servers, Redis and load-test)"
fi
echo "e2e.sh: $PINNING" >&2

# Every process of the current run: the server nodes, and Redis for -redis scenarios.
SERVER_PIDS=()
BUS_PID=""
BUS_PORT=""
stop_server() {
  local pid
  for pid in "${SERVER_PIDS[@]}" $BUS_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
  BUS_PID=""
}
trap stop_server EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A redis-server of this run's own: a free port, no persistence.
start_redis() {
  BUS_PORT=$(free_port)
  "${SERVER_PIN[@]}" redis-server --bind 127.0.0.1 --port "$BUS_PORT" --save "" --appendonly no \
    --dir "$OUT" --logfile "" >>"$OUT/redis.log" 2>&1 &
  BUS_PID=$!
  wait_port "$BUS_PORT"
}

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not open port $1" >&2
  return 1
}

start_gateway() {  # port log: a gateway node on this run's Redis
  "${SERVER_PIN[@]}" "$MARKETMUX" gateway --listen "127.0.0.1:$1" --redis-url "redis://127.0.0.1:$BUS_PORT" \
    --max-connections-per-ip 0 --max-subscriptions-per-ip 0 >>"$OUT/$2.log" 2>&1 &
  SERVER_PIDS+=("$!")
}

start_server() {  # server: marketmux, nats, sockudo, marketmux-redis or sockudo-redis
  stop_server
  case "$1" in
    marketmux)
      "${SERVER_PIN[@]}" "$MARKETMUX" dev --feed-rate 0 --listen "127.0.0.1:$MM_PORT" --data-dir "$OUT/data" \
        --max-connections-per-ip 0 --max-subscriptions-per-ip 0 >>"$OUT/marketmux.log" 2>&1 &
      SERVER_PIDS=("$!")
      wait_port "$MM_PORT" ;;
    marketmux-redis)
      start_redis
      start_gateway "$MM_PORT" gateway-a
      start_gateway "$MM_PORT_B" gateway-b
      wait_port "$MM_PORT"; wait_port "$MM_PORT_B" ;;
    nats)
      "${SERVER_PIN[@]}" nats-server -c benches/nats.conf >>"$OUT/nats.log" 2>&1 &
      SERVER_PIDS=("$!")
      wait_port "$NATS_WS_PORT"; wait_port "$NATS_PORT" ;;
    sockudo)
      start_sockudo benches/sockudo.json sockudo "$SOCKUDO_PORT" Local ;;
    sockudo-redis)
      start_redis
      sockudo_redis_config "$SOCKUDO_PORT" "$SOCKUDO_METRICS_PORT" >"$OUT/sockudo-a.json"
      sockudo_redis_config "$SOCKUDO_PORT_B" "$SOCKUDO_METRICS_PORT_B" >"$OUT/sockudo-b.json"
      start_sockudo "$OUT/sockudo-a.json" sockudo-a "$SOCKUDO_PORT" Redis
      start_sockudo "$OUT/sockudo-b.json" sockudo-b "$SOCKUDO_PORT_B" Redis ;;
  esac
}

SOCKUDO_METRICS_PORT=$(jq -r .metrics.port benches/sockudo.json)

# benches/sockudo.json with its own ports and the Redis adapter on this run's
# Redis (no fallback to a local adapter when Redis cannot be reached). Sockudo
# refuses to start clustered with its node-local cache ("clustered ...
# idempotency require cache.driver=redis"), so its cache is on that Redis too.
sockudo_redis_config() {  # port metrics-port
  jq --argjson port "$1" --argjson metrics "$2" --argjson redis "$BUS_PORT" '
    .port = $port | .metrics.port = $metrics
    | .database.redis = {host: "127.0.0.1", port: $redis}
    | .cache = {driver: "redis", redis: {prefix: "sockudo_cache:", url_override: "redis://127.0.0.1:\($redis)"}}
    | .adapter = {driver: "redis", fallback_to_local: false,
                  redis: {prefix: "sockudo_adapter", redis_pub_options: {url: "redis://127.0.0.1:\($redis)"}}}' \
    benches/sockudo.json
}

start_sockudo() {  # config log port adapter
  # An empty environment: Sockudo lets HOST, PORT and hundreds of other
  # variables override its config file.
  local from=1
  if [[ -f "$OUT/$2.log" ]]; then from=$(($(wc -l <"$OUT/$2.log") + 1)); fi
  env -i PATH="$PATH" HOME="$HOME" "${SERVER_PIN[@]}" sockudo --config "$1" >>"$OUT/$2.log" 2>&1 &
  SERVER_PIDS+=("$!")
  wait_port "$3"
  check_sockudo_log "$from" "$2" "$3" "$4"
}

# A config file Sockudo cannot parse is ignored without a word (defaults apply:
# port 6001, rate limits on, the local adapter), so check that this start used ours.
check_sockudo_log() {  # first-line log port adapter
  local log
  for _ in $(seq 50); do
    log=$(tail -n +"$1" "$OUT/$2.log" | sed 's/\x1b\[[0-9;]*m//g')
    if grep -q "http server listening.*listen_addr=127.0.0.1:$3" <<<"$log"; then
      if ! grep -q "http api rate limiting disabled" <<<"$log" || ! grep -q "websocket rate limiting disabled" <<<"$log"; then
        echo "Sockudo's rate limiter is on: its config ($2) was not applied" >&2
        exit 1
      fi
      if ! grep -q "adapter=$4 adapter initialized\|adapter initialized.*adapter=$4" <<<"$log" \
        || grep -q "falling back to local" <<<"$log"; then
        echo "Sockudo ($2) did not start its $4 adapter (a build without --features redis?); its log:" >&2
        tail -n +"$1" "$OUT/$2.log" >&2
        exit 1
      fi
      return 0
    fi
    sleep 0.1
  done
  echo "Sockudo did not log listening on 127.0.0.1:$3: its config ($2) was not applied; its log:" >&2
  tail -n +"$1" "$OUT/$2.log" >&2
  exit 1
}

RUN=0
# run LABEL PROTOCOL load-test-args... : appends one JSON report to $RESULTS.
run() {
  local label=$1 server=$2; shift 2
  RUN=$((RUN + 1))
  local src="127.0.$((RUN / 250 + 10)).$((RUN % 250 + 1))"
  local url proto
  case "$server" in
    nats) url="ws://127.0.0.1:$NATS_WS_PORT/"; proto=nats ;;
    sockudo) url="ws://127.0.0.1:$SOCKUDO_PORT/"; proto=pusher ;;
    sockudo-redis) url="ws://127.0.0.1:$SOCKUDO_PORT/,ws://127.0.0.1:$SOCKUDO_PORT_B/"; proto=pusher ;;
    marketmux-redis) url="ws://127.0.0.1:$MM_PORT/ws,ws://127.0.0.1:$MM_PORT_B/ws"; proto=marketmux ;;
    *) url="ws://127.0.0.1:$MM_PORT/ws"; proto=marketmux ;;
  esac
  start_server "$server"
  echo "--- $label ($server)" >&2
  local pids bus=() report="$OUT/run-$RUN.json"
  pids=$(IFS=,; echo "${SERVER_PIDS[*]}")
  if [[ -n $BUS_PID ]]; then bus=(--bus-pid "$BUS_PID"); fi
  if "${LOAD_PIN[@]}" "$LOADTEST" --quiet --json --label "$label" --protocol "$proto" --url "$url" \
    --nats-addr "127.0.0.1:$NATS_PORT" --pusher-app-id "$SOCKUDO_APP_ID" --pusher-key "$SOCKUDO_KEY" \
    --pusher-secret "$SOCKUDO_SECRET" --server-pid "$pids" "${bus[@]}" --source-ips "$src" \
    --connect-rate "$CONNECT_RATE" "${LOADTEST_EXTRA[@]}" "$@" >"$report" 2>>"$OUT/load-test.log"; then
    jq -c --arg pinning "$PINNING" '. + {pinning: $pinning}' "$report" >>"$RESULTS"
  else
    echo "{\"label\":\"$label\",\"scenario\":{\"protocol\":\"$proto\"},\"failed\":true}" >>"$RESULTS"
  fi
  tail -n 14 "$OUT/load-test.log" | sed -n '/^== /,$p' >&2
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

market() {  # label server rate interval [extra args]
  local label=$1 proto=$2 rate=$3 interval=$4; shift 4
  run "$label" "$proto" -c "$MARKET_CLIENTS" --symbols "$MARKET_SYMBOLS" \
    --subs-per-client "$MARKET_SUBS" --publish-rate "$rate" --duration "$MARKET_DURATION" \
    --publish-interval "$interval" "$@"
}

for s in $SCENARIOS; do
  for _ in $(seq "$REPEAT"); do
  for p in $PROTOCOLS; do
    if [[ $s == *-redis ]]; then
      # The production shape: two nodes over one Redis (NATS has no such shape).
      case "$p" in
        nats) continue ;;
        *) p=$p-redis ;;
      esac
    fi
    case "$s" in
      market500-redis) market "$s" "$p" 500 "$MARKET_INTERVAL" ;;
      market2000-redis) market "$s" "$p" 2000 "$MARKET_INTERVAL" ;;
      market500steady-redis) market "$s" "$p" 500 "$STEADY_INTERVAL" ;;
      market2000steady-redis) market "$s" "$p" 2000 "$STEADY_INTERVAL" ;;
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
  redis-server --version 2>/dev/null || echo "redis-server: missing"
  echo "pinning: $PINNING"
} >"$OUT/versions.txt"
python3 benches/table.py "$RESULTS" | tee "$OUT/table.md"
echo "results: $RESULTS" >&2
