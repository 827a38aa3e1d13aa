#!/usr/bin/env python3
"""Turns benches/e2e.sh results (one load-test JSON report per line) into a
Markdown table: MarketMux, NATS and Sockudo side by side, with MarketMux's
advantage over the better of the two peers on each metric (>1 means MarketMux
is better, whatever the direction of the metric). Rows of the production
shape (labels ending in -redis: two nodes over one Redis) add Redis's CPU."""
import json
import sys


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                runs.append(json.loads(line))
    return runs


def ok(r):
    d = r.get("deliveries", {})
    return (not r.get("failed") and r["latency"]["p99_ms"] < P99_MS
            and d.get("missing", 1) == 0 and d.get("conflated", 1) == 0
            and r["connections"]["failed"] == 0)


def pick(runs, label, proto):
    """The run of `label` (for a broadcast ladder: the best passing rung)."""
    mine = [r for r in runs if r.get("scenario", {}).get("protocol") == proto
            and not r.get("failed")
            and (r["label"] == label or r["label"].startswith(label + "@"))]
    if not mine:
        return None, ""
    if label.startswith("broadcast"):
        good = [r for r in mine if ok(r)]
        if good:
            return max(good, key=lambda r: r["deliveries"]["per_sec"]), ""
        return min(mine, key=lambda r: r["scenario"]["publish_rate"]), " (no rate passed)"
    if len(mine) == 1:
        return mine[0], ""
    # Repeated runs: the median by p99, and how many there were.
    mine.sort(key=lambda r: r["latency"]["p99_ms"])
    return mine[len(mine) // 2], f" (median of {len(mine)})"


def cpu(r):
    s = r.get("server") or {}
    return s.get("cpu_us_per_delivery")


def gen(r):
    return (r.get("generator") or {}).get("cpu_cores")


def bus(r, key):
    return (r.get("bus") or {}).get(key)


def with_bus(r):
    """Nodes and Redis together, µs of CPU per delivery."""
    mine, theirs = cpu(r), bus(r, "cpu_us_per_delivery")
    return None if mine is None or theirs is None else mine + theirs


def nodes(r):
    """Each node's cores busy, as `a + b`."""
    shares = (r.get("server") or {}).get("nodes") or []
    return " + ".join(f"{n['cpu_cores']:.2f}" for n in shares) or None


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


# What every market scenario reports first, on one node or over Redis.
DELIVERY = [
    ("delivered / expected %", lambda r: 100.0 * r["deliveries"]["received"] / max(1, r["deliveries"]["expected"]), True),
    ("deliveries/s", lambda r: r["deliveries"]["per_sec"], True),
    # Below the rate asked when the server accepts ticks more slowly than that.
    ("ticks/s published", lambda r: r["publish"]["achieved_rate"], True),
    ("p50 ms", lambda r: r["latency"]["p50_ms"], False),
    ("p99 ms", lambda r: r["latency"]["p99_ms"], False),
    ("p99.9 ms", lambda r: r["latency"]["p999_ms"], False),
]

METRICS = {
    "broadcast": [
        ("sustained deliveries/s at p99 < 100 ms", lambda r: r["deliveries"]["per_sec"], True),
        ("publish rate, ticks/s", lambda r: r["scenario"]["publish_rate"], True),
        ("p99 ms", lambda r: r["latency"]["p99_ms"], False),
        ("server CPU µs/delivery", cpu, False),
        ("load generator cores busy", gen, None),
    ],
    "market": DELIVERY + [
        ("server CPU µs/delivery", cpu, False),
        ("server cores busy", lambda r: (r.get("server") or {}).get("cpu_cores"), False),
        ("load generator cores busy", gen, None),
    ],
    "cluster": DELIVERY + [
        ("nodes' CPU µs/delivery (both)", cpu, False),
        ("nodes' cores busy (A + B)", nodes, None),
        ("Redis cores busy", lambda r: bus(r, "cpu_cores"), False),
        ("Redis CPU µs/published tick", lambda r: bus(r, "cpu_us_per_tick"), False),
        ("nodes + Redis CPU µs/delivery", with_bus, False),
        ("load generator cores busy", gen, None),
    ],
    "slow": [
        ("fast clients' p99 ms", lambda r: r["latency"]["p99_ms"], False),
        ("fast clients delivered %", lambda r: 100.0 * r["deliveries"]["received"] / max(1, r["deliveries"]["expected"]), True),
        ("server peak RSS MiB", lambda r: (r.get("server") or {}).get("rss_peak_kib", 0) / 1024, False),
        ("server CPU µs/delivery", cpu, False),
    ],
    "idle": [
        ("subscribed sockets", lambda r: r["connections"]["subscribed"], True),
        ("server RSS per connection, bytes", lambda r: (r.get("server") or {}).get("rss_per_connection_bytes"), False),
        ("connect p99 ms", lambda r: r["connections"]["connect_p99_ms"], False),
    ],
}

P99_MS = 100.0
# The servers, by the protocol load-test spoke to them: (protocol, column).
SERVERS = [("marketmux", "MarketMux"), ("nats", "NATS"), ("pusher", "Sockudo")]


def advantage(mine, peers, higher):
    """MarketMux's value against the better peer's, or None."""
    if higher is None:
        return None
    peers = [p for p in peers if p is not None and p > 0]
    if mine is None or mine <= 0 or not peers:
        return None
    if higher:
        return mine / max(peers)
    return min(peers) / mine


def kind_of(label):
    if label.endswith("-redis"):
        return "cluster"
    return next(k for k in METRICS if label.startswith(k))


def main():
    runs = load(sys.argv[1])
    pinning = sorted({r["pinning"] for r in runs if r.get("pinning")})
    for p in pinning:
        print(f"Pinning: {p}.\n")
    labels = []
    for r in runs:
        base = r["label"].split("@")[0]
        if base not in labels:
            labels.append(base)
    names = " | ".join(name for _, name in SERVERS)
    print(f"| scenario | metric | {names} | MarketMux advantage over the better peer |")
    print("|---|---|" + "---:|" * (len(SERVERS) + 1))
    market = {}
    for label in labels:
        kind = kind_of(label)
        picked = [pick(runs, label, proto) for proto, _ in SERVERS]
        if kind == "market":
            market[label] = [run for run, _ in picked]
        name = label
        first = next((run for run, _ in picked if run), None)
        if first:
            s = first["scenario"]
            name = f"{label} ({s['clients']} clients, {s['symbols']}×{s['subs_per_client']}"
            if label.startswith("market") and s.get("publish_interval_ms"):
                name += f", a batch every {s['publish_interval_ms']:g} ms"
            if kind == "cluster":
                name += f", {len(s.get('urls') or [1])} nodes on one Redis"
            name += ")"
        for title, f, higher in METRICS[kind]:
            vals = [f(run) if run else None for run, _ in picked]
            cells = " | ".join(f"{fmt(v)}{note}" for v, (_, note) in zip(vals, picked))
            # A peer that passed no broadcast rate has no sustained rate to compare.
            peers = [None if note and higher else v for v, (_, note) in zip(vals[1:], picked[1:])]
            adv = advantage(vals[0], peers, higher)
            print(f"| {name} | {title} | {cells} | {fmt(adv) + '×' if adv else '–'} |")
            name = ""
        if kind == "slow" and "market500" in market:
            vals = []
            for (run, _), base in zip(picked, market["market500"]):
                if run and base and base["latency"]["p99_ms"] > 0:
                    vals.append(f"{fmt(run['latency']['p99_ms'] / base['latency']['p99_ms'])}×")
                else:
                    vals.append("–")
            print(f"| | p99 vs market500 without slow readers | {' | '.join(vals)} | – |")


if __name__ == "__main__":
    main()
