//! [`ResponseFuture`]: the response future of [`Graceful`](super::Graceful).

use super::{GracefulBody, ResponseBody};
use crate::in_flight::CountingFuture;

opaque_future! {
    /// Response future of [`Graceful`].
    ///
    /// # Panics
    ///
    /// If polled again after it completed with an answer of the crate's own
    /// (a probe's, or the draining rejection): like most futures, it must
    /// not be polled after it returned `Ready`.
    ResponseFuture(CountingFuture<F, GracefulBody>) -> ResponseBody
}
