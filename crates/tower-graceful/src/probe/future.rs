//! [`ResponseFuture`]: the response future of [`Probe`](super::Probe).

use super::{ProbeBody, ResponseBody};
use crate::answer::AnswerFuture;

opaque_future! {
    /// Response future of [`Probe`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with a probe answer: like most
    /// futures, it must not be polled after it returned `Ready`.
    ResponseFuture(AnswerFuture<F, ProbeBody>) -> ResponseBody
}
