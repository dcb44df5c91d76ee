//! [`ResponseFuture`]: the response future of [`Drain`](super::Drain).

use super::{DrainBody, ResponseBody};
use crate::answer::AnswerFuture;

opaque_future! {
    /// Response future of [`Drain`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with the rejection: like most
    /// futures, it must not be polled after it returned `Ready`.
    ResponseFuture(AnswerFuture<F, DrainBody>) -> ResponseBody
}
