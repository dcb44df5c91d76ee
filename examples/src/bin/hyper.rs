//! A plain hyper server (no axum, no tonic) that shuts down without losing a
//! request: the wiring to copy when you own the accept loop.
//!
//! * A tower service (`tower::service_fn`) behind `graceful.layer()`, turned
//!   into a hyper service by `hyper_util::service::TowerToHyperService`.
//! * `hyper_util::server::conn::auto::Builder`: HTTP/1.1 and HTTP/2 (h2c
//!   with prior knowledge) on one port.
//! * When draining begins (`graceful.draining()`) the accept loop stops and
//!   the listener closes, so new connections go to other instances. Open
//!   connections are still served: from the trigger, `graceful.layer()`
//!   answers with `Connection: close` (on a growing share of responses, then
//!   all of them), so HTTP/1.1 clients leave by themselves after a response.
//! * `hyper_util::server::graceful::GracefulShutdown`: every connection is
//!   `watch`ed; once nothing is left in flight (`graceful.close_connections()`,
//!   or the deadline) each one is told to shut down gracefully: an idle
//!   HTTP/1.1 connection closes, HTTP/2 gets GOAWAY. Closing them at the
//!   start of draining instead would race clients' next requests on them.
//!
//! `tower_graceful::serve` (feature `serve`) is this loop, with GOAWAY spread
//! over the pre-drain delay as well; write your own only when you need to.
//!
//! Routes: `/` (hello), `/slow?ms=N` (answers after N ms, at most 60 s; logs
//! `slow request started`), `/poll` (a long-poll that answers when draining
//! begins, through `ShutdownSignal::current()`, or after 30 s).
//!
//! ```text
//! PORT=8080 GRACEFUL_PRE_DRAIN=2s GRACEFUL_DEADLINE=10s cargo run -p tower-graceful-examples --bin hyper
//! ```
//!
//! Environment: `HOST` (default 127.0.0.1), `PORT` (default 8080; 0 picks a
//! free port), `GRACEFUL_PRE_DRAIN` (default 0; `auto` for the adaptive
//! pre-drain, at most `GRACEFUL_PRE_DRAIN_MAX`, default 10s), `GRACEFUL_DEADLINE`
//! (default 10s), durations as `500ms`, `2s`, `1m`. Prints `listening on
//! ADDR` once bound and the shutdown report at the end (stdout); logs go to
//! stderr. SIGTERM / Ctrl-C starts the shutdown, a second one forces it.
//! Exits 0 when the shutdown was clean, 1 when work had to be abandoned.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_graceful::{Coordinator, ShutdownSignal};
use tower_graceful_examples::parse_duration;

/// Longest `/slow` request the server accepts.
const MAX_MS: u64 = 60_000;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match req.uri().path() {
        "/" => "hello from hyper\n".to_owned(),
        "/slow" => {
            let ms = query(&req)
                .get("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100u64)
                .min(MAX_MS);
            tracing::info!(ms, "slow request started");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("slow response after {ms} ms\n")
        }
        "/poll" => {
            // Available while `graceful.layer()` polls this handler: no
            // request extension, no allocation.
            let signal = ShutdownSignal::current().expect("served inside graceful.layer()");
            tracing::info!("long-poll started");
            tokio::select! {
                _ = signal.draining() => "shutting down: poll again\n".to_owned(),
                _ = tokio::time::sleep(Duration::from_secs(30)) => "no news\n".to_owned(),
            }
        }
        _ => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            return Ok(res);
        }
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

fn query(req: &Request<Incoming>) -> HashMap<&str, &str> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// Accepts connections on `listener` until draining begins, then closes the
/// listener; once nothing is in flight, asks every open connection to shut
/// down gracefully and waits for them to close.
async fn serve(graceful: Coordinator, listener: TcpListener) {
    // One service for every connection: `graceful.layer()` shares the
    // coordinator's state, so cloning it per connection is a pointer copy.
    let service = ServiceBuilder::new()
        .layer(graceful.layer())
        .service(tower::service_fn(handle));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = GracefulShutdown::new();
    let draining = graceful.draining();
    tokio::pin!(draining);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let conn = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                    .into_owned();
                let conn = connections.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut draining => break,
        }
    }
    drop(listener);
    tracing::info!("listener closed; serving open connections until nothing is in flight");
    graceful.close_connections().await;
    connections.shutdown().await;
    tracing::info!("every connection closed");
}

fn env_duration(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => parse_duration(&v).map_err(|e| format!("{name}: {e}")),
        Err(_) => Ok(default),
    }
}

fn bind_addr() -> Result<SocketAddr, String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("HOST={host:?}: expected an IP address such as 127.0.0.1"))?;
    let port: u16 = port
        .trim()
        .parse()
        .map_err(|_| format!("PORT={port:?}: expected a port number (0 picks a free one)"))?;
    Ok(SocketAddr::new(ip, port))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        // Colours only on a terminal: plain text in files, pipes and CI logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Validate the configuration before binding anything.
    let graceful = Coordinator::builder()
        .pre_drain(tower_graceful_examples::pre_drain_from_env(
            |name| std::env::var(name).ok(),
            |name| match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(_) => env_duration(name, Duration::ZERO).map(Some),
            },
        )?)
        .drain_deadline(env_duration("GRACEFUL_DEADLINE", Duration::from_secs(10))?)
        .build()?;
    let listener = TcpListener::bind(bind_addr()?).await?;
    println!("listening on {}", listener.local_addr()?);

    let server = tokio::spawn(serve(graceful.clone(), listener));

    // Wait for the coordinator, not the server: after the drain deadline the
    // report comes out even if a connection never closes.
    let report = graceful.wait().await;
    println!("{report}");
    if tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the report; exiting anyway");
    }
    std::process::exit(if report.is_clean() { 0 } else { 1 });
}
