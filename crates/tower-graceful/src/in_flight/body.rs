//! The response bodies: [`ResponseBody`] of [`InFlight`](super::InFlight), and the
//! counted body it shares with the fused [`Graceful`](crate::Graceful).

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::linger;
use crate::answer::{AnswerBody, WrapBody};
use crate::core::guard::RequestGuard;

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
    /// The response body with the request's guard: releases it when the body
    /// ends, fails, or is dropped. Forwards `is_end_stream` and the exact
    /// `size_hint`, so fixed-length responses stay fixed-length.
    pub(crate) struct CountedBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) guard: Option<RequestGuard>,
        // An HTTP/1.x response that did not announce the close: if it ends
        // while draining, its client may reuse the connection at once.
        pub(super) linger: bool,
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
