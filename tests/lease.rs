//! `flowspike consume --lease-table` against moto_server (Kinesis + DynamoDB + S3): three consumer
//! processes share a four-shard stream; one is killed with SIGKILL while it holds leases; the
//! survivors take its shards over; the final aggregates and spikes equal a single consumer's run over
//! the same stream exactly, and no shard is ever read by two workers at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use flowspike_aws::{S3Store, S3Url};
use flowspike_history::History;
use serde_json::Value;

use crate::consume::{
    burst, create_stream, first_records, history_rows, hours_ago_base, kinesis, line, put_lines,
    quiet_background, read, read_all, runtime, seed_quiet_history, spawn_logged, wait_with_timeout,
    KillOnDrop,
};
use crate::util::{assert_code, flowspike, run, Moto};

const HOUR: i64 = 3600;
const FAILOVER_SECS: u64 = 3;

/// Every record of the spike stream `stream`, as JSON.
pub(crate) async fn spikes_of(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Value> {
    read_all(k, stream)
        .await
        .iter()
        .map(|r| serde_json::from_slice(r).expect("spike json"))
        .collect()
}

/// One ACCEPT record between two external addresses (never counted, read by no detection's tap)
/// on every shard at `start`, so that every shard's event time reaches it and closes the hours
/// before it. Read by a tap, it would leave the open hour `start` in a delta for good, and a lease
/// group would not settle (exit when idle) before the hour closed by the clock.
pub(crate) async fn markers(k: &aws_sdk_kinesis::Client, stream: &str, start: i64) {
    let shards = k.list_shards().stream_name(stream).send().await.expect("list shards");
    for s in shards.shards() {
        let key = s.hash_key_range().expect("range").starting_hash_key().to_owned();
        let data = line("eni-m", "203.0.113.249", "203.0.113.250", start, "ACCEPT", 40);
        let e = PutRecordsRequestEntry::builder()
            .data(Blob::new(data.into_bytes()))
            .partition_key("marker")
            .explicit_hash_key(key)
            .build()
            .expect("entry");
        let r = k.put_records().stream_name(stream).records(e).send().await.expect("put marker");
        assert_eq!(r.failed_record_count(), Some(0));
    }
}

/// The input: hours 0..10 after `base`, sorted by start (so no record is late on any shard);
/// 10.0.0.5 sends 3 blocked flows an hour, then 60 in hour 9 (the spike); noise sources vary.
pub(crate) fn input(base: i64) -> Vec<String> {
    let mut x: u64 = 99;
    let mut rnd = move |n: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    let mut flows: Vec<(i64, String)> = Vec::new();
    for h in 0..10i64 {
        let n = if h == 9 { 60 } else { 3 };
        for i in 0..n {
            let start = base + h * HOUR + i * (3000 / n) + 7;
            let dst = format!("198.51.100.{}", i % 50);
            flows.push((start, line("eni-5", "10.0.0.5", &dst, start, "REJECT", 60)));
        }
        for i in 0..(500 + rnd(100) as i64) {
            let start = base + h * HOUR + rnd(3500) as i64;
            let src = format!("10.1.{}.{}", rnd(4), rnd(30) + 1);
            let (dst, action) = match rnd(10) {
                0 => ("10.9.9.9".to_string(), "REJECT"),
                1 | 2 => (format!("203.0.113.{}", i % 90), "ACCEPT"),
                _ => (format!("203.0.113.{}", i % 90), "REJECT"),
            };
            flows.push((start, line("eni-n", &src, &dst, start, action, 40 + rnd(500))));
        }
    }
    flows.sort_by_key(|f| f.0);
    flows.into_iter().map(|f| f.1).collect()
}

pub(crate) fn consume_cmd(moto: &Moto, state: &str, output: &str) -> Command {
    let mut cmd = flowspike();
    moto.env(&mut cmd);
    cmd.env("FLOWSPIKE_METRICS_ADDR", "off");
    cmd.args([
        "--log-level",
        "info",
        "consume",
        "--mode",
        "window",
        "--stream",
        "flows",
        "--state",
        state,
        "--output-stream",
        output,
        "--allowed-lateness-secs",
        "60",
        "--checkpoint-interval-secs",
        "1",
        // Hours close by the records' event time only (the markers), never by the wall clock:
        // both runs then close every hour with all of its records.
        "--idle-shard-secs",
        "3600",
        "--exit-when-idle-secs",
        "6",
        "--max-runtime-secs",
        "180",
    ]);
    cmd
}

/// A shard read by a worker from `from` to `to` (unix ms; `to` is the kill or exit time at most).
#[derive(Debug, Clone)]
struct Reading {
    worker: String,
    from: u64,
    to: u64,
}

/// The reading intervals of every shard, from the JSON logs of the workers (`end_ms[i]`: when
/// worker `i`'s process ended, for readers it never logged as stopped).
fn readings(logs: &[String], end_ms: &[u64]) -> BTreeMap<String, Vec<Reading>> {
    let mut out: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for (log, end) in logs.iter().zip(end_ms) {
        let mut open: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for l in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
            let f = &v["fields"];
            let (Some(shard), Some(at)) = (f["shard_id"].as_str(), f["at_ms"].as_u64()) else {
                continue;
            };
            match f["message"].as_str() {
                Some("shard reader started") => {
                    let w = f["worker"].as_str().unwrap_or_default().to_owned();
                    open.insert(shard.to_owned(), (w, at));
                }
                Some("shard reader stopped") | Some("lease dropped") => {
                    if let Some((worker, from)) = open.remove(shard) {
                        out.entry(shard.to_owned()).or_default().push(Reading {
                            worker,
                            from,
                            to: at,
                        });
                    }
                }
                _ => {}
            }
        }
        for (shard, (worker, from)) in open {
            out.entry(shard).or_default().push(Reading { worker, from, to: *end });
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.from);
    }
    out
}

