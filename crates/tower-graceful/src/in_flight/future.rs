//! The response futures: [`ResponseFuture`] of [`InFlight`](super::InFlight), and the
//! counting futures it shares with the fused [`Graceful`](crate::Graceful).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{CountedBody, InFlightBody, ResponseBody};
use crate::answer::{Answer, AnswerBody, WrapBody};
use crate::core::guard::RequestGuard;
use crate::stack::Stack;

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
