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

use crate::answer::RejectConfig;
use crate::core::counter::Admission;
use crate::core::guard::{Hold, RequestGuard};
use crate::core::names::Name;
use crate::core::state::Shared;
use crate::core::sync::Arc;

mod body;
mod future;
mod layer;
mod service;

pub use self::body::ResponseBody;
pub(crate) use self::body::{CountedBody, InFlightBody};
pub use self::future::ResponseFuture;
pub(crate) use self::future::{rejected, CountedFuture, CountingFuture};
pub use self::layer::InFlightLayer;
pub use self::service::InFlight;

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
