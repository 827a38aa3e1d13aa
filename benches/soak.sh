#!/usr/bin/env bash
# Soak: the distributed shape under steady load for a long time, with a fault
# injected every few minutes.
#
#   tansu (Kafka) ─▶ two bridges (one group) ─▶ Redis ─▶ two gateways ─▶ N clients
#        ▲                                                  │ (load-test, reconnect mode,
#        ├── POST /api/v1/ticks on gateway A (load-test's   │  resuming from positions)
#        │   own ticks, counted one by one)                 │
#        ├── mock-publisher (a steady synthetic feed)       └─ alerts API (--alerts-url)
#        └─▶ two alerts instances (one group) ─ PostgreSQL (a database of its own)
#
# Every RESTART_EVERY minutes one fault, in turn: bridge B stopped
# (ROLE_KILL_SIGNAL, TERM by default), gateway B SIGKILLed (its clients move
# to A), alerts B stopped (each started again RESTART_AFTER seconds later),
# the broker frozen for RESTART_AFTER seconds
# (SIGSTOP/SIGCONT: tansu's storage here is in memory, a killed tansu would
# come back empty).
#
# Reports delivered / missing / duplicated (load-test), p50/p99 per minute,
# alerts fired and pushed (each exactly once), and RSS and open fds of every
# process at the start (clients connected) and at the end; a resource sample
# every minute is in $OUT/resources.tsv. Exits 1 when a tick is missing or
# duplicated or an alert was pushed twice.
#
#   benches/soak.sh                              # 30 min, 5,000 clients (release build)
#   SOAK_MINUTES=5 RESTART_EVERY_SECS=50 CLIENTS=2000 PROFILE=debug benches/soak.sh
#
# Needs: tansu (cargo install tansu --features dynostore), Redis on
# 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (user postgres, trust), jq,
# psql, redis-cli. Loopback only.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

SOAK_MINUTES=${SOAK_MINUTES:-30}
CLIENTS=${CLIENTS:-5000}
SYMBOLS=${SYMBOLS:-100}            # load-test's symbols (S0001...)
SUBS=${SUBS:-2}                    # symbols per client
RATE=${RATE:-200}                  # load-test ticks/s, POSTed to gateway A (through Kafka)
FEED_SYMBOLS=${FEED_SYMBOLS:-40}   # mock-publisher's symbols (AAPL, MSFT, ...)
FEED_RATE=${FEED_RATE:-4}          # mock-publisher ticks/s per symbol
ALERTS=${ALERTS:-200}              # alerts on the feed's symbols, near their prices
RESTART_EVERY=${RESTART_EVERY:-5}  # minutes between faults
RESTART_EVERY_SECS=${RESTART_EVERY_SECS:-$((RESTART_EVERY * 60))}
RESTART_AFTER=${RESTART_AFTER:-5}  # seconds a killed role (or the frozen broker) stays down
# How bridges and alerts instances are stopped. TERM: they leave their consumer
# group on the way out. KILL: a crash; tansu 0.6 then keeps the dead member in
# its group and gives it partitions at the next rebalance, which nobody reads
# (docs/kafka.md, Known limits). Gateways are always SIGKILLed.
ROLE_KILL_SIGNAL=${ROLE_KILL_SIGNAL:-TERM}
PROFILE=${PROFILE:-release}        # or debug (faster to build, slower to run)
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
OUT=${OUT:-target/soak/$(date -u +%Y%m%dT%H%M%SZ)}

if ! [[ "$SOAK_MINUTES" =~ ^[0-9]+$ ]] || ((SOAK_MINUTES < 1 || SOAK_MINUTES > 720)); then
  echo "SOAK_MINUTES must be 1 to 720" >&2
  exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"
for tool in tansu jq psql redis-cli curl; do
  command -v "$tool" >/dev/null || { echo "soak.sh needs $tool on the PATH" >&2; exit 2; }
done
mkdir -p "$OUT"
if [[ -z "${SKIP_BUILD:-}" ]]; then
  if [[ "$PROFILE" == release ]]; then
    cargo build --release -p marketmux -p load-test -p mock-publisher
  else
    cargo build -p marketmux -p load-test -p mock-publisher
  fi
fi
BIN=target/$PROFILE
ulimit -n "$(ulimit -Hn)"

