//! A realistic axum server with graceful shutdown.
//!
//! ```text
//! cargo run -p tower-graceful-examples --bin axum
//! curl localhost:3000/slow?ms=5000 &  kill -TERM <pid>   # the request still completes
//! ```
//!
//! Routes: `/` (fast), `/slow?ms=` (default 1000), `/stream?chunks=N` (N chunks
//! 200 ms apart; without `chunks` it streams until shutdown, then ends
//! cleanly), `/sse` (events until shutdown, then a final `shutdown` event),
//! `/ws` (echo; on shutdown a close frame 1012 "service restart", then the
//! close handshake), `/whoami` (the client's address, from axum's
//! `ConnectInfo`, and this process's id: `127.0.0.1:50312 pid 4242`),
//! `/ready`, `/live`.
//!
//! Environment:
//!
//! * `PORT` (default 3000; `0` picks a free port). Once bound, one line
//!   `listening on 127.0.0.1:PORT` is printed to stdout.
//! * `LISTEN_FDS` / `LISTEN_PID` (socket activation, set by systemd or
//!   `systemd-socket-activate`): the first passed socket is served instead,
//!   and `PORT` is ignored; the line printed has that socket's address. When
//!   the drain closes this process's copy, the socket stays open in the
//!   service manager: connections that arrive during a restart wait in its
//!   backlog for the next process.
//! * `NOTIFY_SOCKET` (`Type=notify`): `READY=1` once serving, `STOPPING=1`
//!   at the signal, the phases and in-flight count in `STATUS=`, the stop
//!   timeout extended phase by phase, `WATCHDOG=1` if `WatchdogSec=` is set
//!   (`tower_graceful::systemd::notify`). See `examples/systemd/`.
//! * `SIGHUP` (TCP): restart in place (`tower_graceful::restart`). A
//!   successor is started on the same socket (`LISTEN_FDS`, so it takes
//!   the socket-activation path above), and once it has sent `READY=1`
//!   this process drains and exits; `GET /whoami` names the process that
//!   answered. A successor that fails to start or to become ready within
//!   `GRACEFUL_RESTART_TIMEOUT` (default `30s`) is ended, an `ERROR` line
//!   says why, and this process serves on. `GRACEFUL_RESTART_PROGRAM`
//!   starts another program instead of this one (to try a failing
//!   successor: `/bin/false`).
//! * `UNIX_SOCKET=PATH`: serve on a Unix socket at `PATH` instead of TCP
//!   (`PORT` is ignored; the line printed is `listening on unix:PATH`).
//!   The socket file is not removed on exit; a stale one makes the bind
//!   fail.
//! * `TLS_CERT=PEM` and `TLS_KEY=PEM` (both or neither): serve HTTPS, ALPN
//!   offering HTTP/2 and HTTP/1.1 (`curl -k https://localhost:3000/whoami`;
//!   `--http1.1` for the other). On TCP or on the Unix socket.
//! * `GRACEFUL_PRE_DRAIN` (default `0s`): how long readiness is down before
//!   draining starts, e.g. `5s` behind a load balancer; or `auto`: until
//!   the balancers have visibly stopped sending (readiness refused to
//!   `GRACEFUL_PRE_DRAIN_CHECKS` checks, default 3, and no new connection
//!   or request on one for `GRACEFUL_PRE_DRAIN_QUIET`, default 1s), at
//!   least `GRACEFUL_PRE_DRAIN_MIN` (default 1s) and at most
//!   `GRACEFUL_PRE_DRAIN_MAX` (default 10s).
//! * `GRACEFUL_DEADLINE` (default `10s`): how long draining may take.
//! * `GRACEFUL_MODE=builtin`: for comparison, only axum's own
//!   `with_graceful_shutdown` (no readiness flip, no pre-drain, no 503, and the
//!   handlers are never told to stop).
//!
//! SIGTERM or Ctrl-C starts the shutdown; a second one forces it. The
//! shutdown report is printed to stdout on exit. Logs go to stderr
//! (`RUST_LOG` filters them).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::net::unix::SocketAddr as UnixAddr;
use tokio_util::sync::CancellationToken;
use tower_graceful::connection::{Listener, Server, TlsListener};
use tower_graceful::restart::Restart;
use tower_graceful::systemd::{self, Socket};
use tower_graceful::{Coordinator, ShutdownSignal};
use tower_graceful_examples::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// tower-graceful: readiness, pre-drain, draining responses, ShutdownSignal.
    Graceful,
    /// axum's `with_graceful_shutdown` alone.
    Builtin,
}

