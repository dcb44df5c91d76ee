//! [`InFlight`]: counts each request until its response body ends.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    count, rejected, untracked_counted, Counted, CountedFuture, CountingFuture, ResponseBody,
    ResponseFuture,
};
use crate::core::names::Name;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Middleware that counts each request until its response body ends (every
/// way out releases it exactly once: see the [module docs](super)).
///
/// Once the drain has completed (draining began and nothing was left in
/// flight), the counter refuses new requests in the same atomic step that
/// would count them, and this service answers them with the draining
/// rejection instead of calling the inner service: nothing is served after
/// [`Coordinator::drained`](crate::Coordinator::drained) resolved, so cleanup
/// hooks never race a late request.
#[derive(Clone)]
pub struct InFlight<S> {
    pub(super) inner: S,
    pub(super) stack: Arc<Stack>,
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