TAG="soak$$"
PREFIX="mmsoak:$$:"
DB="marketmux_soak_$$"
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
KAFKA_PORT=$(free_port 19400)
GW_A=$(free_port 18401)
GW_B=$(free_port $((GW_A + 1)))
BR_A=$(free_port $((GW_B + 1)))
BR_B=$(free_port $((BR_A + 1)))
AL_A=$(free_port $((BR_B + 1)))
AL_B=$(free_port $((AL_A + 1)))
AM_A=$(free_port $((AL_B + 1)))
AM_B=$(free_port $((AM_A + 1)))
BROKERS="127.0.0.1:$KAFKA_PORT"

declare -A PID=()      # role -> pid
declare -A STARTS=()   # role -> times started
cleanup() {
  for role in "${!PID[@]}"; do
    kill -CONT "${PID[$role]}" 2>/dev/null || true
    kill "${PID[$role]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

wait_http() {  # url what
  for _ in $(seq 600); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not answer on $1; logs in $OUT" >&2
  exit 2
}

# role -> command line (started again the same way after a kill)
declare -A CMD=(
  [bridge-a]="$BIN/marketmux bridge --kafka-brokers $BROKERS --redis-url $REDIS_URL --redis-prefix $PREFIX --group $TAG-bridge --metrics-listen 127.0.0.1:$BR_A"
  [bridge-b]="$BIN/marketmux bridge --kafka-brokers $BROKERS --redis-url $REDIS_URL --redis-prefix $PREFIX --group $TAG-bridge --metrics-listen 127.0.0.1:$BR_B"
  [alerts-a]="$BIN/marketmux alerts --kafka-brokers $BROKERS --database-url $PG/$DB --grpc-listen 127.0.0.1:$AL_A --group $TAG-alerts --redis-url $REDIS_URL --redis-prefix $PREFIX --metrics-listen 127.0.0.1:$AM_A"
  [alerts-b]="$BIN/marketmux alerts --kafka-brokers $BROKERS --database-url $PG/$DB --grpc-listen 127.0.0.1:$AL_B --group $TAG-alerts --redis-url $REDIS_URL --redis-prefix $PREFIX --metrics-listen 127.0.0.1:$AM_B"
  [gateway-a]="$BIN/marketmux gateway --listen 127.0.0.1:$GW_A --redis-url $REDIS_URL --redis-prefix $PREFIX --kafka-brokers $BROKERS --alerts-url http://127.0.0.1:$AL_A --max-connections-per-ip 0 --drain-secs 1"
  [gateway-b]="$BIN/marketmux gateway --listen 127.0.0.1:$GW_B --redis-url $REDIS_URL --redis-prefix $PREFIX --kafka-brokers $BROKERS --alerts-url http://127.0.0.1:$AL_B --max-connections-per-ip 0 --drain-secs 1"
  [mock-publisher]="$BIN/mock-publisher --kafka-brokers $BROKERS --symbols $FEED_SYMBOLS --rate $FEED_RATE"
)
# role -> URL that answers 200 once it is up
declare -A READY=(
  [bridge-a]="http://127.0.0.1:$BR_A/health" [bridge-b]="http://127.0.0.1:$BR_B/health"
  [alerts-a]="http://127.0.0.1:$AM_A/health" [alerts-b]="http://127.0.0.1:$AM_B/health"
  [gateway-a]="http://127.0.0.1:$GW_A/ready" [gateway-b]="http://127.0.0.1:$GW_B/ready"
)
start() {  # role
  # shellcheck disable=SC2086 # the command line is split on purpose
  RUST_LOG=info ${CMD[$1]} >>"$OUT/$1.log" 2>&1 &
  PID[$1]=$!
  STARTS[$1]=$((${STARTS[$1]:-0} + 1))
  if [[ -n "${READY[$1]:-}" ]]; then wait_http "${READY[$1]}" "$1"; fi
}

# The broker and the topic; the database.
tansu broker --listener-url "tcp://$BROKERS" --advertised-listener-url "tcp://$BROKERS" \
  --storage-engine memory://tansu/ >>"$OUT/tansu.log" 2>&1 &
PID[tansu]=$!
STARTS[tansu]=1
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
tansu topic create --broker "tcp://$BROKERS" --partitions 6 market_ticks >>"$OUT/tansu.log" 2>&1
psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null

for role in bridge-a bridge-b alerts-a alerts-b gateway-a gateway-b mock-publisher; do start "$role"; done

# Every fired alert pushed on Redis, one line each.
redis-cli -u "$REDIS_URL" --raw subscribe "${PREFIX}alerts" >"$OUT/alert-pushes.txt" 2>&1 &
PID[alert-watch]=$!
STARTS[alert-watch]=1

# Alerts near the feed's current prices (ABOVE +0.2% .. +2%, BELOW the same under).
symbols=""
for _ in $(seq 100); do
  symbols=$(redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}price:*" | sed "s/^${PREFIX}price://" | grep -v '^S[0-9]' | head -n "$FEED_SYMBOLS" || true)
  [[ -n "$symbols" ]] && break
  sleep 0.2
done
created=0
i=0
while ((created < ALERTS)) && [[ -n "$symbols" ]]; do
  for s in $symbols; do
    ((created < ALERTS)) || break
    price=$(curl -fs "http://127.0.0.1:$GW_A/price/$s" | jq -r '.price // empty')
    [[ -n "$price" ]] || continue
    step=$(( (i % 10) + 1 ))
    if ((i % 2 == 0)); then cond=ABOVE; target=$(jq -n "$price * (1 + $step * 0.002)"); else cond=BELOW; target=$(jq -n "$price * (1 - $step * 0.002)"); fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "http://127.0.0.1:$GW_A/alerts" -H 'content-type: application/json' \
      -d "{\"user_id\":$((i % 50 + 1)),\"symbol\":\"$s\",\"target_price\":$target,\"condition\":\"$cond\"}")
    [[ "$code" == 201 ]] && created=$((created + 1))
    i=$((i + 1))
  done
  ((i < ALERTS * 4)) || break
