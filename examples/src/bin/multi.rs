//! Three servers in one process, draining as one: public HTTP (axum), gRPC
//! (tonic) and an admin port (probes and metrics), all on one coordinator.
//!
//! * **public HTTP** (`PORT`, default 8080): `/`, `/slow?ms=N`,
//!   `/stream?chunks=N&ms=M`, behind `graceful.layer()`, served by
//!   `tower_graceful::serve`: keep-alive connections are told to close from
//!   the trigger, the listener closes when draining begins, open connections
//!   are served until nothing is in flight.
//! * **gRPC** (`GRPC_PORT`, default 50051): `demo.v1.Demo` and
//!   `grpc.health.v1.Health`, as in the `tonic` example.
//! * **admin** (`ADMIN_PORT`, default 9090): `/ready`, `/live` and
//!   `/metrics` (the coordinator's state from
//!   `tower_graceful::shutdown_metrics`, in Prometheus text format by
//!   `metrics-exporter-prometheus`). It has no graceful layer: its requests
//!   are not counted (a scrape never holds the drain) and never rejected, and
//!   it keeps answering through the whole drain, closing only once the
//!   shutdown report is out and the servers are joined. With
//!   `GRACEFUL_FINAL_SCRAPE=35s` it stays up after the report until a scrape
//!   of `/metrics` has read the report's counters and histograms, or that
//!   long (`Emitter::final_scrape`), so a Prometheus that scrapes every
//!   15–30 s sees them; count it in `terminationGracePeriodSeconds`.
//!
//! The coordinator counts requests on the public and gRPC servers together;
//! the shutdown completes only when in-flight work on both has ended, and the
//! process exits only after all three servers have stopped.
//!
//! ```text
//! PORT=8080 GRPC_PORT=50051 ADMIN_PORT=9090 GRACEFUL_PRE_DRAIN=2s cargo run -p tower-graceful-examples --bin multi
//! ```
//!
//! Prints `http listening on ADDR`, `grpc listening on ADDR` and
//! `admin listening on ADDR` once bound (ports may be 0). `HOST` and the
//! `GRACEFUL_*` timings as in the `tonic` example. Exits 0 when the shutdown
//! was clean and every server stopped. Under socket activation the sockets
//! named `http`, `grpc` and `admin` (`FileDescriptorName=` in the `.socket`
//! units) are served instead of binding; with `NOTIFY_SOCKET`, systemd is
//! told the phases (`tower_graceful::systemd`).
//!
//! The servers themselves are started by
//! `tower_graceful_examples::multi::start` (`examples/src/multi.rs`), which
//! the end-to-end tests run too.

use std::error::Error;
use std::time::Duration;

use tower_graceful_examples::env::{bind_addr, builder_from_env, env_duration, env_port};
use tower_graceful_examples::multi::start_with_final_scrape;

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

    // Validate the configuration before binding anything.
    let graceful = builder_from_env()?.build()?;
    let bind = |name: &'static str, port: u16| async move {
        let addr = bind_addr(port)?;
        let socket = tower_graceful::systemd::Socket::Name(name);
        Ok::<_, Box<dyn Error>>(tower_graceful::systemd::tcp_listener(socket, addr).await?)
    };
    let http = bind("http", env_port("PORT", 8080)?).await?;
    let grpc = bind("grpc", env_port("GRPC_PORT", 50051)?).await?;
    let admin = bind("admin", env_port("ADMIN_PORT", 9090)?).await?;

    let final_scrape = env_duration("GRACEFUL_FINAL_SCRAPE", Duration::ZERO)?;
    let servers = start_with_final_scrape(&graceful, http, grpc, admin, final_scrape).await?;
    println!("http listening on {}", servers.http);
    println!("grpc listening on {}", servers.grpc);
    println!("admin listening on {}", servers.admin);
    tokio::spawn(tower_graceful::systemd::notify(&graceful));

    let report = graceful.wait().await;
    let mut clean = report.is_clean();
    for (name, outcome) in servers.join(Duration::from_secs(2) + final_scrape).await {
        match outcome {
            Ok(()) => tracing::info!(server = name, "stopped"),
            Err(e) => {
                clean = false;
                tracing::warn!(server = name, error = %e, "did not stop cleanly");
            }
        }
    }
    std::process::exit(if clean { 0 } else { 1 });
}
