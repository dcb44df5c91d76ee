//! [`GracefulLayer`]: builds [`Graceful`] around a service.

use std::fmt;

use bytes::Bytes;
use tower_layer::Layer;

use super::Graceful;
use crate::answer::RejectConfig;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// The combined layer of [`Coordinator::layer`](crate::Coordinator::layer):
/// probes, then the draining responder, then in-flight counting, fused into
/// one service ([`Graceful`]).
#[derive(Clone)]
pub struct GracefulLayer {
    stack: Arc<Stack>,
}

impl GracefulLayer {
    pub(crate) fn new(stack: Arc<Stack>) -> Self {
        Self { stack }
    }

    /// Adds an exact path the draining responder always lets through (for
    /// example a metrics route); it is still counted. The builder's
    /// [`exempt_path`](crate::Builder::exempt_path) validates paths; this
    /// adds one without checks.
    ///
    /// The new settings are shared by the services of this layer (one
    /// allocation): configure layers at start-up, not per request.
    pub fn exempt(self, path: impl Into<String>) -> Self {
        let reject = self.stack.reject.with_exempt(path.into());
        self.with_reject(reject)
    }

    /// Replaces the built-in draining rejection with your own response, as
    /// [`DrainLayer::respond_with`](crate::drain::DrainLayer::respond_with)
    /// does (which see), keeping the combined layer. `Retry-After` and, on
    /// HTTP/1.x, `Connection: close` are added unless the response sets them.
    /// Like [`exempt`](Self::exempt): configure at start-up.
    pub fn respond_with<F>(self, f: F) -> Self
    where
        F: Fn(&crate::drain::RejectContext<'_>) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        self.respond_with_or_default(move |ctx| Some(f(ctx)))
    }

    /// Like [`respond_with`](Self::respond_with), but `None` from the
    /// function sends the built-in rejection, as
    /// [`DrainLayer::respond_with_or_default`](crate::drain::DrainLayer::respond_with_or_default)
    /// does (which see).
    pub fn respond_with_or_default<F>(self, f: F) -> Self
    where
        F: Fn(&crate::drain::RejectContext<'_>) -> Option<http::Response<Bytes>>
            + Send
            + Sync
            + 'static,
    {
        let reject = self.stack.reject.with_custom(f);
        self.with_reject(reject)
    }

    fn with_reject(self, reject: RejectConfig) -> Self {
        Self {
            stack: Arc::new(self.stack.with_reject(reject)),
        }
    }
}

impl fmt::Debug for GracefulLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GracefulLayer")
            .field("probes", &self.stack.probes)
            .field("reject", &self.stack.reject)
            .field("untracked", &self.stack.untracked)
            .finish()
    }
}

impl<S> Layer<S> for GracefulLayer {
    type Service = Graceful<S>;

    fn layer(&self, inner: S) -> Graceful<S> {
        Graceful {
            inner,
            stack: self.stack.clone(),
        }
    }
}
