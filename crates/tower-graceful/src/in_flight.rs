//! Body-aware in-flight counting.
//!
//! [`InFlight`] counts a request from `call` until its response **body** ends
//! (or errors, or is dropped). The guard taken in `call` moves from the
//! [`ResponseFuture`] into the [`ResponseBody`], so a streaming response, an
//! SSE stream or a gRPC stream keeps the drain waiting until its last frame.
//! Every way out releases it exactly once: the body finishing, the body being
//! dropped early (client gone), the future being dropped (client gone before
//! the response), the inner service returning an error, and a handler
//! panicking (unwinding drops the future).
//!
//! Unlike a concurrency limit, which stops counting when the response future
//! resolves (tower-http #447), the count here ends with the body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::signal::CurrentSignal;
use crate::state::Shared;
use crate::tracker::RequestGuard;
use crate::Coordinator;

/// Layer that applies [`InFlight`].
#[derive(Clone)]
pub struct InFlightLayer {
    shared: &'static Shared,
    untracked: &'static [String],
}

impl InFlightLayer {
    /// Counts requests for `coordinator`.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            shared: coordinator.shared_static(),
            untracked: &coordinator.config().untracked,
        }
    }
}

impl fmt::Debug for InFlightLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            shared: self.shared,
            untracked: self.untracked,
        }
    }
}

/// Middleware that counts each request until its response body ends.
///
/// Body-aware in-flight counting.
///
/// [`InFlight`] counts a request from `call` until its response **body** ends
/// (or errors, or is dropped). The guard taken in `call` moves from the
/// [`ResponseFuture`] into the [`ResponseBody`], so a streaming response, an
/// SSE stream or a gRPC stream keeps the drain waiting until its last frame.
/// Every way out releases it exactly once: the body finishing, the body being
/// dropped early (client gone), the future being dropped (client gone before
/// the response), the inner service returning an error, and a handler
/// panicking (unwinding drops the future).
///
/// Unlike a concurrency limit, which stops counting when the response future
/// resolves (tower-http #447), the count here ends with the body.
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    shared: &'static Shared,
    untracked: &'static [String],
}

impl<S> InFlight<S> {
    /// Wraps `inner`, counting for `coordinator`.
    pub fn new(inner: S, coordinator: &Coordinator) -> Self {
        InFlightLayer::new(coordinator).layer(inner)
    }

    /// Returns a [`Layer`] that wraps services with this middleware.
    pub fn layer(coordinator: &Coordinator) -> InFlightLayer {
        InFlightLayer::new(coordinator)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for InFlight<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlight<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Nothing is counted here: `poll_ready` may be called without a
        // `call` following it (axum ignores readiness entirely).
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The guard is taken before the inner `call`, so a panic inside it
        // unwinds through the guard's `Drop` and is released.
        let path = req.uri().path();
        let guard = if self.untracked.iter().any(|p| p == path) {
            None
        } else {
            Some(RequestGuard::new(&self.shared.tracker, req.method(), path))
        };
        let _current = CurrentSignal::enter(self.shared);
        ResponseFuture::new(self.inner.call(req), guard, self.shared)
    }
}

pin_project! {
    /// Response future of [`InFlight`]: holds the guard until the response
    /// is ready, then hands it to the [`ResponseBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
        shared: &'static Shared,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, guard: Option<RequestGuard>, shared: &'static Shared) -> Self {
        Self {
            inner,
            guard,
            shared,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = {
            let _current = CurrentSignal::enter(this.shared);
            ready!(this.inner.poll(cx))
        };
        let guard = this.guard.take();
        Poll::Ready(res.map(|res| {
            res.map(|inner| {
                // A body that is already finished releases at once: hyper may
                // drop it without polling.
                let guard = if inner.is_end_stream() { None } else { guard };
                ResponseBody {
                    inner,
                    guard,
                    shared: this.shared,
                }
            })
        }))
    }
}

pin_project! {
    /// Response body of [`InFlight`]: releases the request's guard when the
    /// body ends, fails, or is dropped. Forwards `is_end_stream` and the exact
    /// `size_hint`, so fixed-length responses stay fixed-length.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
        shared: &'static Shared,
    }
}

impl<B> ResponseBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("counted", &self.guard.is_some())
            .finish()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = {
            // Streams (SSE, gRPC server streaming) produced lazily in the
            // body see the signal too.
            let _current = CurrentSignal::enter(this.shared);
            ready!(inner.as_mut().poll_frame(cx))
        };
        let finished = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => inner.is_end_stream(),
        };
        if finished {
            // Drop releases; `take` makes it happen exactly once.
            this.guard.take();
        }
        Poll::Ready(frame)
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
