//! [`Drain`]: the middleware itself.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use tower_service::Service;

use super::{rejected, turn_away_uncounted, ResponseBody, ResponseFuture};
use crate::answer::AnswerFuture;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Middleware that announces the close on HTTP/1.x connections once
/// shutdown is triggered, and turns away the requests that could not be
/// served while draining with a retryable rejection.
///
/// See the [module docs](crate::drain) for the policy table. Place it
/// outside [`InFlight`](crate::in_flight::InFlight) (as
/// [`Coordinator::layer`](crate::Coordinator::layer) does).
#[derive(Clone)]
pub struct Drain<S> {
    pub(super) inner: S,
    pub(super) stack: Arc<Stack>,
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
