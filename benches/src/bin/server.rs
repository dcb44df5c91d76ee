//! A minimal axum server for `benches/e2e.sh`: `GET /` answers `hello world`.
//!
//! ```text
//! server <bare|noop|full|full-signal> <port>
//! ```
//!
//! * `bare`: the router alone;
//! * `noop`: `Router::layer(NoopLayer)` (a do-nothing layer);
//! * `full`: `Router::layer(coordinator.layer())` (tower-graceful's whole stack);
//! * `full-signal`: as `full`, with a handler taking the `ShutdownSignal`
//!   extractor;
//! * `around-axum`: the layer around the finished router
//!   (`ServiceBuilder::new().layer(coordinator.layer()).service(router)`),
//!   served by `axum::serve`, which needs the body boxed again
//!   (`map_response(|r| r.map(Body::new))`);
//! * `bare-serve`, `full-serve`, `around-serve`: the router alone, with
//!   `Router::layer`, and the layer around it, served by
//!   `tower_graceful::serve` instead of `axum::serve`;
//! * `full-serve-metrics`: `full-serve` with the `metrics` emitter running
//!   every 10 ms (a hundred times its default rate) into a real recorder.
//!
//! Binds 127.0.0.1 only. Runtime workers: `SERVER_WORKERS` (default 1). Runs
//! until killed (no signal handling, so SIGTERM ends it at once).

use tower_graceful_benches::services::NoopLayer;
use tower_graceful_benches::{coordinator, hello_router, signal_router};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, port) = match args.as_slice() {
        [_, mode, port] => (mode.clone(), port.parse::<u16>().expect("port")),
        _ => {
            eprintln!("usage: server <bare|noop|full|full-signal> <port>");
            std::process::exit(2);
        }
    };
    let workers = std::env::var("SERVER_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let graceful = coordinator();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        println!(
            "server {mode} listening on {}",
            listener.local_addr().unwrap()
        );
        let around = || {
            tower::ServiceBuilder::new()
                .layer(graceful.layer())
                .service(hello_router())
        };
        match mode.as_str() {
            "bare" => axum::serve(listener, hello_router()).await,
            "noop" => axum::serve(listener, hello_router().layer(NoopLayer)).await,
            "full" => axum::serve(listener, hello_router().layer(graceful.layer())).await,
            "full-signal" => axum::serve(listener, signal_router().layer(graceful.layer())).await,
            "around-axum" => {
                let app = tower::ServiceExt::<axum::http::Request<axum::body::Body>>::map_response(
                    around(),
                    |r| r.map(axum::body::Body::new),
                );
                axum::serve(listener, tower::make::Shared::new(app)).await
            }
            "bare-serve" => tower_graceful::serve(listener, hello_router(), &graceful).await,
            "full-serve" => {
                let app = hello_router().layer(graceful.layer());
                tower_graceful::serve(listener, app, &graceful).await
            }
            "around-serve" => tower_graceful::serve(listener, around(), &graceful).await,
            "full-serve-metrics" => {
                let recorder = metrics_util::debugging::DebuggingRecorder::new();
                let _emitter = tower_graceful::shutdown_metrics::Emitter::new(&graceful)
                    .interval(std::time::Duration::from_millis(10))
                    .recorder(recorder)
                    .spawn();
                let app = hello_router().layer(graceful.layer());
                tower_graceful::serve(listener, app, &graceful).await
            }
            other => {
                eprintln!("unknown mode {other:?}");
                std::process::exit(2);
            }
        }
        .expect("serve");
    });
}
