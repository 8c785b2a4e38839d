//! Health and Prometheus metrics of a streaming service: a shared [`Metrics`] struct of atomics,
//! updated per batch (never per record), and a small HTTP/1.1 server for `GET /healthz` and
//! `GET /metrics` on axum and hyper (the stack of the Firehose endpoint). It reads at most
//! [`MAX_REQUEST_HEAD`] bytes of request head within [`REQUEST_TIMEOUT`], serves at most
//! [`MAX_CONNECTIONS`] connections at once, answers one request per connection and closes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crossbeam_utils::CachePadded;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::engine::Stats;

/// Longest request head (request line and headers) the server reads.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; further ones are closed without an answer.
pub const MAX_CONNECTIONS: usize = 32;
/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Sentinel of [`ShardMetrics::millis_behind_latest`]: no GetRecords answer yet.
const UNKNOWN: u64 = u64::MAX;
/// Sentinel of `Metrics::committed_at_ms`: the state has not been committed in this process yet.
const NEVER: u64 = u64::MAX;

/// The life cycle of a run, as the health check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening the state and listing shards.
    Starting = 0,
    /// Reading shards.
    Running = 1,
    /// A stop was requested (signal, limit, error): finishing in-flight batches.
    Stopping = 2,
}

/// Per-shard metrics, written by that shard's reader task once per GetRecords call.
#[derive(Debug)]
pub struct ShardMetrics {
    millis_behind_latest: AtomicU64,
    throttles: AtomicU64,
    getrecords_calls: AtomicU64,
}

impl ShardMetrics {
    fn new() -> ShardMetrics {
        ShardMetrics {
            millis_behind_latest: AtomicU64::new(UNKNOWN),
            throttles: AtomicU64::new(0),
            getrecords_calls: AtomicU64::new(0),
        }
    }

    /// Counts one GetRecords call (successful or not).
    pub fn getrecords_call(&self) {
        // Relaxed: an independent counter; nothing else is published through it.
        self.getrecords_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one throttled Kinesis call of this shard.
    pub fn throttled(&self) {
        // Relaxed: an independent counter.
        self.throttles.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `MillisBehindLatest` of a GetRecords answer (negative values count as 0).
    pub fn set_millis_behind_latest(&self, ms: i64) {
        // Relaxed: a lone gauge; a scrape may see the previous value, which is fine.
        self.millis_behind_latest.store(u64::try_from(ms).unwrap_or(0), Ordering::Relaxed);
    }
}

/// The consumer's metrics and health state, shared by the coordinator, the shard readers and the
/// HTTP server. Engine counters are stored as run totals after each applied batch and checkpoint
/// ([`Metrics::publish`]), so they always agree with the run summary.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    max_checkpoint_age: Duration,
    // Written only by the coordinator thread, read by scrapes: a single writer, so no padding.
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    flow_records: AtomicU64,
    counted: AtomicU64,
    malformed: AtomicU64,
    start_out_of_range: AtomicU64,
    control_messages: AtomicU64,
    undecodable: AtomicU64,
    late: AtomicU64,
    checkpoints: AtomicU64,
    hours_closed: AtomicU64,
    corrections: AtomicU64,
    spikes_emitted: AtomicU64,
    over_source_cap: AtomicU64,
    findings_emitted: AtomicU64,
    detections_late: AtomicU64,
    phase: AtomicU8,
    committed_at_ms: AtomicU64,
    // Lease mode only (UNKNOWN otherwise): leases this worker holds.
    leases_held: AtomicU64,
    // Each reader writes its own shard's entry: padded so that readers on different workers do not
    // share cache lines. The lock is taken only to register a shard and to scrape.
    shards: Mutex<BTreeMap<String, Arc<CachePadded<ShardMetrics>>>>,
    // Metrics of a front end (serve-firehose's connections), rendered after the others.
    extra: Mutex<Vec<Arc<ExtraMetric>>>,
}

/// A metric a front end registers with [`Metrics::register`] (no labels).
#[derive(Debug)]
pub struct ExtraMetric {
    /// Name without the `flowspike_` prefix.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The value; Relaxed is enough: a scrape reads each metric on its own.
    pub value: AtomicU64,
}

impl Metrics {
    /// New metrics of a run that starts now; `/healthz` fails once the state has not been committed
    /// for longer than `max_checkpoint_age`.
    pub fn new(max_checkpoint_age: Duration) -> Metrics {
        Metrics {
            started: Instant::now(),
            max_checkpoint_age,
            records_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            flow_records: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            start_out_of_range: AtomicU64::new(0),
            control_messages: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            late: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            hours_closed: AtomicU64::new(0),
            corrections: AtomicU64::new(0),
            spikes_emitted: AtomicU64::new(0),
            over_source_cap: AtomicU64::new(0),
            findings_emitted: AtomicU64::new(0),
            detections_late: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Starting as u8),
            committed_at_ms: AtomicU64::new(NEVER),
            leases_held: AtomicU64::new(UNKNOWN),
            shards: Mutex::new(BTreeMap::new()),
            extra: Mutex::new(Vec::new()),
        }
    }

