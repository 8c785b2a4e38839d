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
use flowspike_consumer::kinesis::{client_from_env, KinesisSink, WriterSink};
use flowspike_consumer::{
    decode_batch, Batch, DecodeContext, Engine, EngineConfig, Metrics, Output, RawRecord, SpikeSink,
};
use flowspike_history::{History, Store};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::commit::{Coordinator, Job, RequestStats, RunSummary, DRAIN_TIMEOUT, MAX_GROUP};
use crate::protocol::{check_head, decode_body, parse_records, too_large, Rejection, ResponseBody};
use crate::{FirehoseConfig, FirehoseError, TlsFiles, VIRTUAL_SHARD};

/// Time a client has to send the request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a TLS client has to finish the handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The health check fails when the state has not been committed for this long (an idle endpoint
/// counts as committed every tick).
const MAX_CHECKPOINT_AGE: Duration = Duration::from_secs(300);

/// What the handler needs; one per server, shared by every connection.
struct AppState {
    keys: Vec<Vec<u8>>,
    max_body_bytes: usize,
    request_timeout: Duration,
    permits: Semaphore,
    ctx: DecodeContext,
    jobs: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    requests: Arc<RequestStats>,
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
        if cfg.max_body_bytes == 0 || cfg.max_concurrent_requests == 0 {
            return Err(FirehoseError::Config(
                "body limit and concurrent requests must be at least 1".into(),
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
            rt.block_on(flowspike_consumer::metrics::start(addr, metrics.clone()))
                .map_err(|source| FirehoseError::Bind { addr, source })?;
        }
        let mut sink: Box<dyn SpikeSink + Send> = match &cfg.output {
            Output::Stdout => Box::new(WriterSink(std::io::stdout())),
            Output::Stream(s) => Box::new(KinesisSink {
                client: rt.block_on(client_from_env()),
                stream: s.clone(),
                handle: rt.handle().clone(),
            }),
        };
        let ecfg = EngineConfig {
            stream: cfg.name.clone(),
            allowed_lateness_secs: i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX),
            counter: cfg.counter,
            detect: cfg.detect.clone(),
        };
        let history = History::new(store).with_dest_cap(cfg.counter.dest_cap);
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
            request_timeout: cfg.request_timeout,
            permits: Semaphore::new(cfg.max_concurrent_requests),
            ctx: DecodeContext {
                decode: cfg.decode.clone(),
                rule: cfg.rule.clone(),
                counter: cfg.counter,
            },
            jobs,
            metrics: metrics.clone(),
            requests: requests.clone(),
        });
        let app = router(state);
        let signalled = Arc::new(AtomicBool::new(false));
        rt.spawn(wait_for_signal(stop.clone(), signalled.clone()));
        let server = rt.spawn(serve(listener, tls, app, stop.subscribe()));
        metrics.set_phase(flowspike_consumer::metrics::Phase::Running);
        let phase_metrics = metrics.clone();
        let mut stop_rx = stop.subscribe();
        rt.spawn(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
            phase_metrics.set_phase(flowspike_consumer::metrics::Phase::Stopping);
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

/// Accepts connections until `stop`, then lets in-flight requests finish (at most
/// [`DRAIN_TIMEOUT`]) while idle keep-alive connections are closed.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
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
        let _ = sock.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(sock), svc));
                tokio::spawn(async move {
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
    let request_id = req
        .headers()
        .get(crate::protocol::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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
        .acquire()
        .await
        .map_err(|_| Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping"))?;
    let body = http_body_util::Limited::new(req.into_body(), max).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            too_large(max)
        } else {
            Rejection::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))
        }
    })?;
    let body = body.to_bytes();
    let ctx = st.ctx.clone();
    let request_id = head.request_id.clone();
    let batch = tokio::task::spawn_blocking(move || -> Result<Batch, Rejection> {
        let json = decode_body(&body, head.encoding, max)?;
        let records = parse_records(&json, &head.request_id)?;
        drop(json);
        Ok(decode(&ctx, &head.request_id, &records))
    })
    .await
    .map_err(|e| {
        Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, format!("decoder failed: {e}"))
    })??;
    drop(permit);
    let (reply, answer) = oneshot::channel();
    st.jobs
        .send(Job { request_id, batch, reply })
        .await
        .map_err(|_| Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping"))?;
    match answer.await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(msg)) => Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, msg)),
        Err(_) => Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "server stopping")),
    }
}

/// The records of one request as a batch of the virtual shard; bad lines and undecodable records
/// are counted and logged (`sequence_number` = `<request id>/<record index>`), never fatal.
fn decode(ctx: &DecodeContext, request_id: &str, records: &[Vec<u8>]) -> Batch {
    let labels: Vec<String> = (0..records.len()).map(|i| format!("{request_id}/{i}")).collect();
    let raw: Vec<RawRecord<'_>> = records
        .iter()
        .zip(&labels)
        .map(|(data, label)| RawRecord { sequence_number: label, data })
        .collect();
    let mut batch = decode_batch(ctx, VIRTUAL_SHARD, &raw);
    batch.last_sequence_number = Some(request_id.to_owned());
    batch
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
    flowspike_consumer::shutdown_signal().await;
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
        assert_eq!(summary.requests.unauthorized, 1);

        cfg.tls = Some(TlsFiles { cert: testdata("cert.pem"), key: testdata("ca.pem") });
        let err = Server::bind(cfg, store).expect_err("a certificate is no key");
        assert!(matches!(err, FirehoseError::Tls(_)), "{err}");
    }
}