/// Waits (at most 30 s) until the worker logging to `log` holds a lease: the next worker starts
/// only then. Two workers taking the same new lease at the same millisecond both succeed on
/// moto_server, whose conditional writes are not atomic across concurrent requests (seen on a slow
/// machine: both "lease taken" from None 1 ms apart); DynamoDB's are, and the product relies on that.
fn wait_for_a_lease(log: &std::path::Path) {
    let started = Instant::now();
    while !read(log).contains("\"lease taken\"") && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis()
        as u64
}

#[test]
fn three_workers_with_a_kill_equal_a_single_consumer_and_never_share_a_shard() {
    scenario(3, false);
}

#[test]
fn two_workers_with_a_graceful_stop_equal_a_single_consumer() {
    scenario(2, true);
}

/// A vertical port scan (hour 3: 10.0.0.7 probes 600 ports of 10.0.1.9) and a port sweep (hour 7:
/// 10.0.0.8 reaches 300 addresses on 445), blocked internal traffic: never counted for the spike.
fn scans(base: i64) -> Vec<String> {
    let flow = |src: &str, dst: &str, dport: i64, start: i64| {
        format!(
            "2 123456789012 eni-s {src} {dst} 49152 {dport} 6 1 40 {start} {} REJECT OK",
            start + 30
        )
    };
    let mut out: Vec<String> = (0..600)
        .map(|p| flow("10.0.0.7", "10.0.1.9", 1 + p * 3, base + 3 * HOUR + 600 + p * 4))
        .collect();
    for d in 0..300 {
        let dst = format!("10.2.{}.{}", d / 200, d % 200 + 1);
        out.push(flow("10.0.0.8", &dst, 445, base + 7 * HOUR + 300 + d * 9));
    }
    out
}

