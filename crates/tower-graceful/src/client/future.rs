//! The response future of [`TransparentRetry`](super::TransparentRetry):
//! read the body as far as it is ready, call, and call again while the
//! error says the request never left the client.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::Request;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::{PrefixedBody, RebuildBody, ReplayBody};
use super::never_sent;

pin_project! {
    /// The response future of [`TransparentRetry`](super::TransparentRetry).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, B>,
        // The ready service until the first call; then, for a call that
        // may be sent again, a clone of it.
        service: Option<S>,
        parts: Option<Parts>,
        // The kept body: `Some` while the call may be sent again.
        kept: Option<Bytes>,
        retries_left: usize,
        max_body: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Reading the request body as far as it is ready.
        Reading { body: Option<B>, chunks: Vec<Bytes>, len: usize },
        // A retry: waiting for the service to be ready again.
        Readying,
        Calling { #[pin] future: F },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn new(service: S, req: Request<B>, max_body: usize, retries: usize) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            state: State::Reading {
                body: Some(body),
                chunks: Vec::new(),
                len: 0,
            },
            service: Some(service),
            parts: Some(parts),
            kept: None,
            retries_left: retries,
            max_body,
        }
    }
}

/// What reading the body came to.
enum Read<B> {
    /// It ended within the limit: these are all its bytes.
    Kept(Bytes),
    /// Not kept: what was read, then the rest.
    Passed(PrefixedBody<B>),
}

fn read_body<B: RebuildBody>(
    body: &mut Option<B>,
    chunks: &mut Vec<Bytes>,
    len: &mut usize,
    max_body: usize,
    cx: &mut Context<'_>,
) -> Read<B> {
    let passed = |chunks: &mut Vec<Bytes>, extra: Option<Frame<Bytes>>, error, rest| {
        let mut frames: VecDeque<Frame<Bytes>> = chunks.drain(..).map(Frame::data).collect();
        frames.extend(extra);
        Read::Passed(PrefixedBody {
            frames,
            error,
            rest,
        })
    };
    // Bounded: each turn takes a frame, and at most `max_body` bytes of
    // them are kept; an endless run of empty frames is passed on after
    // a few.
    let mut ended = false;
    for _ in 0..64 {
        let Some(b) = body.as_mut() else { break };
        if b.is_end_stream() {
            ended = true;
            break;
        }
        match Pin::new(b).poll_frame(cx) {
            Poll::Ready(None) => {
                ended = true;
                break;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if *len + data.len() <= max_body => {
                    *len += data.len();
                    if !data.is_empty() {
                        chunks.push(data);
                    }
                }
                Ok(data) => return passed(chunks, Some(Frame::data(data)), None, body.take()),
                // Trailers: the body is not a plain message; pass it on.
                Err(frame) => return passed(chunks, Some(frame), None, body.take()),
            },
            Poll::Ready(Some(Err(e))) => return passed(chunks, None, Some(e.into()), None),
            // Waiting for more (a client-streaming call): pass it on.
            Poll::Pending => return passed(chunks, None, None, body.take()),
        }
    }
    if !ended {
        return passed(chunks, None, None, body.take());
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(*len);
            for c in chunks.drain(..) {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Read::Kept(bytes)
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>> + Clone,
    S::Error: std::error::Error + 'static,
    B: RebuildBody,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Bounded: each turn moves the state on; retries are counted.
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading { body, chunks, len } => {
                    let read = read_body(body, chunks, len, *this.max_body, cx);
                    let mut service = this.service.take().expect("polled after completion");
                    let req = match read {
                        Read::Kept(bytes) => {
                            let parts = this.parts.clone().expect("parts until the first call");
                            if *this.retries_left > 0 {
                                *this.service = Some(service.clone());
                                *this.kept = Some(bytes.clone());
                            } else {
                                *this.parts = None;
                            }
                            Request::from_parts(parts, B::rebuild(ReplayBody::new(bytes)))
                        }
                        Read::Passed(body) => {
                            let parts = this.parts.take().expect("parts until the first call");
                            Request::from_parts(parts, B::rebuild(body))
                        }
                    };
                    let future = service.call(req);
                    this.state.set(State::Calling { future });
                }
                StateProj::Readying => {
                    let service = this.service.as_mut().expect("kept for the retry");
                    ready!(service.poll_ready(cx))?;
                    let mut service = this.service.take().expect("kept for the retry");
                    let parts = this.parts.clone().expect("kept for the retry");
                    let bytes = this.kept.clone().expect("kept for the retry");
                    if *this.retries_left > 0 {
                        *this.service = Some(service.clone());
                    } else {
                        *this.parts = None;
                        *this.kept = None;
                    }
                    let req = Request::from_parts(parts, B::rebuild(ReplayBody::new(bytes)));
                    let future = service.call(req);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => match ready!(future.poll(cx)) {
                    Ok(res) => return Poll::Ready(Ok(res)),
                    Err(e) if this.kept.is_some() && *this.retries_left > 0 && never_sent(&e) => {
                        *this.retries_left -= 1;
                        tracing::debug!(
                            target: "tower_graceful",
                            error = %e,
                            "call never left the client (its connection went away first): sent again"
                        );
                        this.state.set(State::Readying);
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}
