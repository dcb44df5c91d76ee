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
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::{in_flight::InFlightLayer, Coordinator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(InFlightLayer::new(&graceful))
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! // The response is ready, its body not sent yet: still in flight.
//! assert_eq!(graceful.in_flight(), 1);
//! drop(response); // the body sent, or the client gone
//! assert_eq!(graceful.in_flight(), 0);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::answer::{Answer, AnswerBody, RejectConfig, WrapBody};
use crate::core::counter::Admission;
use crate::core::guard::{Hold, RequestGuard};
use crate::core::names::Name;
use crate::core::state::Shared;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Layer that applies [`InFlight`].
#[derive(Clone)]
pub struct InFlightLayer {
    stack: Arc<Stack>,
}

impl InFlightLayer {
    pub(crate) fn from_stack(stack: Arc<Stack>) -> Self {
        Self { stack }
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
            stack: self.stack.clone(),
        }
    }
}

/// Middleware that counts each request until its response body ends (every
/// way out releases it exactly once: see the [module docs](self)).
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
    stack: Arc<Stack>,
}

impl<S> InFlight<S> {
    inner_service_accessors!();
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
    /// Call the inner service; the guard goes with the response.
    Serve(RequestGuard),
    /// Answer with the draining rejection; nothing is counted.
    Reject,
}

/// Counts a tracked request, then applies the draining policy: refused by
/// the counter once the drain completed, or admitted while draining but too
/// late to finish (released again). Exempt paths are always served.
///
/// Takes the request's name, not the request: nothing out of line gets a
/// reference into the request, so the callers move it into the inner service
/// without copying it first (a copy of the whole request, measured with
/// `icount`).
#[inline(always)]
pub(crate) fn count(shared: &Arc<Shared>, reject: &RejectConfig, name: Name<'_>) -> Counted {
    match shared.tracker.acquire(name) {
        Ok((ticket, Admission::Serving)) => {
            Counted::Serve(RequestGuard::counted(shared.clone(), ticket))
        }
        other => late(
            shared,
            reject,
            name.path(),
            other
                .ok()
                .map(|(ticket, _)| RequestGuard::counted(shared.clone(), ticket)),
        ),
    }
}

/// A request the counter refused (the drain completed) or counted while
/// draining.
#[cold]
#[inline(never)]
fn late(
    shared: &Arc<Shared>,
    reject: &RejectConfig,
    path: &str,
    guard: Option<RequestGuard>,
) -> Counted {
    let exempt = reject.is_exempt(path);
    match guard {
        // Refused by the counter: the drain completed.
        None if exempt => Counted::Serve(RequestGuard::uncounted(shared.clone())),
        None => Counted::Reject,
        Some(guard) if !exempt && shared.too_late() => {
            guard.turn_away(); // may complete the drain
            Counted::Reject
        }
        Some(guard) => {
            shared.tracker.count_served_while_draining();
            Counted::Serve(guard)
        }
    }
}

/// An HTTP/1.x response ended while draining without announcing the close
/// (its head went out before the trigger, as a stream's does): its client
/// may send the next request on that connection at once, and were the drain
/// to complete now, `serve` would close the connection under that request.
/// So the request's count is held for the reuse grace (cut short by the
/// forced stop): a request that arrives meanwhile is served, with the close
/// announced.
#[cold]
#[inline(never)]
fn linger(hold: Hold) {
    // The hold keeps the state alive until it is dropped, last.
    let shared = hold.shared();
    let grace = shared.policy.reuse_grace;
    // Not draining: the counter was switched because the coordinator is
    // gone (nothing waits for a drain), so nothing is worth holding.
    if grace.is_zero() || shared.hard.is_cancelled() || !shared.draining() {
        return; // `hold` drops: the request ends now
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // The task owns its token: nothing in it borrows the state, which
        // the hold may free when it drops (also if the task is dropped
        // unfinished with its runtime).
        let hard = shared.hard.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = hard.cancelled() => {}
            }
            drop(hold);
        });
    }
}

/// For an untracked path (nothing to count): turned away while draining by
/// the same rules as a request no counter admitted.
pub(crate) fn untracked_counted(
    shared: &Arc<Shared>,
    reject: &RejectConfig,
    path: &str,
) -> Counted {
    if crate::drain::turn_away_uncounted(shared, reject, path) {
        Counted::Reject
    } else {
        Counted::Serve(RequestGuard::uncounted(shared.clone()))
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
        let stack = &*self.stack;
        let path = req.uri().path();
        let counted = if stack.is_untracked(path) {
            untracked_counted(&stack.shared, &stack.reject, path)
        } else {
            count(&stack.shared, &stack.reject, Name::of(req.method(), path))
        };
        match counted {
            Counted::Serve(guard) => {
                let fut = {
                    let _current = guard.enter();
                    self.inner.call(req)
                };
                ResponseFuture::new(CountingFuture::counted(CountedFuture::new(fut, guard)))
            }
            Counted::Reject => ResponseFuture::new(rejected(stack, req)),
        }
    }
}

pin_project! {
    /// The response future of [`InFlight`] and of the fused
    /// [`Graceful`](crate::Graceful) (each names it with its own type): the
    /// inner service's future with the request's count, or an answer of the
    /// crate's own (the draining rejection of a request the counter refused,
    /// or a probe's answer in the fused service); `W` names the body.
    pub(crate) struct CountingFuture<F, W> {
        #[pin]
        state: CountingState<F>,
        wrap: PhantomData<fn() -> W>,
    }
}

