//! `flowspike consume` against moto_server: CloudWatch Logs → subscription filter → Kinesis →
//! consumer → Parquet history and a spike on the output stream; and kill -9 / SIGTERM at several
//! points with restarts, which must give exactly the aggregates of the input.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use flowspike_counter::{AggregateRow, Counter, CounterConfig, Hit};
use flowspike_history::{History, LocalStore};

use crate::util::{assert_code, flowspike, run, Moto};

const HOUR: i64 = 3600;
const ACCOUNT: &str = "123456789012";

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

pub(crate) fn kinesis(moto: &Moto) -> aws_sdk_kinesis::Client {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

fn logs(moto: &Moto) -> aws_sdk_cloudwatchlogs::Client {
    use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// Creates a stream with `shards` shards and returns its ARN.
pub(crate) async fn create_stream(k: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> String {
    k.create_stream().stream_name(name).shard_count(shards).send().await.expect("create stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = k.describe_stream_summary().stream_name(name).send().await.expect("describe");
        let s = d.stream_description_summary().expect("summary");
        if s.stream_status().as_str() == "ACTIVE" {
            return s.stream_arn().to_string();
        }
        assert!(Instant::now() < deadline, "stream {name} not active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of every shard of `stream`.
pub(crate) async fn read_all(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let shards = k.list_shards().stream_name(stream).send().await.expect("list shards");
    for s in shards.shards() {
        let it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("iterator");
        let r = k
            .get_records()
            .shard_iterator(it.shard_iterator().expect("iterator"))
            .send()
            .await
            .expect("get records");
        out.extend(r.records().iter().map(|r| r.data().as_ref().to_vec()));
    }
    out
}

/// A default-format (v2) flow log line.
pub(crate) fn line(
    eni: &str,
    src: &str,
    dst: &str,
    start: i64,
    action: &str,
    bytes: u64,
) -> String {
    format!(
        "2 {ACCOUNT} {eni} {src} {dst} 49152 443 6 1 {bytes} {start} {} {action} OK",
        start + 30
    )
}

/// What the counter makes of the blocked outbound lines among `lines` (all RFC 1918 sources).
pub(crate) fn expected(lines: &[(String, String, String, i64, bool, u64)]) -> Vec<AggregateRow> {
    let mut c = Counter::new(CounterConfig::default());
    for (eni, src, dst, start, reject, bytes) in lines {
        let dst_ip: std::net::IpAddr = dst.parse().expect("ip");
        let internal = dst.starts_with("10.") || dst.starts_with("192.168.");
        if !*reject || internal {
            continue;
        }
        c.add(&Hit {
            hour: start - start.rem_euclid(HOUR),
            src: src.parse().expect("ip"),
            dst: dst_ip,
            interface_id: Some(eni.as_bytes()),
            bytes: *bytes,
            packets: 1,
        });
    }
    c.into_rows()
}

pub(crate) fn history_rows(state: &Path) -> Vec<AggregateRow> {
    History::new(Arc::new(LocalStore::new(state))).read_range(i64::MIN, i64::MAX).expect("history")
}

/// The start of the hour `days` days ago.
pub(crate) fn hours_ago_base(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = now - days * 24 * HOUR;
    t - t.rem_euclid(HOUR)
}

fn consume_cmd(moto: &Moto, stream: &str, state: &Path) -> Command {
    let mut cmd = consume_command(stream, state, 120);
    moto.env(&mut cmd);
    cmd
}

/// `flowspike consume --mode window` on `stream` with the short intervals the tests use and no
/// metrics server unless a test asks for one (`--metrics-addr` overrides this), stopping after
/// `max_runtime_secs`; the caller points it at its emulator.
pub(crate) fn consume_command(stream: &str, state: &Path, max_runtime_secs: u32) -> Command {
    let mut cmd = flowspike();
    cmd.env("FLOWSPIKE_METRICS_ADDR", "off");
    cmd.args(["--log-level", "info", "consume", "--mode", "window", "--stream", stream, "--state"])
        .arg(state)
        .args([
            "--allowed-lateness-secs",
            "60",
            "--checkpoint-interval-secs",
            "1",
            "--idle-shard-secs",
            "2",
            "--max-runtime-secs",
            &max_runtime_secs.to_string(),
        ]);
    cmd
}

#[test]
fn cloudwatch_logs_subscription_to_aggregates_and_spike_stream() {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let l = logs(&moto);
    let base = hours_ago_base(3);

    // Ten hours of one steady source, then a burst; plus traffic that must not count.
    let mut lines = Vec::new();
    for h in 0..10i64 {
        let n = if h == 9 { 30 } else { 2 + h % 2 };
        for i in 0..n {
            let start = base + h * HOUR + 60 + i * 100;
            let dst = format!("203.0.113.{}", i % 5 + 1);
            lines.push(("eni-0a1b2c3d".to_string(), "10.0.0.5".to_string(), dst, start, true, 40));
        }
        let t = base + h * HOUR + 1800;
        lines.push(("eni-0a1b2c3d".into(), "10.0.0.6".into(), "8.8.8.8".into(), t, false, 99));
        lines.push(("eni-0a1b2c3d".into(), "10.0.0.7".into(), "10.1.1.1".into(), t, true, 99));
    }
    rt.block_on(async {
        let arn = create_stream(&k, "flows", 2).await;
        create_stream(&k, "spikes", 1).await;
        l.create_log_group().log_group_name("/vpc/flows").send().await.expect("log group");
        l.create_log_stream()
            .log_group_name("/vpc/flows")
            .log_stream_name("eni-0a1b2c3d")
            .send()
            .await
            .expect("log stream");
        l.put_subscription_filter()
            .log_group_name("/vpc/flows")
            .filter_name("to-kinesis")
            .filter_pattern("")
            .destination_arn(arn)
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/x"))
            .send()
            .await
            .expect("subscription filter");
        for h in 0..10i64 {
            let mut events: Vec<_> = lines
                .iter()
                .filter(|x| x.3 >= base + h * HOUR && x.3 < base + (h + 1) * HOUR)
                .map(|(eni, src, dst, start, reject, bytes)| {
                    let action = if *reject { "REJECT" } else { "ACCEPT" };
                    (*start, line(eni, src, dst, *start, action, *bytes))
                })
                .collect();
            if h == 4 {
                // A damaged line: counted as malformed and skipped.
                events.push((base + h * HOUR + 3000, "2 garbage".to_string()));
            }
            events.sort();
            let events: Vec<_> = events
                .into_iter()
                .map(|(t, m)| {
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(t * 1000)
                        .message(m)
                        .build()
                        .expect("event")
                })
                .collect();
            let r = l
                .put_log_events()
                .log_group_name("/vpc/flows")
                .log_stream_name("eni-0a1b2c3d")
                .set_log_events(Some(events))
                .send()
                .await
                .expect("put log events");
            assert!(r.rejected_log_events_info().is_none(), "{r:?}");
        }
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = run(consume_cmd(&moto, "flows", &state).args([
        "--output-stream",
        "spikes",
        "--exit-when-idle-secs",
        "4",
    ]));
    assert_code(&out, 0);
    let summary: serde_json::Value = serde_json::from_slice(
        out.stderr.split(|b| *b == b'\n').rfind(|l| l.starts_with(b"{\"stats\"")).expect("summary"),
    )
    .expect("summary json");
    assert_eq!(summary["stats"]["malformed"], 1, "{summary}");
    assert_eq!(summary["stats"]["spikes_emitted"], 1, "{summary}");

    assert_eq!(history_rows(&state), expected(&lines));
    // Only final files under aggregates/: one per hour, named for the stream.
    let hist = History::new(Arc::new(LocalStore::new(&state)));
    for h in 0..10 {
        let files = hist.hour_files(base + h * HOUR).expect("files");
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].ends_with("/consumer-flows.parquet"), "{files:?}");
    }
    assert!(state.join("consumer/flows/manifest.json").exists());
    // The other detections run too (`--detections all`, the default): every closed hour has the
    // stream's file in each of their tables (the readers' batches carry the taps).
    let store = hist.store().as_ref();
    for table in ["port_scans", "port_sweeps", "outbound_volume"] {
        let t = flowspike_history::Table { name: table };
        let hours: Vec<i64> = (0..10).map(|h| base + h * HOUR).collect();
        assert_eq!(t.hours(store).expect("table hours"), hours, "{table}");
        for h in hours {
            let files = t.hour_files(store, h).expect("table files");
            assert!(files.len() == 1 && files[0].ends_with("/consumer-flows.parquet"), "{files:?}");
        }
    }

    let spikes = rt.block_on(read_all(&k, "spikes"));
    assert_eq!(spikes.len(), 1, "spike records on the output stream");
    let s: serde_json::Value = serde_json::from_slice(&spikes[0]).expect("spike json");
    assert_eq!(s["src_ip"], "10.0.0.5");
    assert_eq!(s["blocked_count"], 30);
    assert_eq!(s["hour"], flowspike_detect::format_hour(base + 9 * HOUR));

    // A second run finds nothing new and emits nothing again.
    let out = run(consume_cmd(&moto, "flows", &state).args([
        "--output-stream",
        "spikes",
        "--exit-when-idle-secs",
        "3",
    ]));
    assert_code(&out, 0);
    assert_eq!(rt.block_on(read_all(&k, "spikes")).len(), 1);
    assert_eq!(history_rows(&state), expected(&lines));
}

/// Puts plain-line records (10 lines each) with random-ish partition keys.
pub(crate) async fn put_lines(k: &aws_sdk_kinesis::Client, stream: &str, lines: &[String]) {
    let entries: Vec<PutRecordsRequestEntry> = lines
        .chunks(10)
        .enumerate()
        .map(|(i, c)| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(c.join("\n").into_bytes()))
                .partition_key(format!("pk-{i}"))
                .build()
                .expect("entry")
        })
        .collect();
    for chunk in entries.chunks(500) {
        let r = k
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .expect("put records");
        assert_eq!(r.failed_record_count(), Some(0));
    }
}

pub(crate) fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let f = File::create(log).expect("log file");
    cmd.stdout(Stdio::null()).stderr(Stdio::from(f)).spawn().expect("spawn flowspike")
}

#[test]
fn kill_9_and_sigterm_then_restart_give_exact_aggregates() {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let base = hours_ago_base(2);
    rt.block_on(create_stream(&k, "crash", 2));

    // Three rounds of input; later rounds also carry records of hours that are closed by then.
    let mut all = Vec::new();
    let mut rounds: Vec<Vec<String>> = Vec::new();
    let mut x: u64 = 7;
    for round in 0..3i64 {
        let mut lines = Vec::new();
        for i in 0..1500i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let r = x >> 33;
            let h = if round == 0 { i * 6 / 1500 } else { (r % 8) as i64 };
            let start = base + h * HOUR + (r % 3500) as i64;
            let src = format!("10.0.{}.{}", r % 3, (r >> 8) % 7 + 1);
            let dst = if r.is_multiple_of(11) {
                "10.9.9.9".to_string()
            } else {
                format!("198.51.100.{}", (r >> 12) % 40)
            };
            let reject = !r.is_multiple_of(5);
            let eni = format!("eni-{:08x}", (r >> 16) % 3);
            lines.push(line(
                &eni,
                &src,
                &dst,
                start,
                if reject { "REJECT" } else { "ACCEPT" },
                40 + (r % 100),
            ));
            all.push((eni, src, dst, start, reject, 40 + (r % 100)));
        }
        rounds.push(lines);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // (round to put first, how long to let the consumer run, graceful?)
    let plan = [(0usize, 600u64, false), (1, 1500, false), (2, 2500, true), (2, 300, false)];
    let mut put_rounds = 0;
    for (i, (round, ms, graceful)) in plan.into_iter().enumerate() {
        if round >= put_rounds {
            rt.block_on(put_lines(&k, "crash", &rounds[round]));
            put_rounds = round + 1;
        }
        let log = dir.path().join(format!("run-{i}.log"));
        let mut child = spawn_logged(consume_cmd(&moto, "crash", &state), &log);
        std::thread::sleep(Duration::from_millis(ms));
        if graceful {
            let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            assert!(st.is_ok_and(|s| s.success()), "kill -TERM");
            let status = wait_with_timeout(&mut child, Duration::from_secs(60));
            assert_eq!(status, Some(0), "graceful stop; log:\n{}", read(&log));
            assert!(state.join("consumer/crash/manifest.json").exists());
        } else {
            child.kill().expect("kill -9"); // SIGKILL on Unix
            child.wait().expect("wait");
        }
    }
    let out = run(consume_cmd(&moto, "crash", &state).args(["--exit-when-idle-secs", "4"]));
    assert_code(&out, 0);
    let got = history_rows(&state);
    let want = expected(&all);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // Nothing uncommitted is visible to history readers: every file under aggregates/ is final.
    for key in
        History::new(Arc::new(LocalStore::new(&state))).store().list("aggregates/").expect("list")
    {
        let name = key.rsplit('/').next().unwrap_or_default();
        assert!(
            name.starts_with("consumer-crash") || name.ends_with(".tmp"),
            "unexpected file {key}"
        );
    }
}

pub(crate) fn wait_with_timeout(child: &mut Child, d: Duration) -> Option<i32> {
    let deadline = Instant::now() + d;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Kills the child process when dropped (a failed assertion must not leave a consumer running).
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1: the status code and the whole response (head and body), or
/// `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((code, out))
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn sample_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn healthz_and_metrics_while_consuming() {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    let base = hours_ago_base(1);
    rt.block_on(create_stream(&k, "observed", 1));
    let lines: Vec<String> = (0..50)
        .map(|i| line("eni-0a1b2c3d", "10.0.0.5", "203.0.113.9", base + i * 60, "REJECT", 40))
        .collect();
    rt.block_on(put_lines(&k, "observed", &lines));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = dir.path().join("consume.log");
    let mut cmd = consume_cmd(&moto, "observed", &state);
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let mut child = KillOnDrop(spawn_logged(cmd, &log));

    // Poll until the consumer is healthy and has counted the records (bounded: 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (health, metrics) = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("consumer exited early ({status}); log:\n{}", read(&log));
        }
        let health = http_get(port, "/healthz");
        let metrics = http_get(port, "/metrics");
        if let (Some(h), Some(m)) = (&health, &metrics) {
            let records = sample_value(&m.1, "flowspike_records_in_total").unwrap_or(0.0);
            let counted = sample_value(&m.1, "flowspike_counted_total").unwrap_or(0.0);
            // A batch's counters are stored one after the other: wait for all of them.
            if h.0 == 200 && records > 0.0 && counted >= 50.0 {
                break (h.1.clone(), m.1.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no healthy answer with records in 60 s: {health:?} {metrics:?}; log:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    assert!(metrics.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{metrics}");
    assert_eq!(sample_value(&metrics, "flowspike_records_in_total"), Some(5.0), "{metrics}");
    assert_eq!(sample_value(&metrics, "flowspike_counted_total"), Some(50.0), "{metrics}");
    assert!(
        metrics.contains("flowspike_getrecords_calls_total{shard_id=\"shardId-000000000000\"} "),
        "{metrics}"
    );

    let st = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert!(st.is_ok_and(|s| s.success()), "kill -TERM");
    let status = wait_with_timeout(&mut child.0, Duration::from_secs(60));
    let log = read(&log);
    assert_eq!(status, Some(0), "graceful stop; log:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("addr") && l.contains(&format!("127.0.0.1:{port}"))),
        "bound address logged; log:\n{log}"
    );
}

/// The sources of [`seed_quiet_history`].
pub(crate) const QUIET_SOURCES: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];

/// Ten quiet days before `hour` in `hist`: each of [`QUIET_SOURCES`] 2 or 3 blocked records an
/// hour (the early-alert tests).
pub(crate) fn seed_quiet_history(hist: &History, hour: i64) {
    for h in 1..=240i64 {
        let t = hour - h * HOUR;
        let rows: Vec<AggregateRow> = QUIET_SOURCES
            .iter()
            .enumerate()
            .map(|(i, s)| AggregateRow {
                hour: t,
                src_ip: (*s).into(),
                blocked_count: 2 + ((h + i as i64) % 2) as u64,
                unique_dest_count: 1,
                dest_ips: vec!["203.0.113.1".into()],
                interface_ids: vec!["eni-0a1b2c3d".into()],
                ..AggregateRow::default()
            })
            .collect();
        hist.write_hour_file(t, &rows, "seed.parquet").expect("seed history");
    }
}

/// Each quiet source's usual two records, at the start of `hour`.
pub(crate) fn quiet_background(hour: i64) -> Vec<String> {
    QUIET_SOURCES
        .iter()
        .flat_map(|s| {
            (0..2).map(move |i| line("eni-0a1b2c3d", s, "203.0.113.1", hour + i, "REJECT", 40))
        })
        .collect()
}

/// A burst of 200 blocked records of 10.0.0.1 early in `hour`.
pub(crate) fn burst(hour: i64) -> Vec<String> {
    (0..200)
        .map(|i| {
            let dst = format!("198.51.100.{}", i % 250 + 1);
            line("eni-0a1b2c3d", "10.0.0.1", &dst, hour + 2 + i % 3, "REJECT", 40)
        })
        .collect()
}

/// The records of `stream` once it holds one, polled every 100 ms for at most 100 s (a bound so
/// a broken build fails instead of hanging; not a limit on a measured time).
pub(crate) fn first_records(
    rt: &tokio::runtime::Runtime,
    k: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<Vec<u8>> {
    let give_up = Instant::now() + Duration::from_secs(100);
    let mut records = Vec::new();
    while records.is_empty() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(100));
        records = rt.block_on(read_all(k, stream));
    }
    records
}

/// Alerts within minutes (#30): with a month of quiet history and a lateness that keeps the
/// current hour open for the whole test, a burst put to the stream reaches the output stream as
/// an `early` record of the current hour, while that hour is still open, although the checkpoint
/// interval is an hour. Prints the time from the burst's put to the record's arrival.
#[test]
fn early_alert_arrives_while_the_hour_is_open() {
    let kl = crate::util::KinesisLocal::start();
    let rt = runtime();
    let k = kl.kinesis();
    let hour = hours_ago_base(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let hist = History::new(Arc::new(LocalStore::new(&state)));
    seed_quiet_history(&hist, hour);
    rt.block_on(async {
        create_stream(&k, "flows", 1).await;
        create_stream(&k, "spikes", 1).await;
    });
    rt.block_on(put_lines(&k, "flows", &quiet_background(hour)));

    let mut cmd = flowspike();
    kl.env(&mut cmd);
    cmd.env("FLOWSPIKE_METRICS_ADDR", "off");
    // A lateness of two hours: the watermark stays before this hour, which cannot close.
    cmd.args(["--log-level", "info", "consume", "--mode", "adaptive", "--stream", "flows"])
        .args(["--output-stream", "spikes", "--state"])
        .arg(&state)
        .args(["--allowed-lateness-secs", "7200", "--checkpoint-interval-secs", "3600"])
        .args(["--idle-shard-secs", "2", "--max-runtime-secs", "120"]);
    let log = dir.path().join("consume.log");
    let mut child = spawn_logged(cmd, &log);
    // Let the consumer read the background first (no alert from it).
    std::thread::sleep(Duration::from_secs(3));
    assert!(rt.block_on(read_all(&k, "spikes")).is_empty(), "the background alerted");

    let t0 = Instant::now();
    rt.block_on(put_lines(&k, "flows", &burst(hour)));
    let spikes = first_records(&rt, &k, "spikes");
    let elapsed = t0.elapsed();
    // The hour is still open: the manifest has not closed it and no final file exists.
    let manifest: serde_json::Value = std::fs::read(state.join("consumer/flows/manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(spikes.len(), 1, "no early alert on the output stream; log:\n{log_text}");
    let s: serde_json::Value = serde_json::from_slice(&spikes[0]).expect("spike json");
    assert_eq!(s["early"], true, "{s}");
    assert_eq!(s["src_ip"], "10.0.0.1", "{s}");
    assert_eq!(s["hour"], flowspike_detect::format_hour(hour), "{s}");
    assert!(s["blocked_count"].as_u64().expect("count") >= 5, "{s}");
    assert!(manifest["closed_through"].as_i64().is_none_or(|ct| ct <= hour), "{manifest}");
    assert!(hist.hour_files(hour).expect("files").is_empty(), "the hour was closed");
    println!("time-to-alert: {} ms (burst put → early spike record read)", elapsed.as_millis());
}
