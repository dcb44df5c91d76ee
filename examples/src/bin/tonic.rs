//! A gRPC server (tonic) that shuts down without losing a call.
//!
//! * `demo.v1.Demo/Hello` (unary) and `demo.v1.Demo/Count` (server
//!   streaming; with `stop_on_shutdown` it ends cleanly when draining begins,
//!   otherwise after `count` ticks): see `examples/proto/demo.rs`.
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

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tower_graceful::Coordinator;

#[path = "../../proto/demo.rs"]
pub(crate) mod demo;

use demo::DemoServer;

/// Serves the demo and health services on `listener` until `graceful`'s
/// drain is over.
pub(crate) async fn serve_grpc(
    graceful: &Coordinator,
    listener: TcpListener,
) -> JoinHandle<std::io::Result<()>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // SERVING now, NOT_SERVING from the trigger.
    tower_graceful::grpc_health::report_health(graceful, reporter, [demo::SERVICE_NAME]).await;

    let routes = Routes::new(health).add_service(DemoServer::new());
    let service = tower::ServiceBuilder::new()
        .layer(graceful.layer())
        .service(routes);
    tokio::spawn(tower_graceful::serve(listener, service, graceful))
}

/// `250ms`, `2s`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0 && v * scale < 86_400.0).then(|| Duration::from_secs_f64(v * scale))
}

pub(crate) fn env_duration(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => parse_duration(&v)
            .ok_or_else(|| format!("{name}={v:?}: expected a duration such as 250ms, 2s or 2")),
        Err(_) => Ok(default),
    }
}

/// `HOST` (default `127.0.0.1`; `0.0.0.0` in a container) and a port.
pub(crate) fn bind_addr(port: u16) -> Result<SocketAddr, String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        format!("HOST={host:?}: expected an IP address such as 127.0.0.1 or 0.0.0.0")
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The coordinator's timing from the environment: `GRACEFUL_PRE_DRAIN`
/// (default 0s), `GRACEFUL_DEADLINE` (default 10s), `GRACEFUL_CLEANUP`
/// (default 2s) and, if set, `GRACEFUL_TOTAL` (the orchestrator's kill
/// timer, e.g. `terminationGracePeriodSeconds`; the phases must fit in it).
pub(crate) fn builder_from_env() -> Result<tower_graceful::Builder, String> {
    let mut b = Coordinator::builder()
        .pre_drain_delay(env_duration("GRACEFUL_PRE_DRAIN", Duration::ZERO)?)
        .drain_deadline(env_duration("GRACEFUL_DEADLINE", Duration::from_secs(10))?)
        .cleanup_timeout(env_duration("GRACEFUL_CLEANUP", Duration::from_secs(2))?);
    if std::env::var_os("GRACEFUL_TOTAL").is_some() {
        b = b.total_budget(env_duration("GRACEFUL_TOTAL", Duration::ZERO)?);
    }
    Ok(b)
}

pub(crate) fn env_port(name: &str, default: u16) -> Result<u16, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?}: expected a port number (0 picks a free one)")),
        Err(_) => Ok(default),
    }
}

#[allow(dead_code)] // unused where this file is included as a module
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