pin_project! {
    #[project = CountingStateProj]
    enum CountingState<F> {
        Counted { #[pin] fut: CountedFuture<F> },
        Answered { answer: Option<Answer> },
    }
}

impl<F, W> CountingFuture<F, W> {
    #[inline]
    pub(crate) fn counted(fut: CountedFuture<F>) -> Self {
        Self {
            state: CountingState::Counted { fut },
            wrap: PhantomData,
        }
    }

    pub(crate) fn answered(answer: Answer) -> Self {
        Self {
            state: CountingState::Answered {
                answer: Some(answer),
            },
            wrap: PhantomData,
        }
    }
}

impl<F, B, E, W> Future for CountingFuture<F, W>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    W: WrapBody<CountedBody<B>>,
{
    type Output = Result<Response<W::Out>, E>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // The head moves once: the counted body is wrapped where the
            // response is rebuilt.
            CountingStateProj::Counted { fut } => {
                fut.poll_wrapped(cx, |counted| W::wrap(AnswerBody::inner(counted)))
            }
            CountingStateProj::Answered { answer } => {
                Poll::Ready(Ok(crate::answer::answered_response(answer).map(W::wrap)))
            }
        }
    }
}

/// The draining rejection, for a request the counter refused (by value: the
/// caller's request is not borrowed by anything out of line).
#[cold]
#[inline(never)]
pub(crate) fn rejected<B, F, W>(stack: &Stack, req: Request<B>) -> CountingFuture<F, W> {
    CountingFuture::answered(crate::drain::rejection(&stack.shared, &stack.reject, &req))
}

opaque_future! {
    /// Response future of [`InFlight`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with the draining rejection: like
    /// most futures, it must not be polled after it returned `Ready`.
    ResponseFuture(CountingFuture<F, InFlightBody>) -> ResponseBody
}

opaque_body! {
    /// Response body of [`InFlight`]: the inner body, counted until it ends
    /// (or fails, or is dropped), or the rejection's.
    ResponseBody(AnswerBody<CountedBody<B>>)
}

/// Names [`InFlight`]'s body.
pub(crate) struct InFlightBody;

impl<B> WrapBody<CountedBody<B>> for InFlightBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<CountedBody<B>>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}

pin_project! {
    /// The inner service's future with the request's guard: holds the guard
    /// until the response is ready, then hands it to the [`CountedBody`].
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct CountedFuture<F> {
        #[pin]
        inner: F,
        // The request's count (unless exempt or untracked) and its state,
        // until the response is ready.
        guard: Option<RequestGuard>,
        // The fused service's lame duck (an HTTP/1.x request): decided here,
        // where the response is rebuilt anyway, at no cost to other requests.
        lame_duck: bool,
    }
}

impl<F> CountedFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, guard: RequestGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
            lame_duck: false,
        }
    }

    /// With the lame duck for an HTTP/1.x request (the fused service).
    #[inline]
    pub(crate) fn with_lame_duck(mut self, h1: bool) -> Self {
        self.lame_duck = h1;
        self
    }
}

impl<F> fmt::Debug for CountedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedFuture").finish_non_exhaustive()
    }
}

impl<F> CountedFuture<F> {
    /// Polls the inner future; once the response is ready, hands the guard
    /// to its body, passed through `wrap` where the response is rebuilt (the
    /// response head moves once, not once per wrapper).
    #[inline(always)]
    fn poll_wrapped<B, E, T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        wrap: impl FnOnce(CountedBody<B>) -> T,
    ) -> Poll<Result<Response<T>, E>>
    where
        F: Future<Output = Result<Response<B>, E>>,
        B: Body,
    {
        let this = self.project();
        let res = {
            let _current = this.guard.as_ref().map(RequestGuard::enter);
            ready!(this.inner.poll(cx))
        };
        let mut guard = this.guard.take();
        let mut linger = *this.lame_duck;
        Poll::Ready(res.map(|res| {
            let (mut head, inner) = res.into_parts();
            if let Some(guard) = &guard {
                if linger && guard.shared().triggered() {
                    linger = !crate::lame_duck::announce_close(guard.shared(), &mut head);
                }
            }
            // A body that is already finished releases at once: hyper may
            // drop it without polling.
            if inner.is_end_stream() {
                guard = None;
            }
            Response::from_parts(
                head,
                wrap(CountedBody {
                    inner,
                    guard,
                    linger,
                }),
            )
        }))
    }
}

pin_project! {
    /// The response body with the request's guard: releases it when the body
    /// ends, fails, or is dropped. Forwards `is_end_stream` and the exact
    /// `size_hint`, so fixed-length responses stay fixed-length.
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
        // An HTTP/1.x response that did not announce the close: if it ends
        // while draining, its client may reuse the connection at once.
        linger: bool,
    }
}

impl<B: fmt::Debug> fmt::Debug for CountedBody<B> {
    // (`linger` is an internal detail.)
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedBody")
            .field("inner", &self.inner)
            .field(
                "counted",
                &self.guard.as_ref().is_some_and(RequestGuard::is_counted),
            )
            .finish()
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline(always)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = {
            // Streams (SSE, gRPC server streaming) produced lazily in the
            // body see the signal too.
            let _current = this.guard.as_ref().map(RequestGuard::enter);
            ready!(inner.as_mut().poll_frame(cx))
        };
        let finished = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => inner.is_end_stream(),
        };
        if finished {
            // Taken, so it is released exactly once, here.
            if let Some(guard) = this.guard.take() {
                if *this.linger {
                    // Only while draining is anything held (and then only
                    // for the reuse grace); before, a plain release.
                    if let Some(hold) = guard.release_holding() {
                        linger(hold);
                    }
                }
            }
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
