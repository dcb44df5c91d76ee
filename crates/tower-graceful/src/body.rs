//! A small fixed body for the responses this crate writes itself.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// A body of at most one chunk, with an exact size hint. Used for probe
/// answers and rejections.
#[derive(Debug, Default, Clone)]
pub struct FixedBody {
    data: Option<Bytes>,
}

impl FixedBody {
    /// A body holding `data` (empty data gives an empty body).
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.data.unwrap_or_default()
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self { data: None }
    }
}

impl Body for FixedBody {
    type Data = Bytes;
    type Error = Infallible;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
