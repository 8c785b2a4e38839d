//! Transient AWS faults never stop a service or drop an object (issue #34): every AWS call of
//! `flowspike` goes through [`FaultProxy`], an HTTP proxy in front of moto_server that answers a
//! fixed, seeded fraction of calls with the service's throttle (S3 `503 SlowDown`, Kinesis
//! `ProvisionedThroughputExceededException`, DynamoDB `ThrottlingException` /
//! `ProvisionedThroughputExceededException`) or a 500/503, drops some responses AFTER forwarding
//! the request (the call took effect, the client sees a dropped connection), and delays others.
//! With it, `consume` (S3 state, kill -9), lease mode (two workers) and `replay s3://` give exactly
//! the results of fault-free runs.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowspike_aws::{S3Store, S3Url};
use flowspike_history::History;
use flowspike_synth::{generate_to_dir, SynthConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::consume::{
    create_stream, hours_ago_base, kinesis, put_lines, read, runtime, spawn_logged,
    wait_with_timeout, KillOnDrop,
};
use crate::lease::{consume_cmd, input, markers, spikes_of};
use crate::replay::{expected_counts, history_counts, small_config};
use crate::util::{assert_code, files_under, flowspike, run, Moto};

const HOUR: i64 = 3600;
/// Percent of calls the proxy faults in these tests (the issue asks for at least 15).
const FAULT_PERCENT: u64 = 20;

/// What the proxy did, by kind.
#[derive(Default, Debug)]
pub struct FaultStats {
    /// Requests received.
    pub calls: AtomicU64,
    /// Answered with the service's throttling error (not forwarded).
    pub throttled: AtomicU64,
    /// Answered with a 500 or 503 (not forwarded).
    pub server_errors: AtomicU64,
    /// Forwarded, then the connection dropped instead of the answer.
    pub dropped: AtomicU64,
    /// Delayed before being handled.
    pub delayed: AtomicU64,
}

impl FaultStats {
    fn get(&self, f: impl Fn(&FaultStats) -> &AtomicU64) -> u64 {
        f(self).load(Ordering::Relaxed)
    }

    /// Faults injected so far (throttles, 5xx, dropped answers).
    fn faults(&self) -> u64 {
        self.get(|x| &x.throttled) + self.get(|x| &x.server_errors) + self.get(|x| &x.dropped)
    }

    /// Asserts that every kind of fault was injected, `min` faults in all.
    fn assert_injected(&self, min: u64) {
        let s = |f: fn(&FaultStats) -> &AtomicU64| self.get(f);
        let (t, e, d) = (s(|x| &x.throttled), s(|x| &x.server_errors), s(|x| &x.dropped));
        eprintln!("fault proxy: {} calls, {t} throttled, {e} 5xx, {d} dropped", s(|x| &x.calls));
        assert!(t > 0 && e > 0 && d > 0 && t + e + d >= min, "too few faults injected: {self:?}");
    }
}

/// The AWS service a request is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// S3 (REST-XML; anything not recognised as another service).
    S3,
    /// Kinesis (JSON 1.1, `Kinesis_*` targets).
    Kinesis,
    /// DynamoDB (JSON 1.0).
    DynamoDb,
    /// Security Hub (REST-JSON, paths under `/findings`).
    SecurityHub,
    /// EventBridge (JSON 1.1, `AWSEvents.*` targets).
    Events,
}

struct ProxyState {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    percent: u64,
    /// The first `burst` calls of `burst_service` are throttled (a burst longer than the SDK's own
    /// attempts).
    burst_service: Service,
    burst: u64,
    burst_calls: AtomicU64,
    rng: Mutex<u64>,
    stats: Arc<FaultStats>,
}

