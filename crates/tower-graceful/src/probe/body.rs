//! [`ResponseBody`]: the response body of [`Probe`](super::Probe).

use crate::answer::{AnswerBody, WrapBody};

opaque_body! {
    /// Response body of [`Probe`]: the inner body, or the probe answer's.
    ResponseBody(AnswerBody<B>)
}

/// Names [`Probe`]'s body.
pub(crate) struct ProbeBody;

impl<B> WrapBody<B> for ProbeBody {
    type Out = ResponseBody<B>;
    #[inline(always)]
    fn wrap(body: AnswerBody<B>) -> ResponseBody<B> {
        ResponseBody::new(body)
    }
}
