//! Testing your shutdown: how to check, in a unit test, that a handler ends
//! when shutdown starts and that the report says what you expect.
//!
//! Run the test on tokio's **paused clock** (`#[tokio::test(start_paused =
//! true)]`, tokio's `test-util` feature): the pre-drain delay and the drain
//! deadline pass at once and exactly, and every step below is an event to
//! await, never a sleep to hope through. Build the coordinator with
//! [`handle_signals(false)`](crate::Builder::handle_signals), so tests in one
//! process do not share SIGTERM.
//!
//! | to observe | await |
//! |---|---|
//! | readiness down ([`Phase::Triggered`](crate::Phase::Triggered)) | [`Coordinator::triggered`] |
//! | draining: `ShutdownSignal` fired; requests on open connections still served (the rejection only for what could not finish: [policy](crate::drain)) | [`ShutdownSignal::draining`](crate::ShutdownSignal::draining) of [`Coordinator::signal`] |
//! | nothing in flight any more | [`Coordinator::drained`] |
//! | the deadline passed: hard signal fired | [`ShutdownSignal::forced`](crate::ShutdownSignal::forced) |
//! | cleanup | your hook runs (register one that reports to the test) |
//! | done, with the report | [`Coordinator::wait`], or [`terminate`] |
//!
//! Bound each wait with `tokio::time::timeout` (virtual time on the paused
//! clock, so a generous bound costs nothing). [`terminate`] is the shortcut
//! for the common end of a test (Rocket's `Client::terminate()` plays the
//! same part): trigger, wait for the report within the configured budget,
//! and fail with what was still in flight if it does not come.
//!
//! # Example: a stream that ends when draining begins
//!
//! A server-sent-events style handler behind [`Coordinator::layer`] (driven
//! with tower's `oneshot`, no server needed) sends ticks until
//! [`ShutdownSignal::current`](crate::ShutdownSignal::current) fires, then a
//! last `bye` event and the end of its body.
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{channel::Channel, BodyExt};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::{testing, Coordinator, report::DrainOutcome, Phase, ShutdownSignal};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder()
//!     .handle_signals(false)
//!     .pre_drain_delay(Duration::from_secs(5))
//!     .build()?;
//! let events = ServiceBuilder::new()
//!     .layer(graceful.layer())
//!     .service(service_fn(|_req: Request<String>| async {
//!         let signal = ShutdownSignal::current().expect("inside graceful.layer()");
//!         let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
//!         tokio::spawn(async move {
//!             let mut tick = tokio::time::interval(Duration::from_secs(1));
//!             loop {
//!                 tokio::select! {
//!                     biased;
//!                     _ = signal.draining() => break,
//!                     _ = tick.tick() => {
//!                         if tx.send_data(Bytes::from("data: tick\n\n")).await.is_err() {
//!                             return; // the client went away
//!                         }
//!                     }
//!                 }
//!             }
//!             let _ = tx.send_data(Bytes::from("event: bye\n\n")).await;
//!         });
//!         Ok::<_, Infallible>(Response::new(body))
//!     }));
//!
//! let mut body = events.oneshot(Request::new(String::new())).await?.into_body();
//! let first = body.frame().await.expect("a frame")?.into_data().unwrap();
//! assert_eq!(first, "data: tick\n\n");
//! assert_eq!(graceful.in_flight(), 1);
//!
//! // Trigger, and watch each phase as it happens.
//! graceful.trigger();
//! graceful.triggered().await;
//! assert_eq!(graceful.phase(), Phase::Triggered);
//! assert!(!graceful.readiness().status().is_ready());
//! graceful.signal().draining().await; // the 5 s pre-drain delay, at once
//! assert_eq!(graceful.phase(), Phase::Draining);
//!
//! // The stream ends by itself, with its last event.
//! let rest = tokio::time::timeout(Duration::from_secs(60), body.collect()).await??;
//! assert!(rest.to_bytes().ends_with(b"event: bye\n\n"));
//!
//! let report = testing::terminate(&graceful).await;
//! assert_eq!(report.drain_outcome, DrainOutcome::Drained);
//! assert_eq!(report.pre_drain, Duration::from_secs(5));
//! assert_eq!(report.in_flight_at_drain, 1);
//! assert_eq!(report.completed_while_draining, 1);
//! assert!(report.is_clean(), "{report}");
//! # Ok(()) }
//! ```
//!
//! # Example: a worker loop, and one that never stops
//!
//! A background loop holds a [`track`](crate::ShutdownSignal::track) guard
//! so the drain waits for it; one that ignores the signal is abandoned at
//! the deadline and named in the report.
//!
//! ```
//! use std::time::Duration;
//! use tower_graceful::{testing, Coordinator, report::DrainOutcome, report::StragglerKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder()
//!     .handle_signals(false)
//!     .drain_deadline(Duration::from_secs(10))
//!     .build()?;
//!
//! let signal = graceful.signal();
//! let guard = signal.track("worker");
//! let worker = tokio::spawn(async move {
//!     let mut rounds = 0u32;
//!     while !signal.is_draining() {
//!         tokio::select! {
//!             _ = signal.draining() => {}
//!             _ = tokio::time::sleep(Duration::from_millis(100)) => rounds += 1,
//!         }
//!     }
//!     drop(guard); // tell the drain this work is done
//!     rounds
//! });
//! let stuck = graceful.track("stuck job"); // never released in time
//!
//! let report = testing::terminate(&graceful).await;
//! let rounds = tokio::time::timeout(Duration::from_secs(1), worker).await??;
//! assert_eq!(rounds, 0, "the worker stopped at the signal");
//! assert_eq!(report.drain_outcome, DrainOutcome::DeadlineExceeded);
//! assert_eq!(report.drain, Duration::from_secs(10));
//! assert_eq!(report.stragglers.len(), 1);
//! assert!(matches!(
//!     &report.stragglers[0].what,
//!     StragglerKind::Task { name } if name == "stuck job"
//! ));
//! drop(stuck);
//! # Ok(()) }
//! ```

use std::time::Duration;

use crate::{Coordinator, ShutdownReport};

/// Extra time [`terminate`] allows beyond the configured phases.
const MARGIN: Duration = Duration::from_secs(1);

/// Triggers the shutdown (if it was not already) and returns its report: the
/// end of a shutdown test in one line.
///
/// The wait is bounded by the coordinator's own budget (pre-drain delay +
/// drain deadline + cleanup timeout, plus a second; virtual time on the
/// paused clock). The coordinator guarantees a report within that, so if
/// none comes the runtime is blocked (a handler that never yields, a
/// `block_on` inside a task) and this panics with the phase and what is in
/// flight, instead of hanging the test.
///
/// # Panics
///
/// If the report does not come within the budget.
///
/// # Cancel safety
///
/// Cancel safe: the trigger happens on the first poll and is idempotent;
/// dropping the future stops only the wait.
pub async fn terminate(coordinator: &Coordinator) -> ShutdownReport {
    let cfg = coordinator.config();
    let budget = cfg.pre_drain.max() + cfg.drain_deadline + cfg.cleanup_timeout + MARGIN;
    coordinator.trigger();
    match tokio::time::timeout(budget, coordinator.wait()).await {
        Ok(report) => report,
        Err(_) => panic!(
            "no shutdown report within {budget:?} (the configured phases plus {MARGIN:?}): \
             phase {}, {} in flight, {} rejected",
            coordinator.phase(),
            coordinator.in_flight(),
            coordinator.rejected()
        ),
    }
}
