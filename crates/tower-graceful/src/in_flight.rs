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

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::drain::{Answer, RejectConfig};
use crate::signal::CurrentSignal;
use crate::state::Shared;
use crate::tracker::{Admission, RequestGuard};
use crate::Coordinator;

/// Layer that applies [`InFlight`].
#[derive(Clone)]
pub struct InFlightLayer {
    shared: &'static Shared,
    untracked: &'static [String],
    reject: &'static RejectConfig,
}

impl InFlightLayer {
    /// Counts requests for `coordinator`.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            shared: coordinator.shared_static(),
            untracked: &coordinator.config().untracked,
            reject: &coordinator.config().reject,
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
            reject: self.reject,
        }
    }
}

/// Middleware that counts each request until its response body ends.
///
/// The guard taken in `call` moves from the [`ResponseFuture`] into the
/// [`ResponseBody`]; every way out releases it exactly once (see the
/// [module docs](crate::in_flight)).
///
/// Once the drain has completed (draining began and nothing was left in
/// flight), the counter refuses new requests in the same atomic step that
/// would count them, and this service answers them with the draining
/// rejection instead of calling the inner service: nothing is served after
/// [`Coordinator::drained`](crate::Coordinator::drained) resolved, so cleanup
/// hooks never race a late request.
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    shared: &'static Shared,
    untracked: &'static [String],
    reject: &'static RejectConfig,
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

/// What the counter decided for one request (shared by [`InFlight`] and the
/// fused [`Graceful`](crate::Graceful)).
pub(crate) enum Counted {
    /// Call the inner service; the guard (if tracked) goes with the response.
    Serve(Option<RequestGuard>),
    /// Answer with the draining rejection; nothing is counted.
    Reject,
}

/// Counts a tracked request, then applies the draining policy: refused by
/// the counter once the drain completed, or admitted while draining but too
/// late to finish (released again). Exempt paths are always served.
#[inline]
pub(crate) fn count<B>(
    shared: &'static Shared,
    reject: &RejectConfig,
    req: &Request<B>,
) -> Counted {
    match RequestGuard::new(&shared.tracker, req.method(), req.uri().path()) {
        Ok((guard, Admission::Serving)) => Counted::Serve(Some(guard)),
        Ok((guard, Admission::Draining)) => late(shared, reject, req, Some(guard)),
        Err(_refused) => late(shared, reject, req, None),
    }
}

#[cold]
#[inline(never)]
fn late<B>(
    shared: &'static Shared,
    reject: &RejectConfig,
    req: &Request<B>,
    guard: Option<RequestGuard>,
) -> Counted {
    let exempt = reject.is_exempt(req.uri().path());
    match guard {
        // Refused by the counter: the drain completed.
        None if exempt => Counted::Serve(None),
        None => Counted::Reject,
        Some(guard) if !exempt && shared.too_late() => {
            guard.turn_away(); // may complete the drain
            Counted::Reject
        }
        Some(guard) => {
            shared.tracker.count_served_while_draining();
            Counted::Serve(Some(guard))
        }
    }
}

/// For an untracked path (nothing to count): turned away while draining by
/// the same rules as a request no counter admitted.
#[inline]
pub(crate) fn untracked_counted<B>(
    shared: &'static Shared,
    reject: &RejectConfig,
    req: &Request<B>,
) -> Counted {
    if shared.draining()
        && crate::drain::turn_away_uncounted(shared)
        && !reject.is_exempt(req.uri().path())
    {
        Counted::Reject
    } else {
        Counted::Serve(None)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlight<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
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
        let counted = if self.untracked.iter().any(|p| p == path) {
            untracked_counted(self.shared, self.reject, &req)
        } else {
            count(self.shared, self.reject, &req)
        };
        match counted {
            Counted::Serve(guard) => {
                let _current = CurrentSignal::enter(self.shared);
                ResponseFuture::new(self.inner.call(req), guard, self.shared)
            }
            Counted::Reject => {
                ResponseFuture::answered(crate::drain::rejection(self.shared, self.reject, &req))
            }
        }
    }
}

pin_project! {
    /// Response future of [`InFlight`]: holds the guard until the response
    /// is ready, then hands it to the [`ResponseBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            inner: F,
            guard: Option<RequestGuard>,
            shared: &'static Shared,
        },
        Answered { answer: Option<Answer> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, guard: Option<RequestGuard>, shared: &'static Shared) -> Self {
        Self {
            kind: Kind::Inner {
                inner,
                guard,
                shared,
            },
        }
    }

    #[cold]
    fn answered(answer: Answer) -> Self {
        Self {
            kind: Kind::Answered {
                answer: Some(answer),
            },
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
        match self.project().kind.project() {
            KindProj::Inner {
                inner,
                guard,
                shared,
            } => {
                let res = {
                    let _current = CurrentSignal::enter(shared);
                    ready!(inner.poll(cx))
                };
                let guard = guard.take();
                let shared = *shared;
                Poll::Ready(res.map(|res| {
                    res.map(|inner| {
                        // A body that is already finished releases at once:
                        // hyper may drop it without polling.
                        let guard = if inner.is_end_stream() { None } else { guard };
                        ResponseBody {
                            kind: BodyKind::Inner {
                                inner,
                                guard,
                                shared,
                            },
                        }
                    })
                }))
            }
            KindProj::Answered { answer } => {
                let res = answer
                    .take()
                    .expect("polled after completion")
                    .into_response();
                Poll::Ready(Ok(res.map(|data| ResponseBody {
                    kind: BodyKind::Answered {
                        data: (!data.is_empty()).then_some(data),
                    },
                })))
            }
        }
    }
}

pin_project! {
    /// Response body of [`InFlight`]: releases the request's guard when the
    /// body ends, fails, or is dropped. Forwards `is_end_stream` and the exact
    /// `size_hint`, so fixed-length responses stay fixed-length.
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner {
            #[pin]
            inner: B,
            guard: Option<RequestGuard>,
            shared: &'static Shared,
        },
        Answered { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// The wrapped body (`None` for a rejection the counter answered).
    pub fn get_ref(&self) -> Option<&B> {
        match &self.kind {
            BodyKind::Inner { inner, .. } => Some(inner),
            BodyKind::Answered { .. } => None,
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Inner { inner, guard, .. } => f
                .debug_struct("ResponseBody")
                .field("inner", inner)
                .field("counted", &guard.is_some())
                .finish(),
            BodyKind::Answered { .. } => f.debug_struct("ResponseBody").finish_non_exhaustive(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner {
                mut inner,
                guard,
                shared,
            } => {
                let frame = {
                    // Streams (SSE, gRPC server streaming) produced lazily
                    // in the body see the signal too.
                    let _current = CurrentSignal::enter(shared);
                    ready!(inner.as_mut().poll_frame(cx))
                };
                let finished = match &frame {
                    None | Some(Err(_)) => true,
                    Some(Ok(_)) => inner.is_end_stream(),
                };
                if finished {
                    // Drop releases; `take` makes it happen exactly once.
                    guard.take();
                }
                Poll::Ready(frame)
            }
            BodyProj::Answered { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(B::Data::from(d)))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { inner, .. } => inner.is_end_stream(),
            BodyKind::Answered { data } => data.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { inner, .. } => inner.size_hint(),
            BodyKind::Answered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
