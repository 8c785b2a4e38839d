//! Load test of the Firehose endpoint on loopback, bounded in count and time: an in-process
//! [`Server`] on a temporary local state, and a hyper client posting Firehose-shaped requests
//! (`{"message": line}` records, as VPC Flow Logs deliver to Firehose) from several concurrent
//! tasks. Reports requests/s, records/s, latency percentiles and requests per checkpoint (the
//! group commit), and fails unless every request was answered 200 and every record counted.
//!
//! ```sh
//! cargo run --release -p flowspike-firehose --example load -- \
//!     --requests 2000 --records 500 --concurrency 16 [--gzip] [--max-secs 120]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flowspike_firehose::{FirehoseConfig, Server};
use flowspike_history::LocalStore;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};

const KEY: &str = "load-test-key";

struct Opts {
    requests: usize,
    records: usize,
    concurrency: usize,
    gzip: bool,
    max_secs: u64,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts { requests: 2000, records: 500, concurrency: 16, gzip: false, max_secs: 120 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            args.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--requests" => o.requests = num("--requests")?,
            "--records" => o.records = num("--records")?,
            "--concurrency" => o.concurrency = num("--concurrency")?.max(1),
            "--max-secs" => o.max_secs = num("--max-secs")? as u64,
            "--gzip" => o.gzip = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// The `records` JSON array: `records` flow lines of one recent hour, 1 in 3 blocked outbound.
fn records_json(records: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let start = now - now % 3600 - 3600;
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<String> = (0..records)
        .map(|i| {
            let action = if i % 3 == 0 { "REJECT" } else { "ACCEPT" };
            let line = format!(
                "2 123456789012 eni-0a1b2c3d 10.0.{}.{} 198.51.100.{} 49152 443 6 3 180 {} {} {action} OK",
                i % 16,
                i % 200 + 1,
                i % 50,
                start + (i as u64 % 3000),
                start + (i as u64 % 3000) + 60,
            );
            let rec = serde_json::json!({ "message": line }).to_string();
            format!("{{\"data\":\"{}\"}}", b64.encode(rec))
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn main() -> Result<(), String> {
    let o = opts()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cfg = FirehoseConfig::new("load", "127.0.0.1:0".parse().map_err(|_| "addr")?);
    cfg.access_keys = vec![KEY.to_owned()];
    cfg.allowed_lateness_secs = 7200;
    cfg.idle_after = Duration::from_secs(3600);
    cfg.max_concurrent_requests = o.concurrency;
    let server =
        Server::bind(cfg, Arc::new(LocalStore::new(dir.path()))).map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let stop = server.stop_handle();
    let server = std::thread::spawn(move || server.run());

    let records = Arc::new(records_json(o.records));
    let url = format!("http://{addr}/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(o.max_secs);
    let started = Instant::now();
    let results: Vec<Result<Vec<Duration>, String>> = rt.block_on(async {
        let tasks: Vec<_> = (0..o.concurrency)
            .map(|_| {
                let (client, url, records, next) =
                    (client.clone(), url.clone(), records.clone(), next.clone());
                let (total, gz) = (o.requests, o.gzip);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total || Instant::now() > deadline {
                            return Ok(latencies);
                        }
                        let id = format!("load-{i:08}");
                        let body = format!(
                            "{{\"requestId\":\"{id}\",\"timestamp\":1700000000000,\"records\":{records}}}"
                        );
                        let mut req = hyper::Request::post(&url)
                            .header("X-Amz-Firehose-Request-Id", &id)
                            .header("X-Amz-Firehose-Protocol-Version", "1.0")
                            .header("X-Amz-Firehose-Access-Key", KEY)
                            .header("Content-Type", "application/json");
                        let body = if gz {
                            req = req.header("Content-Encoding", "gzip");
                            gzip(body.as_bytes())
                        } else {
                            body.into_bytes()
                        };
                        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
                        let t = Instant::now();
                        let resp = client.request(req).await.map_err(|e| e.to_string())?;
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        latencies.push(t.elapsed());
                        if status != 200 {
                            return Err(format!("{id}: status {status}"));
                        }
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        out
    });
    let elapsed = started.elapsed();
    stop.stop();
    let summary =
        server.join().map_err(|_| "server thread panicked")?.map_err(|e| e.to_string())?;
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort_unstable();
    let n = latencies.len();
    let pct = |p: f64| latencies.get(((n as f64 * p) as usize).min(n.saturating_sub(1))).copied();
    let secs = elapsed.as_secs_f64();
    println!(
        "requests {n} x {} records{} with {} concurrent clients in {secs:.2} s: {:.0} requests/s, {:.0} records/s; \
         latency p50 {:?} p99 {:?}; {} checkpoints ({:.1} requests per checkpoint)",
        o.records,
        if o.gzip { " (gzip)" } else { "" },
        o.concurrency,
        n as f64 / secs,
        (n * o.records) as f64 / secs,
        pct(0.5).unwrap_or_default(),
        pct(0.99).unwrap_or_default(),
        summary.stats.checkpoints,
        n as f64 / summary.stats.checkpoints.max(1) as f64,
    );
    if summary.source.requests.accepted != n as u64
        || summary.stats.kinesis_records != (n * o.records) as u64
        || summary.stats.counted != (n * o.records.div_ceil(3)) as u64
    {
        return Err(format!("counts do not match: {summary:?}"));
    }
    Ok(())
}