/// `n` workers share the stream; once each reads a shard, the one reading the most is stopped
/// (SIGTERM: it commits and releases its leases; or SIGKILL: its leases expire) and the rest of
/// the input is put; the survivors finish. Compared with a single consumer's run: aggregates,
/// spikes, and the other detections' findings (a port scan before the stop, a sweep after it)
/// and tables.
fn scenario(n: usize, graceful: bool) {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let base = hours_ago_base(2);
    rt.block_on(async {
        create_stream(&k, "flows", 4).await;
        create_stream(&k, "spikes-group", 1).await;
        create_stream(&k, "spikes-single", 1).await;
    });
    moto.s3().create_bucket("flowspike-state").expect("create bucket");
    // Field 11 of a default-format line is `start`.
    let start_of = |l: &str| l.split(' ').nth(10).and_then(|s| s.parse::<i64>().ok());
    let mut lines = input(base);
    lines.extend(scans(base));
    lines.sort_by_key(|l| start_of(l));
    let split = lines
        .iter()
        .position(|l| start_of(l).is_some_and(|s| s >= base + 5 * HOUR))
        .expect("records of hour 5");
    rt.block_on(put_lines(&k, "flows", &lines[..split]));

    // Three workers, state on S3, leases in DynamoDB.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut workers = Vec::new();
    let log_of = |i: usize| dir.path().join(format!("worker-{i}.log"));
    for i in 0..n {
        let mut cmd = consume_cmd(&moto, "s3://flowspike-state/group", "spikes-group");
        cmd.args([
            "--lease-table",
            "flowspike-leases",
            "--lease-failover-secs",
            &FAILOVER_SECS.to_string(),
            "--worker-id",
            &format!("w{i}"),
        ]);
        workers.push(Some(KillOnDrop(spawn_logged(cmd, &log_of(i)))));
        wait_for_a_lease(&log_of(i));
    }
    // Wait until every worker reads at least one shard (the first one took all four, the others
    // stole theirs, each waiting a failover time before reading).
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let logs: Vec<String> = (0..n).map(|i| read(&log_of(i))).collect();
        let now = now_ms();
        let r = readings(&logs, &vec![now; n]);
        let open: BTreeMap<String, usize> = r
            .values()
            .flat_map(|v| v.iter().filter(|x| x.to == now).map(|x| x.worker.clone()))
            .fold(BTreeMap::new(), |mut m, w| {
                *m.entry(w).or_default() += 1;
                m
            });
        if open.len() == n && open.values().sum::<usize>() == 4 {
            // The worker reading the most shards, so that several move.
            let (w, _) = open.iter().max_by_key(|(_, n)| **n).expect("a worker");
            break w.trim_start_matches('w').parse::<usize>().expect("worker index");
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not share the shards in 60 s: {open:?}\n{}",
            logs.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let everyone read and commit some, then stop the victim while it holds its leases.
    std::thread::sleep(Duration::from_millis(1500));
    let mut v = workers[victim].take().expect("victim");
    if graceful {
        let st = Command::new("kill").args(["-TERM", &v.0.id().to_string()]).status();
        assert!(st.is_ok_and(|s| s.success()), "kill -TERM");
        let code = wait_with_timeout(&mut v.0, Duration::from_secs(60));
        assert_eq!(code, Some(0), "graceful stop; log:\n{}", read(&log_of(victim)));
        assert!(read(&log_of(victim)).contains("lease released"));
    } else {
        v.0.kill().expect("kill -9");
        let _ = v.0.wait();
    }
    let killed_at = now_ms();
    drop(v);
    // The rest of the input (hours 5..9 with the spike), then the markers that close hour 9.
    rt.block_on(async {
        put_lines(&k, "flows", &lines[split..]).await;
        markers(&k, "flows", base + 11 * HOUR).await;
    });
    let mut end_ms = vec![0u64; n];
    end_ms[victim] = killed_at;
    for (i, w) in workers.iter_mut().enumerate() {
        if let Some(w) = w {
            let code = wait_with_timeout(&mut w.0, Duration::from_secs(170));
            end_ms[i] = now_ms();
            assert_eq!(code, Some(0), "worker {i}; log:\n{}", read(&log_of(i)));
        }
    }
    let logs: Vec<String> = (0..n).map(|i| read(&log_of(i))).collect();

    // One reader per shard at any moment; the victim's shards moved within the failover time.
    let r = readings(&logs, &end_ms);
    assert_eq!(r.len(), 4, "every shard was read: {r:?}");
    let victim_id = format!("w{victim}");
    let mut moved = 0;
    for (shard, v) in &r {
        for pair in v.windows(2) {
            assert!(
                pair[1].from >= pair[0].to,
                "shard {shard} read by two workers at once: {pair:?}\n{}",
                logs.join("\n---\n")
            );
        }
        // The victim's readings that lasted until it was stopped (a killed worker's are open at
        // its end; a graceful stop logs the stop of each reader just before exiting).
        let held = |x: &Reading| {
            x.worker == victim_id
                && if graceful { x.to + 2000 >= killed_at } else { x.to == killed_at }
        };
        if let Some(i) = v.iter().position(held) {
            let next = v.get(i + 1).expect("a survivor took the shard over");
            assert_ne!(next.worker, victim_id);
            let gap = next.from.saturating_sub(killed_at);
            eprintln!("shard {shard}: taken over by {} after {gap} ms", next.worker);
            // Released leases are free at once; killed ones expire after the failover time.
            let bound =
                if graceful { (FAILOVER_SECS + 2) * 1000 } else { (2 * FAILOVER_SECS + 3) * 1000 };
            assert!(
                gap <= bound,
                "shard {shard} moved after {gap} ms (failover {FAILOVER_SECS} s, graceful {graceful})"
            );
            moved += 1;
        }
    }
    assert!(moved >= 1, "the victim held no shard when killed: {r:?}");

    // A single consumer over the same stream.
    let single = dir.path().join("single");
    let out = run(&mut consume_cmd(&moto, single.to_str().expect("utf-8 path"), "spikes-single"));
    assert_code(&out, 0);
    let want = history_rows(&single);
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(want.iter().map(|r| r.hour).collect::<BTreeSet<_>>().len(), 10);

    let s3 = moto.s3();
    let store = S3Store::new(s3, S3Url::parse("s3://flowspike-state/group").expect("url"));
    let group = History::new(Arc::new(store));
    let got = group.read_range(i64::MIN, i64::MAX).expect("group history");
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "the group's aggregates equal the single consumer's");
    // Only final files under aggregates/: one per hour, no corrections (nothing was late).
    let keys = group.store().list("aggregates/").expect("list");
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert!(keys.iter().all(|k| k.ends_with("/consumer-flows.parquet")), "{keys:?}");
    assert!(group.store().list("consumer/flows/deltas/").expect("list").is_empty(), "drained");

    let (single_spikes, group_spikes) = rt.block_on(async {
        (spikes_of(&k, "spikes-single").await, spikes_of(&k, "spikes-group").await)
    });
    let by_id = |v: &[Value]| -> BTreeMap<String, Value> {
        v.iter().map(|s| (s["id"].as_str().unwrap_or_default().to_owned(), s.clone())).collect()
    };
    let (ws, gs) = (by_id(&single_spikes), by_id(&group_spikes));
    assert!(
        ws.values().any(|s| s["src_ip"] == "10.0.0.5" && s["blocked_count"] == 60),
        "the injected spike: {single_spikes:?}"
    );
    assert_eq!(gs, ws, "the group's spikes and findings equal the single consumer's");
    // The other detections ran in lease mode (`--detections` defaults to all): each scan found
    // once, and every table written as the single consumer wrote it, one file per hour.
    let found = |d: &str, src: &str| {
        gs.values().filter(|f| f["detection"] == d && f["src_ip"] == src).count()
    };
    assert_eq!(found("port_scan", "10.0.0.7"), 1, "{group_spikes:?}");
    assert_eq!(found("port_sweep", "10.0.0.8"), 1, "{group_spikes:?}");
    let single_store = flowspike_history::LocalStore::new(&single);
    crate::util::assert_detection_tables_equal(group.store().as_ref(), &single_store);
}

