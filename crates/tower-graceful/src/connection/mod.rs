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
//! | triggered (pre-drain delay) | still accepts: balancers notice only now | responses announce `Connection: close`, the share rising over the [lame-duck window](crate::Builder::lame_duck_window) ([`Drain`](crate::drain::Drain)) | each gets a graceful GOAWAY at a random point of the same window (one accepted after the trigger: when draining starts) |
//! | draining | **closed**: new connections go elsewhere | open ones are **not** cut: a request that still arrives is served, with `Connection: close` (the [policy](crate::drain)) | GOAWAY sent; streams in flight finish |
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
//! server does. TLS is out of scope: terminate it in front, or keep your own
//! accept loop with the layer and [`Coordinator::close_connections`].
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
//! tokio::spawn(tower_graceful::serve(listener, app, &graceful));
//! let report = graceful.wait().await;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::core::state::Shared;
use crate::core::sync::Arc;
use crate::Coordinator;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `service` on `listener` until the coordinator's shutdown is over,
/// owning the connections as the [module docs](crate::connection) describe.
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
pub fn serve<S, B>(
    listener: TcpListener,
    service: S,
    coordinator: &Coordinator,
) -> impl Future<Output = io::Result<()>> + Send + 'static
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let shared = coordinator.shared.clone();
    shared.connections.served.store(true, Ordering::Release);
    accept_loop(listener, service, shared)
}

async fn accept_loop<S, B>(listener: TcpListener, service: S, shared: Arc<Shared>) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    let mut draining = pin!(shared.soft.cancelled());
    loop {
        tokio::select! {
            biased;
            _ = &mut draining => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Counted before the task exists, so the count at the end
                    // of the drain includes connections not yet polled.
                    let open = Open::new(shared.clone());
                    // Accepted after the trigger: the balancer has not
                    // noticed yet. A GOAWAY now would only send the client
                    // back here; it gets one when draining starts.
                    let late = shared.triggered();
                    connections.spawn(connection(open, stream, service.clone(), late));
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    tracing::error!(target: "tower_graceful", error = %e, "accept failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = &mut draining => break,
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        target: "tower_graceful",
        addr = ?local,
        open = connections.len(),
        "draining: listener closed; open connections are still served"
    );
    let mut done = pin!(shared.done.wait());
    loop {
        tokio::select! {
            joined = connections.join_next() => if joined.is_none() { break },
            _ = &mut done => {
                // The report is out: after a forced stop, or after a clean
                // drain once the cleanup time is up (until then the report
                // waits for these tasks to end). The process is closing.
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
    Ok(())
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One open connection in `ConnectionCounts::open`. A connection that
/// `serve` closes because nothing was left in flight stays in the count
/// ([`Open::closed_idle`]): read after the drain, the count is then exactly
/// the connections open, all idle, when it completed, whichever task runs
/// first.
struct Open {
    shared: Arc<Shared>,
    counted: bool,
}

impl Open {
    fn new(shared: Arc<Shared>) -> Self {
        shared.connections.open.fetch_add(1, Ordering::AcqRel);
        shared.connections.task_started();
        Self {
            shared,
            counted: true,
        }
    }

    /// This connection is closed because the drain completed.
    fn closed_idle(&mut self) {
        if !self.shared.hard.is_cancelled() {
            self.counted = false;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.counted {
            self.shared.connections.open.fetch_sub(1, Ordering::AcqRel);
        }
        // Dropped with the connection task, after its socket (the task's
        // other locals go first): what the driver's cleanup waits for.
        self.shared.connections.task_ended();
    }
}

// `open` first: parameters are dropped in reverse order, so it goes last,
// after the stream (see `Open`'s `Drop`).
async fn connection<S, B>(mut open: Open, mut stream: TcpStream, service: S, late: bool)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let _ = stream.set_nodelay(true);
    // A reference of the connection's own: `open` is consumed on the way.
    let shared = open.shared.clone();
    let shared = &*shared;
    let mut close = pin!(close_connections(shared));
    // Tell HTTP/2 (prior knowledge) from HTTP/1.x by the first bytes. A
    // connection that has sent nothing by the end of the drain is idle.
    let mut head = [0u8; PREFACE.len()];
    let mut n = 0;
    let h2 = loop {
        tokio::select! {
            biased;
            _ = &mut close => {
                open.closed_idle();
                return;
            }
            read = stream.read(&mut head[n..]) => match read {
                Ok(0) | Err(_) => return,
                Ok(k) => {
                    n += k;
                    if head[..n] != PREFACE[..n] {
                        break false;
                    }
                    if n == PREFACE.len() {
                        break true;
                    }
                }
            },
        }
    };
    let (give_back, given_back) = tokio::sync::oneshot::channel();
    let io = TokioIo::new(Rewind {
        head,
        pos: 0,
        len: n,
        inner: Some(stream),
        give_back: Some(give_back),
    });
    let service = TowerToHyperService::new(service);
    // Each branch owns (and drops) hyper's connection, and with it the
    // stream, which then comes back here for a lingering close.
    if h2 {
        async {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service);
            let mut conn = pin!(conn);
            let at_end = tokio::select! {
                _ = conn.as_mut() => return,
                _ = goaway_time(shared, late) => false,
                _ = &mut close => true,
            };
            if at_end {
                open.closed_idle();
            }
            // Graceful: GOAWAY with the highest stream id first, so requests
            // already on the wire are still served; then the real last id.
            conn.as_mut().graceful_shutdown();
            shared.connections.goaway.fetch_add(1, Ordering::AcqRel);
            if !at_end {
                // Still open when the drain completes: closed then, idle.
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = &mut close => open.closed_idle(),
                }
            }
            finish(conn, shared).await;
        }
        .await;
    } else {
        async {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades();
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = &mut close => open.closed_idle(),
            }
            // Nothing is in flight (or the drain was cut short): an idle
            // connection closes now, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            finish(conn, shared).await;
        }
        .await;
    }
    // An upgraded connection (WebSocket) comes back when its session ends.
    let stream = tokio::select! {
        s = given_back => s,
        _ = shared.done.wait() => return,
    };
    if let Ok(stream) = stream {
        linger_close(stream, shared).await;
    }
}

/// Closes our end without destroying what the peer has not read yet. A
/// client may still have frames on the wire when the server is done with a
/// connection (an HTTP/2 request racing the GOAWAY, a PING ack, a window
/// update); arriving at a closed socket they make the kernel answer with a
/// reset, and a reset discards the client's unread data: the end of the
/// last response. So: send FIN, then read and discard until the client
/// closes its side, for at most a moment (or until the report is out).
async fn linger_close(mut stream: TcpStream, shared: &Shared) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 1024];
    let drain = async {
        // Bounded: at most this many reads, each ending the linger on EOF or
        // an error.
        for _ in 0..256 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = tokio::time::sleep(LINGER) => {}
        _ = shared.done.wait() => {}
    }
}

