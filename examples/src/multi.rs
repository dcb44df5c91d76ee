//! The `multi` example's three servers on one coordinator, shared with the
//! end-to-end tests (`tests/tests/multi.rs`), so the tests run exactly its
//! wiring: public HTTP (axum, behind `graceful.layer()`, served by
//! `tower_graceful::serve`), gRPC ([`crate::grpc::serve_grpc`]) and an admin
//! port (probes and Prometheus metrics, no graceful layer) that stays up
//! until the shutdown is over and the servers are joined.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower_graceful::shutdown_metrics::Emitter;
use tower_graceful::Coordinator;

use crate::grpc;

/// Longest `/slow` or `/stream` request the public server accepts.
const MAX_MS: u64 = 60_000;

/// The three running servers.
pub struct Servers {
    /// Where the public HTTP server listens.
    pub http: SocketAddr,
    /// Where the gRPC server listens.
    pub grpc: SocketAddr,
    /// Where the admin port (probes, metrics) listens.
    pub admin: SocketAddr,
    tasks: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
    /// Keeps the admin port open after the report until `join` (or drop).
    admin_open: DropGuard,
}

impl Servers {
    /// Waits for every server to stop (each within `timeout`) and says how
    /// each one ended.
    pub async fn join(self, timeout: Duration) -> Vec<(&'static str, Result<(), String>)> {
        drop(self.admin_open);
        let mut out = Vec::new();
        for (name, task) in self.tasks {
            let r = match tokio::time::timeout(timeout, task).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("task failed: {e}")),
                Err(_) => Err(format!("still running after {timeout:?}")),
            };
            out.push((name, r));
        }
        out
    }
}

/// Starts the public, gRPC and admin servers on the given listeners.
pub async fn start(
    graceful: &Coordinator,
    http: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
) -> std::io::Result<Servers> {
    start_with_final_scrape(graceful, http, grpc, admin, Duration::ZERO).await
}

/// [`start`], with the admin port kept answering after the report until a
/// scrape of `/metrics` has read the final values or `final_scrape` has
/// passed ([`Emitter::final_scrape`]); zero: no wait.
pub async fn start_with_final_scrape(
    graceful: &Coordinator,
    http: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
    final_scrape: Duration,
) -> std::io::Result<Servers> {
    let (http_addr, grpc_addr, admin_addr) =
        (http.local_addr()?, grpc.local_addr()?, admin.local_addr()?);

    // Public: counted; keep-alive connections told to close from the
    // trigger; listener closed when draining starts; open connections served
    // until nothing is in flight.
    let public = public_router().layer(graceful.layer());
    let serving = tower_graceful::serve(http, public, graceful);
    let http_task = tokio::spawn(async move { serving.await.map_err(|e| format!("http: {e}")) });

    // gRPC: the same coordinator, so its calls count towards the same drain.
    let grpc_server = grpc::serve_grpc(graceful, grpc).await;
    let grpc_task = tokio::spawn(async move {
        match grpc_server.await {
            Ok(r) => r.map_err(|e| format!("grpc: {e}")),
            Err(e) => Err(format!("grpc task: {e}")),
        }
    });

    // Admin: up until the shutdown is over and the servers are joined, so
    // probes and scrapes see it all.
    let done = graceful.clone();
    let admin_open = CancellationToken::new();
    let closing = admin_open.clone();
    let metrics = metrics(graceful);
    let last_scrape = metrics.emitter.clone();
    let admin_app = admin_router(graceful.clone(), metrics);
    let admin_task = tokio::spawn(async move {
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(async move {
                done.wait().await;
                if !final_scrape.is_zero() {
                    tracing::info!(
                        ?final_scrape,
                        "admin: /metrics stays up for a scrape of the final values"
                    );
                    let scraped = last_scrape.final_scrape(final_scrape).await;
                    tracing::info!(scraped, "admin: final scrape over");
                }
                closing.cancelled().await;
            })
            .await
            .map_err(|e| format!("admin: {e}"))
    });

    Ok(Servers {
        http: http_addr,
        grpc: grpc_addr,
        admin: admin_addr,
        tasks: vec![
            ("http", http_task),
            ("grpc", grpc_task),
            ("admin", admin_task),
        ],
        admin_open: admin_open.drop_guard(),
    })
}

fn millis(q: &HashMap<String, String>, key: &str, default: u64) -> u64 {
    q.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .min(MAX_MS)
}

/// The public API: `/`, `/slow?ms=N`, `/stream?chunks=N&ms=M`.
pub fn public_router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from multi\n" }))
        .route(
            "/slow",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let ms = millis(&q, "ms", 100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms}ms\n")
            }),
        )
        .route(
            "/stream",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                // A bounded download: the first chunk at once, then one every
                // `ms`. Accepted work runs to its end even while draining; the
                // coordinator counts it until the last chunk is sent.
                let chunks = q
                    .get("chunks")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(3)
                    .min(1_000);
                let every = Duration::from_millis(millis(&q, "ms", 100));
                let body = futures_util::stream::unfold(0u64, move |i| async move {
                    if i >= chunks {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    let chunk = Bytes::from(format!("chunk {}\n", i + 1));
                    Some((Ok::<_, std::convert::Infallible>(chunk), i + 1))
                });
                Body::from_stream(body)
            }),
        )
}

/// The admin port: probes and metrics, no graceful layer.
pub fn admin_router(graceful: Coordinator, metrics: Metrics) -> Router {
    Router::new()
        .route_service("/ready", graceful.readiness_service())
        .route_service("/live", graceful.liveness_service())
        .route(
            "/metrics",
            get(move || async move {
                // Fresh at every scrape, on top of the emitter's own ticks.
                metrics.emitter.record_now();
                let text = metrics.handle.render();
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
            }),
        )
}

/// The coordinator's metrics and the Prometheus registry they go to.
#[derive(Clone)]
pub struct Metrics {
    emitter: Emitter,
    handle: PrometheusHandle,
}

/// A Prometheus registry of this process's own with the coordinator's
/// metrics in it, kept up to date by an `Emitter` task. (An application
/// would rather `install_recorder()` globally, add its own metrics, and
/// leave out `.recorder(..)`; a registry per call keeps tests that start
/// several of these in one process apart.)
pub fn metrics(graceful: &Coordinator) -> Metrics {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        .expect("non-empty buckets")
        .build_recorder();
    let handle = recorder.handle();
    let emitter = Emitter::new(graceful).recorder(recorder);
    emitter.clone().spawn();
    Metrics { emitter, handle }
}
