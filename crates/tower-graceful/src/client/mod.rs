//! Transparent retry for gRPC clients (feature `client`): a call that
//! provably never left the client is sent again, once the connection it
//! was queued on has gone.
//!
//! # Why
//!
//! hyper's HTTP/2 client (under tonic's `Channel`) fails a call that it
//! queued on a connection just told to go away: the connection's dispatch
//! task notices the GOAWAY only when that call wakes it, and then drops the
//! call unsent (`operation was canceled: connection closed`, hyper#2500).
//! A server can choose the moment of its GOAWAY ([`serve`](crate::serve)
//! sends it when the connection has no stream open), but a client whose
//! calls follow each other back to back (a stream loop, a busy pool) has
//! no such moment, and the race is the client's own. gRPC's core
//! implementations retry exactly these calls themselves, whatever the
//! retry policy ("transparent retry", gRFC A6: an RPC that never left the
//! client); tonic does not. [`TransparentRetry`] does it, below the
//! generated client:
//!
//! ```no_run
//! # #[derive(Clone)] struct DemoClient<T>(T);
//! # impl<T> DemoClient<T> { fn new(t: T) -> Self { Self(t) } }
//! use tower_graceful::client::TransparentRetry;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let client = DemoClient::new(TransparentRetry::new(channel));
//! # Ok(()) }
//! ```
//!
//! (the generated client of your service in place of `DemoClient`), or as
//! a layer: `ServiceBuilder::new().layer(TransparentRetryLayer::new())`.
//!
//! # Which calls, exactly
//!
//! A call is sent again only if **both** hold:
//!
//! * **It never left the client.** The error (or one of its sources) is
//!   hyper's [`hyper::Error`] with [`is_canceled`](hyper::Error::is_canceled):
//!   hyper gives that error only to a request it dropped from its queue
//!   before handing it to the connection (`connection closed`, `connection
//!   was not ready`). Nothing else is retried: not a stream refused by the
//!   server's GOAWAY, not a reset, not a timeout, not any gRPC status (a
//!   server's `UNAVAILABLE` is for a retry *policy*, with backoff and
//!   budgets: tonic leaves that to the application, and so does this
//!   layer).
//! * **Its body can be sent again.** The request body is read before the
//!   call is made, as far as it is ready at once, up to
//!   [`max_body`](TransparentRetry::max_body) (64 KiB by default): a unary
//!   call's body (one message, ready when the call is made) is kept, a
//!   client-streaming body (waiting for its next message) or a larger one
//!   is sent as it comes, and that call is never retried.
//!
//! At most [`max_retries`](TransparentRetry::max_retries) times (2 by
//! default) per call; each retry first waits until the service is ready
//! again (tonic's `Channel` reconnects then).
//!
//! The service must be `Clone` (tonic's `Channel` and hyper-util's client
//! are): the retry needs a ready service of its own. The body type must be
//! [`RebuildBody`] (tonic's `Body` is).
//!
//! # Where this differs from gRPC core
//!
//! grpc-go and C-core also retry, once, a stream the server refused
//! unprocessed (`REFUSED_STREAM`, or above a GOAWAY's last stream id). From
//! hyper's errors that case cannot be told from a stream that the server did
//! process and whose connection then closed (both end as the same h2
//! `GOAWAY` error), so this layer leaves it alone: nothing that reached a
//! server is ever sent twice.

mod body;
mod future;

use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

pub use self::body::RebuildBody;
pub use self::future::ResponseFuture;

/// The default [`TransparentRetry::max_body`]: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// The default [`TransparentRetry::max_retries`].
pub const DEFAULT_MAX_RETRIES: usize = 2;

/// Layer that applies [`TransparentRetry`].
#[derive(Debug, Clone, Copy)]
pub struct TransparentRetryLayer {
    max_body: usize,
    max_retries: usize,
}

impl TransparentRetryLayer {
    /// The layer with the defaults ([`DEFAULT_MAX_BODY`],
    /// [`DEFAULT_MAX_RETRIES`]).
    pub fn new() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }

    /// See [`TransparentRetry::max_body`].
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// See [`TransparentRetry::max_retries`].
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }
}

impl Default for TransparentRetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TransparentRetryLayer {
    type Service = TransparentRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TransparentRetry {
            inner,
            max_body: self.max_body,
            max_retries: self.max_retries,
        }
    }
}

/// Sends a call again when it provably never left the client (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct TransparentRetry<S> {
    inner: S,
    max_body: usize,
    max_retries: usize,
}

impl<S> TransparentRetry<S> {
    /// Wraps `inner` with the defaults.
    pub fn new(inner: S) -> Self {
        TransparentRetryLayer::new().layer(inner)
    }

    /// A layer with the defaults.
    pub fn layer() -> TransparentRetryLayer {
        TransparentRetryLayer::new()
    }

    /// The most request body kept for a retry, in bytes: a call whose body
    /// is larger is sent as it comes and never retried.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// How many times one call is sent again, at most (0: never).
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for TransparentRetry<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: std::error::Error + 'static,
    B: RebuildBody,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service goes with the call; a clone stays here, to be
        // made ready again before the next call (tower-service docs).
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(ready, req, self.max_body, self.max_retries)
    }
}

/// Whether `error` says the request never left the client: one of its
/// sources is a [`hyper::Error`] that [`is_canceled`](hyper::Error::is_canceled).
pub fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    // Bounded: error chains are short; a cyclic one ends here.
    for _ in 0..16 {
        let Some(e) = cur else { return false };
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_canceled();
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests;
