//! The whole stack of [`Coordinator::layer`](crate::Coordinator::layer) as one service.
//!
//! [`Graceful`] does what [`Probe`](crate::probe::Probe) →
//! [`Drain`](crate::drain::Drain) → [`InFlight`](crate::in_flight::InFlight) do when stacked,
//! in one `call`, with one response future and one response body instead of
//! three nested ones: one branch on the path for the probes, one load of the
//! phase, one slot claimed in the thread's own shard, and nothing moved
//! more than once. The separate layers stay available for custom orders.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(graceful.layer())
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! // A response whose body is still on its way when shutdown begins.
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! graceful.trigger();
//! tokio::spawn(async move {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     drop(response); // its body sent
//! });
//! let report = graceful.wait().await; // the drain waits for that body
//! assert_eq!(report.in_flight_at_drain, 1);
//! assert_eq!(report.completed_while_draining, 1);
//! assert_eq!(report.drain, Duration::from_secs(1));
//! # }
//! ```

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::answer::{Answer, AnswerBody, ProbeMethod, RejectConfig, WrapBody};
use crate::core::guard::RequestGuard;
use crate::core::names::Name;
use crate::core::sync::Arc;
use crate::in_flight::{
    count, untracked_counted, Counted, CountedBody, CountedFuture, CountingFuture,
};
use crate::stack::Stack;

/// The combined layer of [`Coordinator::layer`](crate::Coordinator::layer):
/// probes, then the draining responder, then in-flight counting, fused into
/// one service ([`Graceful`]).
#[derive(Clone)]
pub struct GracefulLayer {
    stack: Arc<Stack>,
}

impl GracefulLayer {
    pub(crate) fn new(stack: Arc<Stack>) -> Self {
        Self { stack }
    }

    /// Adds an exact path the draining responder always lets through (for
    /// example a metrics route); it is still counted. The builder's
    /// [`exempt_path`](crate::Builder::exempt_path) validates paths; this
    /// adds one without checks.
    ///
    /// The new settings are shared by the services of this layer (one
    /// allocation): configure layers at start-up, not per request.
    pub fn exempt(self, path: impl Into<String>) -> Self {
        let reject = self.stack.reject.with_exempt(path.into());
        self.with_reject(reject)
    }

    /// Replaces the built-in draining rejection with your own response, as
    /// [`DrainLayer::respond_with`](crate::drain::DrainLayer::respond_with)
    /// does (which see), keeping the combined layer. `Retry-After` and, on
    /// HTTP/1.x, `Connection: close` are added unless the response sets them.
    /// Like [`exempt`](Self::exempt): configure at start-up.
    pub fn respond_with<F>(self, f: F) -> Self
    where
        F: Fn(&crate::drain::RejectContext<'_>) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.respond_with_or_default(move |ctx| Some(f(ctx)))
    }

    /// Like [`respond_with`](Self::respond_with), but `None` from the
    /// function sends the built-in rejection, as
    /// [`DrainLayer::respond_with_or_default`](crate::drain::DrainLayer::respond_with_or_default)
    /// does (which see).
    pub fn respond_with_or_default<F>(self, f: F) -> Self
    where
        F: Fn(&crate::drain::RejectContext<'_>) -> Option<http::Response<Bytes>>
            + Send
            + Sync
            + 'static,
    {
        let reject = self.stack.reject.with_custom(f);
        self.with_reject(reject)
    }

    fn with_reject(self, reject: RejectConfig) -> Self {
        Self {
            stack: Arc::new(self.stack.with_reject(reject)),
        }
    }
}

impl fmt::Debug for GracefulLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracefulLayer")
            .field("probes", &self.stack.probes)
            .field("reject", &self.stack.reject)
            .field("untracked", &self.stack.untracked)
            .finish()
    }
}

impl<S> Layer<S> for GracefulLayer {
    type Service = Graceful<S>;

