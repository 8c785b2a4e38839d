#!/usr/bin/env python3
"""The bench/compare aggregation in Polars: lazy scan_csv, streaming sink to Parquet.

Usage: q_polars.py --input FILE|DIR --out RESULT.parquet
A directory means all its *.gz files. Prints {"engine", "version", "seconds", "rows"} as JSON;
"seconds" is the query and Parquet write, without interpreter start and imports.
"""

import argparse
import json
import os
import time

import polars as pl

# Named as in the flow log header line (scan_csv matches the header against the schema).
SCHEMA = {
    "version": pl.Int32, "account-id": pl.String, "interface-id": pl.String,
    "srcaddr": pl.String, "dstaddr": pl.String, "srcport": pl.Int32, "dstport": pl.Int32,
    "protocol": pl.Int32, "packets": pl.Int64, "bytes": pl.Int64, "start": pl.Int64,
    "end": pl.Int64, "action": pl.String, "log-status": pl.String,
}
SECOND_OCTETS_172 = [f"{i}." for i in range(16, 32)]


def rfc1918(name: str) -> pl.Expr:
    """RFC 1918 by string prefix; 172.16/12 is 172.16. to 172.31. (the 3 characters after '172.')."""
    c = pl.col(name)
    return (
        c.str.starts_with("10.")
        | c.str.starts_with("192.168.")
        | (c.str.starts_with("172.") & c.str.slice(4, 3).is_in(SECOND_OCTETS_172))
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    src = os.path.join(a.input, "*.gz") if os.path.isdir(a.input) else a.input
    lf = pl.scan_csv(src, separator=" ", has_header=True, schema=SCHEMA, null_values="-")
    query = (
        lf.filter(
            (pl.col("action") == "REJECT")
            & (pl.col("log-status") == "OK")
            & rfc1918("srcaddr")
            & ~rfc1918("dstaddr")
        )
        .group_by((pl.col("start") // 3600 * 3600).alias("hour"), pl.col("srcaddr").alias("src_ip"))
        .agg(
            pl.len().alias("blocked_count"),
            pl.col("dstaddr").n_unique().alias("unique_dest_count"),
            pl.col("dstaddr").unique().sort().alias("dest_ips"),
            pl.col("interface-id").unique().sort().alias("interface_ids"),
            pl.col("bytes").sum(),
            pl.col("packets").sum(),
        )
    )
    query.sink_parquet(a.out)  # thread pool: all cores by default
    seconds = time.perf_counter() - t0
    rows = pl.scan_parquet(a.out).select(pl.len()).collect().item()
    print(json.dumps({"engine": "polars", "version": pl.__version__,
                      "seconds": round(seconds, 4), "rows": rows}))


if __name__ == "__main__":
    main()
