//! [`ResponseBody`]: the response body of [`Graceful`](super::Graceful).

use crate::answer::{AnswerBody, WrapBody};
use crate::in_flight::CountedBody;

opaque_body! {
    /// Response body of [`Graceful`]: the inner body, counted until it ends
    /// (or fails, or is dropped), or the body of a probe answer or
    /// rejection.
    ResponseBody(AnswerBody<CountedBody<B>>)
}

/// Names [`Graceful`]'s body.
pub(crate) struct GracefulBody;

impl<B> WrapBody<CountedBody<B>> for GracefulBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<CountedBody<B>>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}
