//! The HTTP side: an axum router served by hyper (HTTP/1.1, plain or rustls TLS) with graceful
//! shutdown, the delivery handler, and [`Server`], which ties the listener, the decoders and the
//! coordinator together.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use flowspike_aws::sinks::spike_sink;
use flowspike_counter::Pipeline;
use flowspike_engine::metrics::ExtraMetric;
use flowspike_engine::{
    decode_batch, Batch, DetectionsConfig, Engine, EngineConfig, Metrics, RawRecord, SpikeSink,
};
use flowspike_history::{History, Store};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::commit::{Coordinator, Job, RequestStats, RunSummary, DRAIN_TIMEOUT, MAX_GROUP};
use crate::protocol::{
    check_head, decode_body, parse_records, too_large, valid_request_id, Encoding, Rejection,
    ResponseBody,
};
use crate::{FirehoseConfig, FirehoseError, TlsFiles, VIRTUAL_SHARD};

/// Time a client has to send the request head, counted from the connection (or, on a keep-alive
/// connection, from the previous answer): also how long an idle connection keeps its slot.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest read buffer of a connection, which holds the request head while it arrives (hyper's
/// default is ~400 KiB, so a slow client sending a long unfinished head pinned that much). The
/// largest head Firehose sends is a few KiB (an access key of at most 4,096 bytes, the common
/// attributes); a longer head is answered 431.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// Records decoded per call of `decode_batch`: their log labels (`<request id>/<index>`) are
/// written for one chunk at a time into one reused buffer, and a cancelled request stops between
/// chunks.
const RECORD_CHUNK: usize = 256;
/// Time a TLS client has to finish the handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The health check fails when the state has not been committed for this long (an idle endpoint
/// counts as committed every tick).
const MAX_CHECKPOINT_AGE: Duration = Duration::from_secs(300);

