//! Graceful shutdown for tower-based servers (axum, tonic, plain hyper) that
//! loses nothing.
//!
//! * [`InFlight`]: counts every request from `call` until its response *body*
//!   ends or is dropped (streams included; panics and disconnects included).
//! * [`Drain`]: from the trigger, tells HTTP/1.x keep-alive connections to
//!   close (`Connection: close`, a share rising over the pre-drain delay);
//!   while draining, serves requests on open connections and answers only
//!   those that could not finish with `503` + `Retry-After` + `Connection:
//!   close`, or a trailers-only gRPC `UNAVAILABLE` (the [`drain`] policy).
//! * [`serve`] (feature `serve`): a hyper-util server loop that owns the
//!   connections (listener closed at drain start, HTTP/2 GOAWAY during the
//!   pre-drain, idle connections closed only when nothing is in flight), for
//!   L4 balancers and pooled clients.
//! * [`Readiness`], [`ReadinessService`], [`LivenessService`],
//!   [`ProbeLayer`]: readiness drops the moment shutdown is triggered;
//!   liveness stays up; app-controlled gates.
//! * [`ShutdownSignal`]: fires when draining starts, for long-running handlers
//!   (streams, WebSockets, long-polls, loops); an axum extractor with feature
//!   `axum`, and in request extensions for tonic and plain tower services.
//! * [`Coordinator`]: SIGTERM/SIGINT (a second one forces), pre-drain delay,
//!   drain deadline, cleanup hooks with timeouts, tracked background work and
//!   a [`ShutdownReport`] logged with `tracing`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_graceful::{Coordinator, ShutdownSignal};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let graceful = Coordinator::builder()
//!         .pre_drain_delay(Duration::from_secs(5)) // balancer probe interval × threshold
//!         .total_budget(Duration::from_secs(30))   // terminationGracePeriodSeconds
//!         .readiness_path("/ready")
//!         .liveness_path("/live")
//!         .build()?;
//!
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello" }))
//!         .route("/events", get(|signal: ShutdownSignal| async move {
//!             signal.cancelled().await; // a real handler streams until then
//!             "bye"
//!         }))
//!         .layer(graceful.layer());
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     // Feature `serve`: owns the connections through the shutdown. With
//!     // your own loop: `axum::serve(..).with_graceful_shutdown(graceful.close_connections())`.
//!     tokio::spawn(tower_graceful::serve(listener, app, &graceful));
//!
//!     let report = graceful.wait().await;
//!     println!("{report}");
//!     Ok(())
//! }
//! ```
//!
//! # Feature flags
//!
//! * `axum`: `ShutdownSignal` implements axum-core's `FromRequestParts` and
//!   `OptionalFromRequestParts`.
//! * `tonic`: [`grpc_health::report_health`] marks services `SERVING` in
//!   `tonic-health`, and `NOT_SERVING` when shutdown is triggered.
//! * `metrics`: [`shutdown_metrics::Emitter`] records the coordinator's state
//!   (in-flight requests and tasks, readiness, phase, rejections, the
//!   report's counters and phase durations) with the `metrics` facade, off
//!   the serving path.
//! * `serve`: [`serve`] and the [`connection`] module, on hyper and
//!   hyper-util.
//! * `systemd` (unix): the `systemd` module: `sd_notify` readiness, shutdown
//!   progress and watchdog driven by the coordinator (`sd-notify`), and
//!   listeners passed by socket activation (`listenfd`).
//!
//! # Testing
//!
//! [`testing`] shows how to test a handler's shutdown on tokio's paused
//! clock (trigger, observe each phase, assert that a stream or loop ends,
//! assert the report), with [`testing::terminate`] for the last step.
//!
//! # Logs
//!
//! Every event of a shutdown is logged with `tracing` (target
//! `tower_graceful`) inside one `shutdown` span with the fields `cause` and
//! `phase` (recorded as the phase changes); cleanup hooks run inside it too.

#![warn(missing_docs)]
#![deny(unreachable_pub, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod builder;
mod coordinator;
pub mod drain;
mod event;
mod extension;
mod graceful;
mod in_flight;
mod probe;
mod report;
mod signal;
mod state;
mod sync;
mod tracker;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod connection;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc_health;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod shutdown_metrics;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub mod systemd;
pub mod testing;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub use crate::connection::serve;

pub use crate::body::FixedBody;
pub use crate::builder::{
    Builder, ConfigError, DEFAULT_CLEANUP_TIMEOUT, DEFAULT_DRAIN_DEADLINE, DEFAULT_PRE_DRAIN_DELAY,
    DEFAULT_RETRY_AFTER, DEFAULT_REUSE_GRACE, GRPC_HEALTH_WATCH,
};
pub use crate::coordinator::{CloseConnections, Coordinator, Draining, HookRegistrationError};
pub use crate::drain::{Drain, DrainLayer, RejectContext};
pub use crate::extension::{AddSignal, SignalLayer};
#[cfg(feature = "axum")]
pub use crate::extract::MissingShutdownSignal;
pub use crate::graceful::{Graceful, GracefulLayer};
pub use crate::in_flight::{InFlight, InFlightLayer};
pub use crate::probe::{
    LivenessService, ProbeLayer, Probes, Readiness, ReadinessGate, ReadinessService,
};
pub use crate::report::{
    DrainOutcome, HookOutcome, HookReport, ShutdownReport, Straggler, StragglerKind, TriggerCause,
};
pub use crate::signal::{Cancelled, InFlightGuard, ShutdownSignal};
pub use crate::state::{Phase, ReadinessStatus};

/// Response futures and bodies of the middleware, by module.
pub mod future {
    pub use crate::drain::ResponseFuture as DrainFuture;
    pub use crate::graceful::GracefulFuture;
    pub use crate::in_flight::CountedFuture;
    pub use crate::in_flight::ResponseFuture as InFlightFuture;
}

/// Response bodies of the middleware.
pub mod body_types {
    pub use crate::drain::ResponseBody as DrainBody;
    pub use crate::graceful::GracefulBody;
    pub use crate::in_flight::CountedBody;
    pub use crate::in_flight::ResponseBody as InFlightBody;
}

/// Every Rust snippet of the README, compiled (and run unless marked
/// `no_run`) as a doctest.
#[cfg(all(
    doctest,
    unix,
    feature = "axum",
    feature = "tonic",
    feature = "serve",
    feature = "metrics",
    feature = "systemd"
))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(all(test, not(tower_graceful_loom)))]
mod model_tests;
#[cfg(all(test, not(tower_graceful_loom)))]
mod tests;
