#!/usr/bin/env python3
"""Redis's own CPU per call of the accept script, for several versions of it.

Starts a redis-server of its own on a free port (no persistence), and for
each round and each version: FLUSHALL, SCRIPT LOAD, a warm-up stream of ticks
(so tick histories and closed-candle lists are full and trimmed, as in a
long-running deployment), CONFIG RESETSTAT, then the measured stream, and
reads `INFO commandstats` (usec_per_call of evalsha: time inside the script,
its nested commands included) and `INFO cpu` (the server's user+sys CPU over
the measured stream, parsing and networking included, divided by the calls).

Every version gets the same tick stream: `--symbols` symbols with prices of
a few dollars to a few hundred on a cent grid, random walks, integer volumes,
timestamps starting at the current time and advancing `1000 / (symbols *
--rate)` ms per tick (each symbol ticks `--rate` times a second of tick
time), so 1 s candles close every few ticks of a symbol and 1 m candles now
and then. Ticks come in pipelined batches of `--batch` calls on one
connection, the way a gateway or bridge sends them.

A version is a git revision (`edb1289`, `HEAD`) or `.` for the working tree;
its script is `accept_tick_lua()` of crates/marketmux-bus/src/redis/script.rs
at that revision, assembled from the `r#"..."#` constants it names. `--lua
FILE` adds a script from a file. Every script is called with the current
argument layout, 9 keys (price, stream, history, producers, the closed-candle
lists of 1s 1m 5m 1h 1d) and 16 arguments; a version that takes fewer
ignores the rest. The first candle version kept the current candles in a
hash of their own, `KEYS[5]` (the lists followed it): a script that names
`KEYS[5]` gets that layout, 10 keys.

    benches/accept_cost.py edb1289 .            # before candles vs now
    benches/accept_cost.py --rounds 5 --ticks 200000 edb1289 HEAD .
"""

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_RS = "crates/marketmux-bus/src/redis/script.rs"
CANDLES_RS = "crates/marketmux-bus/src/redis/candles.rs"


def git_file(rev, path):
    """The text of `path` at `rev` (`.`: the working tree); "" when absent."""
    if rev == ".":
        full = os.path.join(ROOT, path)
        return open(full).read() if os.path.exists(full) else ""
    r = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{path}"],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def accept_lua(rev):
    """accept_tick_lua() of `rev`, assembled from its constants."""
    consts = {}
    for path in (SCRIPT_RS, CANDLES_RS):
        for name, body in re.findall(r'const (\w+): &str = r#"(.*?)"#;',
                                     git_file(rev, path), re.S):
            consts[name] = body
    m = re.search(r'fn accept_tick_lua\(\) -> String \{\s*format!\("([^"]*)"\)',
                  git_file(rev, SCRIPT_RS))
    if not m:
        sys.exit(f"{rev}: no accept_tick_lua() in {SCRIPT_RS}")
    lua = m.group(1)
    for name in re.findall(r"\{(\w+)\}", lua):
        if name not in consts:
            sys.exit(f"{rev}: accept_tick_lua() names {name}, not found")
        lua = lua.replace("{" + name + "}", consts[name])
    return lua


class Resp:
    """A minimal RESP2 client: enough to pipeline calls and read replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()

    def info(self, section):
        text = self.call("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="accept_cost.")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp, "--logfile", os.path.join(tmp, "log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            r = Resp(port)
            r.call("PING")
            return proc, r
        except (ConnectionError, OSError, RuntimeError):
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("redis-server did not start (is it installed?)")
            time.sleep(0.05)


def rfc3339(ns):
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%09dZ" % frac


def shortest(x):
    """A float as Rust's `to_string` prints it (shortest exact text)."""
    s = repr(x)
    return s[:-2] if s.endswith(".0") else s


