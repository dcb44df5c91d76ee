//! What `serve` puts around the user's service on each connection: the
//! [`ConnectionInfo`] in every request's extensions (and axum's
//! `ConnectInfo` with feature `axum`), and response bodies that the
//! connection can end when the drain is over.
//!
//! Why bodies: when nothing tracked is left in flight, a response body that
//! is still open belongs to a request the user chose not to track (a gRPC
//! health `Watch`, an untracked stream). Nothing would ever end it, and its
//! connection would hold the shutdown until the cleanup time is up. So each
//! connection has a `reset` token, cancelled when the drain completes; a
//! body that then waits for its next frame ends with an error, which hyper
//! turns into a reset of that stream (HTTP/2) or a close of the connection
//! (HTTP/1.1). A body that still has frames ready is not cut: a tracked
//! body that has ended never waits again, so the end of a tracked response
//! is never turned into an error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_service::Service;

use super::goaway::{OpenStreams, StreamGuard};
use super::BoxError;
use crate::answer::ProbeAnswer;

/// Where a request came from, in every request's extensions under
/// [`serve`](super::serve).
///
/// `A` is the listener's address type: [`std::net::SocketAddr`] for TCP
/// (and TLS over TCP), `tokio::net::unix::SocketAddr` for Unix sockets.
///
/// ```
/// # use std::net::SocketAddr;
/// use tower_graceful::connection::ConnectionInfo;
///
/// fn peer(req: &http::Request<()>) -> Option<SocketAddr> {
///     req.extensions().get::<ConnectionInfo>().map(|c| c.peer)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo<A = std::net::SocketAddr> {
    /// The peer's address.
    pub peer: A,
    /// The local address this connection reached (for a listener on a
    /// wildcard address, the one the peer connected to).
    pub local: A,
}

impl<A> ConnectionInfo<A> {
    /// The info of one connection.
    pub fn new(peer: A, local: A) -> Self {
        Self { peer, local }
    }
}

/// One connection's way to end its untracked responses when the drain
/// completes: cancelled then; each body that then waits for a frame ends
/// with an error (counted for the report).
pub(crate) struct Reset {
    pub(crate) token: CancellationToken,
    pub(crate) owner: super::Owner,
}

/// The user's service on one connection.
///
/// hyper-util clones it for every request, and each response holds the
/// token until its body ends: behind an `Arc`, that is one count up and
/// down, where cloning a `CancellationToken` locks its node twice.
#[derive(Clone)]
pub(crate) struct ConnService<S, A> {
    pub(crate) inner: S,
    /// `None` with `Server::connection_info(false)`.
    pub(crate) info: Option<ConnectionInfo<A>>,
    pub(crate) reset: Arc<Reset>,
    /// For a connection accepted after the trigger: the state, whose
    /// pre-drain evidence each of its requests that is not a probe is
    /// (`None` for the others, so a connection accepted before the trigger
    /// pays one branch).
    pub(crate) late: Option<super::Owner>,
}

impl<S, A, B> Service<Request<hyper::body::Incoming>> for ConnService<S, A>
where
    S: Service<Request<hyper::body::Incoming>, Response = Response<B>>,
    A: Clone + Send + Sync + 'static,
{
    type Response = Response<ConnBody<B>>;
    type Error = S::Error;
    type Future = ConnFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(info) = &self.info {
            let ext = req.extensions_mut();
            #[cfg(feature = "axum")]
            ext.insert(axum::extract::ConnectInfo(info.peer.clone()));
            ext.insert(info.clone());
        }
        ConnFuture {
            inner: self.inner.call(req),
            reset: Some(self.reset.clone()),
            late: self.late.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`ConnService`].
    pub(crate) struct ConnFuture<F> {
        #[pin]
        inner: F,
        reset: Option<Arc<Reset>>,
        // See `ConnService::late`.
        late: Option<super::Owner>,
    }
}

impl<F, B, E> Future for ConnFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ConnBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        if let Some(owner) = this.late.take() {
            // Recorded when the response head is ready, where a probe's
            // answer can be told apart (a long request counts late, which
            // only lengthens the quiet window).
            if res.extensions().get::<ProbeAnswer>().is_none() {
                owner.evidence.arrivals.record();
            }
        }
        let reset = this.reset.take().expect("polled after completion");
        Poll::Ready(Ok(res.map(|inner| ConnBody {
            inner,
            reset,
            waiting: None,
            stream: None,
        })))
    }
}

pin_project! {
    /// A response body on a connection of `serve`: the user's, ended with
    /// an error if it is still waiting for a frame when the drain is over.
    pub(crate) struct ConnBody<B> {
        #[pin]
        inner: B,
        reset: Arc<Reset>,
        // Made on the first wait only: a body whose frames are ready when
        // polled never needs it.
        #[pin]
        waiting: Option<WaitForCancellationFutureOwned>,
        // HTTP/2: this stream counts as open on its connection until the
        // body gives its last frame (or is dropped).
        pub(crate) stream: Option<StreamGuard>,
    }
}

