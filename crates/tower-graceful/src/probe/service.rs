//! [`Probe`]: answers the probe paths, passes the rest on.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{ResponseBody, ResponseFuture};
use crate::answer::AnswerFuture;
use crate::answer::ProbeMethod;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Middleware answering the probe paths; everything else goes to `S`.
#[derive(Clone)]
pub struct Probe<S> {
    pub(super) inner: S,
    pub(super) stack: Arc<Stack>,
}

impl<S> Probe<S> {
    inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Probe<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("inner", &self.inner)
            .field("paths", &self.stack.probes)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Probe<S>
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
        match self.stack.probes.answer(
            &self.stack.shared,
            req.uri().path(),
            ProbeMethod::of(req.method()),
        ) {
            Some(answer) => ResponseFuture::new(AnswerFuture::answered(answer)),
            None => ResponseFuture::new(AnswerFuture::inner(self.inner.call(req), None)),
        }
    }
}
