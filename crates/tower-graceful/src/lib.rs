//! Graceful shutdown for tower-based servers (axum, tonic, plain hyper) that
//! loses nothing.
//!
//! * [`in_flight`]: counts every request from `call` until its response
//!   *body* ends or is dropped (streams included; panics and disconnects
//!   included).
//! * [`drain`]: from the trigger, tells HTTP/1.x keep-alive connections to
//!   close (`Connection: close`, a share rising over the pre-drain delay);
//!   while draining, serves requests on open connections and answers only
//!   those that could not finish with `503` + `Retry-After` + `Connection:
//!   close`, or a trailers-only gRPC `UNAVAILABLE` (the policy table is in
//!   its docs).
//! * [`probe`]: readiness drops the moment shutdown is triggered; liveness
//!   stays up; app-controlled gates.
//! * [`ShutdownSignal`] ([`signal`]): fires when draining starts, for
//!   long-running handlers (streams, WebSockets, long-polls, loops); an axum
//!   extractor with feature `axum`, [`ShutdownSignal::current`] for tonic and
//!   plain tower services, or in request extensions with [`add_signal`].
//! * [`GracefulLayer`] ([`graceful`]): the three middleware above fused into
//!   one service; what [`Coordinator::layer`] returns.
//! * [`serve`] (feature `serve`, [`connection`]): a hyper-util server loop
//!   that owns the connections (listener closed at drain start, HTTP/2
//!   GOAWAY during the pre-drain, idle connections closed only when nothing
//!   is in flight), for L4 balancers and pooled clients.
//! * [`Coordinator`] ([`coordinator`]): SIGTERM/SIGINT (a second one
//!   forces), pre-drain delay (fixed, or [adaptive](PreDrain::adaptive):
//!   ended by the balancers' visible retreat), drain deadline, cleanup hooks with timeouts,
//!   tracked background work and a [`ShutdownReport`] ([`report`]) logged
//!   with `tracing`.
//!
//! # The map
//!
//! The modules, top to bottom; every arrow points down (`.ci/module_graph.py`
//! checks it):
//!
//! ```text
//! coordinator   the handle users hold; builder, driver (phases, deadline),
//!   │           hooks, OS signals, the layers' constructors
//! connection    serve: the listener, GOAWAY, idle close (feature `serve`)
//! graceful      the fused layer
//! in_flight  drain  probe  add_signal      one module per middleware; each
//!               folder: mod (its policy and docs), layer, service, future,
//!               body (its own opaque ResponseFuture / ResponseBody)
//! stack         the settings the layers of one coordinator share (one Arc)
//! answer        what the crate answers by itself (probe answers,
//!   │           rejections) and the one response body every layer uses
//! lame_duck     Connection: close, the rising share
//! signal        ShutdownSignal, TaskGuard
//! core          per-coordinator state, no HTTP: guard (what a request
//!               holds) → state (phase, signals, gates) → counter (slots,
//!               seal), names, tasks → evidence (the adaptive pre-drain's)
//!               → event (the latch)
//! integrations  axum extractor, tonic health, systemd, restart, metrics
//!               (leaves; restart uses systemd)
//! ```
//!
//! A request reads top to bottom in one pass: the layer
//! ([`GracefulLayer`]) wraps the service; its `call` answers a probe path or
//! claims a slot in the thread's shard of the counter (`core::counter`,
//! which refuses it once the drain completed, and the request is rejected);
//! the slot's ticket and an `Arc` of the state ride in a guard
//! (`core::guard`) in the response future, then in the response body; the
//! body's end (or drop, or the future's drop) releases it; while draining
//! the release goes through one exact counter, and the release that brings
//! it to zero sets the latch that [`Coordinator::drained`] awaits, which
//! lets the driver run the hooks and write the report. The state's lifetime
//! is the `Arc`'s alone: the crate has no `unsafe` code.

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
//!             signal.draining().await; // a real handler streams until then
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
//! * `tonic`: [`grpc_health::report_health`] reports readiness in
//!   `tonic-health`: `SERVING` while every readiness gate is open,
//!   `NOT_SERVING` otherwise and from the trigger on.
//! * `metrics`: [`shutdown_metrics::Emitter`] records the coordinator's state
//!   (in-flight requests and tasks, readiness, phase, rejections, the
//!   report's counters and phase durations) with the `metrics` facade, off
//!   the serving path.
//! * `serve`: [`serve`] and the [`connection`] module, on hyper and
//!   hyper-util.
//! * `systemd` (unix): the `systemd` module: `sd_notify` readiness, shutdown
//!   progress and watchdog driven by the coordinator (`sd-notify`), and
//!   listeners passed by socket activation (`listenfd`).
//! * `restart` (unix): the `restart` module: restart in place on `SIGHUP`
//!   or by call, the successor started on the same sockets and ready before
//!   this process drains (implies `systemd`).
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
#![deny(unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod add_signal;
mod answer;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod connection;
pub mod coordinator;
mod core;
pub mod drain;
pub mod graceful;
pub mod in_flight;
mod integrations;
mod lame_duck;
pub mod probe;
pub mod report;
pub mod signal;
mod stack;
pub mod testing;

