//! [`Graceful`]: the fused middleware (probes, draining responder, counter).

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use tower_service::Service;

use super::{ResponseBody, ResponseFuture};
use crate::answer::{Answer, ProbeMethod};
use crate::core::guard::RequestGuard;
use crate::core::names::Name;
use crate::core::sync::Arc;
use crate::in_flight::{count, untracked_counted, Counted, CountedFuture, CountingFuture};
use crate::stack::Stack;

/// The service of [`GracefulLayer`](super::GracefulLayer): answers the probe paths, serves requests
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
    pub(super) inner: S,
    pub(super) stack: Arc<Stack>,
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
