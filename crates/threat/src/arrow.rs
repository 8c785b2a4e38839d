//! Match rows as Arrow: the schema of the threat-match history table and the conversions.

use crate::{MatchRow, ThreatError};
use arrow_array::builder::{BinaryBuilder, Int32Builder, ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowTimestampType, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// Integer columns of a row, in schema order.
const COUNTS: [&str; 7] = [
    "flows",
    "outbound_flows",
    "inbound_flows",
    "accepted_flows",
    "rejected_flows",
    "bytes",
    "packets",
];

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of match rows, in this order: `hour` TIMESTAMP(µs, "UTC"), `src_ip` UTF8 (the
/// internal address), `list` UTF8, `flows`, `outbound_flows`, `inbound_flows`, `accepted_flows`,
/// `rejected_flows`, `bytes`, `packets` INT64, `first_seen`, `last_seen` TIMESTAMP(µs, "UTC"),
/// `remote_ips` `LIST<UTF8>`, `remote_ip_count` INT64, `ports` `LIST<INT32>` (remote ports),
/// `truncated` BOOLEAN, `remote_hll` BINARY (nullable: the remote addresses' HyperLogLog
/// registers, as the history's `dest_hll`, for rows past the address cap). Only `remote_hll`
/// and list items are nullable.
pub fn match_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("hour", timestamp(), false),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("list", DataType::Utf8, false),
    ];
    fields.extend(COUNTS.iter().map(|c| Field::new(*c, DataType::Int64, false)));
    fields.extend([
        Field::new("first_seen", timestamp(), false),
        Field::new("last_seen", timestamp(), false),
        Field::new(
            "remote_ips",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        Field::new("remote_ip_count", DataType::Int64, false),
        Field::new(
            "ports",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            false,
        ),
        Field::new("truncated", DataType::Boolean, false),
        Field::new("remote_hll", DataType::Binary, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// Seconds as microseconds; saturates past ±292,000 years (event times are bounded far below).
fn micros(seconds: i64) -> i64 {
    seconds.saturating_mul(1_000_000)
}

/// Counts above `i64::MAX` (never reached by real counts) saturate.
fn int64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn times(rows: &[MatchRow], f: impl Fn(&MatchRow) -> i64) -> ArrayRef {
    let v: Vec<i64> = rows.iter().map(|r| micros(f(r))).collect();
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

/// The rows as one batch of [`match_schema`], in their order.
pub fn match_batch(rows: &[MatchRow]) -> RecordBatch {
    let mut src = StringBuilder::new();
    let mut list = StringBuilder::new();
    let mut remotes = ListBuilder::new(StringBuilder::new());
    let mut ports = ListBuilder::new(Int32Builder::new());
    let mut hll = BinaryBuilder::new();
    for r in rows {
        src.append_value(&r.src_ip);
        list.append_value(&r.list);
        r.remote_ips.iter().for_each(|ip| remotes.values().append_value(ip));
        remotes.append(true);
        r.ports.iter().for_each(|&p| ports.values().append_value(i32::from(p)));
        ports.append(true);
        hll.append_option(r.remote_hll.as_deref());
    }
    let counts = |f: fn(&MatchRow) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(|r| int64(f(r))).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        times(rows, |r| r.hour),
        Arc::new(src.finish()),
        Arc::new(list.finish()),
        counts(|r| r.flows),
        counts(|r| r.outbound_flows),
        counts(|r| r.inbound_flows),
        counts(|r| r.accepted_flows),
        counts(|r| r.rejected_flows),
        counts(|r| r.bytes),
        counts(|r| r.packets),
        times(rows, |r| r.first_seen),
        times(rows, |r| r.last_seen),
        Arc::new(remotes.finish()),
        counts(|r| r.remote_ip_count),
        Arc::new(ports.finish()),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.truncated).collect::<Vec<_>>())),
        Arc::new(hll.finish()),
    ];
    // Every column above is built for `match_schema`'s field at its position, with one value
    // per row and no null where the schema forbids one (pinned by the round-trip tests).
    RecordBatch::try_new(match_schema(), columns).expect("columns match the match schema")
}

fn column<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b ArrayRef, ThreatError> {
    batch.column_by_name(name).ok_or(ThreatError::Column {
        column: name,
        row: 0,
        message: "missing".into(),
    })
}

fn bad(column: &'static str, row: usize, message: impl Into<String>) -> ThreatError {
    ThreatError::Column { column, row, message: message.into() }
}

/// The column `name` as the array type `cast` gives, or an error naming its actual type.
fn typed<'b, T: ?Sized>(
    batch: &'b RecordBatch,
    name: &'static str,
    cast: impl FnOnce(&'b ArrayRef) -> Option<&'b T>,
) -> Result<&'b T, ThreatError> {
    let a = column(batch, name)?;
    cast(a).ok_or_else(|| bad(name, 0, format!("unexpected type {}", a.data_type())))
}

/// Row `i`'s value of a column that forbids nulls: `value(i)` unless `is_null(i)`.
fn each<T>(
    name: &'static str,
    a: &dyn Array,
    mut value: impl FnMut(usize) -> Result<T, String>,
) -> Result<Vec<T>, ThreatError> {
    (0..a.len())
        .map(|i| {
            if a.is_null(i) { Err("null".to_owned()) } else { value(i) }
                .map_err(|m| bad(name, i, m))
        })
        .collect()
}

/// A timestamp column of any unit, as seconds (floored).
fn seconds(batch: &RecordBatch, name: &'static str) -> Result<Vec<i64>, ThreatError> {
    fn of<T: ArrowTimestampType>(
        a: &ArrayRef,
        name: &'static str,
        per_sec: i64,
    ) -> Result<Vec<i64>, ThreatError> {
        let p = a.as_primitive::<T>();
        each(name, p, |i| Ok(p.value(i).div_euclid(per_sec)))
    }
    let a = column(batch, name)?;
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => of::<TimestampSecondType>(a, name, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            of::<TimestampMillisecondType>(a, name, 1_000)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            of::<TimestampMicrosecondType>(a, name, 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            of::<TimestampNanosecondType>(a, name, 1_000_000_000)
        }
        dt => Err(bad(name, 0, format!("unexpected type {dt}"))),
    }
}

fn counts(batch: &RecordBatch, name: &'static str) -> Result<Vec<u64>, ThreatError> {
    let a = typed(batch, name, |a| a.as_primitive_opt::<Int64Type>())?;
    each(name, a, |i| u64::try_from(a.value(i)).map_err(|_| "negative".to_owned()))
}

fn texts(batch: &RecordBatch, name: &'static str) -> Result<Vec<String>, ThreatError> {
    let s = typed(batch, name, |a| a.as_string_opt::<i32>())?;
    each(name, s, |i| Ok(s.value(i).to_owned()))
}

/// The items of each list of a `LIST<T>` column (a null list reads as empty; null items are
/// refused).
fn lists<T>(
    batch: &RecordBatch,
    name: &'static str,
    item: impl Fn(&ArrayRef, usize) -> Option<Result<T, String>>,
) -> Result<Vec<Vec<T>>, ThreatError> {
    let l = typed(batch, name, |a| a.as_list_opt::<i32>())?;
    let mut out = Vec::with_capacity(l.len());
    for i in 0..l.len() {
        if l.is_null(i) {
            out.push(Vec::new());
            continue;
        }
        let v = l.value(i);
        let row = (0..v.len()).map(|j| {
            if v.is_null(j) {
                return Err("null item".to_owned());
            }
            item(&v, j).unwrap_or_else(|| Err(format!("unexpected item type {}", v.data_type())))
        });
        out.push(row.collect::<Result<_, _>>().map_err(|m| bad(name, i, m))?);
    }
    Ok(out)
}

/// Decodes a batch of [`match_schema`] (timestamps of any unit, extra columns ignored) into rows,
/// in batch order. The inverse of [`match_batch`].
pub fn match_rows(batch: &RecordBatch) -> Result<Vec<MatchRow>, ThreatError> {
    let hour = seconds(batch, "hour")?;
    let mut src_ip = texts(batch, "src_ip")?;
    let mut list = texts(batch, "list")?;
    let [flows, outbound, inbound, accepted, rejected, bytes, packets] =
        COUNTS.map(|n| counts(batch, n));
    let (flows, outbound, inbound, accepted) = (flows?, outbound?, inbound?, accepted?);
    let (rejected, bytes, packets) = (rejected?, bytes?, packets?);
    let first_seen = seconds(batch, "first_seen")?;
    let last_seen = seconds(batch, "last_seen")?;
    let remote_ips = lists(batch, "remote_ips", |v, j| {
        v.as_string_opt::<i32>().map(|s| Ok(s.value(j).to_owned()))
    })?;
    let remote_ip_count = counts(batch, "remote_ip_count")?;
    let ports = lists(batch, "ports", |v, j| {
        v.as_primitive_opt::<arrow_array::types::Int32Type>()
            .map(|p| u16::try_from(p.value(j)).map_err(|_| format!("port {}", p.value(j))))
    })?;
    let t = typed(batch, "truncated", |a| a.as_boolean_opt())?;
    let truncated = each("truncated", t, |i| Ok(t.value(i)))?;
    let hll = typed(batch, "remote_hll", |a| a.as_binary_opt::<i32>())?;
    let (mut remote_ips, mut ports) = (remote_ips, ports);
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        // Every column has `num_rows` values (a `RecordBatch` guarantees it): no index is out
        // of bounds.
        out.push(MatchRow {
            hour: hour[i],
            src_ip: std::mem::take(&mut src_ip[i]),
            list: std::mem::take(&mut list[i]),
            flows: flows[i],
            outbound_flows: outbound[i],
            inbound_flows: inbound[i],
            accepted_flows: accepted[i],
            rejected_flows: rejected[i],
            bytes: bytes[i],
            packets: packets[i],
            first_seen: first_seen[i],
            last_seen: last_seen[i],
            remote_ips: std::mem::take(&mut remote_ips[i]),
            remote_ip_count: remote_ip_count[i],
            ports: std::mem::take(&mut ports[i]),
            truncated: truncated[i],
            remote_hll: (!hll.is_null(i)).then(|| hll.value(i).to_vec()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{naive, Flow, ThreatConfig, ThreatList};

    /// Rows of a small aggregation: one truncated (with a sketch), some not, IPv4 and IPv6.
    fn sample_rows() -> Vec<MatchRow> {
        let lists = vec![
            ThreatList::parse("tor", b"192.0.2.0/24\n2001:db8::/32\n").unwrap(),
            ThreatList::parse("c", b"192.0.2.1\n").unwrap(),
        ];
        let flows: Vec<Flow> = (0..40u16)
            .map(|i| Flow {
                hour: 1_700_000_000 / 3600 * 3600 + 3600 * i64::from(i % 2),
                internal: if i % 3 == 0 {
                    "fd00::5".parse().unwrap()
                } else {
                    "10.0.0.1".parse().unwrap()
                },
                remote: if i % 5 == 0 {
                    format!("2001:db8::{i}").parse().unwrap()
                } else {
                    format!("192.0.2.{}", i % 7).parse().unwrap()
                },
                outbound: i % 2 == 0,
                internal_port: 1,
                remote_port: 60000 + i,
                protocol: 6,
                accepted: i % 4 == 0,
                start: 1_700_000_000 + u64::from(i),
                end: 1_700_000_100 + u64::from(i),
                bytes: u64::from(i) * 1000,
                packets: u64::from(i),
            })
            .collect();
        let cfg = ThreatConfig { max_remote_ips: 2, max_ports: 3 };
        naive::naive_rows(&lists, &flows, &cfg).into_values().flatten().collect()
    }

    #[test]
    fn batch_round_trips() {
        let rows = sample_rows();
        assert!(rows.iter().any(|r| r.remote_hll.is_some()));
        assert!(rows.iter().any(|r| !r.truncated));
        let batch = match_batch(&rows);
        assert_eq!(batch.schema(), match_schema());
        assert_eq!(batch.num_rows(), rows.len());
        assert_eq!(match_rows(&batch).unwrap(), rows);
        assert_eq!(match_rows(&match_batch(&[])).unwrap(), []);
    }

    #[test]
    fn bad_batches_are_refused_with_their_column() {
        let rows = sample_rows();
        let batch = match_batch(&rows);
        let without = batch.project(&[0, 1]).unwrap();
        assert!(matches!(
            match_rows(&without),
            Err(ThreatError::Column { column: "list", message, .. }) if message == "missing"
        ));
        // A negative count.
        let mut columns = batch.columns().to_vec();
        let mut flows: Vec<i64> = rows.iter().map(|r| r.flows as i64).collect();
        flows[1] = -1;
        columns[3] = Arc::new(Int64Array::from(flows));
        let negative = RecordBatch::try_new(match_schema(), columns).unwrap();
        assert!(matches!(
            match_rows(&negative),
            Err(ThreatError::Column { column: "flows", row: 1, .. })
        ));
    }
}
