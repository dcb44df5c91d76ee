//! Leaves behind features: the axum extractor, tonic's health service,
//! systemd, metrics. Nothing else in the crate depends on them.

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "tonic")]
pub mod grpc_health;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(all(feature = "restart", unix))]
pub mod restart;
#[cfg(all(feature = "systemd", unix))]
pub mod systemd;

#[cfg(feature = "axum")]
pub use self::axum::MissingShutdownSignal;
