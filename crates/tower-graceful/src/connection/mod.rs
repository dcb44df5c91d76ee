//! A server loop that owns the connections, so a drain loses nothing behind
//! L4 load balancers and client connection pools (feature `serve`).
//!
//! An L4 balancer (a Kubernetes Service, IPVS, a cloud NLB) and every client
//! with a connection pool can move only *new* connections: an established
//! keep-alive connection stays on this instance until one side closes it.
//! `axum::serve(..).with_graceful_shutdown(..)` and tonic's
//! `serve_with_shutdown(..)` close the listener and every connection in one
//! step, so an idle keep-alive connection is closed under a client that is
//! about to send on it ("connection closed before message completed"), and
//! HTTP/2 gets its GOAWAY only then. [`serve`] separates the two:
//!
//! | when | the listener | HTTP/1.x connections | HTTP/2 connections |
//! |---|---|---|---|
//! | serving | accepts | served | served |
//! | triggered (pre-drain delay) | still accepts: balancers notice only now | responses announce `Connection: close`, the share rising over the [lame-duck window](crate::Builder::lame_duck_window) ([`Drain`](crate::drain::Drain)) | each gets a graceful GOAWAY from a random point of the same window on, at the first calm moment: no stream open, and none ended just before the last one (one accepted after the trigger: from when draining starts) |
//! | draining | **closed**: new connections go elsewhere | open ones are **not** cut: a request that still arrives is served, with `Connection: close` (the [policy](crate::drain)) | one without a calm moment yet gets one more window (at most half the time left) to have one, then its GOAWAY whatever is open; streams in flight finish; the drain does not complete before each connection's GOAWAY exchange is over (the client's PING ack read, or the stall timeout), so a request that crossed the GOAWAY is served |
//! | nothing left in flight | – | the remaining ones, all idle, are closed | closed as their last stream ends |
//! | deadline / second signal | – | closed once the report is out | the same |
//!
//! The future returned by [`serve`] completes once the listener is closed
//! and every connection has ended (or, after a forced stop, once the
//! coordinator's report is out): there is no fixed linger, the process can
//! exit as soon as the last response has ended.
//!
//! A response has ended for the drain when hyper has *taken* its body's last
//! frame, which is not yet when that frame is on the wire (HTTP/2 may still
//! hold it in its send queue, behind the client's flow-control window). So
//! after a clean drain the coordinator's report, and with it
//! [`Coordinator::wait`], also waits until every connection of `serve` has
//! written everything, sent its FIN and finished its lingering close
//! (alongside the cleanup hooks, within the
//! [cleanup timeout](crate::Builder::cleanup_timeout)): a process that exits
//! when `wait` returns cuts no response short. Connections still open when
//! that time is up are closed once the report is out.
//!
//! Serve a service that has [`Coordinator::layer`] applied (the announcement
//! of the close and the counting are the layer's work; [`serve`] does the
//! connections). Any tower service of `http` requests does: an axum
//! `Router`, tonic's `Routes`, a `ServiceBuilder` stack around either.
//! HTTP/1.1 (with upgrades, for WebSockets) and HTTP/2 with prior knowledge
//! (gRPC) are told apart by the connection preface, as hyper-util's `auto`
//! server does.
//!
//! What else a production server needs:
//!
//! * **Settings** ([`Server`]): hyper's own HTTP/1 and HTTP/2 builders, a
//!   timer (so the header read timeout works: 30 s by default, also for a
//!   connection's first bytes and its TLS handshake), a connection limit
//!   (the accept loop waits at it), `TCP_NODELAY` and TCP keep-alive.
//! * **Any listener** ([`Listener`], the shape of axum 0.8's): TCP, Unix
//!   sockets, sockets passed by systemd (they are `TcpListener`s), and TLS
//!   through rustls ([`TlsListener`], feature `tls`), ALPN offering `h2` and
//!   `http/1.1`.
//! * **Connection info**: every request carries a [`ConnectionInfo`] (the
//!   peer's and the local address) and, with feature `axum`, axum's
//!   `ConnectInfo<addr>`, so `ConnectInfo<SocketAddr>` works in handlers
//!   with no extra wiring.
//! * **Nothing the kernel accepted is reset**: at drain start the
//!   connections already in the listener's backlog are taken (a
//!   non-blocking `accept` until the kernel says none is queued) and served
//!   like any other, and only then is the listener closed. Closing the
//!   listener with them queued would reset them after their clients may have
//!   sent their requests. What is left is the time between the kernel's last
//!   "none queued" and the close, microseconds, in which a new connection
//!   can still complete its handshake.
//! * **Every end is bounded** (see [`conn`](self#the-states-of-a-connection)):
//!   a request head that never ends (the header read timeout), an untracked
//!   response still open when the drain is over (ended: HTTP/2 resets its
//!   stream, HTTP/1.1 closes), a client that never reads, a half-sent head
//!   after the drain ([`Server::stall_timeout`]), a peer that never closes
//!   during the lingering close (half a second). A panic in a connection's
//!   task is logged.
//! * **Bad input** gets hyper's answers: a malformed request head `400`, one
//!   too large for the read buffer `431`, then the connection is closed.
//!
//! # The states of a connection
//!
//! Sniff → serve HTTP/1.x or HTTP/2 → told to close → closing → lingering:
//! each state, what moves a connection on and what bounds it, is written
//! down in `connection/conn.rs`.
//!
//! # Example
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder()
//!     .pre_drain_delay(std::time::Duration::from_secs(5))
//!     .readiness_path("/ready")
//!     .build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(graceful.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Or with settings:
//! // `Server::new(&graceful).header_read_timeout(Duration::from_secs(5)).serve(listener, app)`.
//! tokio::spawn(tower_graceful::serve(listener, app, &graceful));
//! let report = graceful.wait().await;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::io;

