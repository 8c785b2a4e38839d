//! `flowspike serve-firehose` driven by a real HTTP client (hyper) speaking the Firehose HTTP
//! endpoint delivery protocol: 1,000-record batches in every record framing, a spike, bad requests
//! (401, 400, 413 on a gzip bomb) that leave the server serving, and retried request ids that are
//! counted once, also across a kill -9 and restart.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flowspike_counter::{AggregateRow, Counter, CounterConfig, Hit};
use flowspike_history::{History, LocalStore};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Value};

use crate::util::{files_under, flowspike};

const HOUR: i64 = 3600;
const ACCOUNT: &str = "123456789012";
const KEY: &str = "test-access-key-0123456789";

/// One flow: (eni, src, dst, start, action).
type Flow = (String, String, String, i64, &'static str);

fn line(f: &Flow) -> String {
    let (eni, src, dst, start, action) = f;
    format!("2 {ACCOUNT} {eni} {src} {dst} 49152 443 6 1 40 {start} {} {action} OK", start + 30)
}

/// The aggregates the counter makes of the blocked outbound flows among `flows`.
fn expected(flows: &[Flow]) -> Vec<AggregateRow> {
    let mut c = Counter::new(CounterConfig::default());
    for (eni, src, dst, start, action) in flows {
        let internal = dst.starts_with("10.") || dst.starts_with("192.168.");
        if *action != "REJECT" || internal {
            continue;
        }
        c.add(&Hit {
            hour: start - start.rem_euclid(HOUR),
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            interface_id: Some(eni.as_bytes()),
            bytes: 40,
            packets: 1,
        });
    }
    c.into_rows()
}

fn history_rows(state: &Path) -> Vec<AggregateRow> {
    History::new(Arc::new(LocalStore::new(state)))
        .read_range(i64::MIN, i64::MAX)
        .unwrap_or_default()
}

/// The start of the hour `days` days ago.
fn base(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = now - days * 24 * HOUR;
    t - t.rem_euclid(HOUR)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A CloudWatch Logs subscription envelope (gzip JSON) carrying `flows` as log events.
fn cloudwatch_envelope(flows: &[Flow]) -> Vec<u8> {
    let events: Vec<Value> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"id": i.to_string(), "timestamp": f.3 * 1000, "message": line(f)}))
        .collect();
    let env = json!({
        "messageType": "DATA_MESSAGE", "owner": ACCOUNT, "logGroup": "/vpc/flows",
        "logStream": flows[0].0, "subscriptionFilters": ["to-firehose"], "logEvents": events,
    });
    gzip(env.to_string().as_bytes())
}

/// A Firehose request body with `records` as base64 data.
fn body(request_id: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let recs: Vec<Value> = records.iter().map(|r| json!({"data": b64.encode(r)})).collect();
    json!({"requestId": request_id, "timestamp": 1_700_000_000_000i64, "records": recs})
        .to_string()
        .into_bytes()
}

/// A hyper client posting to one endpoint.
struct Poster {
    rt: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

impl Poster {
    fn new(port: u16) -> Poster {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let client =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        Poster { rt, client, url: format!("http://127.0.0.1:{port}/") }
    }

    /// A poster that opens a new connection for every request: the server closes a connection
    /// after answering a request early (before reading its body), and a pooled connection could be
    /// reused while it closes.
    fn without_pool(port: u16) -> Poster {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        Poster { rt, client, url: format!("http://127.0.0.1:{port}/") }
    }

    /// Sends one request; the status and the JSON response body.
    fn send(&self, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
        self.try_send(method, headers, body).expect("http request")
    }

