//! Puts a [`ShutdownSignal`] into every request's extensions, where the axum
//! extractor, tonic handlers (`request.extensions()`) and plain tower services
//! find it.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::{add_signal::AddSignalLayer, Coordinator, ShutdownSignal};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(AddSignalLayer::new(&graceful))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let signal = req.extensions().get::<ShutdownSignal>().expect("added by the layer");
//!         Ok::<_, Infallible>(Response::new(format!("draining: {}", signal.is_draining())))
//!     }));
//!
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.into_body(), "draining: false");
//! # }
//! ```

use std::fmt;
use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::signal::ShutdownSignal;

/// Layer that applies [`AddSignal`].
#[derive(Clone)]
pub struct AddSignalLayer {
    signal: ShutdownSignal,
}

impl AddSignalLayer {
    pub(crate) fn from_signal(signal: ShutdownSignal) -> Self {
        Self { signal }
    }
}

impl fmt::Debug for AddSignalLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddSignalLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AddSignalLayer {
    type Service = AddSignal<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddSignal {
            inner,
            signal: self.signal.clone(),
        }
    }
}

/// Middleware that inserts a [`ShutdownSignal`] into request extensions.
#[derive(Clone)]
pub struct AddSignal<S> {
    inner: S,
    signal: ShutdownSignal,
}

impl<S> AddSignal<S> {
    inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for AddSignal<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddSignal")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for AddSignal<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.signal.clone());
        self.inner.call(req)
    }
}
