#!/usr/bin/env python3
"""The bench/compare aggregation in DuckDB: its parallel CSV reader on the space-separated text.

Usage: q_duckdb.py --input FILE|DIR --out RESULT.parquet
A directory means all its *.gz files. Prints {"engine", "version", "seconds", "rows"} as JSON;
"seconds" is the query and Parquet write, without interpreter start and imports.
"""

import argparse
import json
import os
import time

import duckdb

COLUMNS = {
    "version": "INTEGER", "account_id": "VARCHAR", "interface_id": "VARCHAR",
    "srcaddr": "VARCHAR", "dstaddr": "VARCHAR", "srcport": "INTEGER", "dstport": "INTEGER",
    "protocol": "INTEGER", "packets": "BIGINT", "bytes": "BIGINT", "start": "BIGINT",
    "end": "BIGINT", "action": "VARCHAR", "log_status": "VARCHAR",
}
SECOND_OCTETS_172 = ", ".join(f"'{i}.'" for i in range(16, 32))


def rfc1918(col: str) -> str:
    """RFC 1918 by string prefix; 172.16/12 is 172.16. to 172.31. (the 3 characters after '172.')."""
    return (
        f"(starts_with({col}, '10.') OR starts_with({col}, '192.168.') OR "
        f"(starts_with({col}, '172.') AND substr({col}, 5, 3) IN ({SECOND_OCTETS_172})))"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    src = os.path.join(a.input, "*.gz") if os.path.isdir(a.input) else a.input
    con = duckdb.connect()  # threads: all cores by default
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    query = f"""
        SELECT start // 3600 * 3600 AS hour, srcaddr AS src_ip, count(*) AS blocked_count,
               count(DISTINCT dstaddr) AS unique_dest_count,
               list_sort(list(DISTINCT dstaddr)) AS dest_ips,
               list_sort(list(DISTINCT interface_id)) AS interface_ids,
               sum(bytes) AS bytes, sum(packets) AS packets
        FROM read_csv('{src}', delim = ' ', header = true, nullstr = '-', auto_detect = false,
                      columns = {columns})
        WHERE action = 'REJECT' AND log_status = 'OK'
          AND {rfc1918('srcaddr')} AND NOT {rfc1918('dstaddr')}
        GROUP BY ALL
    """
    con.execute(f"COPY ({query}) TO '{a.out}' (FORMAT parquet)")
    seconds = time.perf_counter() - t0
    rows = con.execute(f"SELECT count(*) FROM '{a.out}'").fetchone()[0]
    print(json.dumps({"engine": "duckdb", "version": duckdb.__version__,
                      "seconds": round(seconds, 4), "rows": rows}))


if __name__ == "__main__":
    main()