    /// Sends one request; the status and the JSON response body, or the client's error (e.g. the
    /// server answered early and closed the connection while the body was still being sent).
    fn try_send(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Value), hyper_util::client::legacy::Error> {
        self.rt.block_on(async {
            let mut req = hyper::Request::builder().method(method).uri(&self.url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body))).expect("request");
            let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
                .await
                .expect("answer within 60 s")?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        })
    }

    /// A Firehose delivery with the right headers (and `key` as access key, if any).
    fn deliver(&self, id: &str, key: Option<&str>, gzipped: bool, body: Vec<u8>) -> (u16, Value) {
        let mut h = vec![
            ("X-Amz-Firehose-Request-Id", id),
            ("X-Amz-Firehose-Protocol-Version", "1.0"),
            (
                "X-Amz-Firehose-Source-Arn",
                "arn:aws:firehose:us-east-1:123456789012:deliverystream/flows",
            ),
            ("Content-Type", "application/json"),
        ];
        if let Some(k) = key {
            h.push(("X-Amz-Firehose-Access-Key", k));
        }
        if gzipped {
            h.push(("Content-Encoding", "gzip"));
        }
        let (status, resp) = self.send("POST", &h, body);
        if status != 0 && !resp.is_null() {
            assert_eq!(resp["requestId"], id, "response echoes the request id: {resp}");
            assert!(resp["timestamp"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{resp}");
        }
        (status, resp)
    }

    /// Asserts a 200 for a valid delivery.
    fn ok(&self, id: &str, gzipped: bool, body: Vec<u8>) {
        let (status, resp) = self.deliver(id, Some(KEY), gzipped, body);
        assert_eq!(status, 200, "{id}: {resp}");
        assert!(resp.get("errorMessage").is_none(), "{resp}");
    }
}

/// A running `flowspike serve-firehose`, killed when dropped.
struct Endpoint {
    child: Child,
    port: u16,
    log: PathBuf,
    spikes: PathBuf,
}

impl Endpoint {
    fn start(dir: &Path, state: &Path, run: &str, idle_secs: u32, extra: &[&str]) -> Endpoint {
        let keys = format!("another-key,{KEY}");
        Endpoint::start_with(dir, state, run, idle_secs, extra, Some(&keys))
    }

    /// As [`Endpoint::start`], with `keys` in FLOWSPIKE_FIREHOSE_ACCESS_KEYS (none: unset) and
    /// `--metrics-addr off` unless `extra` gives one.
    fn start_with(
        dir: &Path,
        state: &Path,
        run: &str,
        idle_secs: u32,
        extra: &[&str],
        keys: Option<&str>,
    ) -> Endpoint {
        let port = free_port();
        let log = dir.join(format!("{run}.log"));
        let spikes = dir.join(format!("{run}.spikes.jsonl"));
        let mut cmd = flowspike();
        match keys {
            Some(k) => cmd.env("FLOWSPIKE_FIREHOSE_ACCESS_KEYS", k),
            None => cmd.env_remove("FLOWSPIKE_FIREHOSE_ACCESS_KEYS"),
        };
        cmd.args(["--log-level", "info", "serve-firehose"]);
        if !extra.contains(&"--mode") {
            cmd.args(["--mode", "window"]);
        }
        cmd.arg("--state").arg(state).args(["--listen", &format!("127.0.0.1:{port}")]);
        if !extra.contains(&"--metrics-addr") {
            cmd.args(["--metrics-addr", "off"]);
        }
        cmd.args(["--allowed-lateness-secs", "36000", "--idle-secs", &idle_secs.to_string()])
            .args(extra)
            .stdout(Stdio::from(File::create(&spikes).expect("spikes file")))
            .stderr(Stdio::from(File::create(&log).expect("log file")));
        let child = cmd.spawn().expect("spawn flowspike serve-firehose");
        let mut ep = Endpoint { child, port, log, spikes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/healthz").is_none_or(|(code, _)| code != 200) {
            if let Ok(Some(s)) = ep.child.try_wait() {
                panic!("serve-firehose exited early ({s}); log:\n{}", ep.log());
            }
            assert!(Instant::now() < deadline, "not healthy in 30 s; log:\n{}", ep.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        ep
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spikes(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.spikes).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).expect("spike json line")).collect()
    }

    /// SIGTERM; asserts exit 0 and returns the run summary (the last stderr line).
    fn stop(mut self) -> Value {
        let st = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(st.is_ok_and(|s| s.success()), "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s.code();
            }
            assert!(Instant::now() < deadline, "no exit 60 s after SIGTERM; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert_eq!(code, Some(0), "graceful stop; log:\n{log}");
        let summary = log.lines().rfind(|l| l.starts_with("{\"stats\"")).expect("summary line");
        serde_json::from_str(summary).expect("summary json")
    }

    /// kill -9.
    fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A plain HTTP/1.1 GET on 127.0.0.1: status and whole response, or `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some((out.split(' ').nth(1)?.parse().ok()?, out))
}

/// Polls `cond` every 100 ms for at most `secs`; panics with `what` and the log when it never holds.
fn wait_until(ep: &Endpoint, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {secs} s; log:\n{}", ep.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ten hours: 10.0.0.5 blocked 2-3 times an hour, then 30 times (the spike); 10.0.0.9 blocked
/// exactly 40 times every hour (steady: never a spike); accepted and internal traffic that must
/// not count.
fn ten_hours(base: i64) -> Vec<Flow> {
    let mut flows = Vec::new();
    for h in 0..10i64 {
        let t = base + h * HOUR;
        let n = if h == 9 { 30 } else { 2 + h % 2 };
        for i in 0..n {
            let dst = format!("203.0.113.{}", i % 5 + 1);
            flows.push(("eni-0a1b2c3d".into(), "10.0.0.5".into(), dst, t + 60 + i * 100, "REJECT"));
        }
        for i in 0..40 {
            let dst = format!("198.51.100.{}", i % 7);
            flows.push(("eni-0e0e0e0e".into(), "10.0.0.9".into(), dst, t + 30 + i * 80, "REJECT"));
        }
        for i in 0..100 {
            let (dst, action) =
                if i % 2 == 0 { ("8.8.8.8", "ACCEPT") } else { ("10.1.1.1", "REJECT") };
            flows.push(("eni-0f0f0f0f".into(), "10.0.0.7".into(), dst.into(), t + 35 * i, action));
        }
    }
    flows
}

#[test]
fn thousand_record_batches_in_every_framing_count_exactly_and_raise_a_spike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // One base for the whole test: an hour boundary may pass while it runs.
    let b = base(2);
    let flows = ten_hours(b);
    assert_eq!(flows.len(), 52 + 400 + 1000);
    // Three framings, interleaved: CloudWatch Logs envelopes of 4 flows, `{"message": line}`
    // records and plain lines.
    let mut records: Vec<Vec<u8>> = Vec::new();
    let (cw, rest) = flows.split_at(400);
    records.extend(cw.chunks(4).map(cloudwatch_envelope));
    for (i, f) in rest.iter().enumerate() {
        records.push(if i % 2 == 0 {
            json!({"message": line(f)}).to_string().into_bytes()
        } else {
            line(f).into_bytes()
        });
    }
    // Spread the framings over both requests (7919 is prime: a permutation).
    let n = records.len();
    assert_eq!(n, 100 + 1052);
    let all: Vec<Vec<u8>> = (0..n).map(|i| records[(i * 7919) % n].clone()).collect();
    let (first, second) = all.split_at(1000);

    let ep = Endpoint::start(dir.path(), &state, "run", 4, &[]);
    let post = Poster::new(ep.port);
    post.ok("req-0001", false, body("req-0001", first));
    post.ok("req-0002", true, gzip(&body("req-0002", second)));
    // Hours close once the endpoint is idle (2 s): all ten, then the detection runs.
    wait_until(&ep, 30, "the spike", || !ep.spikes().is_empty());
    let want = expected(&flows);
    assert_eq!(want.len(), 20);
    wait_until(&ep, 10, "the aggregates", || history_rows(&state) == want);
    let spikes = ep.spikes();
    assert_eq!(spikes.len(), 1, "{spikes:?}");
    assert_eq!(spikes[0]["src_ip"], "10.0.0.5");
    assert_eq!(spikes[0]["blocked_count"], 30);
    assert_eq!(spikes[0]["hour"], flowspike_detect::format_hour(b + 9 * HOUR));
    let summary = ep.stop();
    assert_eq!(summary["requests"]["accepted"], 2, "{summary}");
    assert_eq!(summary["stats"]["kinesis_records"], n, "{summary}");
    assert_eq!(summary["stats"]["flow_records"], flows.len(), "{summary}");
    let counted: u64 = want.iter().map(|r| r.blocked_count).sum();
    assert_eq!(counted, 52 + 400);
    assert_eq!(summary["stats"]["counted"], counted, "{summary}");
    assert_eq!(summary["stats"]["malformed"], 0, "{summary}");
    assert_eq!(history_rows(&state), want);
    // Only the endpoint's final files are under aggregates/.
    for key in
        History::new(Arc::new(LocalStore::new(&state))).store().list("aggregates/").expect("list")
    {
        assert!(key.ends_with("/consumer-firehose.parquet"), "unexpected file {key}");
    }
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let ep = Endpoint::start(dir.path(), &state, "run", 2, &["--max-body-bytes", "1000000"]);
    let post = Poster::without_pool(ep.port);
    let flow: Flow = ("eni-1".into(), "10.0.0.1".into(), "8.8.4.4".into(), base(1) + 10, "REJECT");
    let good = || body("good", &[line(&flow).into_bytes()]);

    let check = |id: &str, key: Option<&str>, gz: bool, b: Vec<u8>, status: u16, msg: &str| {
        let (got, resp) = post.deliver(id, key, gz, b);
        assert_eq!(got, status, "{id}: {resp}");
        let m = resp["errorMessage"].as_str().unwrap_or_default();
        assert!(m.contains(msg), "{id}: {resp}");
    };
    check("wrong-key", Some("not-the-key"), false, good(), 401, "wrong X-Amz-Firehose-Access-Key");
    check("no-key", None, false, good(), 401, "missing X-Amz-Firehose-Access-Key");
    let bad64 = br#"{"requestId":"bad-b64","records":[{"data":"not base64!"}]}"#.to_vec();
    check("bad-b64", Some(KEY), false, bad64, 400, "record 0: data is not base64");
    check("bad-json", Some(KEY), false, b"{\"requestId\":\"bad-json\",".to_vec(), 400, "bad JSON");
    check("mismatch", Some(KEY), false, good(), 400, "differs");
    // A gzip bomb: 64 MB of zeros in a ~64 kB body, far past the 1 MB limit once inflated.
    let bomb = gzip(&vec![b' '; 64_000_000]);
    assert!(bomb.len() < 1_000_000, "{}", bomb.len());
    check("bomb", Some(KEY), true, bomb, 413, "inflates past the limit");
    // A body over the limit by Content-Length is answered 413 at once and the connection closed:
    // the client either reads the 413 or sees the connection end while still sending the body
    // (both are a failed delivery to Firehose, which retries; the server must go on serving).
    let h = [
        ("X-Amz-Firehose-Request-Id", "big"),
        ("X-Amz-Firehose-Protocol-Version", "1.0"),
        ("X-Amz-Firehose-Access-Key", KEY),
    ];
    match post.try_send("POST", &h, vec![b' '; 1_500_000]) {
        Ok((status, resp)) => {
            assert_eq!(status, 413, "big: {resp}");
            let m = resp["errorMessage"].as_str().unwrap_or_default();
            assert!(m.contains("larger than the limit"), "big: {resp}");
        }
        // Not a refused connection: the request was sent and the exchange cut short by the server.
        Err(e) => assert!(!e.is_connect() && format!("{e:?}").contains("SendRequest"), "{e:?}"),
    }
    let (status, _) = post.send("GET", &[], Vec::new());
    assert_eq!(status, 405);

    // Still serving, and only the valid request counts.
    post.ok("good", false, good());
    assert_eq!(http_get(ep.port, "/healthz").map(|r| r.0), Some(200));
    let summary = ep.stop();
    assert_eq!(summary["requests"]["unauthorized"], 2, "{summary}");
    assert_eq!(summary["requests"]["rejected"], 6, "{summary}");
    assert_eq!(summary["requests"]["accepted"], 1, "{summary}");
    assert_eq!(summary["stats"]["counted"], 1, "{summary}");
}

#[test]
fn retried_request_ids_count_once_also_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let b = base(1);
    let batch = |n: i64, src: &str| -> Vec<Flow> {
        (0..n)
            .map(|i| ("eni-1".into(), src.into(), "203.0.113.7".into(), b + i * 30, "REJECT"))
            .collect()
    };
    let (a, c) = (batch(25, "10.0.0.1"), batch(7, "10.0.0.2"));
    let recs = |fs: &[Flow]| -> Vec<Vec<u8>> { fs.iter().map(|f| line(f).into_bytes()).collect() };

    let ep = Endpoint::start(dir.path(), &state, "first", 3600, &[]);
    let post = Poster::new(ep.port);
    post.ok("req-a", false, body("req-a", &recs(&a)));
    post.ok("req-a", false, body("req-a", &recs(&a))); // a retry: answered 200, not counted
    ep.kill(); // the 200 promised that req-a is durable

    let ep = Endpoint::start(dir.path(), &state, "second", 2, &[]);
    let post = Poster::new(ep.port);
    post.ok("req-a", true, gzip(&body("req-a", &recs(&a)))); // retried after the restart
    post.ok("req-c", false, body("req-c", &recs(&c)));
    let mut want_flows = a.clone();
    want_flows.extend(c);
    let want = expected(&want_flows);
    // The hour closes once the endpoint is idle; a double count would never equal `want`.
    wait_until(&ep, 30, "the closed hour", || !history_rows(&state).is_empty());
    assert_eq!(history_rows(&state), want);
    assert_eq!(want[0].blocked_count, 25);
    let summary = ep.stop();
    assert_eq!(summary["requests"]["duplicates"], 1, "{summary}");
    assert_eq!(summary["requests"]["accepted"], 1, "{summary}");
    assert_eq!(summary["stats"]["counted"], 7, "{summary}");
}

/// A delivery's headers with `id` and the test key.
fn delivery_headers(id: &str) -> Vec<(&str, &str)> {
    vec![
        ("X-Amz-Firehose-Request-Id", id),
        ("X-Amz-Firehose-Protocol-Version", "1.0"),
        ("X-Amz-Firehose-Access-Key", KEY),
        ("Content-Type", "application/json"),
    ]
}

/// Regression (issue 28, item 4): an 8 KB request id and 200,000 empty records in 2.4 MB took the
/// server to 3.26 GB (a copy of the id per record). Request ids longer than 128 bytes and
/// requests of more than --max-records-per-request (default 100,000) records are refused; the
/// endpoint goes on serving.
#[test]
fn long_request_ids_and_record_floods_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let ep = Endpoint::start(dir.path(), &state, "run", 3600, &[]);
    let post = Poster::without_pool(ep.port);
    let long_id = "x".repeat(8192);
    let (status, resp) = post.send("POST", &delivery_headers(&long_id), body(&long_id, &[]));
    assert_eq!(status, 400, "{resp}");
    let msg = resp["errorMessage"].as_str().unwrap_or_default();
    assert!(msg.contains("X-Amz-Firehose-Request-Id (8192 bytes)"), "{resp}");
    assert_eq!(resp["requestId"], "", "an invalid id is not echoed: {resp}");
    let id129 = "y".repeat(129);
    let (status, resp) = post.send("POST", &delivery_headers(&id129), body(&id129, &[]));
    assert_eq!(status, 400, "{resp}");

    let empty = |n: usize, id: &str| {
        let recs = vec![r#"{"data":""}"#; n].join(",");
        format!(r#"{{"requestId":"{id}","records":[{recs}]}}"#).into_bytes()
    };
    let (status, resp) = post.send("POST", &delivery_headers("flood"), empty(100_001, "flood"));
    assert_eq!(status, 413, "{resp}");
    let msg = resp["errorMessage"].as_str().unwrap_or_default();
    assert!(msg.contains("more than 100000 records"), "{resp}");
    // At the cap, with the longest id: accepted (and counted as records, none of them flows).
    let id128 = "z".repeat(128);
    let (status, resp) = post.send("POST", &delivery_headers(&id128), empty(100_000, &id128));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["requestId"], id128.as_str());
    let summary = ep.stop();
    assert_eq!(summary["requests"]["rejected"], 3, "{summary}");
    assert_eq!(summary["requests"]["accepted"], 1, "{summary}");
    assert_eq!(summary["stats"]["kinesis_records"], 100_000, "{summary}");
}

/// Regression (issue 28, item 10): `serve-firehose --help` printed the access keys taken from
/// FLOWSPIKE_FIREHOSE_ACCESS_KEYS.
#[test]
fn help_does_not_print_the_access_keys_of_the_environment() {
    let secret = "s3cr3t-key-that-must-not-leak";
    let out = crate::util::run(
        flowspike()
            .env("FLOWSPIKE_FIREHOSE_ACCESS_KEYS", secret)
            .args(["serve-firehose", "--help"]),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--access-key-file"), "{text}");
    assert!(text.contains("FLOWSPIKE_FIREHOSE_ACCESS_KEYS"), "{text}");
    assert!(!text.contains(secret), "the key is printed:\n{text}");
}

/// Issue 28, item 10: keys can come from a file (`--access-key-file`), out of `ps`.
#[test]
fn access_key_file_authenticates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("\n  old-key  \n{KEY}\n")).expect("key file");
    let ep = Endpoint::start_with(
        dir.path(),
        &state,
        "run",
        3600,
        &["--access-key-file", keys.to_str().expect("utf-8 path")],
        None,
    );
    let post = Poster::without_pool(ep.port);
    let flow: Flow = ("eni-1".into(), "10.0.0.1".into(), "8.8.4.4".into(), base(1) + 10, "REJECT");
    post.ok("with-key", false, body("with-key", &[line(&flow).into_bytes()]));
    let (status, _) = post.deliver("old", Some("old-key"), false, body("old", &[]));
    assert_eq!(status, 200);
    let (status, _) = post.deliver("wrong", Some("nope"), false, body("wrong", &[]));
    assert_eq!(status, 401);
    assert!(!ep.log().contains(KEY), "the key is logged");
    let summary = ep.stop();
    assert_eq!(summary["requests"]["accepted"], 2, "{summary}");

    // An empty key file is a configuration error, not an open endpoint.
    std::fs::write(&keys, "\n\n").expect("key file");
    let out = crate::util::run(
        flowspike()
            .env_remove("FLOWSPIKE_FIREHOSE_ACCESS_KEYS")
            .args(["serve-firehose", "--state"])
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--metrics-addr", "off", "--access-key-file"])
            .arg(&keys),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no key"), "{out:?}");
}

/// Regression (issue 28, item 10): a 503 answered the store's error, which names internal
/// paths (and, in aggregate keys, source addresses). The answer is now generic; the cause is
/// logged with the request id.
#[test]
fn failed_checkpoint_answers_503_without_internal_details() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state-dir-that-must-stay-private");
    let ep = Endpoint::start(dir.path(), &state, "run", 3600, &[]);
    let post = Poster::without_pool(ep.port);
    // The state directory becomes a file: every write under it fails.
    std::fs::remove_dir_all(&state).expect("remove the state");
    std::fs::write(&state, b"not a directory").expect("file in its place");
    let flow: Flow = ("eni-1".into(), "10.77.0.1".into(), "8.8.4.4".into(), base(1) + 10, "REJECT");
    let (status, resp) =
        post.deliver("doomed", Some(KEY), false, body("doomed", &[line(&flow).into_bytes()]));
    assert_eq!(status, 503, "{resp}");
    let msg = resp["errorMessage"].as_str().unwrap_or_default();
    assert!(msg.contains("checkpoint failed"), "{resp}");
    for secret in ["state-dir-that-must-stay-private", "10.77.0.1", "aggregates", "consumer/"] {
        assert!(!msg.contains(secret), "{secret} in the answer: {resp}");
    }
    wait_until(&ep, 30, "the cause in the log", || {
        ep.log()
            .lines()
            .any(|l| l.contains("doomed") && l.contains("state-dir-that-must-stay-private"))
    });
}

/// Reads from `s` until it closes; true when it closed (EOF or reset) within the read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

/// The value of an unlabelled metric on the metrics port.
fn metric(port: u16, name: &str) -> Option<u64> {
    let (_, text) = http_get(port, "/metrics")?;
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Regression (issue 28, item 7): connections were not capped (500 unfinished request heads took
/// the server from 74 to 350 MB). Past --max-connections a new connection is closed at once and
/// counted; once connections close, new ones are served again.
#[test]
fn connections_past_the_cap_are_closed_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let ep = Endpoint::start(
        dir.path(),
        &state,
        "run",
        3600,
        &["--max-connections", "4", "--metrics-addr", &maddr],
    );
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", ep.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
        s
    };
    // Four slow clients: an unfinished head each.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Firehose-Request").expect("write");
            s
        })
        .collect();
    wait_until(&ep, 30, "4 open connections", || {
        metric(mport, "flowspike_firehose_connections") == Some(4)
    });
    let mut fifth = connect();
    assert!(closed_by_server(&mut fifth), "a connection past the cap stays open");
    assert!(
        metric(mport, "flowspike_firehose_connections_refused_total").is_some_and(|n| n >= 1),
        "refusal not counted"
    );
    // The slow clients still hold their connections (closed by the head timeout, 30 s, not
    // before).
    assert!(!closed_by_server(&mut slow[0]), "a slow client was closed early");
    slow.clear();
    wait_until(&ep, 30, "the slots freed", || {
        metric(mport, "flowspike_firehose_connections") == Some(0)
    });
    let post = Poster::without_pool(ep.port);
    post.ok("after", false, body("after", &[]));
    let summary = ep.stop();
    assert_eq!(summary["requests"]["accepted"], 1, "{summary}");
}

/// Alerts within minutes (#30) through the Firehose endpoint: with ten days of quiet history and
/// an hour that cannot close while the test runs (lateness 10 h, idle 1 h), a burst delivered in
/// one request is written as an `early` spike of the current hour while that hour is open, and a
/// graceful stop does not write it again.
#[test]
fn early_alert_is_written_while_the_hour_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let hour = base(0);
    let hist = History::new(Arc::new(LocalStore::new(&state)));
    crate::consume::seed_quiet_history(&hist, hour);
    let ep = Endpoint::start(dir.path(), &state, "early", 3600, &["--mode", "adaptive"]);
    let post = Poster::new(ep.port);
    let recs = |fs: &[Flow]| -> Vec<Vec<u8>> { fs.iter().map(|f| line(f).into_bytes()).collect() };
    // Each source's usual two records: no alert.
    let background: Vec<Flow> = crate::consume::QUIET_SOURCES
        .iter()
        .flat_map(|s| {
            (0..2).map(move |i| {
                ("eni-1".into(), (*s).into(), "203.0.113.1".into(), hour + i, "REJECT")
            })
        })
        .collect();
    post.ok("req-background", false, body("req-background", &recs(&background)));
    let burst: Vec<Flow> = (0..200)
        .map(|i| {
            let dst = format!("198.51.100.{}", i % 250 + 1);
            ("eni-1".into(), "10.0.0.1".into(), dst, hour + 2 + i % 3, "REJECT")
        })
        .collect();
    let t0 = Instant::now();
    post.ok("req-burst", false, body("req-burst", &recs(&burst)));
    wait_until(&ep, 60, "an early spike", || !ep.spikes().is_empty());
    let elapsed = t0.elapsed();
    let spikes = ep.spikes();
    assert_eq!(spikes.len(), 1, "one early spike: {spikes:?}");
    let s = &spikes[0];
    assert_eq!(s["early"], true, "{s}");
    assert_eq!(s["src_ip"], "10.0.0.1", "{s}");
    assert_eq!(s["hour"], flowspike_detect::format_hour(hour), "{s}");
    assert!(hist.hour_files(hour).expect("files").is_empty(), "the hour was closed");
    let summary = ep.stop();
    assert_eq!(summary["requests"]["accepted"], 2, "{summary}");
    let after = std::fs::read_to_string(dir.path().join("early.spikes.jsonl")).unwrap_or_default();
    assert_eq!(after.lines().count(), 1, "the early spike was written again:\n{after}");
    println!(
        "time-to-alert: {} ms (burst request sent → early spike written)",
        elapsed.as_millis()
    );
}

/// `flowspike gen --cases 1` pushed through serve-firehose with every detection: the labelled
/// port scan, port sweep and threat-list contacts are found (in OCSF, where the spikes go), each
/// detection's table is written under the state beside the aggregates; with `--detections
/// blocked-spike` neither findings nor tables appear.
#[test]
fn gen_cases_through_serve_firehose_give_findings_and_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let gen = ["gen", "--hours", "48", "--hosts", "12", "--seed", "3", "--cases", "1", "--out"];
    let st = flowspike().args(gen).arg(&archive).status().expect("gen");
    assert!(st.success(), "gen failed");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(archive.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    let positives: Vec<(String, String)> = manifest["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["positive"] == true)
        .map(|c| (c["kind"].as_str().unwrap().to_owned(), c["src_ip"].as_str().unwrap().to_owned()))
        .collect();
    let lists = ["tor-exits", "custom"]
        .map(|n| archive.join("threat-lists").join(format!("{n}.txt")).display().to_string())
        .join(",");
    // In time order across the archive's accounts (the file names' `_YYYYMMDDTHHMMZ_`), as
    // Firehose would deliver them: no record is late.
    let mut files = files_under(&archive.join("AWSLogs"));
    assert!(!files.is_empty());
    let stamp = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.split('_').find(|part| part.len() == 14 && part.ends_with('Z')).map(str::to_owned)
    };
    files.sort_by_key(|p| (stamp(p), p.clone()));
    // One Firehose record per object: gzip is a framing the endpoint reads.
    let records: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("object")).collect();

    let run = |name: &str, extra: &[&str]| -> (PathBuf, Vec<Value>, Value) {
        let state = dir.path().join(name);
        let mut args = vec!["--threat-list", &lists, "--output-format", "ocsf"];
        args.extend_from_slice(&["--internal", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8"]);
        args.extend_from_slice(extra);
        // Idle after 10 s (then event time follows the clock and every hour closes): longer
        // than the requests take, so that none of their records is late.
        let ep = Endpoint::start(dir.path(), &state, name, 10, &args);
        let post = Poster::new(ep.port);
        for (i, chunk) in records.chunks(100).enumerate() {
            let id = format!("{name}-{i:04}");
            post.ok(&id, true, gzip(&body(&id, chunk)));
        }
        let closed = || {
            std::fs::read_to_string(state.join("consumer").join("firehose").join("manifest.json"))
                .ok()
                .and_then(|m| serde_json::from_str::<Value>(&m).ok())
                .and_then(|m| m["closed_through"].as_i64())
                // gen's archive starts at 2026-01-01T00:00:00Z: past its 48 hours, all closed.
                .is_some_and(|ct| ct >= 1_767_225_600 + 48 * HOUR)
        };
        wait_until(&ep, 120, "every hour closed", closed);
        let summary = ep.stop();
        let out = std::fs::read_to_string(dir.path().join(format!("{name}.spikes.jsonl")))
            .expect("output");
        let lines = out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        (state, lines, summary)
    };

    // A finding of the other detections (a spike's record names `blocked_outbound_spike`).
    let other = |l: &Value| {
        let d = l["unmapped"]["flowspike"]["detection"].as_str();
        d.is_some_and(|d| {
            ["port_scan", "port_sweep", "outbound_volume", "threat_list"].contains(&d)
        })
    };
    let (state, lines, summary) = run("all", &[]);
    let findings: Vec<&Value> = lines.iter().filter(|l| other(l)).collect();
    assert_eq!(summary["stats"]["late_counted"], 0, "{summary}");
    assert_eq!(summary["stats"]["detections_late_records"], 0, "{summary}");
    assert!(lines.iter().all(|l| l["class_uid"] == 2004), "OCSF Detection Findings only");
    assert_eq!(summary["stats"]["findings_emitted"], findings.len(), "{summary}");
    for (kind, src) in positives.iter().filter(|(k, _)| k != "outbound_volume") {
        assert!(
            findings.iter().any(|f| f["unmapped"]["flowspike"]["detection"] == kind.as_str()
                && f["evidences"][0]["src_endpoint"]["ip"] == src.as_str()),
            "{kind} of {src} not found; summary {summary}; findings: {:?}",
            findings.iter().map(|f| &f["message"]).collect::<Vec<_>>()
        );
    }
    let mut ids: Vec<&str> =
        findings.iter().map(|f| f["finding_info"]["uid"].as_str().expect("uid")).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a finding emitted twice");
    for table in ["port_scans", "port_sweeps", "outbound_volume", "threat_matches"] {
        let files: Vec<PathBuf> = files_under(&state.join(table));
        assert!(!files.is_empty(), "no {table} table");
        assert!(
            files.iter().all(|f| f.file_name().is_some_and(|n| n == "consumer-firehose.parquet")),
            "{table}: {files:?}"
        );
    }
    assert!(state.join("aggregates").exists());

    // Only the blocked spike: no finding and no table.
    let (only, lines, summary) = run("only", &["--detections", "blocked-spike"]);
    assert!(!lines.iter().any(other), "{lines:?}");
    assert_eq!(summary["stats"]["findings_emitted"], 0);
    for table in ["port_scans", "port_sweeps", "outbound_volume", "threat_matches"] {
        assert!(!only.join(table).exists(), "{table} written with --detections blocked-spike");
    }
    assert!(only.join("aggregates").exists());
}

/// `--threat-list-reload-secs`: an address added to a list file while serve-firehose runs is
/// matched in the requests after the reload, not in those before.
#[test]
fn threat_list_changes_reach_the_requests_after_the_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let list = dir.path().join("tor-exits.txt");
    std::fs::write(&list, "198.51.7.1\n").expect("list");
    let b = base(2);
    let flow = |src: &str, t: i64| -> Vec<u8> {
        line(&("eni-0a".into(), src.into(), "198.51.7.2".into(), b + t, "ACCEPT")).into_bytes()
    };
    let list_arg = list.display().to_string();
    let extra = ["--threat-list", &list_arg, "--threat-list-reload-secs", "1"];
    let ep = Endpoint::start(dir.path(), &state, "reload", 4, &extra);
    let post = Poster::new(ep.port);
    post.ok("before", false, body("before", &[flow("10.0.0.1", 10)]));
    // A longer file: a new fingerprint whatever the clock's resolution.
    std::fs::write(&list, "198.51.7.1\n198.51.7.2\n").expect("list");
    wait_until(&ep, 30, "the reload", || ep.log().contains("threat lists reloaded"));
    post.ok("after", false, body("after", &[flow("10.0.0.3", 20)]));
    wait_until(&ep, 30, "the finding", || {
        ep.spikes().iter().any(|l| l["detection"] == "threat_list")
    });
    ep.stop();
    let out = std::fs::read_to_string(dir.path().join("reload.spikes.jsonl")).expect("output");
    let found: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|l| l["detection"] == "threat_list")
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["src_ip"], "10.0.0.3");
    assert_eq!(found[0]["list"], "tor-exits");
}
