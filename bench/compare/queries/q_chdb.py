#!/usr/bin/env python3
"""The bench/compare aggregation in chDB (embedded ClickHouse): file() with CustomSeparated.

Usage: q_chdb.py --input FILE|DIR --out RESULT.parquet
A directory means all its *.gz files. Prints {"engine", "version", "seconds", "rows"} as JSON;
"seconds" is the query and Parquet write, without interpreter start and imports.

ClickHouse refuses CSV with a space delimiter ("Try use CustomSeparated format instead"), so this
reads CustomSeparatedWithNames with a space field delimiter; the header line is skipped, not matched
(`input_format_with_names_use_header = 0`), and `-` is NULL through the CSV escaping rule.
"""

import argparse
import json
import os
import time

import chdb

STRUCTURE = (
    "version Nullable(Int32), account_id String, interface_id String, srcaddr Nullable(String), "
    "dstaddr Nullable(String), srcport Nullable(Int32), dstport Nullable(Int32), "
    "protocol Nullable(Int32), packets Nullable(Int64), bytes Nullable(Int64), start Int64, "
    "end Int64, action Nullable(String), log_status String"
)
SECOND_OCTETS_172 = ", ".join(f"'{i}.'" for i in range(16, 32))


def rfc1918(col: str) -> str:
    """RFC 1918 by string prefix; 172.16/12 is 172.16. to 172.31. (the 3 characters after '172.')."""
    return (
        f"(startsWith({col}, '10.') OR startsWith({col}, '192.168.') OR "
        f"(startsWith({col}, '172.') AND substring({col}, 5, 3) IN ({SECOND_OCTETS_172})))"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    # A glob, not a {a,b} list of absolute paths: chDB silently reads nothing from the latter.
    src = os.path.join(a.input, "*.gz") if os.path.isdir(a.input) else a.input
    query = f"""
        SELECT intDiv(start, 3600) * 3600 AS hour, assumeNotNull(srcaddr) AS src_ip,
               count() AS blocked_count, uniqExact(dstaddr) AS unique_dest_count,
               arraySort(groupUniqArray(assumeNotNull(dstaddr))) AS dest_ips,
               arraySort(groupUniqArray(interface_id)) AS interface_ids,
               sum(bytes) AS bytes, sum(packets) AS packets
        FROM file('{src}', 'CustomSeparatedWithNames', '{STRUCTURE}')
        WHERE action = 'REJECT' AND log_status = 'OK'
          AND {rfc1918('srcaddr')} AND NOT {rfc1918('dstaddr')}
        GROUP BY hour, src_ip
        SETTINGS format_custom_field_delimiter = ' ', format_custom_escaping_rule = 'CSV',
                 input_format_with_names_use_header = 0, format_csv_null_representation = '-'
    """
    result = chdb.query(query, "Parquet")  # max_threads: all cores by default
    with open(a.out, "wb") as f:
        f.write(result.bytes())
    seconds = time.perf_counter() - t0
    rows = int(chdb.query(f"SELECT count() FROM file('{a.out}', Parquet)", "CSV").bytes())
    print(json.dumps({"engine": "chdb", "version": chdb.__version__,
                      "seconds": round(seconds, 4), "rows": rows}))


if __name__ == "__main__":
    main()