/// What the handler needs; one per server, shared by every connection.
struct AppState {
    keys: Vec<Vec<u8>>,
    max_body_bytes: usize,
    max_records: usize,
    request_timeout: Duration,
    /// One per request between reading its body and the end of its decoding, which runs on a
    /// blocking thread and keeps its permit until it really ends (also after a timeout).
    permits: Arc<Semaphore>,
    /// The decoding settings (an `Arc`: every request's decoding thread takes one).
    pipeline: Arc<Pipeline>,
    /// The other detections' settings, shared the same way.
    detections: Arc<DetectionsConfig>,
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    requests: Arc<RequestStats>,
    /// `flowspike_firehose_decodes_in_flight`.
    decodes: Arc<ExtraMetric>,
    /// Runs at the start of every decode (tests hold a decode there).
    #[cfg(test)]
    decode_hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The connection metrics.
struct ConnectionMetrics {
    open: Arc<ExtraMetric>,
    refused: Arc<ExtraMetric>,
}

/// Adds one to a gauge for its lifetime.
struct GaugeGuard(Arc<ExtraMetric>);

impl GaugeGuard {
    fn new(g: &Arc<ExtraMetric>) -> GaugeGuard {
        // Relaxed: a gauge read on its own by scrapes.
        g.value.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.value.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops a running [`Server`] gracefully (like SIGTERM).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl StopHandle {
    /// Stops accepting connections, finishes in-flight requests, checkpoints and returns from
    /// [`Server::run`].
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A bound endpoint with its state opened, ready to [`Server::run`].
pub struct Server {
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    coordinator_parts: (Engine, Box<dyn SpikeSink + Send>),
    cfg: FirehoseConfig,
    metrics: Arc<Metrics>,
    requests: Arc<RequestStats>,
    stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the state of `cfg.name` in `store` (finishing work a previous run committed), loads
    /// TLS, binds the listener and the metrics server. Nothing is served before [`Server::run`].
    pub fn bind(cfg: FirehoseConfig, store: Arc<dyn Store>) -> Result<Server, FirehoseError> {
        if cfg.name.is_empty() || cfg.name.contains(['/', '\\']) {
            return Err(FirehoseError::Config(format!(
                "source name {:?}: must be non-empty and without slashes",
                cfg.name
            )));
        }
        if cfg.max_body_bytes == 0
            || cfg.max_concurrent_requests == 0
            || cfg.max_records_per_request == 0
            || cfg.max_connections == 0
        {
            return Err(FirehoseError::Config(
                "body limit, records per request, concurrent requests and connections must be at \
                 least 1"
                    .into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowspike-firehose")
            .enable_all()
            .build()
            .map_err(FirehoseError::Runtime)?;
        let tls = cfg.tls.as_ref().map(tls_acceptor).transpose()?;
        let metrics = Arc::new(Metrics::new(MAX_CHECKPOINT_AGE));
        if let Some(addr) = cfg.metrics_addr {
            rt.block_on(flowspike_engine::metrics::start(addr, metrics.clone()))
                .map_err(|source| FirehoseError::Bind { addr, source })?;
        }
        let mut sink = spike_sink(&cfg.output, rt.handle());
        let ecfg = EngineConfig {
            stream: cfg.name.clone(),
            allowed_lateness_secs: i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX),
            pipeline: cfg.pipeline.clone(),
            detections: cfg.detections.clone(),
        };
        let history = History::new(store).with_dest_cap(cfg.pipeline.counter.dest_cap);
        let engine = Engine::open(history, ecfg, sink.as_mut())?;
        metrics.publish(&engine.stats());
        let addr = cfg.listen;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| FirehoseError::Bind { addr, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| FirehoseError::Bind { addr, source })?;
        tracing::info!(
            addr = %local_addr,
            tls = tls.is_some(),
            name = %cfg.name,
            authenticated = !cfg.access_keys.is_empty(),
            "firehose endpoint listening"
        );
        let (stop, _) = watch::channel(false);
        Ok(Server {
            rt,
            listener,
            local_addr,
            tls,
            coordinator_parts: (engine, sink),
            cfg,
            metrics,
            requests: Arc::new(RequestStats::default()),
            stop: Arc::new(stop),
        })
    }

    /// The bound address of the listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops [`Server::run`] gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Serves until SIGTERM/SIGINT or [`StopHandle::stop`]: then stops accepting, finishes the
    /// in-flight requests (at most 30 s), commits a final checkpoint and returns. Blocks the
    /// calling thread, which runs the coordinator (do not call it inside a tokio runtime).
    pub fn run(self) -> Result<RunSummary, FirehoseError> {
        let Server { rt, listener, tls, coordinator_parts, cfg, metrics, requests, stop, .. } =
            self;
        let (engine, sink) = coordinator_parts;
        let (jobs, rx) = mpsc::channel::<Job>(MAX_GROUP);
        let state = Arc::new(AppState {
            keys: cfg.access_keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            max_body_bytes: cfg.max_body_bytes,
            max_records: cfg.max_records_per_request,
            request_timeout: cfg.request_timeout,
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
            pipeline: Arc::new(cfg.pipeline.clone()),
            detections: Arc::new(cfg.detections.clone()),
            jobs,
            metrics: metrics.clone(),
            requests: requests.clone(),
            decodes: decodes_gauge(&metrics),
            #[cfg(test)]
            decode_hook: None,
        });
        let app = router(state);
        let signalled = Arc::new(AtomicBool::new(false));
        rt.spawn(wait_for_signal(stop.clone(), signalled.clone()));
        let conns = ConnectionMetrics {
            open: metrics.register(
                "firehose_connections",
                "Connections open on the endpoint's listener (at most --max-connections).",
                "gauge",
            ),
            refused: metrics.register(
                "firehose_connections_refused_total",
                "Connections closed at once because --max-connections were open.",
                "counter",
            ),
        };
        let server =
            rt.spawn(serve(listener, tls, app, stop.subscribe(), cfg.max_connections, conns));
        metrics.set_phase(flowspike_engine::metrics::Phase::Running);
        let phase_metrics = metrics.clone();
        let mut stop_rx = stop.subscribe();
        rt.spawn(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
            phase_metrics.set_phase(flowspike_engine::metrics::Phase::Stopping);
        });
        let coordinator = Coordinator {
            engine,
            sink,
            rt: &rt,
            metrics,
            requests,
            lateness: i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX),
            idle_after: cfg.idle_after,
            dedup_window_secs: i64::try_from(cfg.dedup_window.as_secs()).unwrap_or(i64::MAX),
        };
        let result = coordinator.run(rx, stop.subscribe());
        let _ = stop.send(true);
        server.abort();
        rt.shutdown_timeout(Duration::from_secs(5));
        let summary = result?;
        tracing::info!(
            signal = signalled.load(Ordering::Relaxed),
            generation = summary.generation,
            "firehose endpoint stopped"
        );
        Ok(summary)
    }
}

/// Binds, serves until SIGTERM/SIGINT, checkpoints and returns the run's summary.
pub fn run(cfg: FirehoseConfig, store: Arc<dyn Store>) -> Result<RunSummary, FirehoseError> {
    Server::bind(cfg, store)?.run()
}

fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn decodes_gauge(metrics: &Metrics) -> Arc<ExtraMetric> {
    metrics.register(
        "firehose_decodes_in_flight",
        "Requests whose body is being read or decoded (at most --max-concurrent-requests; a \
         timed-out request counts until its decoding ends).",
        "gauge",
    )
}

/// Accepts connections until `stop`, then lets in-flight requests finish (at most
/// [`DRAIN_TIMEOUT`]) while idle keep-alive connections are closed. At most `max_connections`
/// are open at once (TLS handshakes included): a connection past the cap is closed as soon as
/// it is accepted, and counted.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
    max_connections: usize,
    conns: ConnectionMetrics,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_CONNECTION_BUFFER);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (sock, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Relaxed: a counter read on its own by scrapes. Logged for the first refusal and
            // then every 1,000th, so a flood of connections does not flood the log too.
            let n = conns.refused.value.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(peer = %peer, max_connections, refused = n + 1, "too many connections: closing new ones");
            }
            drop(sock);
            continue;
        };
        let open = (slot, GaugeGuard::new(&conns.open));
        let _ = sock.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(sock), svc));
                tokio::spawn(async move {
                    let _open = open;
                    if let Err(e) = conn.await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task; the connection is watched by the
                // graceful shutdown only once it speaks HTTP (a handshake still running at a stop
                // is simply dropped: it has no request in flight).
                let acceptor = acceptor.clone();
                let http = http.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _open = open;
                    let io =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock))
                            .await
                        {
                            Ok(Ok(io)) => io,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %peer, error = %e, "tls handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(io), svc));
                    if let Err(e) = conn.await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    drop(app);
    tracing::info!("stopped accepting connections; finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish in time");
        }
    }
}