    fn layer(&self, inner: S) -> Graceful<S> {
        Graceful {
            inner,
            stack: self.stack.clone(),
        }
    }
}

/// The service of [`GracefulLayer`]: answers the probe paths, serves requests
/// on open connections while draining (telling HTTP/1.1 clients to close the
/// connection), answers with a retryable rejection only what could not
/// finish (after the drain completed, after a forced stop, or with less than
/// [`min_time_left`](crate::Builder::min_time_left) before the deadline; the
/// [policy](crate::drain)), and counts every other request until its response
/// body ends, with [`ShutdownSignal::current`]
/// (and so the axum extractor) available while the request is polled.
///
/// Behaves exactly as `Probe<Drain<InFlight<S>>>` (each documented on its
/// own layer), at the cost of one.
///
/// [`ShutdownSignal::current`]: crate::ShutdownSignal::current
#[derive(Clone)]
pub struct Graceful<S> {
    inner: S,
    stack: Arc<Stack>,
}

impl<S> Graceful<S> {
    inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Graceful<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graceful")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Graceful<S>
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
        let stack = &*self.stack;
        let shared = &stack.shared;
        let path = req.uri().path();
        // Counted first, then decided (the counter refuses once the drain
        // completed), all before the inner `call`: a panic inside it unwinds
        // through the guard's `Drop` and is released.
        let name = Name::of(req.method(), path);
        let decided = if stack.maybe_special(path) {
            special(stack, name, ProbeMethod::of(req.method()))
        } else {
            count(shared, &stack.reject, name).into()
        };
        match decided {
            Decided::Serve(guard) => {
                let h1 = req.version() <= Version::HTTP_11;
                let fut = {
                    let _current = guard.enter();
                    self.inner.call(req)
                };
                ResponseFuture::new(CountingFuture::counted(
                    CountedFuture::new(fut, guard).with_lame_duck(h1),
                ))
            }
            Decided::Answer(answer) => ResponseFuture::new(CountingFuture::answered(answer)),
            Decided::Reject => ResponseFuture::new(crate::in_flight::rejected(stack, req)),
        }
    }
}

/// What [`Graceful`] does with a request.
enum Decided {
    /// Call the inner service, with the request's guard.
    Serve(RequestGuard),
    /// A probe's answer.
    Answer(Answer),
    /// The draining rejection.
    Reject,
}

impl From<Counted> for Decided {
    #[inline]
    fn from(counted: Counted) -> Self {
        match counted {
            Counted::Serve(guard) => Decided::Serve(guard),
            Counted::Reject => Decided::Reject,
        }
    }
}

/// A request whose path length is that of a probe or untracked path: a probe
/// is answered, an untracked path is not counted.
#[cold]
#[inline(never)]
fn special(stack: &Stack, name: Name<'_>, method: ProbeMethod) -> Decided {
    let shared = &stack.shared;
    let path = name.path();
    if let Some(answer) = stack.probes.answer(shared, path, method) {
        return Decided::Answer(answer);
    }
    let counted = if stack.untracked.iter().any(|p| p == path) {
        untracked_counted(shared, &stack.reject, path)
    } else {
        count(shared, &stack.reject, name)
    };
    counted.into()
}

opaque_future! {
    /// Response future of [`Graceful`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with an answer of the crate's own
    /// (a probe's, or the draining rejection): like most futures, it must
    /// not be polled after it returned `Ready`.
    ResponseFuture(CountingFuture<F, GracefulBody>) -> ResponseBody
}

opaque_body! {
    /// Response body of [`Graceful`]: the inner body, counted until it ends
    /// (or fails, or is dropped), or the body of a probe answer or
    /// rejection.
    ResponseBody(AnswerBody<CountedBody<B>>)
}

/// Names [`Graceful`]'s body.
pub(crate) struct GracefulBody;

impl<B> WrapBody<CountedBody<B>> for GracefulBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<CountedBody<B>>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}
