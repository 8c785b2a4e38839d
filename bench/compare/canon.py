#!/usr/bin/env python3
"""Canonical form of an aggregation result, for exact comparison across engines (read with DuckDB).

A result is a Parquet file written by a queries/q_*.py script (hour as unix seconds) or a flowspike
state directory (<state>/aggregates/date=*/hr=*/*.parquet, hour a TIMESTAMP). Its canonical form is
one tab-separated line per (hour, source), sorted:

    hour_unix  src_ip  blocked_count  unique_dest_count  bytes  packets  n_dest_ips  md5(dest_ips)  md5(interface_ids)

where the lists are sorted as text and joined with ',' before hashing (flowspike stores dest_ips in
numeric address order, the SQL engines in text order; the sets must be equal). Usage:

    canon.py RESULT [RESULT...] --reference RESULT [--expect-counted N] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys

import duckdb


def load(path: str) -> list[str]:
    con = duckdb.connect()
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "aggregates", "*", "*", "*.parquet")))
        if not files:
            raise ValueError(f"{path}: no aggregates/*/*/*.parquet")
        truncated = con.execute(
            "SELECT count(*) FROM read_parquet(?, hive_partitioning = false) WHERE dest_ips_truncated",
            [files],
        ).fetchone()[0]
        if truncated:
            raise ValueError(f"{path}: {truncated} rows have dest_ips_truncated (estimates)")
        rel = "read_parquet(?, hive_partitioning = false)"
        hour = "CAST(epoch(hour) AS BIGINT)"
        params = [files]
    else:
        rel = "read_parquet(?)"
        hour = "CAST(hour AS BIGINT)"
        params = [path]
    rows = con.execute(
        f"""
        SELECT {hour} AS h, src_ip, CAST(blocked_count AS BIGINT), CAST(unique_dest_count AS BIGINT),
               CAST(bytes AS BIGINT), CAST(packets AS BIGINT), len(dest_ips),
               array_to_string(list_sort(dest_ips), ','), array_to_string(list_sort(interface_ids), ',')
        FROM {rel} ORDER BY h, src_ip
        """,
        params,
    ).fetchall()
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    return [
        "\t".join(map(str, (h, s, c, u, b, p, n))) + f"\t{md5(d)}\t{md5(i)}"
        for h, s, c, u, b, p, n, d, i in rows
    ]


def total_counted(lines: list[str]) -> int:
    return sum(int(line.split("\t")[2]) for line in lines)


def diff(a: list[str], b: list[str], limit: int = 5) -> str:
    """A short description of how b differs from a."""
    sa, sb = set(a), set(b)
    only_a, only_b = sorted(sa - sb)[:limit], sorted(sb - sa)[:limit]
    out = [f"rows {len(a)} vs {len(b)}; {len(sa - sb)} reference rows missing, {len(sb - sa)} extra"]
    out += [f"  reference: {x}" for x in only_a] + [f"  this:      {x}" for x in only_b]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--reference", required=True)
    ap.add_argument("--expect-counted", type=int)
    ap.add_argument("--out-dir")
    a = ap.parse_args()
    ref = load(a.reference)
    bad = 0
    if a.expect_counted is not None and total_counted(ref) != a.expect_counted:
        print(f"reference counts {total_counted(ref)} records, the generator {a.expect_counted}")
        bad += 1
    for r in a.results:
        lines = load(r)
        ok = lines == ref
        bad += not ok
        print(("equal     " if ok else "MISMATCH  ") + r)
        if not ok:
            print(diff(ref, lines))
        if a.out_dir:
            name = r.strip("/").replace("/", "_") + ".tsv"
            with open(os.path.join(a.out_dir, name), "w") as f:
                f.write("\n".join(lines) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