/// Every request: `GET /healthz`, otherwise a delivery (`POST`, any path).
async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.uri().path() == "/healthz"
    {
        return match st.metrics.health() {
            Ok(()) => (StatusCode::OK, "ok\n").into_response(),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
        };
    }
    // Echoed in the answer and logged only when valid (`check_head` refuses the others): a
    // request id is the client's text and could be as long as the head.
    let request_id = req
        .headers()
        .get(crate::protocol::REQUEST_ID_HEADER)
        .map(|v| v.as_bytes())
        .filter(|v| valid_request_id(v))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let outcome = if req.method() != Method::POST {
        Err(Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "expected POST"))
    } else {
        match tokio::time::timeout(st.request_timeout, deliver(&st, req)).await {
            Ok(r) => r,
            Err(_) => Err(Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request timed out; retry (a retry is not counted twice)",
            )),
        }
    };
    let (status, error) = match outcome {
        Ok(applied) => {
            RequestStats::add(if applied {
                &st.requests.accepted
            } else {
                &st.requests.duplicates
            });
            (StatusCode::OK, None)
        }
        Err(r) => {
            let counter = match r.status.as_u16() {
                401 => &st.requests.unauthorized,
                500.. => &st.requests.failed,
                _ => &st.requests.rejected,
            };
            RequestStats::add(counter);
            tracing::warn!(request_id = %request_id, status = r.status.as_u16(), error = %r.message, "request refused");
            (r.status, Some(r.message))
        }
    };
    let body = serde_json::to_vec(&ResponseBody::new(&request_id, error)).unwrap_or_default();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

/// The answer to a request that failed on the server's side (5xx): generic, because the cause
/// (a store error) names internal paths, keys and source addresses; the cause is logged with
/// the request id, which the answer carries.
fn internal_error(status: StatusCode, request_id: &str, what: &str, cause: &str) -> Rejection {
    tracing::error!(request_id = %request_id, status = status.as_u16(), error = %cause, "{what}");
    Rejection::new(status, format!("{what}; retry later (the server logged the cause)"))
}