/// The error a body open at the end of the drain ends with.
#[derive(Debug)]
struct ResetAtDrainEnd;

impl std::fmt::Display for ResetAtDrainEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("untracked response still open when the drain completed: reset")
    }
}

impl std::error::Error for ResetAtDrainEnd {}

impl<B> Body for ConnBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            // The last frame: the stream no longer counts as open, before
            // hyper hands the frame to h2. So the connection's GOAWAY, if
            // it waits for this moment, is queued before this frame, and
            // the client reads the GOAWAY first: its next call then fails
            // as canceled, unsent (which clients retry), never as sent on
            // a connection already going away.
            if this.stream.is_some()
                && match &frame {
                    Some(Ok(f)) => f.is_trailers() || this.inner.is_end_stream(),
                    _ => true,
                }
            {
                *this.stream = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.waiting.is_none() {
            this.waiting
                .set(Some(this.reset.token.clone().cancelled_owned()));
        }
        let waiting = this.waiting.as_pin_mut().expect("set above");
        ready!(waiting.poll(cx));
        // Relaxed: a count for the report, read after the connections
        // closed (or the cleanup time is up).
        this.reset
            .owner
            .connections
            .streams_reset
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(target: "tower_graceful", "{ResetAtDrainEnd}");
        Poll::Ready(Some(Err(ResetAtDrainEnd.into())))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper service of an HTTP/2 connection of `serve`: each request
/// holds the drain open from hyper's `call` until its response future has
/// completed (or is dropped).
///
/// Why: hyper's HTTP/2 server calls the service synchronously while it
/// reads the request's HEADERS, but hyper-util's tower adapter defers the
/// tower `call` (and so the layer's count) to the request's own task, which
/// runs later. The connection's hold on the drain ends once the client's
/// ack of the GOAWAY's PING has been read (`conn.rs`); a request read just
/// before the ack would otherwise reach the layer only after the drain
/// completed, and be rejected.
///
/// Which hold: while the connection's own hold is alive, a request shares
/// it (an upgrade of a per-connection `Weak`: one read-modify-write on a
/// count only this connection's streams touch, nothing global). So a
/// request that hyper called *before* the trigger, whose task first runs
/// after the exchange is over, still finds the drain open: a check of the
/// phase at `call` would miss exactly that request (checked before the
/// trigger, acted on after it). Once the connection has let its hold go,
/// a request called after the trigger takes a hold of its own.
///
/// Each request also counts as an open stream of its connection
/// ([`OpenStreams`]) from `call` until its response body gives its last frame: the
/// connection's GOAWAY waits for a moment with none open (`goaway.rs`).
pub(crate) struct Held<S> {
    pub(crate) inner: S,
    pub(crate) shared: super::Owner,
    /// The connection's hold (see `conn.rs`), while it lives.
    pub(crate) connection: std::sync::Weak<crate::core::guard::DrainHold>,
    /// The connection's open streams.
    pub(crate) streams: std::sync::Arc<OpenStreams>,
}

/// The hold a request of [`Held`] keeps until its response future is done.
enum RequestHold {
    Connection(#[allow(dead_code)] std::sync::Arc<crate::core::guard::DrainHold>),
    Own(#[allow(dead_code)] crate::core::guard::DrainHold),
}

impl<S, R, B> hyper::service::Service<R> for Held<S>
where
    S: hyper::service::Service<R, Response = Response<ConnBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = HeldFuture<S::Future>;

    #[inline]
    fn call(&self, req: R) -> Self::Future {
        let hold = match self.connection.upgrade() {
            Some(hold) => Some(RequestHold::Connection(hold)),
            // The connection's hold is gone: its exchange is over (or the
            // drain completed). Before the trigger no drain can complete;
            // after it, a hold of the request's own (none once the drain
            // has completed: the layer answers the request then).
            None if self.shared.triggered() => {
                crate::core::guard::DrainHold::acquire(&self.shared).map(RequestHold::Own)
            }
            None => None,
        };
        HeldFuture {
            stream: Some(self.streams.open()),
            inner: self.inner.call(req),
            hold,
        }
    }
}

pin_project! {
    /// The response future of [`Held`].
    pub(crate) struct HeldFuture<F> {
        #[pin]
        inner: F,
        hold: Option<RequestHold>,
        // Moved into the response body; dropped here if there is none.
        stream: Option<StreamGuard>,
    }
}

impl<F, B, E> Future for HeldFuture<F>
where
    F: Future<Output = Result<Response<ConnBody<B>>, E>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = ready!(this.inner.poll(cx));
        // The layer has counted (or answered) the request by now.
        *this.hold = None;
        if let Ok(res) = &mut out {
            res.body_mut().stream = this.stream.take();
        }
        Poll::Ready(out)
    }
}
