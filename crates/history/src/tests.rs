use super::*;
use flowspike_counter::{Counter, CounterConfig, Hit};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

const H: i64 = 1_704_171_600; // 2024-01-02T05:00:00Z

fn rows_of(hits: &[(i64, u32, u32)], cap: usize) -> Vec<AggregateRow> {
    let mut c = Counter::new(CounterConfig { dest_cap: cap, ..CounterConfig::default() });
    for &(hour, src, dst) in hits {
        c.add(&Hit {
            hour,
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + src)),
            dst: IpAddr::V4(Ipv4Addr::from(0x0808_0000 + dst)),
            interface_id: Some(if src % 2 == 0 { b"eni-0a" } else { b"eni-0b" }),
            bytes: 100,
            packets: 2,
        });
    }
    c.into_rows()
}

fn history(cap: usize) -> (tempfile::TempDir, History) {
    let dir = tempfile::tempdir().unwrap();
    let h = History::new(Arc::new(LocalStore::new(dir.path()))).with_dest_cap(cap);
    (dir, h)
}

#[test]
fn hour_key_prefix_and_back() {
    for (hour, prefix) in [
        (0, "aggregates/date=1970-01-01/hr=00/"),
        (H, "aggregates/date=2024-01-02/hr=05/"),
        (H + 18 * 3600, "aggregates/date=2024-01-02/hr=23/"),
    ] {
        assert_eq!(hour_key_prefix(hour).unwrap(), prefix);
        assert_eq!(hour_of_key(&format!("{prefix}x.parquet")), Some(hour));
    }
    assert!(matches!(hour_key_prefix(H + 1), Err(HistoryError::Hour { .. })));
    for key in [
        "aggregates/date=2024-01-02/hr=05/.x.parquet.1.2.tmp",
        "aggregates/date=2024-01-02/hr=5/x.parquet",
        "aggregates/date=2024-1-02/hr=05/x.parquet",
        "aggregates/date=2024-01-02/hr=24/x.parquet",
        "aggregates/date=2024-01-02/x.parquet",
        "aggregates/date=2024-01-02/hr=05/sub/x.parquet",
        "other/date=2024-01-02/hr=05/x.parquet",
    ] {
        assert_eq!(hour_of_key(key), None, "{key}");
    }
}