struct Settings {
    port: u16,
    unix_socket: Option<std::path::PathBuf>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pre_drain: tower_graceful::PreDrain,
    deadline: Duration,
    restart_timeout: Duration,
    restart_program: Option<std::path::PathBuf>,
    mode: Mode,
}

fn settings() -> Result<Settings, String> {
    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    fn duration(name: &str, default: Duration) -> Result<Duration, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("invalid {name}: {e}")),
        }
    }
    let port = match var("PORT") {
        None => 3000,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT: {v:?} is not a port number (0-65535)"))?,
    };
    let mode = match var("GRACEFUL_MODE").as_deref().map(str::trim) {
        None | Some("graceful") => Mode::Graceful,
        Some("builtin") => Mode::Builtin,
        Some(other) => {
            return Err(format!(
                "invalid GRACEFUL_MODE: {other:?}; use \"graceful\" (default) or \"builtin\""
            ))
        }
    };
    let tls = match (var("TLS_CERT"), var("TLS_KEY")) {
        (Some(cert), Some(key)) => Some((cert.into(), key.into())),
        (None, None) => None,
        _ => return Err("set both TLS_CERT and TLS_KEY (PEM files), or neither".into()),
    };
    Ok(Settings {
        port,
        unix_socket: var("UNIX_SOCKET").map(Into::into),
        tls,
        pre_drain: tower_graceful_examples::pre_drain_from_env(var, |name| {
            var(name)
                .map(|v| parse_duration(&v).map_err(|e| format!("invalid {name}: {e}")))
                .transpose()
        })?,
        deadline: duration("GRACEFUL_DEADLINE", Duration::from_secs(10))?,
        restart_timeout: duration("GRACEFUL_RESTART_TIMEOUT", Duration::from_secs(30))?,
        restart_program: var("GRACEFUL_RESTART_PROGRAM").map(Into::into),
        mode,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only on a terminal: plain text in files, pipes and CI logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match settings.mode {
        Mode::Graceful => run_graceful(&settings).await,
        Mode::Builtin => run_builtin(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The routes, the same in both modes.
fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route("/stream", get(stream_chunks))
        .route("/sse", get(sse))
        .route("/ws", get(websocket))
        .route("/whoami", get(whoami))
}

/// The client's address, as axum's `ConnectInfo` gives it (`serve` puts it
/// in every request: `SocketAddr` on TCP, the Unix peer's address on a Unix
/// socket), and this process's id.
async fn whoami(req: axum::extract::Request) -> String {
    let ext = req.extensions();
    let addr = if let Some(ConnectInfo(addr)) = ext.get::<ConnectInfo<SocketAddr>>() {
        addr.to_string()
    } else if let Some(ConnectInfo(addr)) = ext.get::<ConnectInfo<UnixAddr>>() {
        match addr.as_pathname() {
            Some(path) => format!("unix:{}", path.display()),
            None => "unix:(unnamed)".to_owned(),
        }
    } else {
        "unknown".to_owned()
    };
    format!("{addr} pid {}\n", std::process::id())
}

/// The TLS configuration from `TLS_CERT` / `TLS_KEY` (PEM), with ring as the
/// crypto provider; `TlsListener` adds ALPN (`h2`, `http/1.1`).
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS_CERT {}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS_KEY {}: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| format!("TLS configuration: {e}"))
}

/// Serves `app` on `listener`, through TLS if configured.
fn serve_on<L: Listener>(
    listener: L,
    app: Router,
    graceful: &Coordinator,
    tls: Option<rustls::ServerConfig>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let server = Server::new(graceful);
    match tls {
        Some(config) => tokio::spawn(server.serve(TlsListener::new(listener, config), app)),
        None => tokio::spawn(server.serve(listener, app)),
    }
}

/// The socket passed by the service manager or the predecessor
/// (`LISTEN_FDS=1`), or `127.0.0.1:PORT` bound now.
async fn bind(port: u16) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = systemd::tcp_listener(Socket::Index(0), ("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on the passed socket or 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

async fn run_graceful(settings: &Settings) -> Result<(), String> {
    let graceful = Coordinator::builder()
        .pre_drain(settings.pre_drain)
        .drain_deadline(settings.deadline)
        .readiness_path("/ready")
        .liveness_path("/live")
        .build()
        .map_err(|e| e.to_string())?;

    graceful
        .on_shutdown("flush logs", || async {
            // A real service would flush buffered logs or metrics here.
            Ok::<_, std::io::Error>(())
        })
        .map_err(|e| e.to_string())?;

    let app = routes().layer(graceful.layer());
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls_config(cert, key)?),
        None => None,
    };

    // Owns the connections: from the trigger, HTTP/1.1 responses announce
    // `Connection: close` (a rising share over the pre-drain delay) and
    // HTTP/2 connections get GOAWAY; the listener closes when draining
    // starts; open connections are still served, and idle ones are closed
    // once nothing is in flight.
    let server = match &settings.unix_socket {
        Some(path) => {
            let listener = tokio::net::UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
            println!("listening on unix:{}", path.display());
            serve_on(listener, app, &graceful, tls)
        }
        None => {
            let (listener, addr) = bind(settings.port).await?;
            // SIGHUP: a successor on this same socket, then this process
            // drains (see `tower_graceful::restart`).
            let mut restart = Restart::new(&graceful)
                .socket("http", &listener)
                .map_err(|e| format!("restart in place: {e}"))?
                .ready_timeout(settings.restart_timeout);
            if let Some(program) = &settings.restart_program {
                restart = restart.program(program);
            }
            restart.spawn();
            // Tests and scripts wait for this exact line: from here on the
            // socket is served and SIGHUP is a restart.
            println!("listening on {addr}");
            serve_on(listener, app, &graceful, tls)
        }
    };
    // Under systemd (`Type=notify`): READY=1 now that the socket is served
    // (no readiness gate here), then the shutdown's phases. A no-op otherwise.
    tokio::spawn(systemd::notify(&graceful));

    let shutdown = graceful.clone();
    tokio::spawn(async move {
        shutdown.triggered().await;
        tracing::info!("shutdown started: readiness is down; send the signal again to force");
    });

    // Returns once shutdown was triggered (SIGTERM / Ctrl-C), everything
    // drained or was cut off at the deadline, and the hooks ran.
    let report = graceful.wait().await;
    println!("{report}");

    // After a clean drain the server has (almost) finished closing its
    // connections; after a forced stop, it may never, and we exit anyway.
    if report.is_clean() {
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
    Ok(())
}

async fn run_builtin(settings: &Settings) -> Result<(), String> {
    // A signal that never fires: the handlers behave as if they did not watch
    // for shutdown, which is what a plain axum app does.
    let never = ShutdownSignal::from(CancellationToken::new());
    let app = routes()
        .route("/ready", get(|| async { "ready\n" }))
        .route("/live", get(|| async { "live\n" }))
        .layer(Extension(never));
    let (listener, addr) = bind(settings.port).await?;
    println!("listening on {addr}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(ctrl_c_or_sigterm())
    .await
    .map_err(|e| e.to_string())?;
    println!("shutdown complete (builtin mode: axum's with_graceful_shutdown only, no report)");
    Ok(())
}

async fn ctrl_c_or_sigterm() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("signal received: axum stops accepting and waits for open connections");
}

// ---------------------------------------------------------------- handlers --

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

/// An ordinary slow request. Nothing special is needed: an accepted request
/// is never cut short by draining, only by the drain deadline.
async fn slow(Query(params): Query<SlowParams>) -> String {
    let ms = params.ms.unwrap_or(1000);
    tracing::info!(ms, "slow request started");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slow response after {ms} ms\n")
}

#[derive(Deserialize)]
struct StreamParams {
    chunks: Option<u32>,
}

/// `?chunks=N`: N chunks 200 ms apart, delivered in full even during
/// shutdown. Without `chunks`: streams until shutdown, then ends cleanly (a
/// stream that ignored the signal would hold the drain until the deadline).
async fn stream_chunks(signal: ShutdownSignal, Query(params): Query<StreamParams>) -> Body {
    struct State {
        next: u32,
        limit: Option<u32>,
        signal: ShutdownSignal,
        done: bool,
    }
    let state = State {
        next: 0,
        limit: params.chunks,
        signal,
        done: false,
    };
    let chunks = stream::unfold(state, |mut s| async move {
        if s.done || s.limit.is_some_and(|n| s.next >= n) {
            return None;
        }
        if s.next > 0 {
            let tick = tokio::time::sleep(Duration::from_millis(200));
            if s.limit.is_some() {
                tick.await; // a bounded response is always delivered whole
            } else {
                tokio::select! {
                    _ = tick => {}
                    _ = s.signal.draining() => {
                        s.done = true;
                        return Some((Ok::<_, Infallible>("end: server shutting down\n".to_owned()), s));
                    }
                }
            }
        }
        let line = format!("chunk {}\n", s.next);
        s.next += 1;
        Some((Ok(line), s))
    });
    Body::from_stream(chunks)
}

/// Server-sent events until shutdown, then a final `shutdown` event telling
/// the client when to reconnect (elsewhere), and a clean end of stream.
async fn sse(signal: ShutdownSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::unfold((0u64, Some(signal)), |(n, signal)| async move {
        let signal = signal?; // `None` once the final event was sent
        let wait = if n == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let event = Event::default().event("tick").id(n.to_string()).data(format!("tick {n}"));
                Some((Ok(event), (n + 1, Some(signal))))
            }
            _ = signal.draining() => {
                let event = Event::default()
                    .event("shutdown")
                    .data("server is restarting; reconnect")
                    .retry(Duration::from_secs(1));
                Some((Ok(event), (n, None)))
            }
        }
    });
    Sse::new(events)
}

/// An echo WebSocket. The session is tracked so the drain waits for it; on
/// shutdown it sends close 1012 ("service restart") and waits for the
/// client's close frame, or for the drain deadline.
async fn websocket(upgrade: WebSocketUpgrade, signal: ShutdownSignal) -> Response {
    // Taken before the upgrade response is sent, so there is no moment
    // between the request ending and the session starting when the drain
    // could think nothing is in flight.
    let guard = signal.track("websocket session");
    upgrade
        .on_upgrade(move |socket| async move {
            ws_session(socket, &signal).await;
            drop(guard);
        })
        .into_response()
}

async fn ws_session(mut socket: WebSocket, signal: &ShutdownSignal) {
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return, // client left
                Some(Ok(_)) => {} // binary, ping, pong: nothing to do
            },
            _ = signal.draining() => break,
        }
    }
    let close = CloseFrame {
        code: close_code::RESTART,
        reason: "service restart".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // The close handshake: wait for the client's close frame, but never past
    // the drain deadline.
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // late messages after our close are dropped
            },
            _ = signal.forced() => return,
        }
    }
}
