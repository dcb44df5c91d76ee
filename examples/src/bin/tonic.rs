//! A gRPC server (tonic) that shuts down without losing a call.
//!
//! * `demo.v1.Demo/Hello` (unary) and `demo.v1.Demo/Count` (server
//!   streaming; with `stop_on_shutdown` it ends cleanly when draining begins,
//!   otherwise after `count` ticks): see `examples/src/demo.rs`.
//! * `grpc.health.v1.Health`: `SERVING`, then `NOT_SERVING` from the moment
//!   shutdown is triggered (`tower_graceful::grpc_health::report_health`).
//! * `graceful.layer()` around tonic's `Routes`: every call is counted until
//!   its response stream ends; calls on open connections are served while
//!   draining, and only a call that arrives after the drain completed (or too
//!   close to the deadline) gets a trailers-only `UNAVAILABLE` (retryable).
//! * `tower_graceful::serve`: each HTTP/2 connection gets a graceful GOAWAY
//!   during the pre-drain delay (spread over it), so clients move to other
//!   instances while this one still serves; the listener closes when draining
//!   begins; streams already accepted run on.
//!
//! With tonic's own `Server::builder().layer(graceful.layer())` and
//! `serve_with_incoming_shutdown(.., graceful.close_connections())` the
//! layer works the same, but GOAWAY comes only at the end of the drain.
//!
//! ```text
//! PORT=50051 GRACEFUL_PRE_DRAIN=2s GRACEFUL_DEADLINE=10s cargo run -p tower-graceful-examples --bin tonic
//! ```
//!
//! Environment: `HOST` (default 127.0.0.1), `PORT` (default 50051; 0 picks a
//! free port), `GRACEFUL_PRE_DRAIN` (default 0s), `GRACEFUL_DEADLINE` (default
//! 10s), `GRACEFUL_CLEANUP` (default 2s), `GRACEFUL_TOTAL` (optional budget
//! the phases must fit in); durations as `250ms`, `2s` or a bare number of
//! seconds. Prints `listening on ADDR` once bound. Under socket activation
//! (`LISTEN_FDS=1`) the passed socket is served instead of `HOST:PORT`, and
//! with `NOTIFY_SOCKET` the phases are told to systemd
//! (`tower_graceful::systemd`).
//! SIGTERM / Ctrl-C starts the shutdown, a second one forces it. Exits 0 when
//! the shutdown was clean, 1 when work had to be abandoned.
//!
//! The server itself is `tower_graceful_examples::grpc::serve_grpc`
//! (`examples/src/grpc.rs`), shared with the `multi` example and the
//! end-to-end tests.

use std::error::Error;
use std::time::Duration;

use tower_graceful_examples::env::{bind_addr, builder_from_env, env_port};
use tower_graceful_examples::grpc::serve_grpc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        // Colours only on a terminal: plain text in files, pipes and CI logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let port = env_port("PORT", 50051)?;
    let graceful = builder_from_env()?.build()?;

    let listener = tower_graceful::systemd::tcp_listener(
        tower_graceful::systemd::Socket::Index(0),
        bind_addr(port)?,
    )
    .await?;
    let addr = listener.local_addr()?;
    let server = serve_grpc(&graceful, listener).await;
    println!("listening on {addr}");
    tokio::spawn(tower_graceful::systemd::notify(&graceful));

    // The report is logged by the coordinator; it also decides the exit code.
    let report = graceful.wait().await;
    // The server future ends once its connections are closed; after a forced
    // stop an abandoned stream may hold one, so do not wait for it forever.
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("grpc server error: {e}"),
        Ok(Err(e)) => eprintln!("grpc server task failed: {e}"),
        Err(_) => eprintln!("grpc server still closing connections; exiting anyway"),
    }
    std::process::exit(if report.is_clean() { 0 } else { 1 });
}