fn row_strategy() -> impl Strategy<Value = AggregateRow> {
    (
        -10i64..500_000,
        "[a-z0-9:.]{1,20}",
        0u64..=i64::MAX as u64,
        0u64..=i64::MAX as u64,
        proptest::collection::vec("[0-9.]{0,15}", 0..5),
        proptest::collection::vec("eni-[0-9a-f]{1,17}", 0..3),
        (0u64..=i64::MAX as u64, 0u64..=i64::MAX as u64, any::<bool>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(
            |(h, src_ip, b, u, dest_ips, interface_ids, (bytes, packets, t), dest_hll)| {
                AggregateRow {
                    hour: h * 3600,
                    src_ip,
                    blocked_count: b,
                    unique_dest_count: u,
                    dest_ips,
                    interface_ids,
                    bytes,
                    packets,
                    dest_ips_truncated: t,
                    dest_hll,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Encoding then decoding gives the same rows, for any values the columns can hold.
    #[test]
    fn parquet_round_trip(rows in proptest::collection::vec(row_strategy(), 0..20)) {
        let bytes = encode_parquet(&Columns::from_rows(&rows)).unwrap();
        prop_assert_eq!(decode_parquet(&bytes).unwrap(), rows);
    }
}

#[test]
fn encode_rejects_counts_above_i64() {
    let mut rows = rows_of(&[(H, 1, 1)], 10);
    rows[0].bytes = u64::MAX;
    let err = encode_parquet(&Columns::from_rows(&rows)).unwrap_err().to_string();
    assert!(err.contains("column bytes") && err.contains("10.0.0.1"), "{err}");
}

#[test]
fn decode_garbage_is_an_error() {
    assert!(decode_parquet(b"not parquet").is_err());
    assert!(decode_parquet(&[]).is_err());
}

#[test]
fn write_read_replace_hours_range() {
    let (_dir, h) = history(10_000);
    let hits: Vec<(i64, u32, u32)> =
        (0..200).map(|i| (H + (i % 3) as i64 * 3600, i % 7, i % 11)).collect();
    let (a, b) = hits.split_at(90);
    let whole = rows_of(&hits, 10_000);
    for (hour, part, name) in
        [(H, a, "a"), (H, b, "b"), (H + 3600, a, "a"), (H + 3600, b, "b.parquet")]
    {
        let rows: Vec<AggregateRow> =
            rows_of(part, 10_000).into_iter().filter(|r| r.hour == hour).collect();
        let key = h.write_hour_file(hour, &rows, name).unwrap();
        assert!(
            key.starts_with(&hour_key_prefix(hour).unwrap()) && key.ends_with(".parquet"),
            "{key}"
        );
    }
    let h2: Vec<AggregateRow> =
        rows_of(&hits, 10_000).into_iter().filter(|r| r.hour == H + 7200).collect();
    h.write_hour_file(H + 7200, &h2, "all").unwrap();
    // A temporary file of an in-flight put is ignored.
    h.store().put("aggregates/date=2024-01-02/hr=05/.c.parquet.9.9.tmp", b"junk".to_vec()).unwrap();

    assert_eq!(h.hours().unwrap(), [H, H + 3600, H + 7200]);
    // Two files of one hour merge into the rows of counting everything at once.
    assert_eq!(h.read_range(H, H + 3 * 3600).unwrap(), whole);
    assert_eq!(
        h.read_range(H + 3600, H + 7200).unwrap(),
        rows_of(&hits, 10_000).into_iter().filter(|r| r.hour == H + 3600).collect::<Vec<_>>()
    );
    assert_eq!(h.read_hour(H + 10 * 3600).unwrap(), Vec::new());

    // Replay: replacing the hour leaves only the new file; replacing twice does not double count.
    let h0: Vec<AggregateRow> = whole.iter().filter(|r| r.hour == H).cloned().collect();
    for _ in 0..2 {
        let key = h.replace_hour(H, &h0, "replay").unwrap();
        assert_eq!(h.hour_files(H).unwrap(), [key]);
        assert_eq!(h.read_hour(H).unwrap(), h0);
    }
}

#[test]
fn files_merge_exactly_past_the_cap() {
    let (_dir, h) = history(50);
    let hits: Vec<(i64, u32, u32)> = (0..5000).map(|i| (H, i % 2, i)).collect();
    let (a, b) = hits.split_at(2000);
    h.write_hour_file(H, &rows_of(a, 50), "a").unwrap();
    h.write_hour_file(H, &rows_of(b, 50), "b").unwrap();
    let read = h.read_hour(H).unwrap();
    assert_eq!(read, rows_of(&hits, 50));
    assert!(read
        .iter()
        .all(|r| r.dest_ips_truncated && r.dest_ips.len() == 50 && r.dest_hll.is_some()));
}

#[test]
fn write_validates_hour_name_and_merges_duplicates() {
    let (_dir, h) = history(10_000);
    let rows = rows_of(&[(H, 1, 1), (H, 1, 2)], 10_000);
    assert!(matches!(h.write_hour_file(H + 3600, &rows, "x"), Err(HistoryError::WrongHour { .. })));
    for name in ["", "a/b", ".parquet"] {
        assert!(
            matches!(h.write_hour_file(H, &rows, name), Err(HistoryError::Name { .. })),
            "{name}"
        );
    }
    let dup = [rows.clone(), rows_of(&[(H, 1, 3)], 10_000)].concat();
    let key = h.write_hour_file(H, &dup, "dup").unwrap();
    let got = decode_parquet(&h.store().get(&key).unwrap()).unwrap();
    assert_eq!(got, rows_of(&[(H, 1, 1), (H, 1, 2), (H, 1, 3)], 10_000));
}

/// Columns are written like the same rows: encoded from their buffers when in history order
/// (one row per source of the hour, ascending), else checked and merged as rows.
#[test]
fn columns_write_like_rows() {
    let (_dir, h) = history(50);
    // Truncated rows (with registers) and plain ones.
    let hits: Vec<(i64, u32, u32)> =
        (0..400).map(|i| (H, i % 3, i % 70)).chain([(H, 5, 1), (H, 5, 2)]).collect();
    let rows = rows_of(&hits, 50);
    assert!(
        rows.iter().any(|r| r.dest_ips_truncated) && rows.iter().any(|r| !r.dest_ips_truncated)
    );
    let key = h.replace_hour(H, &Columns::from_rows(&rows), "cols").unwrap();
    assert_eq!(h.hour_files(H).unwrap(), std::slice::from_ref(&key));
    let bytes = h.store().get(&key).unwrap();
    assert_eq!(bytes, encode_parquet(&Columns::from_rows(&rows)).unwrap());
    assert_eq!(decode_parquet(&bytes).unwrap(), rows);
    // The same hour handed over as rows makes the same file.
    let as_rows = h.write_hour_file(H, &rows, "rows").unwrap();
    assert_eq!(h.store().get(&as_rows).unwrap(), bytes);
    h.store().delete(&as_rows).unwrap();

    // Out of order and duplicated: merged as rows are.
    let mut dup = [rows.clone(), rows_of(&[(H, 1, 3), (H, 0, 999)], 50)].concat();
    dup.reverse();
    let key = h.replace_hour(H, &Columns::from_rows(&dup), "dup").unwrap();
    assert_eq!(h.hour_files(H).unwrap(), [key]);
    let all: Vec<(i64, u32, u32)> = hits.iter().copied().chain([(H, 1, 3), (H, 0, 999)]).collect();
    assert_eq!(h.read_hour(H).unwrap(), rows_of(&all, 50));

    // The hour is checked; counts above i64 are an error, not a wrapped value.
    let c = Columns::from_rows(&rows);
    assert!(matches!(h.write_hour_file(H + 3600, &c, "x"), Err(HistoryError::WrongHour { .. })));
    assert!(matches!(h.write_hour_file(H, &c, "a/b"), Err(HistoryError::Name { .. })));
    let mut big = c.clone();
    big.packets[1] = u64::MAX;
    let err = h.write_hour_file(H, &big, "big").unwrap_err().to_string();
    assert!(err.contains("column packets") && err.contains(&rows[1].src_ip), "{err}");
    // Columns of unequal lengths (public fields) are an error, not a panic.
    let mut short = c;
    short.bytes.pop();
    assert!(encode_parquet(&short).unwrap_err().to_string().contains("unequal lengths"));
}

/// An independent reader (pyarrow) sees the documented schema and values. FAILS when python or
/// pyarrow is missing: `$FLOWSPIKE_PYTHON` (default `python3`) must have pyarrow.
///
/// The reader discovers the Hive partitions by itself (`date=`, `hr=`): the hour partition is named
/// `hr`, not `hour`, because a partition key named like the `hour` column breaks pyarrow (it refuses
/// to merge int32 and timestamp) and DuckDB (it silently replaces the timestamp with the string).
#[test]
fn pyarrow_reads_the_history() {
    let (dir, h) = history(20);
    let mut hits: Vec<(i64, u32, u32)> = (0..30).map(|i| (H, 1, i)).collect(); // truncated at 20
    hits.extend([(H, 2, 7), (H, 2, 7), (H + 3600, 3, 1)]);
    let rows = rows_of(&hits, 20);
    for hour in [H, H + 3600] {
        let r: Vec<AggregateRow> = rows.iter().filter(|r| r.hour == hour).cloned().collect();
        h.write_hour_file(hour, &r, "part-0").unwrap();
    }
    let script = r#"
import json, sys, os
import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq
root = os.path.join(sys.argv[1], "aggregates")
d = ds.dataset(root, format="parquet", partitioning="hive")
files = sorted(d.files)
meta = pq.ParquetFile(files[0]).metadata
comp = sorted({meta.row_group(0).column(i).compression for i in range(meta.num_columns)})
rows = []
for f in files:
    hh = int(f.split("hr=")[1].split("/")[0])
    for r in pq.read_table(f).to_pylist():
        assert r["hour"].hour == hh, (f, r["hour"])
for r in d.to_table().sort_by([("hour", "ascending"), ("src_ip", "ascending")]).to_pylist():
    assert r["hr"] == r["hour"].hour, r
    del r["hr"]
    r["date"] = str(r["date"])
    r["hour"] = int(r["hour"].timestamp())
    r["dest_hll"] = None if r["dest_hll"] is None else len(r["dest_hll"])
    rows.append(r)
print(json.dumps({"schema": {f.name: str(f.type) for f in pq.read_schema(files[0])},
                  "compression": comp, "rows": rows}))
"#;
    let python = std::env::var("FLOWSPIKE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} (set FLOWSPIKE_PYTHON to a python with pyarrow): {e}")
        });
    assert!(
        out.status.success(),
        "{python} with pyarrow failed (set FLOWSPIKE_PYTHON to a python with pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema = &v["schema"];
    for (col, ty) in [
        ("hour", "timestamp[us, tz=UTC]"),
        ("src_ip", "string"),
        ("blocked_count", "int64"),
        ("unique_dest_count", "int64"),
        ("dest_ips", "list<item: string>"),
        ("interface_ids", "list<item: string>"),
        ("bytes", "int64"),
        ("packets", "int64"),
        ("dest_ips_truncated", "bool"),
        ("dest_hll", "binary"),
    ] {
        assert_eq!(schema[col], ty, "column {col}");
    }
    assert_eq!(v["compression"], serde_json::json!(["ZSTD"]));
    let got = v["rows"].as_array().unwrap();
    assert_eq!(got.len(), rows.len());
    for (g, r) in got.iter().zip(&rows) {
        assert_eq!(g["hour"], r.hour);
        assert_eq!(g["date"], "2024-01-02");
        assert_eq!(g["src_ip"], r.src_ip.as_str());
        assert_eq!(g["blocked_count"], r.blocked_count);
        assert_eq!(g["unique_dest_count"], r.unique_dest_count);
        assert_eq!(g["dest_ips"], serde_json::json!(r.dest_ips));
        assert_eq!(g["interface_ids"], serde_json::json!(r.interface_ids));
        assert_eq!(g["bytes"], r.bytes);
        assert_eq!(g["packets"], r.packets);
        assert_eq!(g["dest_ips_truncated"], r.dest_ips_truncated);
        assert_eq!(g["dest_hll"], serde_json::json!(r.dest_hll.as_ref().map(Vec::len)));
    }
    assert!(
        rows[0].dest_ips_truncated && rows[0].dest_hll.is_some(),
        "the fixture covers truncation"
    );
}
