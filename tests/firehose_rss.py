#!/usr/bin/env python3
"""Peak memory of `flowspike serve-firehose` under hostile request shapes (issue 28, items 4-7).

Starts the given flowspike binary on a temporary local state, measures its resident memory once
it is serving (VmRSS after one small request), runs one case, and prints one JSON line:
the case, the baseline and the peak (VmHWM of /proc/PID/status) in MB, and what the clients saw.
Standard library only; Linux only (reads /proc).

    python3 tests/firehose_rss.py --bin target/debug/flowspike CASE [-- extra serve-firehose args]

Cases:
  amplify       one 2.4 MB request: 200,000 empty records and an 8 KB request id (item 4)
  amplify-cap   the largest request the caps accept: 100,000 empty records, a 128-byte id
  timeout       16 requests of 40 MB of flow lines, one every 0.5 s, --max-concurrent-requests 2,
                --request-timeout-secs 1: decodes that outlive their request (item 5)
  connections   500 connections, each sending 400 KB of a request head it never finishes (item 7)
  conn-cost     500 connections sending 60 KB of unfinished head each, --max-connections 1000:
                the cost of one connection at the largest head buffer
  bombs         16 concurrent gzip bodies inflating to 1 GB each (item 6, server side)
"""

import argparse
import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

KEY = "rss-test-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def post(port, request_id, body, gz=False, timeout=300):
    """POST a delivery with raw sockets; returns the status (0 when the connection failed)."""
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"X-Amz-Firehose-Request-Id: {request_id}\r\nX-Amz-Firehose-Protocol-Version: 1.0\r\n"
        f"X-Amz-Firehose-Access-Key: {KEY}\r\nContent-Type: application/json\r\n"
        + ("Content-Encoding: gzip\r\n" if gz else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(head + body)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        return 0


def firehose_body(request_id, records):
    recs = ",".join('{"data":"%s"}' % base64.b64encode(r).decode() for r in records)
    return ('{"requestId":"%s","timestamp":1,"records":[%s]}' % (request_id, recs)).encode()


def metric(mport, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
    except OSError:
        return None
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


class Sampler(threading.Thread):
    """Samples a gauge metric every 50 ms and keeps its maximum."""

    def __init__(self, mport, name):
        super().__init__(daemon=True)
        self.mport, self.name, self.max, self.stop = mport, name, None, False

    def run(self):
        while not self.stop:
            v = metric(self.mport, self.name)
            if v is not None:
                self.max = v if self.max is None else max(self.max, v)
            time.sleep(0.05)


def flow_lines(n_bytes, hour):
    line = f"2 123456789012 eni-1 10.0.0.1 8.8.8.8 49152 443 6 1 40 {hour} {hour + 30} REJECT OK\n"
    return (line * (n_bytes // len(line))).encode()


def run_parallel(jobs):
    results = [None] * len(jobs)

    def go(i, f):
        results[i] = f()

    threads = [threading.Thread(target=go, args=(i, f)) for i, f in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("case")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    port, mport = free_port(), free_port()
    state = tempfile.mkdtemp(prefix="fh-rss-")
    args = [a.bin, "--log-level", "warn", "serve-firehose", "--state", state,
            "--listen", f"127.0.0.1:{port}", "--metrics-addr", f"127.0.0.1:{mport}",
            "--allowed-lateness-secs", "36000"]
    if a.case == "timeout":
        args += ["--max-concurrent-requests", "2", "--request-timeout-secs", "1"]
    args += a.extra
    env = dict(os.environ, FLOWSPIKE_FIREHOSE_ACCESS_KEYS=KEY)
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while metric(mport, "flowspike_checkpoints_total") is None:
            assert server.poll() is None, "server exited"
            assert time.time() < deadline, "server not up"
            time.sleep(0.1)
        hour = int(time.time()) // 3600 * 3600 - 3600
        assert post(port, "warm-up", firehose_body("warm-up", [flow_lines(200, hour)])) == 200
        base = status_kb(server.pid, "VmRSS")
        out = {"case": a.case, "binary": a.bin}
        gauge = Sampler(mport, "flowspike_firehose_decodes_in_flight")
        gauge.start()
        t0 = time.time()
        if a.case in ("amplify", "amplify-cap"):
            n, id_len = (200_000, 8192) if a.case == "amplify" else (100_000, 128)
            rid = "r" * id_len
            body = ('{"requestId":"%s","records":[%s]}'
                    % (rid, ",".join(['{"data":""}'] * n))).encode()
            out["body_mb"] = round(len(body) / 1e6, 2)
            out["status"] = post(port, rid, body)
        elif a.case == "timeout":
            records = [flow_lines(1_000_000, hour) for _ in range(40)]
            bodies = [firehose_body(f"slow-{i}", records) for i in range(16)]
            out["body_mb"] = round(len(bodies[0]) / 1e6, 1)
            # One request every 0.5 s: each gets a permit, times out during its decode, and
            # (before the fix) handed its permit to the next while still decoding.
            out["statuses"] = run_parallel(
                [lambda i=i: (time.sleep(0.5 * i), post(port, f"slow-{i}", bodies[i]))[1]
                 for i in range(16)])
            # The decodes go on after their 503: wait until none is left (or 120 s).
            while time.time() - t0 < 120 and (metric(mport, "flowspike_firehose_decodes_in_flight") or 0) > 0:
                time.sleep(0.2)
        elif a.case in ("connections", "conn-cost"):
            size = 400_000 if a.case == "connections" else 60_000
            pad = b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size
            socks, sent = [], 0
            for _ in range(500):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.settimeout(2)
                    s.sendall(pad)
                    sent += 1
                    socks.append(s)
                except OSError:
                    pass
            time.sleep(3)
            out["clients_sent_head"] = sent
            out["rss_while_held_mb"] = round(status_kb(server.pid, "VmRSS") / 1024, 1)
            out["connections_open"] = metric(mport, "flowspike_firehose_connections")
            out["refused"] = metric(mport, "flowspike_firehose_connections_refused_total")
            for s in socks:
                s.close()
        elif a.case == "bombs":
            bomb = gzip.compress(b" " * (1 << 30), compresslevel=9)
            out["body_kb"] = len(bomb) // 1024
            out["statuses"] = run_parallel(
                [lambda i=i: post(port, f"bomb-{i}", bomb, gz=True) for i in range(16)])
        else:
            sys.exit(f"unknown case {a.case}")
        gauge.stop = True
        out["seconds"] = round(time.time() - t0, 1)
        out["max_decodes_in_flight"] = gauge.max
        out["baseline_rss_mb"] = round(base / 1024, 1)
        out["peak_rss_mb"] = round(status_kb(server.pid, "VmHWM") / 1024, 1)
        out["alive"] = server.poll() is None
        if isinstance(out.get("statuses"), list):
            s = out["statuses"]
            out["statuses"] = {str(k): s.count(k) for k in sorted(set(s))}
        print(json.dumps(out))
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
