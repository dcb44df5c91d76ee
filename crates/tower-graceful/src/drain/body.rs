//! [`ResponseBody`]: the response body of [`Drain`](super::Drain).

use crate::answer::{AnswerBody, WrapBody};

opaque_body! {
    /// Response body of [`Drain`]: the inner body, or the rejection's.
    ResponseBody(AnswerBody<B>)
}

/// Names [`Drain`]'s body.
pub(crate) struct DrainBody;

impl<B> WrapBody<B> for DrainBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<B>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}