impl ProxyState {
    /// splitmix64: a seeded sequence, one number per request in arrival order.
    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The connection is closed without an answer (hyper drops it when the service fails).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

/// A fault-injecting HTTP proxy on 127.0.0.1 in front of one upstream endpoint; stopped when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// What it did so far.
    pub stats: Arc<FaultStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` that faults `percent` of the calls, with the sequence of
    /// decisions given by `seed`, and throttles the first `s3_burst` S3 calls.
    pub fn start(upstream: &str, percent: u64, seed: u64, s3_burst: u64) -> FaultProxy {
        FaultProxy::start_with_burst(upstream, percent, seed, Service::S3, s3_burst)
    }

    /// [`FaultProxy::start`] throttling the first `burst` calls of `burst_service` instead.
    pub fn start_with_burst(
        upstream: &str,
        percent: u64,
        seed: u64,
        burst_service: Service,
        burst: u64,
    ) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("address").port();
        let stats = Arc::new(FaultStats::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_string();
        let st = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let client = Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(HttpConnector::new());
                let state = Arc::new(ProxyState {
                    upstream,
                    client,
                    percent,
                    burst_service,
                    burst,
                    burst_calls: AtomicU64::new(0),
                    rng: Mutex::new(seed),
                    stats: st,
                });
                serve(listener, state, stop_rx).await;
            });
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Sets the AWS environment of `cmd` to talk to moto_server through this proxy.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else { continue };
                let st = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        }
    }
}

fn hop_by_hop(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade")
}

async fn handle(
    st: Arc<ProxyState>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let service = if target.starts_with("DynamoDB") {
        Service::DynamoDb
    } else if target.starts_with("Kinesis") {
        Service::Kinesis
    } else if target.starts_with("AWSEvents") {
        Service::Events
    } else if parts.uri.path().starts_with("/findings") {
        Service::SecurityHub
    } else {
        Service::S3
    };
    let roll = st.next();
    st.stats.calls.fetch_add(1, Ordering::Relaxed);
    if roll.is_multiple_of(5) {
        st.stats.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis((roll >> 8) % 40)).await;
    }
    let burst =
        service == st.burst_service && st.burst_calls.fetch_add(1, Ordering::Relaxed) < st.burst;
    let faulted = burst || (roll >> 16) % 100 < st.percent;
    let kind = if burst { 0 } else { (roll >> 24) % 10 };
    if faulted && kind < 4 {
        st.stats.throttled.fetch_add(1, Ordering::Relaxed);
        return Ok(throttle(service, roll));
    }
    if faulted && kind < 7 {
        st.stats.server_errors.fetch_add(1, Ordering::Relaxed);
        return Ok(server_error(service, roll));
    }
    let uri =
        format!("{}{}", st.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut fwd = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        if !hop_by_hop(k.as_str()) {
            fwd = fwd.header(k, v);
        }
    }
    let fwd = fwd.body(Full::new(body)).map_err(|_| Dropped)?;
    let resp = st.client.request(fwd).await.map_err(|_| Dropped)?;
    let (rp, rb) = resp.into_parts();
    let rb = rb.collect().await.map_err(|_| Dropped)?.to_bytes();
    if faulted {
        // The upstream applied the call; the client never hears of it.
        st.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return Err(Dropped);
    }
    let mut out = Response::builder().status(rp.status);
    for (k, v) in &rp.headers {
        if !hop_by_hop(k.as_str()) {
            out = out.header(k, v);
        }
    }
    out.body(Full::new(rb)).map_err(|_| Dropped)
}

fn json_error(status: u16, content_type: &str, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}");
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", content_type)
        .header("x-amzn-errortype", code.rsplit('#').next().unwrap_or(code))
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn s3_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULTPROXY</RequestId></Error>"
    );
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

fn throttle(service: Service, roll: u64) -> Response<Full<Bytes>> {
    match service {
        Service::S3 => s3_error(503, "SlowDown", "Please reduce your request rate."),
        Service::Kinesis => json_error(
            400,
            "application/x-amz-json-1.1",
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard",
        ),
        Service::DynamoDb if roll & (1 << 40) == 0 => json_error(
            400,
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "Throughput exceeds the current capacity for one or more global secondary indexes",
        ),
        Service::DynamoDb => json_error(
            400,
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded",
        ),
        Service::SecurityHub => {
            json_error(429, "application/json", "TooManyRequestsException", "Rate exceeded")
        }
        Service::Events => {
            json_error(400, "application/x-amz-json-1.1", "ThrottlingException", "Rate exceeded")
        }
    }
}

fn server_error(service: Service, roll: u64) -> Response<Full<Bytes>> {
    let unavailable = roll & (1 << 41) != 0;
    match service {
        Service::S3 if unavailable => s3_error(503, "ServiceUnavailable", "Service unavailable"),
        Service::S3 => s3_error(500, "InternalError", "We encountered an internal error"),
        Service::SecurityHub => {
            json_error(500, "application/json", "InternalException", "Internal server error")
        }
        Service::Kinesis | Service::DynamoDb | Service::Events => {
            let ct = if service == Service::DynamoDb {
                "application/x-amz-json-1.0"
            } else {
                "application/x-amz-json-1.1"
            };
            if unavailable {
                json_error(503, ct, "ServiceUnavailable", "Service unavailable")
            } else {
                json_error(500, ct, "InternalFailure", "Internal failure")
            }
        }
    }
}

/// Uploads every file under `dir` to `bucket`, keys relative to `dir`; the number of files.
fn upload_dir(s3: &flowspike_aws::S3, bucket: &str, dir: &std::path::Path) -> usize {
    let files = files_under(dir);
    for p in &files {
        let key = p.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
        s3.put_object(bucket, &key, std::fs::read(p).expect("read")).expect("upload");
    }
    files.len()
}

fn s3_history(s3: &flowspike_aws::S3, url: &str) -> History {
    History::new(Arc::new(S3Store::new(s3.clone(), S3Url::parse(url).expect("url"))))
}

fn spike_ids(stdout: &[u8]) -> Vec<String> {
    let mut ids: Vec<String> = String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON spike");
            v["id"].as_str().expect("spike id").to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// (c) `replay s3://` into an `s3://` state through 20% faults: exit 0, no object skipped, the
/// history and the spikes of a fault-free run. Regression for a throttled GET skipping an object as
/// "unreadable" and a throttled LIST of the state exiting 1.
#[test]
fn replay_through_faults_equals_a_fault_free_replay() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket("flow-archive").expect("create bucket");
    s3.create_bucket("flowspike-state").expect("create bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    // Six days of hourly objects: enough hours for the baseline, few enough calls for a short test.
    let cfg = SynthConfig { hours: 6 * 24, hosts: 20, ..small_config(34) };
    generate_to_dir(&cfg, dir.path()).expect("generate");
    let uploaded = upload_dir(&s3, "flow-archive", &dir.path().join("AWSLogs"));
    assert!(uploaded > 50, "{uploaded}");
    let replay = |env: &dyn Fn(&mut Command), state: &str| {
        let mut cmd = flowspike();
        env(&mut cmd);
        run(cmd.args([
            "replay",
            "--mode",
            "window",
            "s3://flow-archive/",
            "--state",
            state,
            "--spikes",
            "-",
            "--json",
        ]))
    };

    let clean = replay(&|c| _ = moto.env(c), "s3://flowspike-state/clean");
    assert_code(&clean, 0);

    let proxy = FaultProxy::start(&moto.endpoint, FAULT_PERCENT, 34, 8);
    let faulty = replay(&|c| _ = proxy.env(c), "s3://flowspike-state/faulty");
    assert_code(&faulty, 0);
    proxy.stats.assert_injected(30);
    let summary: Value = serde_json::from_slice(
        faulty
            .stderr
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{\"files\":"))
            .expect("summary"),
    )
    .expect("summary json");
    assert_eq!(summary["files"], uploaded, "{summary}");
    assert_eq!(summary["unreadable_files"], 0, "{summary}");

