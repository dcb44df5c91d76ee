//! `ShutdownSignal` as an axum extractor (feature `axum`).

use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::ShutdownSignal;

/// Extracts the [`ShutdownSignal`] of the request: from the request
/// extensions if an [`AddSignalLayer`](crate::add_signal::AddSignalLayer) put one there,
/// otherwise from the [`InFlight`](crate::in_flight::InFlight) layer polling the handler
/// ([`ShutdownSignal::current`], no allocation). Use
/// `Option<ShutdownSignal>` to make it optional.
///
/// # Example
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_graceful::ShutdownSignal;
///
/// async fn long_poll(signal: ShutdownSignal) -> &'static str {
///     tokio::select! {
///         _ = signal.draining() => "shutting down, poll again elsewhere",
///         _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => "no news",
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let graceful = tower_graceful::Coordinator::builder().build().unwrap();
/// let app: Router = Router::new()
///     .route("/poll", get(long_poll))
///     .layer(graceful.layer());
/// # }
/// ```
impl<S> FromRequestParts<S> for ShutdownSignal
where
    S: Send + Sync,
{
    type Rejection = MissingShutdownSignal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ShutdownSignal>()
            .cloned()
            .or_else(ShutdownSignal::current)
            .ok_or(MissingShutdownSignal { _priv: () })
    }
}

impl<S> OptionalFromRequestParts<S> for ShutdownSignal
where
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ShutdownSignal>()
            .cloned()
            .or_else(ShutdownSignal::current))
    }
}

/// Rejection when a handler asks for [`ShutdownSignal`] but no layer put one
/// in the request: a wiring mistake, answered with `500`. Logged like axum's
/// own rejections: at `TRACE`, target `tower_graceful::rejection`.
#[derive(Debug)]
pub struct MissingShutdownSignal {
    _priv: (),
}

impl MissingShutdownSignal {
    /// The status of the rejection: `500 Internal Server Error`.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The text of the rejection.
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MissingShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "Missing `ShutdownSignal`: add `coordinator.layer()` (or `tower_graceful::in_flight::InFlightLayer` \
             or `tower_graceful::add_signal::AddSignalLayer`) with `Router::layer` so it covers this route",
        )
    }
}

impl std::error::Error for MissingShutdownSignal {}

impl IntoResponse for MissingShutdownSignal {
    fn into_response(self) -> Response {
        // Like axum's own rejections (axum-core's `__log_rejection`): a
        // misconfiguration, reported to the client; at TRACE on a target of
        // its own (`tower_graceful::rejection=trace` shows it), not a log
        // line on every request at the usual levels.
        tracing::event!(
            target: "tower_graceful::rejection",
            tracing::Level::TRACE,
            status = self.status().as_u16(),
            body = %self,
            rejection_type = std::any::type_name::<Self>(),
            "rejecting request",
        );
        (self.status(), self.body_text()).into_response()
    }
}
