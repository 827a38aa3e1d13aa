#!/usr/bin/env python3
"""Bytes of node memory per topic: RSS of a `marketmux dev` node before and
after 100 sockets subscribe to 1,000 distinct symbols each (100,000 topics of
symbols nobody publishes), in requests of 250 symbols.

    python3 scripts/measure/idle_topics.py [--binary PATH] [--role dev|gateway]
        [--extra-flags "..."]

`--role gateway` needs Redis on 127.0.0.1:6379 (keys under a fresh prefix).
"""
import argparse
import json
import shlex
import socket
import subprocess
import tempfile
import time
import urllib.request

SOCKETS, PER_SOCKET, PER_REQUEST = 100, 1000, 250


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def debug_vars(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/vars", timeout=5) as r:
        return json.load(r)


def frame(text):
    data = text.encode()
    head = bytes([0x81, 0x80 | 126]) + len(data).to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/marketmux")
    ap.add_argument("--port", type=int, default=18932)
    ap.add_argument("--extra-flags", default="")
    ap.add_argument("--role", choices=["dev", "gateway"], default="dev")
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="marketmux-topics-")
    if a.role == "dev":
        role = ["dev", "--data-dir", data, "--feed-rate", "0"]
    else:
        role = ["gateway", "--redis-url", "redis://127.0.0.1:6379",
                "--redis-prefix", f"measure{int(time.time())}:"]
    node = subprocess.Popen(
        [a.binary] + role + ["--listen", f"127.0.0.1:{a.port}", "--max-frame-bytes", "8192"]
        + shlex.split(a.extra_flags),
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
        before = rss_kib(node.pid)
        socks = []
        for i in range(SOCKETS):
            s = socket.create_connection(("127.0.0.1", a.port))
            s.sendall(
                b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            for r in range(PER_SOCKET // PER_REQUEST):
                syms = [f"Q{i:03d}X{r * PER_REQUEST + j:04d}" for j in range(PER_REQUEST)]
                s.sendall(frame(json.dumps({"action": "subscribe", "symbols": syms},
                                           separators=(",", ":"))))
            socks.append(s)
        for _ in range(600):
            v = debug_vars(a.port)
            if v.get("topics", 0) >= SOCKETS * PER_SOCKET:
                break
            time.sleep(0.5)
        time.sleep(3)
        after = rss_kib(node.pid)
        # A baseline with the same sockets and no topics is not taken: 100
        # sockets cost ~0.5 MiB, under 1 % of the total.
        topics = v.get("topics", 0)
        print(json.dumps({
            "binary": a.binary, "role": a.role, "topics": topics,
            "rss_kib_before": before, "rss_kib_after": after,
            "bytes_per_topic": round((after - before) * 1024 / max(topics, 1)),
        }))
        for s in socks:
            s.close()
    finally:
        node.terminate()
        node.wait(timeout=30)


if __name__ == "__main__":
    main()
