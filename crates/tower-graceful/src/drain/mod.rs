//! The draining responder: what happens to requests and connections once
//! shutdown has been triggered.
//!
//! # Connections: the lame duck
//!
//! From the trigger on, HTTP/1.x responses announce `Connection: close`, so
//! each keep-alive connection is closed cleanly after its next response and
//! its client reconnects (through the load balancer, to another instance).
//! By default the share of responses that announce it rises from 0 to 1
//! over the pre-drain delay (Envoy's gradual drain), so reconnections do not
//! land elsewhere as one burst; from the start of draining every response
//! announces it. HTTP/2 responses never carry it (the header is forbidden
//! there): HTTP/2 connections get GOAWAY from the server
//! ([`serve`](crate::serve) sends it from a random point of the lame-duck
//! window on, when the connection has no stream open, so clients do not
//! reconnect as one burst). `101 Switching Protocols` responses are left
//! alone.
//!
//! # Requests: served, or turned away
//!
//! A request is never turned away because its client should have known
//! better: an L4 balancer or a connection pool keeps sending on connections
//! it already has, and the client could not have sent it elsewhere. So,
//! while draining:
//!
//! | the request arrives …                                   | it gets |
//! |---------------------------------------------------------|---------|
//! | before draining (serving, or during the pre-drain delay) | served (HTTP/1.x: `Connection: close`, with the rising share) |
//! | while draining, with time left before the deadline       | served, counted (the drain waits for it), `Connection: close` |
//! | while draining, with less than `min_time_left` left      | the rejection: it could not finish anyway |
//! | after the forced stop began (deadline, second signal)    | the rejection |
//! | after the drain completed (nothing was left in flight)    | the rejection: the process is closing |
//! | on an exempt path (probes, metrics)                      | always served |
//!
//! One more case keeps the drain open a moment: an HTTP/1.x response whose
//! head went out before the trigger (a stream, a long download) and that
//! ends while draining never announced the close, so its client may send
//! the next request on that connection at once. The combined layer holds
//! the drain for [`Builder::reuse_grace`](crate::Builder::reuse_grace) after
//! such a response, so that request is served (close announced) instead of
//! racing the close of an idle connection at the end of the drain.
//!
//! The rejection:
//!
//! * HTTP: `503 Service Unavailable`, `Retry-After` (seconds, optionally
//!   jittered so rejected clients do not return as one burst), `Connection:
//!   close` on HTTP/1.x (so the client's retry opens a new connection, which a
//!   load balancer sends elsewhere), and a short `text/plain` body.
//! * gRPC (`content-type: application/grpc*`): `200 OK` trailers-only with
//!   `grpc-status: 14` (UNAVAILABLE) and a `grpc-message`; gRPC clients treat
//!   UNAVAILABLE as retryable, and `grpc-retry-pushback-ms` (gRFC A6: the
//!   `Retry-After` time in milliseconds) for clients with a retry policy.
//!
//! "The drain completed" is decided by the counter itself
//! ([`InFlight`](crate::in_flight::InFlight)): a claim after the count reached zero is
//! refused in the same atomic step that would have counted it, so no request
//! is served after [`Coordinator::drained`](crate::Coordinator::drained)
//! resolved, whatever sits between the layers. [`Drain`] alone (without a
//! counter inside it) reads the drained latch instead.
//!
//! A request that was already accepted is never touched; only the deadline
//! cancels work. The service never returns an error for a rejection: it is a
//! response. Nothing in the rejection depends on the request's size or
//! content (no echo, no allocation proportional to what the client sent).
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::{drain::DrainLayer, in_flight::InFlightLayer, Coordinator};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(DrainLayer::new(&graceful)) // outside the counter
//!     .layer(InFlightLayer::new(&graceful))
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! graceful.trigger();
//! graceful.drained().await; // nothing was in flight: drained at once
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(response.headers()["retry-after"], "1");
//! assert_eq!(response.headers()["connection"], "close");
//! # }
//! ```

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::answer::{Answer, RejectConfig};
use crate::answer::{AnswerBody, AnswerFuture, WrapBody};
pub use crate::answer::{RejectContext, RejectReason};
use crate::core::state::Shared;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Layer that applies [`Drain`].
#[derive(Clone)]
pub struct DrainLayer {
    stack: Arc<Stack>,
}

impl DrainLayer {
    pub(crate) fn from_stack(stack: Arc<Stack>) -> Self {
        Self { stack }
    }

