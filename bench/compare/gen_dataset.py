#!/usr/bin/env python3
"""Deterministic generator of default-format (v2) VPC flow log records for bench/compare.

Writes, under OUT (a temporary sibling first, renamed when complete):

    plain/flows.log                 all records, one header line
    gzip/flows.log.gz               the same bytes, one gzip member
    gzip2/part-0.log.gz, part-1     the same records in two gzip files, each with its header line
    s3/AWSLogs/<acct>/vpcflowlogs/us-east-1/YYYY/MM/DD/<acct>_vpcflowlogs_us-east-1_fl-..._<YYYYMMDDTHHmmZ>_<hash>.log.gz
                                    the same records in S3-style objects of 5-20k records, each with its header
    manifest.json                   parameters, counts, and the number of records the aggregation counts

The output depends only on (--seed, --records). Records are produced one S3 object at a time (a
numpy Generator seeded with (seed, object index)), in parallel over all cores. Each object's records
are compressed once as an independent raw-deflate segment ending with a sync flush (pigz's method);
the gzip, gzip2 and S3 files are the concatenations of those segments with their own gzip header,
trailer and header-line segment, so every file is an ordinary single-member gzip stream and nothing is
compressed twice.

The traffic: a few thousand internal hosts (10/8, 172.16/12 incl. AWS's default 172.31/16,
192.168/16) with skewed activity and one or two ENIs each; destinations internal or external, external
ones from a skewed pool of public addresses that includes the addresses just outside RFC 1918
(172.15.x, 172.32.x, 192.167.x, 192.169.x, 11.x, 100.64/10, 169.254/16) to catch wrong CIDR checks;
inbound flows from the internet; ~25% REJECT; a few NODATA and SKIPDATA lines with `-` fields as AWS
writes them; starts spread over 48 hours from 2024-06-01T00:00Z.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import struct
import sys
import time
import zlib
from datetime import datetime, timezone

import numpy as np

HEADER = (
    b"version account-id interface-id srcaddr dstaddr srcport dstport protocol "
    b"packets bytes start end action log-status\n"
)
ACCOUNT = "123456789012"
REGION = "us-east-1"
FLOW_LOG_ID = "fl-0a1b2c3d4e5f67890"
BASE = 1717200000  # 2024-06-01T00:00:00Z, a multiple of 3600
SPAN = 48 * 3600
N_INTERNAL = 4000
N_EXTERNAL = 200_000
N_EDGE = 3000
GZIP_LEVEL = 6
OUTBOUND_SHARE = 0.70  # records whose source is an internal host
OUT_EXTERNAL_SHARE = 0.55  # of those, to an external destination
REJECT_OUTBOUND = 0.185  # 0.7 * 0.185 + 0.3 * 0.40 = 0.25 REJECT overall
REJECT_INBOUND = 0.40
NODATA_RATE = 1e-4
SKIPDATA_RATE = 2e-5

# --- the fixed population (depends on the seed only) -----------------------------------------


def ip_str(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.uint32)
    out = np.empty(len(a), dtype=object)
    for i, x in enumerate(a.tolist()):
        out[i] = f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"
    return out


def in_rfc1918(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.uint64)
    return (
        ((a >> 24) == 10)
        | ((a >> 20) == ((172 << 4) | 1))  # 172.16.0.0/12
        | ((a >> 16) == ((192 << 8) | 168))
    )


def skewed_cdf(n: int, rng: np.random.Generator, s: float, cap: float) -> np.ndarray:
    """A Zipf-like distribution over n items in random order, no item above `cap`."""
    w = 1.0 / np.power(np.arange(n) + 10.0, s)
    w /= w.sum()
    w = np.minimum(w, cap)
    w /= w.sum()
    rng.shuffle(w)
    cdf = np.cumsum(w)
    cdf[-1] = 1.0
    return cdf


class Population:
    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0xF10])
        # Internal hosts: 50% 10/8, 30% 172.16/12 (half of them in 172.31/16), 20% 192.168/16.
        n10, n172 = N_INTERNAL // 2, N_INTERNAL * 3 // 10
        n192 = N_INTERNAL - n10 - n172
        a10 = (10 << 24) | rng.integers(0, 1 << 24, n10)
        second = np.where(rng.random(n172) < 0.5, 31, rng.integers(16, 32, n172))
        a172 = (172 << 24) | (second << 16) | rng.integers(0, 1 << 16, n172)
        a192 = (192 << 24) | (168 << 16) | rng.integers(0, 1 << 16, n192)
        internal = np.unique(np.concatenate([a10, a172, a192]))
        assert in_rfc1918(internal).all()
        self.internal = ip_str(internal)
        n_int = len(internal)
        self.src_cdf = skewed_cdf(n_int, rng, 1.0, 0.01)
        # ENIs: one per host, 5% of hosts have a second one.
        n_eni = n_int + n_int // 20
        eni_ids = rng.integers(0, 1 << 60, n_eni, dtype=np.uint64)
        self.eni = np.array([f"eni-{int(x):017x}" for x in eni_ids.tolist()], dtype=object)
        self.eni1 = np.arange(n_int)
        self.eni2 = np.arange(n_int)
        with_second = rng.choice(n_int, n_int // 20, replace=False)
        self.eni2[with_second] = n_int + np.arange(n_int // 20)
        # External pool: random public addresses plus addresses just outside RFC 1918.
        ext = rng.integers(1 << 24, 224 << 24, N_EXTERNAL * 2)
        ext = ext[~in_rfc1918(ext)]
        edge_prefixes = [
            (172 << 24) | (15 << 16), (172 << 24) | (32 << 16), (192 << 24) | (167 << 16),
            (192 << 24) | (169 << 16), (100 << 24) | (64 << 16), (169 << 24) | (254 << 16),
        ]
        edge = [p | int(x) for p in edge_prefixes for x in rng.integers(0, 1 << 16, N_EDGE // 8)]
        edge += [(11 << 24) | int(x) for x in rng.integers(0, 1 << 24, N_EDGE // 8)]
        edge += [(9 << 24) | int(x) for x in rng.integers(0, 1 << 24, N_EDGE - len(edge))]
        ext = np.unique(np.concatenate([ext[: N_EXTERNAL - len(edge)], np.array(edge)]))
        assert not in_rfc1918(ext).any()
        self.external = ip_str(ext)
        self.ext_cdf = skewed_cdf(len(ext), rng, 1.05, 0.02)
        self.ports = np.array([str(i) for i in range(65536)], dtype=object)
        self.out_ports = np.array([443, 80, 53, 123, 22, 8080, 3389, 5432, 25, 0])
        self.out_port_p = np.array([0.55, 0.12, 0.1, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.05])
        self.in_ports = np.array([22, 23, 3389, 445, 80, 443, 1433, 3306, 8080, 0])
        self.in_port_p = np.array([0.2, 0.1, 0.12, 0.08, 0.1, 0.15, 0.05, 0.05, 0.05, 0.1])


POP: Population | None = None


def _init(seed: int) -> None:
    global POP
    POP = Population(seed)


# --- one object's records ----------------------------------------------------------------------


def make_records(seed: int, n_total: int, obj: int, lo: int, hi: int) -> tuple[bytes, int]:
    """The lines of records [lo, hi) (object `obj`) and how many of them the aggregation counts."""
    p = POP
    rng = np.random.default_rng([seed, 1, obj])
    n = hi - lo
    idx = np.arange(lo, hi, dtype=np.int64)
    window = BASE + (idx * SPAN) // n_total
    outbound = rng.random(n) < OUTBOUND_SHARE
    host = np.searchsorted(p.src_cdf, rng.random(n))
    host = np.minimum(host, len(p.internal) - 1)
    other = rng.integers(0, len(p.internal), n)
    ext = np.minimum(np.searchsorted(p.ext_cdf, rng.random(n)), len(p.external) - 1)
    to_ext = rng.random(n) < OUT_EXTERNAL_SHARE
    host_ip = p.internal[host]
    ext_ip = p.external[ext]
    src = np.where(outbound, host_ip, ext_ip)
    dst = np.where(outbound, np.where(to_ext, ext_ip, p.internal[other]), host_ip)
    eni = p.eni[np.where(rng.random(n) < 0.3, p.eni2[host], p.eni1[host])]
    ephemeral = rng.integers(32768, 61000, n)
    out_port = p.out_ports[np.searchsorted(np.cumsum(p.out_port_p), rng.random(n) * 0.999999)]
    out_port = np.where(out_port == 0, rng.integers(1024, 65536, n), out_port)
    in_port = p.in_ports[np.searchsorted(np.cumsum(p.in_port_p), rng.random(n) * 0.999999)]
    in_port = np.where(in_port == 0, rng.integers(1, 65536, n), in_port)
    srcport = np.where(outbound, ephemeral, rng.integers(1024, 65536, n))
    dstport = np.where(outbound, out_port, in_port)
    proto = np.where((dstport == 53) | (dstport == 123), 17, 6)
    icmp = rng.random(n) < 0.01
    proto = np.where(icmp, 1, proto)
    srcport = np.where(icmp, 0, srcport)
    dstport = np.where(icmp, 0, dstport)
    reject = rng.random(n) < np.where(outbound, REJECT_OUTBOUND, REJECT_INBOUND)
    packets = np.where(reject, rng.integers(1, 4, n), rng.geometric(0.08, n))
    nbytes = packets * rng.integers(40, 1500, n)
    start = window - rng.integers(0, 60, n)
    end = start + rng.integers(1, 61, n)
    status_draw = rng.random(n)
    nodata = status_draw < NODATA_RATE
    skipdata = (status_draw >= NODATA_RATE) & (status_draw < NODATA_RATE + SKIPDATA_RATE)
    action = np.where(reject, "REJECT", "ACCEPT").astype(object)
    sp = p.ports[srcport].tolist()
    dp = p.ports[dstport].tolist()
    lines = [
        f"2 {ACCOUNT} {e} {s} {d} {a} {b} {pr} {pk} {by} {st} {en} {ac} OK"
        for e, s, d, a, b, pr, pk, by, st, en, ac in zip(
            eni.tolist(), src.tolist(), dst.tolist(), sp, dp, proto.tolist(), packets.tolist(),
            nbytes.tolist(), start.tolist(), end.tolist(), action.tolist(),
        )
    ]
    for i in np.flatnonzero(nodata | skipdata).tolist():
        status = "NODATA" if nodata[i] else "SKIPDATA"
        lines[i] = f"2 {ACCOUNT} {eni[i]} - - - - - - - {start[i]} {end[i]} - {status}"
    counted = int(np.count_nonzero(outbound & to_ext & reject & ~nodata & ~skipdata))
    return ("\n".join(lines) + "\n").encode(), counted


def deflate_segment(data: bytes) -> bytes:
    """`data` as raw deflate blocks ending at a byte boundary (sync flush, not final)."""
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0: reproducible
FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block


def gzip_trailer(crc: int, size: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


HEADER_SEGMENT = deflate_segment(HEADER)
HEADER_CRC = zlib.crc32(HEADER)


def s3_name(obj: int, seed: int, max_end: int) -> str:
    delivered = (max_end // 300 + 1) * 300
    t = datetime.fromtimestamp(delivered, tz=timezone.utc)
    h = hashlib.sha1(f"{seed}/{obj}".encode()).hexdigest()[:8]
    return (
        f"AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/{t:%Y/%m/%d}/"
        f"{ACCOUNT}_vpcflowlogs_{REGION}_{FLOW_LOG_ID}_{t:%Y%m%dT%H%MZ}_{h}.log.gz"
    )


def work(task: tuple[int, int, int, int, int, str]):
    seed, n_total, obj, lo, hi, s3_root = task
    data, counted = make_records(seed, n_total, obj, lo, hi)
    seg = deflate_segment(data)
    crc = zlib.crc32(data)
    # The last line's end time names the object (records are in time order up to a minute).
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b" ")
    max_end = BASE + ((hi - 1) * SPAN) // n_total + 60 if last[11] == b"-" else int(last[11])
    name = s3_name(obj, seed, max_end)
    path = os.path.join(s3_root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(GZIP_HEADER + HEADER_SEGMENT + seg + FINAL_BLOCK)
        f.write(gzip_trailer(zlib.crc32(data, HEADER_CRC), len(HEADER) + len(data)))
    return obj, data, seg, counted


class GzipWriter:
    """A single-member gzip file assembled from independent sync-flushed deflate segments."""

    def __init__(self, path: str):
        self.f = open(path, "wb")
        self.f.write(GZIP_HEADER + HEADER_SEGMENT)
        self.crc = HEADER_CRC
        self.size = len(HEADER)

    def add(self, data: bytes, seg: bytes) -> None:
        self.f.write(seg)
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def close(self) -> None:
        self.f.write(FINAL_BLOCK + gzip_trailer(self.crc, self.size))
        self.f.close()


def generate(out: str, n_records: int, seed: int, jobs: int) -> dict:
    t0 = time.time()
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("plain", "gzip", "gzip2", "s3"):
        os.makedirs(os.path.join(tmp, d))
    # Object sizes: 5-20k records, from the seed.
    rng = np.random.default_rng([seed, 2])
    bounds = [0]
    while bounds[-1] < n_records:
        bounds.append(min(n_records, bounds[-1] + int(rng.integers(5000, 20001))))
    n_obj = len(bounds) - 1
    split = min(range(1, n_obj + 1), key=lambda k: abs(bounds[k] - n_records / 2)) if n_obj > 1 else 1
    tasks = [(seed, n_records, i, bounds[i], bounds[i + 1], os.path.join(tmp, "s3")) for i in range(n_obj)]
    plain = open(os.path.join(tmp, "plain", "flows.log"), "wb")
    plain.write(HEADER)
    gz = GzipWriter(os.path.join(tmp, "gzip", "flows.log.gz"))
    parts = [GzipWriter(os.path.join(tmp, "gzip2", f"part-{k}.log.gz")) for k in (0, 1)]
    counted = 0
    plain_bytes = len(HEADER)
    with mp.get_context("fork").Pool(jobs, initializer=_init, initargs=(seed,)) as pool:
        for obj, data, seg, c in pool.imap(work, tasks, chunksize=1):
            plain.write(data)
            plain_bytes += len(data)
            gz.add(data, seg)
            parts[0 if obj < split else 1].add(data, seg)
            counted += c
    plain.close()
    gz.close()
    for p in parts:
        p.close()
    # With one object, part-1 has only its header line: still a valid file with the same records in total.
    manifest = {
        "records": n_records,
        "seed": seed,
        "s3_objects": n_obj,
        "gzip2_split_record": bounds[split],
        "plain_bytes": plain_bytes,
        "counted_records": counted,
        "start": BASE,
        "span_hours": SPAN // 3600,
        "gzip_level": GZIP_LEVEL,
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True, help="dataset directory (replaced)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    if a.records < 1:
        ap.error("--records must be positive")
    m = generate(a.out, a.records, a.seed, a.jobs)
    print(json.dumps(m), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