pub use crate::coordinator::{Builder, Coordinator, PreDrain};
pub use crate::core::state::Phase;
pub use crate::graceful::{Graceful, GracefulLayer};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::integrations::MissingShutdownSignal;
pub use crate::report::ShutdownReport;
pub use crate::signal::ShutdownSignal;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub use crate::connection::serve;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use crate::integrations::grpc_health;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use crate::integrations::metrics as shutdown_metrics;
#[cfg(all(feature = "restart", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "restart", unix))))]
pub use crate::integrations::restart;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub use crate::integrations::systemd;

/// Every Rust snippet of the README, compiled (and run unless marked
/// `no_run`) as a doctest.
#[cfg(all(
    doctest,
    unix,
    feature = "axum",
    feature = "tonic",
    feature = "serve",
    feature = "metrics",
    feature = "systemd",
    feature = "restart"
))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The API's shape as a user's crate sees it, checked as doctests.
///
/// Report and status enums are `#[non_exhaustive]`, so a variant can be added
/// without a breaking release: a match needs a wildcard arm.
///
/// ```compile_fail
/// use tower_graceful::probe::ReadinessStatus;
/// fn code(s: &ReadinessStatus) -> u8 {
///     match s {
///         ReadinessStatus::Ready => 0,
///         ReadinessStatus::NotReady(_) => 1,
///         ReadinessStatus::ShuttingDown => 2,
///     }
/// }
/// ```
///
/// ```
/// use tower_graceful::probe::ReadinessStatus;
/// fn code(s: &ReadinessStatus) -> u8 {
///     match s {
///         ReadinessStatus::Ready => 0,
///         ReadinessStatus::NotReady(_) => 1,
///         ReadinessStatus::ShuttingDown => 2,
///         _ => 3,
///     }
/// }
/// ```
///
/// The layers' response futures are `#[must_use]` (like tower-http's): a
/// future dropped unpolled does nothing, and the compiler says so. (A
/// `Service::call` is `#[must_use]` by itself; these catch futures passed
/// around by other means.)
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// type Inner = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
/// fn make() -> tower_graceful::drain::ResponseFuture<Inner> { unimplemented!() }
/// fn drop_it() { make(); }
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// type Inner = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
/// fn make() -> tower_graceful::in_flight::ResponseFuture<Inner> { unimplemented!() }
/// fn drop_it() { make(); }
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// type Inner = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
/// fn make() -> tower_graceful::drain::ResponseFuture<Inner> { unimplemented!() }
/// fn make_counted() -> tower_graceful::in_flight::ResponseFuture<Inner> { unimplemented!() }
/// fn drop_them() {
///     let _ = make();
///     let _ = make_counted();
/// }
/// ```
#[cfg(doctest)]
struct ApiShapeDoctests;

#[cfg(all(test, not(tower_graceful_loom)))]
mod model_tests;
#[cfg(all(test, not(tower_graceful_loom)))]
mod tests;