    /// Adds an exact path that is always passed through (for example a
    /// metrics route). The builder's [`exempt_path`](crate::Builder::exempt_path)
    /// validates paths; this adds one without checks.
    ///
    /// The new settings are shared by the services of this layer (one
    /// allocation): configure layers at start-up, not per request.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        let reject = self.stack.reject.with_exempt(path.into());
        self.stack = Arc::new(self.stack.with_reject(reject));
        self
    }

    /// Replaces the built-in rejection with your own response (for example
    /// JSON in your API's error format). It is called once per rejected
    /// request; keep it cheap and do not echo the request. The context says
    /// why ([`RejectContext::reason`]), for which method and path, and
    /// offers the built-in answer ([`RejectContext::default_response`]).
    /// `Retry-After` and, on HTTP/1.x, `Connection: close` are added to an
    /// HTTP response that does not set them itself (set them to opt out); a
    /// response to a gRPC request is sent as it is.
    ///
    /// To keep the built-in answer for some requests (gRPC's trailers-only
    /// `UNAVAILABLE`, say), use [`respond_with_or_default`](Self::respond_with_or_default).
    pub fn respond_with<F>(self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.respond_with_or_default(move |ctx| Some(f(ctx)))
    }

    /// Like [`respond_with`](Self::respond_with), but the function may
    /// return `None` to send the built-in rejection instead: a custom HTTP
    /// body that leaves gRPC requests their trailers-only `UNAVAILABLE`
    /// (with its `grpc-retry-pushback-ms`).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode};
    /// use tower_graceful::{drain::DrainLayer, Coordinator};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
    /// let layer = DrainLayer::new(&graceful).respond_with_or_default(|ctx| {
    ///     if ctx.is_grpc() {
    ///         return None; // trailers-only UNAVAILABLE
    ///     }
    ///     let body = format!("{{\"error\":\"{}\"}}", ctx.reason());
    ///     let mut res = Response::new(Bytes::from(body));
    ///     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    ///     Some(res)
    /// });
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn respond_with_or_default<F>(mut self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Option<Response<Bytes>> + Send + Sync + 'static,
    {
        let reject = self.stack.reject.with_custom(f);
        self.stack = Arc::new(self.stack.with_reject(reject));
        self
    }
}

impl fmt::Debug for DrainLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainLayer")
            .field("config", &self.stack.reject)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            stack: self.stack.clone(),
        }
    }
}

/// Middleware that announces the close on HTTP/1.x connections once
/// shutdown is triggered, and turns away the requests that could not be
/// served while draining with a retryable rejection.
///
/// See the [module docs](crate::drain) for the policy table. Place it
/// outside [`InFlight`](crate::in_flight::InFlight) (as
/// [`Coordinator::layer`](crate::Coordinator::layer) does).
#[derive(Clone)]
pub struct Drain<S> {
    inner: S,
    stack: Arc<Stack>,
}

impl<S> Drain<S> {
    inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Drain<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Drain<S>
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
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.stack.shared;
        if turn_away_uncounted(shared, &self.stack.reject, req.uri().path()) {
            return rejected(&self.stack, req);
        }
        // The future keeps a reference: the lame duck reads the phase when
        // the response is ready, and the service may be gone by then.
        let h1 = req.version() <= Version::HTTP_11;
        ResponseFuture::new(AnswerFuture::inner(
            self.inner.call(req),
            h1.then(|| shared.clone()),
        ))
    }
}

/// For a request that no counter has admitted (so no counter can refuse it:
/// [`Drain`] alone, untracked paths): turned away only while draining, and
/// then only once the drain completed or when it could not finish; exempt
/// paths always pass. One phase load unless draining.
#[inline]
pub(crate) fn turn_away_uncounted(shared: &Shared, config: &RejectConfig, path: &str) -> bool {
    shared.draining() && turn_away_while_draining(shared) && !config.is_exempt(path)
}

fn turn_away_while_draining(shared: &Shared) -> bool {
    shared.tracker.is_drained() || shared.too_late()
}

/// Counts, logs and answers one draining rejection, for [`Drain`] (the
/// counter and the fused service have the same for their own future).
fn rejected<B, F>(stack: &Stack, req: Request<B>) -> ResponseFuture<F> {
    ResponseFuture::new(AnswerFuture::answered(rejection(
        &stack.shared,
        &stack.reject,
        &req,
    )))
}

opaque_future! {
    /// Response future of [`Drain`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with the rejection: like most
    /// futures, it must not be polled after it returned `Ready`.
    ResponseFuture(AnswerFuture<F, DrainBody>) -> ResponseBody
}

opaque_body! {
    /// Response body of [`Drain`]: the inner body, or the rejection's.
    ResponseBody(AnswerBody<B>)
}

/// Names [`Drain`]'s body.
pub(crate) struct DrainBody;

impl<B> WrapBody<B> for DrainBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<B>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}

/// Counts and logs one draining rejection, and decides its response.
pub(crate) fn rejection<B>(shared: &Shared, config: &RejectConfig, req: &Request<B>) -> Answer {
    shared.count_rejected();
    let reason = RejectReason::of(shared);
    tracing::debug!(
        target: "tower_graceful",
        method = %req.method(),
        path = req.uri().path(),
        %reason,
        "rejected: draining"
    );
    config.reject(req, reason)
}