    /// Adds `flowspike_<name>` (a `counter` or `gauge`) to the exposition; the caller updates
    /// the returned value.
    pub fn register(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) -> Arc<ExtraMetric> {
        let m = Arc::new(ExtraMetric { name, help, kind, value: AtomicU64::new(0) });
        self.extra.lock().unwrap_or_else(|p| p.into_inner()).push(m.clone());
        m
    }

    /// The metrics of `shard_id`, registered on first use.
    pub fn shard(&self, shard_id: &str) -> Arc<CachePadded<ShardMetrics>> {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        shards
            .entry(shard_id.to_owned())
            .or_insert_with(|| Arc::new(CachePadded::new(ShardMetrics::new())))
            .clone()
    }

    /// Lease mode: the number of shard leases this worker holds.
    pub fn set_leases_held(&self, n: usize) {
        // Relaxed: a lone gauge written by the coordinator.
        self.leases_held.store(n as u64, Ordering::Relaxed);
    }

    /// Lease mode: drops the series of a shard this worker no longer reads (another worker reports
    /// it now; a stale `millis_behind_latest` would raise false lag alerts).
    pub fn forget_shard(&self, shard_id: &str) {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        shards.remove(shard_id);
    }

    /// Stores the run totals of the engine.
    pub fn publish(&self, s: &Stats) {
        // Relaxed throughout: each counter is independent, written by the coordinator alone, and a
        // scrape that sees some counters of one batch and not yet others is harmless.
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.records_in, s.kinesis_records);
        set(&self.bytes_in, s.kinesis_bytes);
        set(&self.flow_records, s.flow_records);
        set(&self.counted, s.counted);
        set(&self.malformed, s.malformed);
        set(&self.start_out_of_range, s.start_out_of_range);
        set(&self.control_messages, s.control_messages);
        set(&self.undecodable, s.undecodable);
        set(&self.late, s.late_counted);
        set(&self.checkpoints, s.checkpoints);
        set(&self.hours_closed, s.hours_closed);
        set(&self.corrections, s.corrections);
        set(&self.spikes_emitted, s.spikes_emitted);
        set(&self.over_source_cap, s.records_over_source_cap);
        set(&self.findings_emitted, s.findings_emitted);
        set(&self.detections_late, s.detections_late_records);
    }

    /// Sets the phase of the run.
    pub fn set_phase(&self, p: Phase) {
        // Relaxed: a lone flag read by the health check; no other data is published through it.
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    /// Notes that the state is fully committed now: a checkpoint succeeded, or nothing changed
    /// since the last one.
    pub fn committed(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NEVER - 1);
        // Relaxed: a lone timestamp; a scrape that sees the previous one reports a slightly older age.
        self.committed_at_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the state was last fully committed, or since the start before the first commit.
    pub fn checkpoint_age(&self) -> Duration {
        let now = self.started.elapsed();
        match self.committed_at_ms.load(Ordering::Relaxed) {
            NEVER => now,
            ms => now.saturating_sub(Duration::from_millis(ms)),
        }
    }

    /// `Ok` while the consumer runs (or starts) and its state was committed recently enough;
    /// otherwise a short reason.
    pub fn health(&self) -> Result<(), String> {
        let age = self.checkpoint_age();
        let limit = self.max_checkpoint_age;
        match self.phase() {
            Phase::Stopping => Err("stopping".into()),
            Phase::Starting if age > limit => Err(format!(
                "still starting after {} s (limit {} s)",
                age.as_secs(),
                limit.as_secs()
            )),
            Phase::Running if age > limit => Err(format!(
                "last checkpoint {} s ago (limit {} s)",
                age.as_secs(),
                limit.as_secs()
            )),
            Phase::Starting | Phase::Running => Ok(()),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, &AtomicU64); 15] = [
            ("records_in_total", "Kinesis records received and applied.", &self.records_in),
            (
                "bytes_in_total",
                "Data bytes of those Kinesis records (as received).",
                &self.bytes_in,
            ),
            ("flow_records_total", "Flow log records decoded.", &self.flow_records),
            ("counted_total", "Flow log records that match the counting rule.", &self.counted),
            (
                "malformed_total",
                "Damaged flow log lines and bad field values skipped.",
                &self.malformed,
            ),
            (
                "control_messages_total",
                "CloudWatch Logs control messages skipped.",
                &self.control_messages,
            ),
            (
                "undecodable_records_total",
                "Kinesis records that do not decode at all, skipped.",
                &self.undecodable,
            ),
            (
                "late_records_total",
                "Counted records whose hour was already closed (written as corrections).",
                &self.late,
            ),
            ("checkpoints_total", "Manifests committed.", &self.checkpoints),
            (
                "hours_closed_total",
                "Hours closed: final file written, hour evaluated.",
                &self.hours_closed,
            ),
            (
                "correction_files_total",
                "Correction files written for late records.",
                &self.corrections,
            ),
            ("spikes_emitted_total", "Spike records emitted.", &self.spikes_emitted),
            (
                "records_over_source_cap_total",
                "Counted records of sources past --max-sources-per-hour, not in the history.",
                &self.over_source_cap,
            ),
            (
                "findings_emitted_total",
                "Findings of the other detections (port scans, sweeps, outbound volume, threat lists) emitted.",
                &self.findings_emitted,
            ),
            (
                "detections_late_records_total",
                "Records the other detections read of hours already closed: not applied, once per tap.",
                &self.detections_late,
            ),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, help, "counter");
            let _ = writeln!(out, "flowspike_{name} {}", get(v));
        }
        header(
            &mut out,
            "malformed_by_reason_total",
            "Of the malformed records, those skipped for a reason of their own.",
            "counter",
        );
        let _ = writeln!(
            out,
            "flowspike_malformed_by_reason_total{{reason=\"start_out_of_range\"}} {}",
            get(&self.start_out_of_range)
        );
        header(
            &mut out,
            "checkpoint_age_seconds",
            "Seconds since the state was last fully committed (or since the start before that).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "flowspike_checkpoint_age_seconds {:.3}",
            self.checkpoint_age().as_secs_f64()
        );

        let held = get(&self.leases_held);
        if held != UNKNOWN {
            header(
                &mut out,
                "leases_held",
                "Shard leases this worker holds (lease mode).",
                "gauge",
            );
            let _ = writeln!(out, "flowspike_leases_held {held}");
        }

        let shards: Vec<(String, Arc<CachePadded<ShardMetrics>>)> = {
            let s = self.shards.lock().unwrap_or_else(|p| p.into_inner());
            s.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        header(
            &mut out,
            "millis_behind_latest",
            "MillisBehindLatest of the shard's last GetRecords answer.",
            "gauge",
        );
        for (id, m) in &shards {
            let v = get(&m.millis_behind_latest);
            if v != UNKNOWN {
                let _ = writeln!(
                    out,
                    "flowspike_millis_behind_latest{{shard_id=\"{}\"}} {v}",
                    escape(id)
                );
            }
        }
        type Field = fn(&ShardMetrics) -> &AtomicU64;
        let per_shard: [(&str, &str, Field); 2] = [
            ("throttles_total", "Throttled Kinesis calls of the shard.", |m| &m.throttles),
            ("getrecords_calls_total", "GetRecords calls on the shard.", |m| &m.getrecords_calls),
        ];
        for (name, help, field) in per_shard {
            header(&mut out, name, help, "counter");
            for (id, m) in &shards {
                let _ = writeln!(
                    out,
                    "flowspike_{name}{{shard_id=\"{}\"}} {}",
                    escape(id),
                    get(field(m))
                );
            }
        }
        for m in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            header(&mut out, m.name, m.help, m.kind);
            let _ = writeln!(out, "flowspike_{} {}", m.name, get(&m.value));
        }
        // Process-wide: every AWS call (S3 state, Kinesis, DynamoDB) goes through flowspike-retry.
        header(
            &mut out,
            "aws_retries_total",
            "AWS calls per operation and outcome: failed attempts retried (throttled, transient), \
             calls that recovered after retries, gave up (bounded retry time) or failed for good (fatal).",
            "counter",
        );
        for r in flowspike_retry::counts() {
            let _ = writeln!(
                out,
                "flowspike_aws_retries_total{{operation=\"{}\",outcome=\"{}\"}} {}",
                escape(r.operation),
                r.outcome,
                r.count
            );
        }
        header(
            &mut out,
            "aws_failed_entries_total",
            "Entries of batch calls (Kinesis PutRecords, Security Hub BatchImportFindings, \
             EventBridge PutEvents) the service refused; each is sent again or stops the process.",
            "counter",
        );
        for (operation, n) in flowspike_retry::failed_entries() {
            let _ = writeln!(
                out,
                "flowspike_aws_failed_entries_total{{operation=\"{}\"}} {n}",
                escape(operation)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP flowspike_{name} {help}");
    let _ = writeln!(out, "# TYPE flowspike_{name} {kind}");
}

/// Escapes a label value (backslash, double quote, line feed).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The router of the health and metrics server: `GET`/`HEAD` `/healthz` (`ok`, or 503 with the
/// reason of [`Metrics::health`]) and `/metrics` ([`Metrics::render`]); 404 elsewhere, 405 for
/// other methods. Every answer is plain text and not cacheable.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/metrics", get(exposition).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(metrics)
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.health() {
        Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{reason}\n")),
    }
}

