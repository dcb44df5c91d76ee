//! [`Server`]: the settings of `serve`, with hyper's own HTTP/1 and HTTP/2
//! builders inside.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::settings::Settings;
use super::{accept, BoxError, Listener, Owner};
use crate::Coordinator;

/// hyper's default header read timeout, which takes effect only with a
/// timer (which [`Server`] always sets).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`Server::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A configured `serve`: hyper's HTTP/1 and HTTP/2 settings, the timer,
/// the connection limit and the TCP options, for any [`Listener`].
///
/// [`serve`](super::serve) is `Server::new(coordinator).serve(..)` with the
/// defaults:
///
/// | setting | default | set with |
/// |---|---|---|
/// | HTTP/1 and HTTP/2 settings | hyper's (HTTP/2: extended CONNECT on, for WebSockets over HTTP/2, as axum does) | [`http1`](Self::http1), [`http2`](Self::http2) |
/// | timer | [`TokioTimer`] on both, so hyper's timeouts work | – |
/// | header read timeout | 30 s (hyper's), also for the first bytes and the TLS handshake | [`header_read_timeout`](Self::header_read_timeout) |
/// | connection limit | none | [`max_connections`](Self::max_connections) |
/// | `TCP_NODELAY` | on | [`tcp_nodelay`](Self::tcp_nodelay) |
/// | TCP keep-alive | off (the system's) | [`tcp_keepalive`](Self::tcp_keepalive) |
/// | stall timeout after the drain | 2 s | [`stall_timeout`](Self::stall_timeout) |
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_graceful::{connection::Server, Coordinator};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let graceful = Coordinator::builder().build()?;
/// let app = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(graceful.layer());
/// let server = Server::new(&graceful)
///     .header_read_timeout(Duration::from_secs(10))
///     .max_connections(10_000)
///     .tcp_keepalive(Some(Duration::from_secs(60)))
///     .http1(|h1| {
///         h1.max_headers(64);
///     })
///     .http2(|h2| {
///         h2.max_concurrent_streams(100)
///             .keep_alive_interval(Duration::from_secs(20));
///     });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// tokio::spawn(server.serve(listener, app));
/// println!("{}", graceful.wait().await);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    owner: Owner,
    settings: Settings,
    max_connections: Option<usize>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("settings", &self.settings)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `coordinator`'s shutdown, with the defaults of the table
    /// above.
    pub fn new(coordinator: &Coordinator) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new()).enable_connect_protocol();
        Self {
            owner: coordinator.shared.clone(),
            settings: Settings {
                http1: h1,
                http2: h2,
                header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                nodelay: true,
                keepalive: None,
                connection_info: true,
            },
            max_connections: None,
        }
    }

    /// Changes hyper's HTTP/1 settings (keep-alive, max headers, buffer
    /// sizes, half close, …). The timer is set already; set the header read
    /// timeout with [`header_read_timeout`](Self::header_read_timeout), which
    /// also bounds the first bytes.
    pub fn http1(mut self, f: impl FnOnce(&mut http1::Builder)) -> Self {
        f(&mut self.settings.http1);
        self
    }

    /// Changes hyper's HTTP/2 settings (max concurrent streams, windows,
    /// keep-alive pings, max header list size, …). The timer is set already.
    pub fn http2(mut self, f: impl FnOnce(&mut http2::Builder<TokioExecutor>)) -> Self {
        f(&mut self.settings.http2);
        self
    }

    /// How long a client may take to send a whole request head (HTTP/1.x),
    /// counted from the connection's start or the end of its previous
    /// response. The same bound applies to a new connection's first bytes
    /// (and its TLS handshake), whatever the protocol. `None`: no bound
    /// (not recommended: a client that never finishes its head then holds a
    /// task and a descriptor until the drain is over). Default 30 s.
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        let timeout = timeout.into();
        self.settings.header_read_timeout = timeout;
        self.settings.http1.header_read_timeout(timeout);
        self
    }

    /// At most `max` connections open at once: at the limit the accept loop
    /// waits until one closes (new connections wait in the kernel's backlog;
    /// none is dropped). The connections still queued when draining starts
    /// are taken beyond the limit (at most a backlog's worth), so that none
    /// is reset. No limit by default.
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    pub fn max_connections(mut self, max: usize) -> Self {
        assert!(max > 0, "max_connections must be at least 1");
        self.max_connections = Some(max);
        self
    }

    /// Whether every request carries the connection's
    /// [`ConnectionInfo`](super::ConnectionInfo) (and, with feature `axum`,
    /// axum's `ConnectInfo`) in its extensions. On by default; off saves
    /// the two inserts per request (about 700 instructions of 13,800 for a
    /// small HTTP/1.1 request, `BENCHMARKS.md` Round 7) for an application
    /// that never asks where a request came from.
    pub fn connection_info(mut self, on: bool) -> Self {
        self.settings.connection_info = on;
        self
    }

    /// `TCP_NODELAY` on accepted TCP connections (on by default: responses
    /// are written whole, and Nagle's delay only adds latency).
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.settings.nodelay = nodelay;
        self
    }

    /// TCP keep-alive probes on accepted TCP connections, after this long
    /// idle (`None`, the default: the system's setting, usually off).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.settings.keepalive = idle;
        self
    }

    /// Once the drain is over, a connection still open on which no byte has
    /// moved (in or out) for this long is cut: a client that stopped
    /// reading its response, a half-sent request head. One that still
    /// receives its last response, however slowly, is not. Default 2 s.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stall_timeout = timeout;
        self
    }

    /// Serves `service` on `listener` until the coordinator's shutdown is
    /// over, as [`serve`](super::serve) does, with these settings.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, by design: see [`serve`](super::serve).
    pub fn serve<L, S, B>(
        &self,
        listener: L,
        service: S,
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
        self.owner
            .connections
            .served
            .store(true, std::sync::atomic::Ordering::Release);
        accept::run(
            listener,
            service,
            self.owner.clone(),
            Arc::new(self.settings.clone()),
            self.max_connections,
        )
    }
}