/// Sets its flag when dropped before [`CancelOnDrop::disarm`]: tells a blocking decode that
/// nobody waits for it any more (the request timed out or its connection closed).
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            // Relaxed: a lone flag; the decode stops a chunk later at worst.
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Checks, reads, decodes and commits one delivery; `Ok(false)` for a retry already counted.
async fn deliver(st: &Arc<AppState>, req: Request) -> Result<bool, Rejection> {
    let head = check_head(req.headers(), &st.keys)?;
    let max = st.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let permit = st
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping"))?;
    let in_flight = GaugeGuard::new(&st.decodes);
    let body = http_body_util::Limited::new(req.into_body(), max).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            too_large(max)
        } else {
            Rejection::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
        }
    })?;
    let body = body.to_bytes();
    let ctx = st.pipeline.clone();
    let detections = st.detections.clone();
    let request_id = head.request_id.clone();
    let max_records = st.max_records;
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut cancel = CancelOnDrop(Some(cancelled.clone()));
    #[cfg(test)]
    let hook = st.decode_hook.clone();
    let batch = tokio::task::spawn_blocking(move || -> Result<Option<Batch>, Rejection> {
        // The permit (and the gauge) end with the decoding, not with the request: a request
        // that timed out is answered 503 at once, but its decoding goes on until the next
        // chunk of records, and new requests must wait for the memory it still holds.
        let _held = (in_flight, permit); // dropped in this order: the gauge, then the permit
        #[cfg(test)]
        if let Some(hook) = hook {
            hook();
        }
        let records = match head.encoding {
            Encoding::Identity => parse_records(&body, &head.request_id, max_records)?,
            Encoding::Gzip => {
                let json = decode_body(&body, head.encoding, max)?.into_owned();
                drop(body); // the compressed copy is not needed any more
                parse_records(&json, &head.request_id, max_records)?
            }
        };
        Ok(decode(&ctx, &detections, &head.request_id, &records, &cancelled))
    })
    .await
    .map_err(|e| {
        internal_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &request_id,
            "decoding failed",
            &e.to_string(),
        )
    })??;
    cancel.disarm();
    let Some(batch) = batch else {
        // Only a dropped request cancels its decoding, and then nobody reads this answer.
        return Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "request cancelled"));
    };
    let (reply, answer) = oneshot::channel();
    st.jobs
        .send(Job { request_id: request_id.clone(), batch, reply })
        .await
        .map_err(|_| Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping"))?;
    match answer.await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(cause)) => Err(internal_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &request_id,
            "checkpoint failed",
            &cause,
        )),
        Err(_) => Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping")),
    }
}

/// The records of one request as a batch of the virtual shard; bad lines and undecodable records
/// are counted and logged (`sequence_number` = `<request id>/<record index>`), never fatal.
/// `None` when `cancelled` was set (checked between chunks of [`RECORD_CHUNK`] records).
///
/// The labels are written for one chunk at a time into one buffer reused from chunk to chunk:
/// `decode_batch` names a record by a `&str`, and a label per record of the whole request would
/// cost a string as long as the request id per record, which a request of many empty records
/// turns into an amplification of its size.
fn decode(
    ctx: &Pipeline,
    detections: &DetectionsConfig,
    request_id: &str,
    records: &[Vec<u8>],
    cancelled: &AtomicBool,
) -> Option<Batch> {
    use std::fmt::Write as _;
    let mut labels = String::new();
    let mut ends = Vec::with_capacity(RECORD_CHUNK);
    let mut total: Option<Batch> = None;
    for (c, chunk) in records.chunks(RECORD_CHUNK).enumerate() {
        if cancelled.load(Ordering::Relaxed) {
            return None;
        }
        labels.clear();
        ends.clear();
        for i in 0..chunk.len() {
            let _ = write!(labels, "{request_id}/{}", c * RECORD_CHUNK + i);
            ends.push(labels.len());
        }
        let raw: Vec<RawRecord<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, data)| RawRecord {
                sequence_number: &labels[if i == 0 { 0 } else { ends[i - 1] }..ends[i]],
                data,
            })
            .collect();
        let b = decode_batch(ctx, detections, VIRTUAL_SHARD, &raw);
        match &mut total {
            None => total = Some(b),
            Some(t) => {
                t.counter.merge(b.counter);
                match (&mut t.taps, b.taps) {
                    (Some(mine), Some(theirs)) => mine.merge(theirs),
                    (mine, theirs) => *mine = mine.take().or(theirs),
                }
                t.stats.add(&b.stats);
                t.max_start = t.max_start.max(b.max_start);
            }
        }
    }
    let mut batch = total.unwrap_or_else(|| decode_batch(ctx, detections, VIRTUAL_SHARD, &[]));
    batch.last_sequence_number = Some(request_id.to_owned());
    Some(batch)
}

