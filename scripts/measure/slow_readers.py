#!/usr/bin/env python3
"""RSS of a `marketmux dev` node while N sockets stop reading, and after.

Starts the node (BINARY, default target/release/marketmux) with a synthetic
feed, opens N sockets (small receive buffers) that subscribe to the feed's
first symbols and never read, and prints the node's RSS: before, at the
peak, when the node has closed them all (lag bound; or after HOLD + 60 s,
the kernel's socket buffers absorbing the first seconds), and 5 s / 15 s
after the clients closed theirs.

    python3 scripts/measure/slow_readers.py [--binary PATH] [--sockets 5000]
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "META", "NVDA", "TSLA", "NFLX", "AMD", "INTC"]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def debug_vars(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/vars", timeout=5) as r:
        return json.load(r)


def frame(text):
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data), 0, 0, 0, 0]) + data


def open_slow_socket(port, sub):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    s.sendall(sub)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/marketmux")
    ap.add_argument("--sockets", type=int, default=5000)
    ap.add_argument("--port", type=int, default=18931)
    ap.add_argument("--feed-rate", default="20")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds the sockets stay stuck")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    data = tempfile.mkdtemp(prefix="marketmux-measure-")
    node = subprocess.Popen(
        [a.binary, "dev", "--listen", f"127.0.0.1:{a.port}", "--data-dir", data,
         "--feed-rate", a.feed_rate, "--feed-symbols", str(len(SYMBOLS)),
         "--max-connections-per-ip", "0", "--max-lag-secs", str(a.hold),
         "--idle-timeout-secs", "600", "--max-messages-per-sec", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                debug_vars(a.port)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2)
        base = rss_mib(node.pid)
        sub = frame(json.dumps({"action": "subscribe", "symbols": SYMBOLS}, separators=(",", ":")))
        socks = [open_slow_socket(a.port, sub) for _ in range(a.sockets)]
        opened = rss_mib(node.pid)
        peak, peak_queued, start = opened, 0, time.time()
        while True:
            v = debug_vars(a.port)
            peak = max(peak, rss_mib(node.pid))
            peak_queued = max(peak_queued, v.get("queued_bytes", 0))
            if v["connections"] == 0 or time.time() - start > a.hold + 60:
                break
            time.sleep(0.5)
        closed_after = time.time() - start
        at_close = rss_mib(node.pid)
        closed_by_node = {k: v.get(k) for k in ("connections", "slow_closed")}
        for s in socks:
            s.close()
        time.sleep(5)
        after5 = rss_mib(node.pid)
        time.sleep(10)
        after15 = rss_mib(node.pid)
        print(json.dumps({
            "binary": a.binary, "sockets": a.sockets,
            "rss_mib": {"before": round(base, 1), "sockets_open": round(opened, 1),
                        "peak": round(peak, 1), "all_closed": round(at_close, 1),
                        "closed+5s": round(after5, 1), "closed+15s": round(after15, 1)},
            "peak_queued_mib": round(peak_queued / 2**20, 1),
            "waited_s": round(closed_after, 1),
            "at_end_of_wait": closed_by_node,
        }))
    finally:
        node.terminate()
        node.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