use http::{Request, Response};
use hyper::body::Incoming;
use tower_service::Service;

use crate::Coordinator;

mod accept;
mod builder;
mod conn;
mod goaway;
mod listener;
mod on_wake;
mod service;
mod settings;
#[cfg(feature = "tls")]
mod tls;

pub use builder::{Server, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_STALL_TIMEOUT};
pub use listener::Listener;
pub use service::ConnectionInfo;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{TlsIo, TlsListener, ALPN};

type BoxError = Box<dyn StdError + Send + Sync>;

/// What the connection tasks hold of the coordinator's state: a clonable
/// owner that derefs to it. The one place this module names its type.
type Owner = crate::core::sync::Arc<crate::core::state::Shared>;

/// Serves `service` on `listener` until the coordinator's shutdown is over,
/// owning the connections as the [module docs](crate::connection) describe,
/// with the default settings ([`Server`] for others).
///
/// `listener` is any [`Listener`]: a `tokio::net::TcpListener`, a
/// `tokio::net::UnixListener`, a [`TlsListener`](crate::connection) around
/// either (feature `tls`), or your own.
///
/// The future is `'static` and `Send`: spawn it, and wait for the
/// coordinator ([`Coordinator::wait`]) in `main`. It resolves once the
/// listener is closed and every connection has ended; accept errors (for
/// example too many open files) are logged and retried after a short pause,
/// never returned.
///
/// # Cancel safety
///
/// Not cancel safe, by design: the future owns the listener and every
/// connection (tasks of a `JoinSet`). Dropping it closes the listener and
/// aborts the connections at once, requests in flight included; to stop
/// gracefully, trigger the coordinator and let the future end by itself.
pub fn serve<L, S, B>(
    listener: L,
    service: S,
    coordinator: &Coordinator,
) -> impl Future<Output = io::Result<()>> + Send + 'static
where
    L: Listener,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(coordinator).serve(listener, service)
}
