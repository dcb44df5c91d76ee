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
//! window on, at a moment the connection has no stream open, so clients do
//! not reconnect as one burst). `101 Switching Protocols` responses are left
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

use http::Request;

use crate::answer::AnswerFuture;
use crate::answer::{Answer, RejectConfig};
pub use crate::answer::{RejectContext, RejectReason};
use crate::core::state::Shared;
use crate::stack::Stack;

mod body;
mod future;
mod layer;
mod service;

pub(crate) use self::body::DrainBody;
pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::DrainLayer;
pub use self::service::Drain;

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
