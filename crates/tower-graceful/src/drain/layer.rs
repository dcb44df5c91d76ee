//! [`DrainLayer`]: builds [`Drain`] around a service.

use std::fmt;

use bytes::Bytes;
use http::Response;
use tower_layer::Layer;

use super::Drain;
use crate::answer::RejectContext;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Layer that applies [`Drain`].
#[derive(Clone)]
pub struct DrainLayer {
    stack: Arc<Stack>,
}

impl DrainLayer {
    pub(crate) fn from_stack(stack: Arc<Stack>) -> Self {
        Self { stack }
    }

    /// Adds an exact path that is always passed through (for example a
    /// metrics route). The builder's [`exempt_path`](crate::Builder::exempt_path)
    /// validates paths; this adds one without checks.
    ///
    /// The new settings are shared by the services of this layer (one
    /// allocation): configure layers at start-up, not per request.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        let reject = self.stack.reject.with_exempt(path.into());
        self.stack = Arc::new(self.stack.with_reject(reject));
        self
    }

    /// Replaces the built-in rejection with your own response (for example
    /// JSON in your API's error format). It is called once per rejected
    /// request; keep it cheap and do not echo the request. The context says
    /// why ([`RejectContext::reason`]), for which method and path, and
    /// offers the built-in answer ([`RejectContext::default_response`]).
    /// `Retry-After` and, on HTTP/1.x, `Connection: close` are added to an
    /// HTTP response that does not set them itself (set them to opt out); a
    /// response to a gRPC request is sent as it is.
    ///
    /// To keep the built-in answer for some requests (gRPC's trailers-only
    /// `UNAVAILABLE`, say), use [`respond_with_or_default`](Self::respond_with_or_default).
    pub fn respond_with<F>(self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.respond_with_or_default(move |ctx| Some(f(ctx)))
    }

    /// Like [`respond_with`](Self::respond_with), but the function may
    /// return `None` to send the built-in rejection instead: a custom HTTP
    /// body that leaves gRPC requests their trailers-only `UNAVAILABLE`
    /// (with its `grpc-retry-pushback-ms`).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode};
    /// use tower_graceful::{drain::DrainLayer, Coordinator};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
    /// let layer = DrainLayer::new(&graceful).respond_with_or_default(|ctx| {
    ///     if ctx.is_grpc() {
    ///         return None; // trailers-only UNAVAILABLE
    ///     }
    ///     let body = format!("{{\"error\":\"{}\"}}", ctx.reason());
    ///     let mut res = Response::new(Bytes::from(body));
    ///     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    ///     Some(res)
    /// });
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn respond_with_or_default<F>(mut self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Option<Response<Bytes>> + Send + Sync + 'static,
    {
        let reject = self.stack.reject.with_custom(f);
        self.stack = Arc::new(self.stack.with_reject(reject));
        self
    }
}

impl fmt::Debug for DrainLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainLayer")
            .field("config", &self.stack.reject)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            stack: self.stack.clone(),
        }
    }
}
