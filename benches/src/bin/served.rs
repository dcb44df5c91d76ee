//! One small axum app served by different server loops, for
//! `benches/served.sh` (issue 18): `GET /` answers `hello world`.
//!
//! ```text
//! served --server <serve|serve-bare|serve-bare-nt|serve-bare-noinfo|serve-around|axum|axum-graceful|hyper-util|hyper-util-timer> [--addr 127.0.0.1:0]
//! ```
//!
//! * `serve`: `tower_graceful::serve` with the graceful layer as the README
//!   shows it (`Router::layer(graceful.layer())`);
//! * `serve-bare`: `tower_graceful::serve` with the router alone (the loop's
//!   own cost, without the layer's);
//! * `serve-around`: `tower_graceful::serve` with the layer around the
//!   finished router (`ServiceBuilder::new().layer(graceful.layer())`);
//! * `serve-bare-nt`: `serve-bare` with `header_read_timeout(None)`: no
//!   per-request timer in hyper (what the header read timeout costs);
//! * `serve-bare-noinfo`: `serve-bare` with `connection_info(false)` (no
//!   `ConnectionInfo` / `ConnectInfo` inserted per request);
//! * `axum`: plain `axum::serve`;
//! * `axum-graceful`: `axum::serve` with the layer around the router and
//!   `with_graceful_shutdown(graceful.close_connections())`, exactly the
//!   README's wiring;
//! * `hyper-util`: hyper-util's `auto::Builder` (`TokioExecutor`,
//!   `TokioIo`) driven by a plain accept loop, the router through
//!   `TowerToHyperService`, one task per connection;
//! * `hyper-util-timer`: the same with a `TokioTimer` on HTTP/1, which turns
//!   on hyper's 30 s header read timeout, as `serve` has it.
//!
//! Every variant sets `TCP_NODELAY` on accepted sockets (`serve` does by
//! default; `axum::serve` through `tap_io`; the hyper-util loop itself), so
//! that Nagle's algorithm is not what is compared. Every variant speaks
//! HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port.
//!
//! Prints `listening on <addr>` once bound. Binds loopback only (an address
//! that is not loopback is refused). Runtime workers: `SERVER_WORKERS`
//! (default 1). Runs until killed (no signal handling: SIGTERM ends it at
//! once).

use std::io::Write;
use std::net::SocketAddr;

use axum::extract::Request;
use axum::ServiceExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower_graceful_benches::{coordinator, hello_router};

const USAGE: &str = "usage: served --server <serve|serve-bare|serve-bare-nt|serve-bare-noinfo|serve-around|axum|axum-graceful|hyper-util|hyper-util-timer> [--addr 127.0.0.1:0]";

fn main() {
    let mut server = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--server", Some(v)) => server = Some(v),
            ("--addr", Some(v)) => addr = v.parse().unwrap_or_else(|_| fail("bad --addr")),
            _ => fail(USAGE),
        }
    }
    let server = server.unwrap_or_else(|| fail(USAGE));
    if !addr.ip().is_loopback() {
        fail("--addr must be a loopback address");
    }
    let workers = std::env::var("SERVER_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&server, addr));
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2);
}

async fn run(server: &str, addr: SocketAddr) {
    let graceful = coordinator();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let local = listener.local_addr().expect("local addr");
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    let around = || {
        tower::ServiceBuilder::new()
            .layer(graceful.layer())
            .service(hello_router())
    };
    let result = match server {
        "serve" => {
            let app = hello_router().layer(graceful.layer());
            tower_graceful::serve(listener, app, &graceful).await
        }
        "serve-bare" => tower_graceful::serve(listener, hello_router(), &graceful).await,
        "serve-bare-nt" => {
            tower_graceful::connection::Server::new(&graceful)
                .header_read_timeout(None)
                .serve(listener, hello_router())
                .await
        }
        "serve-bare-noinfo" => {
            tower_graceful::connection::Server::new(&graceful)
                .connection_info(false)
                .serve(listener, hello_router())
                .await
        }
        "serve-around" => tower_graceful::serve(listener, around(), &graceful).await,
        "axum" => {
            let listener = axum::serve::ListenerExt::tap_io(listener, nodelay);
            axum::serve(listener, hello_router()).await
        }
        "axum-graceful" => {
            // The README's wiring, as it compiles there.
            let app = tower::ServiceBuilder::new()
                .map_response(|res: http::Response<_>| res.map(axum::body::Body::new))
                .layer(graceful.layer())
                .service(hello_router());
            let listener = axum::serve::ListenerExt::tap_io(listener, nodelay);
            axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
                .with_graceful_shutdown(graceful.close_connections())
                .await
        }
        "hyper-util" => hyper_util_loop(listener, false).await,
        "hyper-util-timer" => hyper_util_loop(listener, true).await,
        _ => fail(USAGE),
    };
    result.expect("serve");
}

fn nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// hyper-util's `auto` server with its defaults, in the shortest loop that
/// serves: accept, one task per connection, upgrades allowed (as
/// `axum::serve` does). `timer`: a `TokioTimer` on HTTP/1 (hyper's header
/// read timeout, 30 s by default, then applies).
async fn hyper_util_loop(listener: tokio::net::TcpListener, timer: bool) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if timer {
        builder.http1().timer(TokioTimer::new());
    }
    let app = hello_router();
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
    }
}