/// Alerts within minutes in lease mode (#30): two workers share a two-shard stream in adaptive
/// mode over ten days of quiet history; a burst of one source, put over both shards in the
/// current hour (held open by a two-hour lateness), reaches the output stream as one `early`
/// record while the hour is open — each worker judges its own share, the alert is sent once for
/// the group. Without early alerts in lease mode the record comes only at the hour's close.
#[test]
fn early_alert_in_lease_mode_arrives_once_while_the_hour_is_open() {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let hour = hours_ago_base(0);
    rt.block_on(async {
        create_stream(&k, "flows", 2).await;
        create_stream(&k, "spikes", 1).await;
    });
    moto.s3().create_bucket("flowspike-state").expect("create bucket");
    let url = S3Url::parse("s3://flowspike-state/group").expect("url");
    let hist = History::new(Arc::new(S3Store::new(moto.s3(), url)));
    seed_quiet_history(&hist, hour);
    rt.block_on(put_lines(&k, "flows", &quiet_background(hour)));

    let dir = tempfile::tempdir().expect("tempdir");
    let log_of = |i: usize| dir.path().join(format!("worker-{i}.log"));
    let mut workers = Vec::new();
    for i in 0..2 {
        let mut cmd = flowspike();
        moto.env(&mut cmd);
        cmd.env("FLOWSPIKE_METRICS_ADDR", "off");
        // A lateness of two hours: the watermark stays before this hour, which cannot close.
        cmd.args(["--log-level", "info", "consume", "--mode", "adaptive", "--stream", "flows"])
            .args(["--state", "s3://flowspike-state/group", "--output-stream", "spikes"])
            .args(["--allowed-lateness-secs", "7200", "--checkpoint-interval-secs", "3600"])
            .args(["--idle-shard-secs", "2", "--max-runtime-secs", "150"])
            .args(["--lease-table", "flowspike-leases", "--lease-failover-secs", "3"])
            .args(["--worker-id", &format!("w{i}")]);
        workers.push(KillOnDrop(spawn_logged(cmd, &log_of(i))));
        wait_for_a_lease(&log_of(i));
    }
    // Both workers read a shard (the second stole one and waits a failover time first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..2).all(|i| read(&log_of(i)).contains("\"shard reader started\"")) {
        assert!(Instant::now() < deadline, "a worker reads no shard:\n{}", read(&log_of(1)));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(rt.block_on(spikes_of(&k, "spikes")).is_empty(), "the background alerted");

    let t0 = Instant::now();
    rt.block_on(put_lines(&k, "flows", &burst(hour)));
    first_records(&rt, &k, "spikes");
    let elapsed = t0.elapsed();
    // Time for a second worker's copy to show up, if the group sent it twice.
    std::thread::sleep(Duration::from_secs(3));
    let spikes = rt.block_on(spikes_of(&k, "spikes"));
    let logs: Vec<String> = (0..2).map(|i| read(&log_of(i))).collect();
    drop(workers);
    assert_eq!(spikes.len(), 1, "one early alert for the group; logs:\n{}", logs.join("\n---\n"));
    let s = &spikes[0];
    assert_eq!(s["early"], true, "{s}");
    assert_eq!(s["src_ip"], "10.0.0.1", "{s}");
    assert_eq!(s["hour"], flowspike_detect::format_hour(hour), "{s}");
    // The hour is still open: no final file.
    assert!(hist.hour_files(hour).expect("files").is_empty(), "the hour was closed");
    let senders = logs.iter().filter(|l| l.contains("\"early spike\"")).count();
    assert_eq!(senders, 1, "sent by one worker; logs:\n{}", logs.join("\n---\n"));
    println!("time-to-alert: {} ms (burst put → early spike record read)", elapsed.as_millis());
}