def tick_stream(args, start_ms, n, candle_hash):
    """The calls' keys and arguments after the SHA, RESP-encoded, one per
    tick; `candle_hash`: the first candle layout (see the top)."""
    rng = random.Random(args.seed)
    symbols = ["S%03d" % i for i in range(args.symbols)]
    prices = [round(rng.uniform(5, 500), 2) for _ in symbols]
    step_ns = int(1e9 / (args.symbols * args.rate))
    ts = start_ms * 1_000_000
    producer_seq = 0
    out = []
    for i in range(n):
        k = i % args.symbols
        sym = symbols[k]
        p = max(0.01, round(prices[k] * (1 + rng.gauss(0, 0.0005)), 2))
        prices[k] = p
        volume = rng.randint(1, 500)
        ts += step_ns
        price = shortest(p)
        open_json = ('{"symbol":"%s","price":%s,"timestamp":"%s","volume":%d,"ts_ns":%d'
                     % (sym, price, rfc3339(ts), volume, ts))
        tag = "{price:%s}" % sym
        keys = ["price:" + sym, "stream:" + tag, "history:" + tag, "producers:" + tag]
        keys += ["candle:" + tag] if candle_hash else []
        keys += ["candles:%s:%s" % (iv, tag) for iv in ("1s", "1m", "5m", "1h", "1d")]
        if args.producer:
            producer_seq += 1
            producer, seq = "7", str(producer_seq)
        else:
            producer, seq = "", ""
        argv = [str(ts), open_json, "ticks:" + sym, "0", "E%016x" % args.seed,
                str(args.history), "600000", producer, seq, "64", "86400000",
                str(args.candle_history), "500", str(ts // 1_000_000), price,
                str(volume)]
        out.append(Resp.encode(str(len(keys)), *keys, *argv))
    return out


def run_stream(r, sha, calls, batch):
    head = Resp.encode("EVALSHA", sha)
    # "*N" of the whole call: EVALSHA, sha, numkeys, keys, argv.
    for lo in range(0, len(calls), batch):
        chunk = calls[lo:lo + batch]
        buf = []
        for c in chunk:
            n = int(c[1:c.index(b"\r\n")])
            buf.append(b"*%d\r\n" % (n + 2) + head[head.index(b"\r\n") + 2:]
                       + c[c.index(b"\r\n") + 2:])
        r.sock.sendall(b"".join(buf))
        for _ in chunk:
            reply = r.reply()
            if not isinstance(reply, list) or reply[1] <= 0:
                raise RuntimeError(f"unexpected reply {reply!r}")


def measure(r, sha, warm, calls, batch):
    r.call("FLUSHALL")
    run_stream(r, sha, warm, batch)
    r.call("CONFIG", "RESETSTAT")
    cpu0 = r.info("cpu")
    t0 = time.perf_counter()
    run_stream(r, sha, calls, batch)
    wall = time.perf_counter() - t0
    cpu1 = r.info("cpu")
    stats = r.info("commandstats")["cmdstat_evalsha"]
    fields = dict(kv.split("=") for kv in stats.split(","))
    cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_user", "used_cpu_sys"))
    assert int(fields["calls"]) == len(calls), fields
    return {
        "usec_per_call": float(fields["usec_per_call"]),
        "cpu_usec_per_call": cpu * 1e6 / len(calls),
        "calls_per_sec": len(calls) / wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revs", nargs="*", help="git revisions, '.' for the working tree")
    ap.add_argument("--lua", action="append", default=[], help="a script file to measure")
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--rate", type=float, default=5.0,
                    help="ticks per symbol per second of tick time")
    ap.add_argument("--warmup", type=int, default=None,
                    help="warm-up ticks (default: symbols x history)")
    ap.add_argument("--ticks", type=int, default=100_000, help="measured ticks")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100, help="calls per pipeline")
    ap.add_argument("--history", type=int, default=1000, help="ticks kept per symbol")
    ap.add_argument("--candle-history", type=int, default=1000,
                    help="closed candles kept per symbol and interval")
    ap.add_argument("--producer", action="store_true",
                    help="ticks carry a producer sequence (a bridge's duplicate check)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    versions = [(rev, accept_lua(rev)) for rev in args.revs]
    versions += [(path, open(path).read()) for path in args.lua]
    if not versions:
        ap.error("name at least one revision or --lua file")
    warm_n = args.warmup if args.warmup is not None else args.symbols * args.history
    print(f"generating {warm_n:,} warm-up + {args.ticks:,} measured ticks ...",
          file=sys.stderr)
    start_ms = int(time.time() * 1000)
    streams = {}
    for layout in sorted({"KEYS[5]" in lua for _, lua in versions}):
        all_calls = tick_stream(args, start_ms, warm_n + args.ticks, layout)
        streams[layout] = (all_calls[:warm_n], all_calls[warm_n:])
    proc, r = start_redis()
    try:
        shas = [r.call("SCRIPT", "LOAD", lua).decode() for _, lua in versions]
        results = {name: [] for name, _ in versions}
        for rnd in range(args.rounds):
            # Alternate the order, so a drift of the machine favours no version.
            order = list(zip(versions, shas))
            if rnd % 2:
                order.reverse()
            for (name, lua), sha in order:
                warm, calls = streams["KEYS[5]" in lua]
                m = measure(r, sha, warm, calls, args.batch)
                results[name].append(m)
                print(f"round {rnd + 1} {name}: {m['usec_per_call']:.2f} us/call in the "
                      f"script, {m['cpu_usec_per_call']:.2f} us server CPU/call, "
                      f"{m['calls_per_sec']:,.0f} calls/s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    print(f"\n{args.symbols} symbols, {args.rate:g} ticks/s each (tick time), history "
          f"{args.history}, candle history {args.candle_history}, "
          f"producer {'on' if args.producer else 'off'}; {args.ticks:,} measured ticks "
          f"after {warm_n:,}, {args.rounds} rounds, medians (min-max)\n")
    print("| version | evalsha usec_per_call | server CPU us/call | calls/s |")
    print("|---|---|---|---|")
    base = None
    for name, _ in versions:
        ms = results[name]
        row = []
        for key in ("usec_per_call", "cpu_usec_per_call", "calls_per_sec"):
            vals = [m[key] for m in ms]
            fmt = "{:,.0f}" if key == "calls_per_sec" else "{:.2f}"
            row.append(f"{fmt.format(statistics.median(vals))} "
                       f"({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        med = statistics.median(m["usec_per_call"] for m in ms)
        base = base or med
        ratio = f" ({med / base:.2f}x)" if base and name != versions[0][0] else ""
        print(f"| {name} | {row[0]}{ratio} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