/// A TLS acceptor (HTTP/1.1 over TLS 1.2/1.3, aws-lc-rs) from PEM files.
fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, FirehoseError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| FirehoseError::Tls(format!("certificate {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(FirehoseError::Tls(format!("no certificate in {}", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| FirehoseError::Tls(format!("private key {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FirehoseError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| FirehoseError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Requests a stop on SIGINT or SIGTERM.
async fn wait_for_signal(stop: Arc<watch::Sender<bool>>, signalled: Arc<AtomicBool>) {
    flowspike_engine::shutdown_signal().await;
    tracing::info!("signal received: stopping");
    // Relaxed: a lone flag read once for the log after the run.
    signalled.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
    }

    /// An endpoint state for handler tests: no access key, the given limits, `hook` run at the
    /// start of every decode; the receiver gets the decoded requests.
    fn app_state(
        max_concurrent: usize,
        timeout: Duration,
        hook: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> (Arc<AppState>, mpsc::Receiver<Job>) {
        let (jobs, rx) = mpsc::channel(8);
        let metrics = Arc::new(Metrics::new(MAX_CHECKPOINT_AGE));
        let st = AppState {
            keys: Vec::new(),
            max_body_bytes: 1 << 20,
            max_records: 1000,
            request_timeout: timeout,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            pipeline: Arc::new(Pipeline::default()),
            detections: Arc::new(DetectionsConfig::default()),
            jobs,
            decodes: decodes_gauge(&metrics),
            metrics,
            requests: Arc::new(RequestStats::default()),
            decode_hook: hook,
        };
        (Arc::new(st), rx)
    }

    fn delivery(id: &str) -> Request {
        let line = "2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 7200 7260 REJECT OK";
        let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, line);
        let body = format!(r#"{{"requestId":"{id}","records":[{{"data":"{data}"}}]}}"#);
        Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(crate::protocol::REQUEST_ID_HEADER, id)
            .header(crate::protocol::PROTOCOL_VERSION_HEADER, "1.0")
            .body(Body::from(body))
            .expect("request")
    }

    /// Regression (issue 28, item 5): a request that timed out released its permit while its
    /// decoding went on on a blocking thread (four small Parquet records decoded for 70 s after
    /// their 503), so the cap on concurrent decodes did not bound them. The permit now ends with
    /// the decoding.
    #[test]
    fn timed_out_request_keeps_its_permit_until_its_decode_ends() {
        // The runtime first: dropped last, after `release`, so that a failing assertion ends the
        // held decode (the hook's `recv` fails) instead of waiting for it forever.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new((entered_tx, release_rx));
        let hook: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let g = gate.lock().expect("gate");
            let _ = g.0.send(());
            let _ = g.1.recv(); // held until the test releases it
        });
        let (st, mut jobs) = app_state(1, Duration::from_millis(50), Some(hook));
        let resp = rt.block_on(handle(State(st.clone()), delivery("r-1")));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        entered.recv().expect("the decode started");
        assert_eq!(st.permits.available_permits(), 0, "the running decode holds the permit");
        assert_eq!(st.decodes.value.load(Ordering::Relaxed), 1);
        release.send(()).expect("release");
        // The permit comes back when the decode ends (it waits at most for the hook's return).
        rt.block_on(async {
            let permit = tokio::time::timeout(Duration::from_secs(60), st.permits.acquire())
                .await
                .expect("the permit is released once the decode ends")
                .expect("open semaphore");
            drop(permit);
        });
        assert_eq!(st.decodes.value.load(Ordering::Relaxed), 0);
        // The cancelled request's batch never reaches the coordinator.
        assert!(jobs.try_recv().is_err());
        rt.shutdown_timeout(Duration::from_secs(5));
    }

    /// The chunked decode (labels written per chunk) counts exactly as one `decode_batch` over
    /// every record, and stops when cancelled.
    #[test]
    fn chunked_decode_counts_as_one_batch() {
        let (st, _jobs) = app_state(1, Duration::from_secs(5), None);
        let mut records = Vec::new();
        for i in 0..(2 * RECORD_CHUNK + 7) {
            let line = format!(
                "2 123456789012 eni-1 10.0.{}.1 8.8.8.8 443 1234 6 1 40 {} 7260 REJECT OK",
                i % 3,
                3600 * (i % 5)
            );
            records.push(match i % 4 {
                0 => Vec::new(),
                1 => b"bad line".to_vec(),
                _ => line.into_bytes(),
            });
        }
        let never = AtomicBool::new(false);
        let got =
            decode(&st.pipeline, &st.detections, "r", &records, &never).expect("not cancelled");
        let raw: Vec<RawRecord<'_>> =
            records.iter().map(|d| RawRecord { sequence_number: "r/x", data: d }).collect();
        let want = decode_batch(&st.pipeline, &st.detections, VIRTUAL_SHARD, &raw);
        assert_eq!(got.stats, want.stats);
        assert_eq!(got.max_start, want.max_start);
        assert_eq!(got.counter.clone().into_rows(), want.counter.clone().into_rows());
        // The taps of the chunks, merged, are those of one decode of every record.
        let (got_taps, want_taps) = (got.taps.clone().unwrap(), want.taps.clone().unwrap());
        assert_eq!(got_taps.finish(), want_taps.finish());
        assert_eq!(got.last_sequence_number.as_deref(), Some("r"));
        let cancelled = AtomicBool::new(true);
        assert!(decode(&st.pipeline, &st.detections, "r", &records, &cancelled).is_none());
        let empty = decode(&st.pipeline, &st.detections, "r", &[], &never).expect("empty");
        assert_eq!(empty.stats.kinesis_records, 0);
        assert_eq!(empty.last_sequence_number.as_deref(), Some("r"));
    }

    /// HTTPS on the listener (`--tls-cert/--tls-key`): a rustls client that trusts the test CA gets
    /// a 200 for a delivery and 401 without the key; a bad key file is a clear error.
    #[test]
    fn serves_firehose_over_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = FirehoseConfig::new("tls", "127.0.0.1:0".parse().expect("addr"));
        cfg.access_keys = vec!["k".into()];
        cfg.tls = Some(TlsFiles { cert: testdata("cert.pem"), key: testdata("key.pem") });
        let store: Arc<dyn Store> = Arc::new(flowspike_history::LocalStore::new(dir.path()));
        let server = Server::bind(cfg.clone(), store.clone()).expect("bind");
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let running = std::thread::spawn(move || server.run());

        let mut roots = rustls::RootCertStore::empty();
        let ca = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(testdata("ca.pem")).expect("ca")
        };
        roots.add(ca).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let post = |key: &str| -> String {
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
                let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
                let line =
                    "2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 7200 7260 REJECT OK";
                let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, line);
                let body = format!(r#"{{"requestId":"r-{key}","records":[{{"data":"{data}"}}]}}"#);
                let req = format!(
                    "POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                     X-Amz-Firehose-Request-Id: r-{key}\r\nX-Amz-Firehose-Protocol-Version: 1.0\r\n\
                     X-Amz-Firehose-Access-Key: {key}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(req.as_bytes()).await.expect("write");
                let mut out = String::new();
                let _ = tls.read_to_string(&mut out).await;
                out
            })
        };
        let ok = post("k");
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        assert!(ok.contains(r#""requestId":"r-k""#), "{ok}");
        let denied = post("nope");
        assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
        stop.stop();
        let summary = running.join().expect("server thread").expect("run");
        assert_eq!(summary.stats.counted, 1);
        assert_eq!(summary.source.requests.unauthorized, 1);

        cfg.tls = Some(TlsFiles { cert: testdata("cert.pem"), key: testdata("ca.pem") });
        let err = Server::bind(cfg, store).expect_err("a certificate is no key");
        assert!(matches!(err, FirehoseError::Tls(_)), "{err}");
    }
}