done
echo "soak: $created alerts created on the feed's symbols" >&2

sample() {  # label: one line per process: label role pid rss_kib fds
  for role in "${!PID[@]}"; do
    local pid=${PID[$role]}
    [[ -d /proc/$pid ]] || continue
    local rss fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$role" "$pid" "${rss:-0}" "$fds"
  done | sort -k2
}

DURATION=$((SOAK_MINUTES * 60))
"$BIN/load-test" --quiet --json --label soak \
  --url "ws://127.0.0.1:$GW_A/ws,ws://127.0.0.1:$GW_B/ws" --reconnect \
  -c "$CLIENTS" --symbols "$SYMBOLS" --subs-per-client "$SUBS" \
  --publish-rate "$RATE" --duration "${DURATION}s" --drain 10s --latency-window 60s \
  >"$OUT/report.json" 2>"$OUT/load-test.log" &
PID[load-test]=$!
STARTS[load-test]=1

# The start: once every client has subscribed (the gateways hold ~CLIENTS sockets).
for _ in $(seq 600); do
  n=0
  for role in gateway-a gateway-b; do n=$((n + $(find "/proc/${PID[$role]}/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l))); done
  ((n >= CLIENTS)) && break
  sleep 0.5
done
T0=$(date +%s)
printf 'when\trole\tpid\trss_kib\tfds\n' >"$OUT/resources.tsv"
sample start | tee -a "$OUT/resources.tsv" >"$OUT/start.tsv"

faults=(bridge-b gateway-b alerts-b tansu)
next_fault=$RESTART_EVERY_SECS
# No fault in the last minutes (two, or one in a run of ten minutes or less):
# the end state is measured at rest.
quiet=$((DURATION > 600 ? 120 : 60))
k=0
: >"$OUT/faults.txt"
while kill -0 "${PID[load-test]}" 2>/dev/null; do
  sleep 5
  t=$(($(date +%s) - T0))
  if ((t / 60 > (t - 5) / 60)); then sample "min$((t / 60))" >>"$OUT/resources.tsv"; fi
  if ((t >= next_fault && t < DURATION - quiet)); then
    victim=${faults[$((k % ${#faults[@]}))]}
    k=$((k + 1))
    next_fault=$((next_fault + RESTART_EVERY_SECS))
    if [[ "$victim" == tansu ]]; then
      echo "t=${t}s: broker frozen for ${RESTART_AFTER}s" | tee -a "$OUT/faults.txt" >&2
      kill -STOP "${PID[tansu]}"; sleep "$RESTART_AFTER"; kill -CONT "${PID[tansu]}"
    else
      signal=$ROLE_KILL_SIGNAL
      [[ "$victim" == gateway-* ]] && signal=KILL
      echo "t=${t}s: SIG$signal $victim, started again after ${RESTART_AFTER}s" | tee -a "$OUT/faults.txt" >&2
      kill "-$signal" "${PID[$victim]}" 2>/dev/null || true
      wait "${PID[$victim]}" 2>/dev/null || true
      sleep "$RESTART_AFTER"
      start "$victim"
    fi
  fi
  if ((t >= DURATION - 5)) && [[ ! -s "$OUT/end.tsv" ]]; then
    sample end | tee -a "$OUT/resources.tsv" >"$OUT/end.tsv"
  fi
done
[[ -s "$OUT/end.tsv" ]] || sample end | tee -a "$OUT/resources.tsv" >"$OUT/end.tsv"
status=0
wait "${PID[load-test]}" || status=$?
unset 'PID[load-test]'
if [[ $status -ne 0 || ! -s "$OUT/report.json" ]]; then
  cat "$OUT/load-test.log" >&2
  echo "load-test failed (exit $status); logs in $OUT" >&2
  exit 2
fi
sleep 2

# Alerts: fired in the store, pushes per alert id on Redis.
fired=$(psql -qtA "$PG/$DB" -c "SELECT count(*) FROM alerts WHERE triggered_at IS NOT NULL")
total_alerts=$(psql -qtA "$PG/$DB" -c "SELECT count(*) FROM alerts")
grep -o '"alert":{"id":[0-9]*' "$OUT/alert-pushes.txt" | sort | uniq -c | awk '{print $1}' >"$OUT/pushes-per-alert.txt" || true
pushed=$(wc -l <"$OUT/pushes-per-alert.txt")
pushed_twice=$(awk '$1 > 1' "$OUT/pushes-per-alert.txt" | wc -l)

{
  echo "## Soak $(date -u +%Y-%m-%d): ${SOAK_MINUTES} min, $CLIENTS clients, $RATE ticks/s counted + $((FEED_SYMBOLS * FEED_RATE)) ticks/s feed ($PROFILE build)"
  echo
  jq -r '
    .deliveries as $d | .recovery as $r |
    "| delivered | \($d.received) of \($d.expected) |",
    "| missing | \($d.missing) (\($r.seam_gaps) at a resubscribe, \($d.conflated) conflated) |",
    "| duplicated | \($d.duplicated) |",
    "| reconnects | \(.reconnects) (\(.closed_by_server) sockets lost; \($r.resumed) streams resumed, \($r.recovered) recovered, \($r.refused) refused) |",
    "| ticks published | \(.publish.ticks) (\(.publish.errors) refused) |",
    "| latency, whole run | p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, max \(.latency.max_ms) ms |"
  ' "$OUT/report.json" | sed '1i | what | figure |\n|---|---|'
  echo "| alerts | $total_alerts created, $fired fired in the store, $pushed pushed, $pushed_twice pushed twice |"
  echo
  echo "Faults injected:"
  sed 's/^/- /' "$OUT/faults.txt"
  echo
  echo "| minute | p50 ms | p99 ms | max ms | samples |"
  echo "|---|---|---|---|---|"
  jq -r '.latency_windows | to_entries[] | "| \(.key) | \(.value.p50_ms) | \(.value.p99_ms) | \(.value.max_ms) | \(.value.samples) |"' "$OUT/report.json"
  echo
  echo "| process | start: pid, RSS MiB, fds | end: pid, RSS MiB, fds | started |"
  echo "|---|---|---|---|"
  join -t $'\t' -1 2 -2 2 -a 1 -e - -o 0,1.3,1.4,1.5,2.3,2.4,2.5 "$OUT/start.tsv" "$OUT/end.tsv" |
    while IFS=$'\t' read -r role p1 r1 f1 p2 r2 f2; do
      mib() { [[ "$1" == - ]] && echo - || awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
      echo "| $role | $p1, $(mib "$r1"), $f1 | $p2, $(mib "$r2"), $f2 | ${STARTS[$role]:-1}× |"
    done
} | tee "$OUT/summary.md"
echo "report: $OUT (summary.md, report.json, resources.tsv, logs)" >&2
jq -e '.deliveries.missing == 0 and .deliveries.duplicated == 0' "$OUT/report.json" >/dev/null && ((pushed_twice == 0))