    let want = history_counts(&s3_history(&s3, "s3://flowspike-state/clean"));
    assert_eq!(want, expected_counts(&cfg));
    let got = history_counts(&s3_history(&s3, "s3://flowspike-state/faulty"));
    assert_eq!(got, want);
    let spikes = spike_ids(&faulty.stdout);
    assert!(!spikes.is_empty());
    assert_eq!(spikes, spike_ids(&clean.stdout));
}

/// Regression: `replay s3://bucket/prefix/` on an empty or mistyped prefix replayed 0 objects and
/// exited 0, as if the archive were quiet; it now says so and exits 1.
#[test]
fn replay_of_an_empty_s3_prefix_fails() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket("flow-archive").expect("create bucket");
    s3.put_object("flow-archive", "AWSLogs/x.log", b"version\n".to_vec()).expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(moto
        .env(&mut flowspike())
        .args(["replay", "s3://flow-archive/AWSLogz/", "--state"])
        .arg(dir.path()));
    assert_code(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no objects under s3://flow-archive/AWSLogz/"), "{err}");
    // A missing bucket is a configuration error with a clear message, not a retry loop.
    let out = run(moto
        .env(&mut flowspike())
        .args(["replay", "s3://no-such-bucket/", "--state"])
        .arg(dir.path()));
    assert_code(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NoSuchBucket") && err.contains("the bucket does not exist"), "{err}");
}

/// The rows of a history, every hour.
fn rows(h: &History) -> Vec<flowspike_counter::AggregateRow> {
    h.read_range(i64::MIN, i64::MAX).expect("history")
}

/// The spikes of a stream by id (PutRecords is at-least-once: a dropped answer re-sends a spike,
/// whose id is the same).
fn by_id(v: &[Value]) -> BTreeMap<String, Value> {
    v.iter().map(|s| (s["id"].as_str().unwrap_or_default().to_owned(), s.clone())).collect()
}

/// What both consumer fault tests start from: moto with the input stream (`shards` shards), the
/// spike streams `output` and `spikes-clean`, the state bucket, and the first half of the input
/// put; `rest` is the second half, of the hours from `base`.
struct Started {
    moto: Moto,
    rt: tokio::runtime::Runtime,
    k: aws_sdk_kinesis::Client,
    s3: flowspike_aws::S3,
    base: i64,
    rest: Vec<String>,
}

fn start(output: &str, shards: i32) -> Started {
    let moto = Moto::start();
    let rt = runtime();
    let k = kinesis(&moto);
    rt.block_on(async {
        create_stream(&k, "flows", shards).await;
        create_stream(&k, output, 1).await;
        create_stream(&k, "spikes-clean", 1).await;
    });
    let s3 = moto.s3();
    s3.create_bucket("flowspike-state").expect("create bucket");
    let base = hours_ago_base(2);
    let mut lines = input(base);
    let rest = lines.split_off(lines.len() / 2);
    rt.block_on(put_lines(&k, "flows", &lines));
    Started { moto, rt, k, s3, base, rest }
}

/// (a) `consume` with an S3 state, every call through 20% faults and a kill -9 mid-way: the
/// aggregates and spikes of a fault-free run. Regression for the consumer exiting on a throttled
/// LIST or GET of the state at start-up, warm-up or finalization.
#[test]
fn consume_through_faults_with_kill_9_equals_a_fault_free_run() {
    let Started { moto, rt, k, s3, base, rest } = start("spikes-faulty", 2);

    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = FaultProxy::start(&moto.endpoint, FAULT_PERCENT, 7, 0);
    let faulty = |log: &str| {
        let mut cmd = consume_cmd(&moto, "s3://flowspike-state/faulty", "spikes-faulty");
        proxy.env(&mut cmd);
        (cmd, dir.path().join(log))
    };
    // Killed while it reads and checkpoints through the faults.
    let (cmd, log) = faulty("run-0.log");
    let mut child = KillOnDrop(spawn_logged(cmd, &log));
    let started = Instant::now();
    while !read(&log).contains("checkpoint") && started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.0.kill().expect("kill -9");
    let _ = child.0.wait();
    assert!(read(&log).contains("checkpoint"), "no checkpoint before the kill:\n{}", read(&log));
    rt.block_on(async {
        put_lines(&k, "flows", &rest).await;
        markers(&k, "flows", base + 11 * HOUR).await;
    });
    // Restarted: warms up from the S3 state through the faults, its first S3 calls throttled more
    // times than the SDK tries (the start-up that used to exit 1), and runs until idle.
    let restart = FaultProxy::start(&moto.endpoint, FAULT_PERCENT, 8, 8);
    let (mut cmd, log) = faulty("run-1.log");
    restart.env(&mut cmd);
    let mut child = KillOnDrop(spawn_logged(cmd, &log));
    let code = wait_with_timeout(&mut child.0, Duration::from_secs(170));
    assert_eq!(code, Some(0), "log:\n{}", read(&log));
    assert!(proxy.stats.faults() > 0, "the killed run met no fault: {:?}", proxy.stats);
    restart.stats.assert_injected(10);

    let clean = dir.path().join("clean");
    let out = run(&mut consume_cmd(&moto, clean.to_str().expect("utf-8"), "spikes-clean"));
    assert_code(&out, 0);
    let want = crate::consume::history_rows(&clean);
    assert!(want.len() > 100, "{}", want.len());
    let got = rows(&s3_history(&s3, "s3://flowspike-state/faulty"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "the aggregates through faults equal the fault-free run's");
    let (clean_spikes, faulty_spikes) = rt.block_on(async {
        (spikes_of(&k, "spikes-clean").await, spikes_of(&k, "spikes-faulty").await)
    });
    let ws = by_id(&clean_spikes);
    assert!(ws.values().any(|s| s["src_ip"] == "10.0.0.5"), "the injected spike: {clean_spikes:?}");
    assert_eq!(by_id(&faulty_spikes), ws, "the spikes through faults equal the fault-free run's");
    // The other detections (on by default) through the faults and the kill: the same tables, one
    // file per hour.
    let faulty = s3_history(&s3, "s3://flowspike-state/faulty");
    let clean_store = flowspike_history::LocalStore::new(&clean);
    crate::util::assert_detection_tables_equal(faulty.store().as_ref(), &clean_store);
}

/// (b) Lease mode, two workers, every call (Kinesis, DynamoDB, S3) through 20% faults — including
/// conditional writes and transactions whose answers are dropped after they took effect — and a
/// kill -9 of one worker: the aggregates and spikes of a fault-free single consumer.
#[test]
fn lease_workers_through_faults_equal_a_fault_free_run() {
    let Started { moto, rt, k, s3, base, rest } = start("spikes-group", 4);

    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = FaultProxy::start(&moto.endpoint, FAULT_PERCENT, 29, 0);
    let log_of = |i: usize| dir.path().join(format!("worker-{i}.log"));
    let worker = |i: usize, log: &std::path::Path, through: &FaultProxy| {
        let mut cmd = consume_cmd(&moto, "s3://flowspike-state/group", "spikes-group");
        through.env(&mut cmd);
        cmd.args([
            "--lease-table",
            "flowspike-leases",
            "--lease-failover-secs",
            "3",
            "--worker-id",
            &format!("w{i}"),
        ]);
        KillOnDrop(spawn_logged(cmd, log))
    };
    let mut workers = Vec::new();
    for i in 0..2 {
        workers.push(worker(i, &log_of(i), &proxy));
        // As in lease.rs: the next worker starts once this one holds a lease (moto's conditional
        // writes are not atomic across concurrent requests).
        let started = Instant::now();
        while !read(&log_of(i)).contains("\"lease taken\"")
            && started.elapsed() < Duration::from_secs(40)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_secs(4));
    let mut victim = workers.remove(0);
    victim.0.kill().expect("kill -9");
    let _ = victim.0.wait();
    rt.block_on(async {
        put_lines(&k, "flows", &rest).await;
        markers(&k, "flows", base + 11 * HOUR).await;
    });
    // The victim comes back (same id), its first S3 calls throttled more times than the SDK
    // tries, and the group finishes.
    let restart = FaultProxy::start(&moto.endpoint, FAULT_PERCENT, 30, 8);
    workers.push(worker(0, &dir.path().join("worker-0-restarted.log"), &restart));
    for (i, w) in workers.iter_mut().enumerate() {
        let code = wait_with_timeout(&mut w.0, Duration::from_secs(170));
        assert_eq!(
            code,
            Some(0),
            "worker {i}; logs:\n{}\n---\n{}",
            read(&log_of(1)),
            read(&dir.path().join("worker-0-restarted.log"))
        );
    }
    proxy.stats.assert_injected(10);
    restart.stats.assert_injected(10);

    let clean = dir.path().join("clean");
    let out = run(&mut consume_cmd(&moto, clean.to_str().expect("utf-8"), "spikes-clean"));
    assert_code(&out, 0);
    let want = crate::consume::history_rows(&clean);
    assert!(want.len() > 100, "{}", want.len());
    let got = rows(&s3_history(&s3, "s3://flowspike-state/group"));
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "the group's aggregates through faults equal the fault-free run's");
    let (clean_spikes, group_spikes) = rt.block_on(async {
        (spikes_of(&k, "spikes-clean").await, spikes_of(&k, "spikes-group").await)
    });
    let ws = by_id(&clean_spikes);
    assert!(ws.values().any(|s| s["src_ip"] == "10.0.0.5"), "the injected spike: {clean_spikes:?}");
    assert_eq!(
        by_id(&group_spikes),
        ws,
        "the group's spikes through faults equal the fault-free run's"
    );
}
