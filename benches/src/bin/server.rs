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
//!   extractor.
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
        let app = match mode.as_str() {
            "bare" => hello_router(),
            "noop" => hello_router().layer(NoopLayer),
            "full" => hello_router().layer(graceful.layer()),
            "full-signal" => signal_router().layer(graceful.layer()),
            other => {
                eprintln!("unknown mode {other:?}");
                std::process::exit(2);
            }
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        println!(
            "server {mode} listening on {}",
            listener.local_addr().unwrap()
        );
        axum::serve(listener, app).await.expect("serve");
    });
}