/// How long [`linger_close`] waits for the client to close its side.
const LINGER: Duration = Duration::from_millis(500);

/// Runs a connection told to shut down to its end, or until the report is
/// out after a forced stop.
async fn finish<F: Future>(conn: Pin<&mut F>, shared: &Shared) {
    tokio::select! {
        _ = conn => {}
        _ = shared.done.wait() => {}
    }
}

/// When nothing is left in flight after draining began, or the drain was cut
/// short.
async fn close_connections(shared: &Shared) {
    tokio::select! {
        _ = shared.tracker.drained() => {}
        _ = shared.hard.cancelled() => {}
    }
}

/// When this HTTP/2 connection gets its GOAWAY: at a random point of the
/// lame-duck window after the trigger, so reconnections spread out as
/// HTTP/1.x's do; for a connection accepted after the trigger, when
/// draining starts.
async fn goaway_time(shared: &Shared, late: bool) {
    if late {
        return shared.soft.cancelled().await;
    }
    shared.triggered.wait().await;
    let window = shared.policy.lame_duck_window;
    if window.is_zero() || shared.draining() {
        return;
    }
    let Some(t0) = shared.triggered_at.get().copied() else {
        return;
    };
    let at = window.mul_f64(crate::lame_duck::random_unit());
    tokio::select! {
        _ = tokio::time::sleep_until(t0 + at) => {}
        _ = shared.soft.cancelled() => {}
    }
}

/// The stream with the bytes read to tell the protocol put back in front.
/// When hyper drops it, the stream goes back to the connection task for a
/// lingering close.
struct Rewind {
    head: [u8; PREFACE.len()],
    pos: usize,
    len: usize,
    inner: Option<TcpStream>,
    give_back: Option<tokio::sync::oneshot::Sender<TcpStream>>,
}

impl Rewind {
    fn stream(&mut self) -> &mut TcpStream {
        self.inner.as_mut().expect("only taken on drop")
    }
}

impl Drop for Rewind {
    fn drop(&mut self) {
        if let (Some(stream), Some(tx)) = (self.inner.take(), self.give_back.take()) {
            let _ = tx.send(stream);
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(this.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_shutdown(cx)
    }
}
