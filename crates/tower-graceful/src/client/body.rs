//! The request bodies of [`TransparentRetry`](super::TransparentRetry): a
//! kept body sent again, or the frames already read and then the rest.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body type that [`TransparentRetry`](super::TransparentRetry)
/// can make from another body: the body it kept, for a call sent again, or
/// the frames it read and then the rest of the original.
///
/// Implemented for tonic's [`Body`](tonic::body::Body); implement it for
/// your own (a boxed body type, say) to use the retry below another client.
pub trait RebuildBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Unpin + Send + Sized + 'static
{
    /// This body type, carrying `body`.
    fn rebuild<T>(body: T) -> Self
    where
        T: Body<Data = Bytes> + Send + 'static,
        T::Error: Into<BoxError>;
}

impl RebuildBody for tonic::body::Body {
    #[inline]
    fn rebuild<T>(body: T) -> Self
    where
        T: Body<Data = Bytes> + Send + 'static,
        T::Error: Into<BoxError>,
    {
        tonic::body::Body::new(body)
    }
}

/// A kept request body: its bytes, once, with their exact size.
#[derive(Debug)]
pub(crate) struct ReplayBody(Option<Bytes>);

impl ReplayBody {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// The frames read from a body that was not kept, then the rest of it (or
/// the error its last poll gave).
pub(crate) struct PrefixedBody<B> {
    pub(crate) frames: VecDeque<Frame<Bytes>>,
    pub(crate) error: Option<BoxError>,
    pub(crate) rest: Option<B>,
}

impl<B> Body for PrefixedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = this.error.take() {
            this.rest = None;
            return Poll::Ready(Some(Err(e)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
            None => Poll::Ready(None),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(B::is_end_stream)
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or(SizeHint::with_exact(0), B::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}
