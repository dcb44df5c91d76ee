//! Readiness and liveness for load balancers and orchestrators.
//!
//! * **Readiness** answers `200 ready` while serving and every
//!   [`ReadinessGate`] is ready; `503 not ready: <gate>` while a gate is not;
//!   `503 draining` from the moment shutdown is triggered (before the
//!   pre-drain delay, so balancers stop sending new work while the instance
//!   still serves it).
//! * **Liveness** answers `200 live` through the whole shutdown, so an
//!   orchestrator does not kill a pod that is draining on purpose.
//!
//! Both answer `GET` and `HEAD` (`HEAD` with no body) and `405` otherwise.
//! Bodies say only the state; no configuration, versions or request data.
//! Use [`ReadinessService`] / [`LivenessService`] as route services, or
//! [`ProbeLayer`] to answer fixed paths in front of any service.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::{probe::ProbeLayer, Coordinator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let graceful = Coordinator::builder()
//!     .handle_signals(false)
//!     .readiness_path("/ready")
//!     .liveness_path("/live")
//!     .build()
//!     .unwrap();
//! let app = ServiceBuilder::new()
//!     .layer(ProbeLayer::new(&graceful))
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//! let probe = |path: &str| {
//!     let req = Request::get(path).body(String::new()).unwrap();
//!     let app = app.clone();
//!     async move { app.oneshot(req).await.unwrap().status() }
//! };
//!
//! let warm_up = graceful.readiness().gate("cache warm-up");
//! assert_eq!(probe("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
//! warm_up.set_ready(true);
//! assert_eq!(probe("/ready").await, StatusCode::OK);
//!
//! graceful.trigger(); // readiness drops at once; liveness stays up
//! assert_eq!(probe("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(probe("/live").await, StatusCode::OK);
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

pub use crate::answer::FixedBody;
use crate::answer::{liveness_response, readiness_response};
pub use crate::core::readiness::ReadinessStatus;
use crate::core::state::Shared;
use crate::core::sync::Arc;

mod readiness;
pub use self::readiness::{Readiness, ReadinessGate};

mod body;
mod future;
mod layer;
mod service;

pub(crate) use self::body::ProbeBody;
pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::ProbeLayer;
pub use self::service::Probe;

/// A tower service answering the readiness probe (see [`Readiness`]).
/// Works with axum's `route_service`.
#[derive(Clone)]
pub struct ReadinessService {
    shared: Arc<Shared>,
}

impl ReadinessService {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl fmt::Debug for ReadinessService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for ReadinessService {
    type Response = Response<FixedBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(readiness_response(&self.shared, req.method())))
    }
}

/// A tower service answering the liveness probe: `200 live` through the whole
/// shutdown.
#[derive(Clone, Debug, Default)]
pub struct LivenessService {
    _priv: (),
}

impl LivenessService {
    /// The liveness probe.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B> Service<Request<B>> for LivenessService {
    type Response = Response<FixedBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(liveness_response(req.method())))
    }
}