async fn exposition(State(metrics): State<Arc<Metrics>>) -> Response {
    text(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, metrics.render())
}

async fn method_not_allowed() -> Response {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "method not allowed\n".into());
    r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    r
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into())
}

/// Serves `/healthz` and `/metrics` ([`router`]) on `listener` until the runtime shuts down.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let app = router(metrics);
    let mut http = hyper::server::conn::http1::Builder::new();
    // One request per connection (a scraper opens one per scrape), a bounded head read in bounded
    // time: a slow or hostile client holds at most one slot for REQUEST_TIMEOUT. A client that
    // closes its side after the request (half-close) still gets the answer.
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .half_close(true)
        .title_case_headers(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics server cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // too many connections: drop this one
        };
        let conn = http.serve_connection(
            TokioIo::new(sock),
            hyper_util::service::TowerToHyperService::new(app.clone()),
        );
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics server connection failed");
            }
        });
    }
}

/// Binds `addr`, logs the bound address (field `addr`) and spawns [`serve`] on the current runtime.
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "health and metrics server listening");
    tokio::spawn(serve(listener, metrics));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let m = Metrics::new(Duration::from_secs(63));
        m.publish(&Stats {
            kinesis_records: 7,
            kinesis_bytes: 1234,
            flow_records: 70,
            counted: 20,
            late_counted: 2,
            malformed: 1,
            start_out_of_range: 1,
            undecodable: 1,
            control_messages: 3,
            hours_closed: 4,
            corrections: 1,
            spikes_emitted: 1,
            checkpoints: 9,
            records_over_source_cap: 5,
            findings_emitted: 6,
            detections_late_records: 8,
            records_over_scan_cap: 0,
        });
        let s = m.shard("shardId-000000000001");
        s.getrecords_call();
        s.getrecords_call();
        s.throttled();
        s.set_millis_behind_latest(1500);
        m.shard("shardId-000000000000").getrecords_call(); // no GetRecords answer yet
        m
    }

    #[test]
    fn exposition_text() {
        let text = sample().render();
        // The age changes with time: check it separately.
        let (age, rest): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("flowspike_checkpoint_age_seconds "));
        assert_eq!(age.len(), 1);
        let v: f64 = age[0].rsplit(' ').next().and_then(|v| v.parse().ok()).expect("age");
        assert!((0.0..5.0).contains(&v), "{v}");
        let samples: Vec<&str> = rest.into_iter().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "flowspike_records_in_total 7",
                "flowspike_bytes_in_total 1234",
                "flowspike_flow_records_total 70",
                "flowspike_counted_total 20",
                "flowspike_malformed_total 1",
                "flowspike_control_messages_total 3",
                "flowspike_undecodable_records_total 1",
                "flowspike_late_records_total 2",
                "flowspike_checkpoints_total 9",
                "flowspike_hours_closed_total 4",
                "flowspike_correction_files_total 1",
                "flowspike_spikes_emitted_total 1",
                "flowspike_records_over_source_cap_total 5",
                "flowspike_findings_emitted_total 6",
                "flowspike_detections_late_records_total 8",
                "flowspike_malformed_by_reason_total{reason=\"start_out_of_range\"} 1",
                "flowspike_millis_behind_latest{shard_id=\"shardId-000000000001\"} 1500",
                "flowspike_throttles_total{shard_id=\"shardId-000000000000\"} 0",
                "flowspike_throttles_total{shard_id=\"shardId-000000000001\"} 1",
                "flowspike_getrecords_calls_total{shard_id=\"shardId-000000000000\"} 1",
                "flowspike_getrecords_calls_total{shard_id=\"shardId-000000000001\"} 2",
            ]
        );
        // Every metric has one HELP and one TYPE line, TYPE right after HELP, and a valid name.
        let lines: Vec<&str> = text.lines().collect();
        let mut names = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name");
                assert!(name.starts_with("flowspike_"), "{name}");
                assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
                let ty = lines[i + 1].strip_prefix(&format!("# TYPE {name} ")).expect("TYPE");
                assert_eq!(ty == "counter", name.ends_with("_total"), "{name}: {ty}");
                names.push(name);
            }
        }
        assert_eq!(names.len(), 22);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 22);
        for s in &samples {
            let name = s.split(['{', ' ']).next().expect("name");
            assert!(names.contains(&name), "{s}");
        }
    }

    #[test]
    fn lease_gauge_only_in_lease_mode_and_forgotten_shards_vanish() {
        let m = sample();
        assert!(!m.render().contains("flowspike_leases_held"), "absent without leases");
        m.set_leases_held(3);
        assert!(m.render().contains("\nflowspike_leases_held 3\n"));
        let before = m.render().matches("shard_id=").count();
        assert!(before > 0);
        let shards: Vec<String> =
            m.shards.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for id in &shards {
            m.forget_shard(id);
        }
        assert_eq!(m.render().matches("shard_id=").count(), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn health_follows_phase_and_checkpoint_age() {
        let m = Metrics::new(Duration::from_secs(1));
        assert_eq!(m.health(), Ok(()), "starting");
        m.set_phase(Phase::Running);
        m.committed();
        assert_eq!(m.health(), Ok(()));
        std::thread::sleep(Duration::from_millis(1100));
        let e = m.health().expect_err("too old");
        assert!(e.starts_with("last checkpoint 1 s ago (limit 1 s)"), "{e}");
        m.committed();
        assert_eq!(m.health(), Ok(()));
        m.set_phase(Phase::Stopping);
        assert_eq!(m.health(), Err("stopping".into()));
        let s = Metrics::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.health().expect_err("slow start").starts_with("still starting"));
    }

    /// Sends `request` as is to a server on `addr` (closing the write side after it) and returns
    /// the raw answer, empty when the server closed the connection without one.
    fn exchange(addr: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        // The server may refuse a request (a head past MAX_REQUEST_HEAD) and close before it is
        // all written: then writing or shutting down fails, and the answer is what was read.
        let _ = s.write_all(request.as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn check(addr: SocketAddr, request: &str, status: u16, body_contains: &str) {
        let answer = exchange(addr, request);
        let got: u16 = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert_eq!(got, status, "{request:?}: {answer}");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        assert!(body.contains(body_contains), "{request:?}: {answer}");
    }

    fn server() -> (tokio::runtime::Runtime, SocketAddr) {
        // The server runs on the runtime's worker; the blocking client on the test thread.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let m = Arc::new(sample());
        let addr = rt.block_on(start("127.0.0.1:0".parse().expect("addr"), m)).expect("bind");
        (rt, addr)
    }

    #[test]
    fn routes() {
        let (_rt, addr) = server();
        check(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok");
        check(addr, "GET /healthz?verbose=1 HTTP/1.0\n\n", 200, "ok");
        check(addr, "GET /metrics HTTP/1.1\r\n\r\n", 200, "flowspike_records_in_total 7");
        check(addr, "HEAD /metrics HTTP/1.1\r\n\r\n", 200, "");
        check(addr, "GET / HTTP/1.1\r\n\r\n", 404, "not found");
        check(addr, "POST /metrics HTTP/1.1\r\n\r\n", 405, "method");
        check(addr, "GET /metrics\r\n\r\n", 400, "");
        check(addr, "GET /metrics SPDY/3\r\n\r\n", 400, "");
        // An incomplete head is never answered as a request.
        assert!(!exchange(addr, "GET /metrics HTTP/1.1\r\n").starts_with("HTTP/1.1 200"));
        let head = exchange(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        let post = exchange(addr, "POST /healthz HTTP/1.1\r\n\r\n");
        assert!(post.to_ascii_lowercase().contains("\r\nallow: get, head\r\n"), "{post}");
        // A head longer than MAX_REQUEST_HEAD is refused.
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD));
        assert!(!exchange(addr, &long).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn server_answers_over_tcp() {
        let (_rt, addr) = server();
        let get =
            |path: &str| exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        let (health, metrics) = (get("/healthz"), get("/metrics"));
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
        let lower = metrics.to_ascii_lowercase();
        assert!(
            lower.contains(&format!("content-type: {PROMETHEUS_CONTENT_TYPE}\r\n")),
            "{metrics}"
        );
        assert!(lower.contains("cache-control: no-store\r\n"), "{metrics}");
        assert!(lower.contains("connection: close\r\n"), "{metrics}");
        assert!(metrics.contains("\nflowspike_records_in_total 7\n"), "{metrics}");
    }
}
