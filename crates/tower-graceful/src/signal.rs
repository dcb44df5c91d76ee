//! [`ShutdownSignal`]: what a long-running handler watches, and
//! [`TaskGuard`]: what keeps the drain waiting for work a handler spawns.
//!
//! # Example
//!
//! Background work that finishes its batch when draining begins, and holds
//! the drain until then:
//!
//! ```
//! use std::time::Duration;
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let signal = graceful.signal();
//! let guard = signal.track("flush queue");
//! tokio::spawn(async move {
//!     signal.draining().await;
//!     tokio::time::sleep(Duration::from_millis(300)).await; // the last batch
//!     drop(guard); // now the drain may complete
//! });
//!
//! graceful.trigger();
//! let report = graceful.wait().await;
//! assert_eq!(report.in_flight_at_drain, 1);
//! assert!(report.stragglers.is_empty());
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::core::counter::TaskTicket;
use crate::core::state::Shared;
use crate::core::sync::Arc;

/// Tells a handler that shutdown has begun.
///
/// The signal fires when the coordinator enters **draining** (after the
/// pre-drain delay), not when the last request ends: a stream, WebSocket or
/// long-poll that waits on it can finish, which is what lets the drain finish.
/// A second, *hard* signal ([`forced`](Self::forced)) fires if the drain
/// deadline passes.
///
/// Get one from the coordinator ([`Coordinator::signal`](crate::Coordinator::signal)),
/// inside a handler from [`ShutdownSignal::current`] (while
/// [`Coordinator::layer`](crate::Coordinator::layer) polls it), as an axum
/// extractor (feature `axum`), or from request extensions if you add a
/// [`AddSignalLayer`](crate::add_signal::AddSignalLayer) (it is *not* part of
/// `Coordinator::layer`: one allocation per request). Cloning is cheap (one
/// `Arc`).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_graceful::ShutdownSignal;
///
/// async fn ticker(signal: ShutdownSignal) -> u32 {
///     let mut ticks = 0;
///     loop {
///         tokio::select! {
///             _ = signal.draining() => return ticks,
///             _ = tokio::time::sleep(Duration::from_millis(10)) => ticks += 1,
///         }
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let coordinator = tower_graceful::Coordinator::builder().build().unwrap();
/// let task = tokio::spawn(ticker(coordinator.signal()));
/// coordinator.trigger();
/// task.await.unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct ShutdownSignal {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal")
            .field("draining", &self.is_draining())
            .field("forced", &self.is_forced())
            .finish()
    }
}

impl ShutdownSignal {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Completes when draining begins (at once if it already has): the soft
    /// signal. The future owns a handle (`'static`, `Send`), so it can be
    /// spawned or stored as well as awaited in a `select!`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future (for example in another
    /// `tokio::select!` branch) loses nothing; a new call observes the same
    /// state.
    pub fn draining(&self) -> Draining {
        Draining::new(&self.shared, None)
    }

    /// Whether draining has begun. Non-blocking; never goes back to `false`.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.shared.soft.is_cancelled()
    }

    /// Completes when the drain deadline passed (or a second signal forced the
    /// stop): whatever is still running is about to be abandoned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing; a new call observes
    /// the same state.
    pub fn forced(&self) -> Forced {
        Forced {
            inner: self.shared.hard.clone().cancelled_owned(),
        }
    }

    /// Whether the forced stop has begun.
    pub fn is_forced(&self) -> bool {
        self.shared.hard.is_cancelled()
    }

    /// The instant the drain deadline falls, once draining has begun (`None`
    /// before, and for a signal made from a bare `CancellationToken`).
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.shared.deadline.get().copied()
    }

    /// Keeps the drain waiting until the returned guard is dropped, for work a
    /// handler hands off: a WebSocket session after the upgrade, a spawned
    /// job. `name` appears in the report if the work is still running at the
    /// deadline.
    ///
    /// Take the guard in the handler, *before* returning the upgrade response
    /// or spawning, and move it into the task: a guard taken inside the
    /// `on_upgrade` callback leaves a window, after the 101 response ended and
    /// before the callback runs, in which nothing is in flight and the drain
    /// can complete.
    pub fn track(&self, name: impl Into<Cow<'static, str>>) -> TaskGuard {
        TaskGuard::task(self.shared.clone(), name.into())
    }

    /// A child [`CancellationToken`] cancelled when draining begins, for code
    /// that already speaks tokio-util. Cancelling the child does not trigger
    /// shutdown.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.soft.child_token()
    }

    /// Like [`cancellation_token`](Self::cancellation_token), for the hard
    /// signal.
    pub fn forced_token(&self) -> CancellationToken {
        self.shared.hard.child_token()
    }
}

impl ShutdownSignal {
    /// The signal of the request being handled on this thread, if an
    /// [`InFlight`](crate::in_flight::InFlight) layer (part of
    /// [`Coordinator::layer`](crate::Coordinator::layer)) is polling it.
    ///
    /// Available while the layer polls the inner service's `call`, its
    /// response future and its response body, so any handler (axum, tonic,
    /// a plain tower service) can ask for it without anything in the request
    /// extensions and without an allocation. Not available in tasks the
    /// handler spawns: take the signal first and move it in.
    pub fn current() -> Option<ShutdownSignal> {
        crate::core::guard::current().map(ShutdownSignal::new)
    }
}

impl From<ShutdownSignal> for CancellationToken {
    fn from(signal: ShutdownSignal) -> Self {
        signal.cancellation_token()
    }
}

/// A standalone signal that fires when `token` is cancelled: for tests and
/// for code that already owns a token. It has no coordinator: no deadline,
/// and guards from [`ShutdownSignal::track`] are counted but nobody waits for
/// them.
impl From<CancellationToken> for ShutdownSignal {
    fn from(token: CancellationToken) -> Self {
        // One shard: nobody drains this state, it only counts guards.
        Self::new(Arc::new(Shared::standalone(token)))
    }
}

pin_project! {
    /// Future returned by [`ShutdownSignal::draining`] and
    /// [`Coordinator::draining`](crate::Coordinator::draining): completes when
    /// draining begins. `'static`, `Send`, cancel safe; once complete, it
    /// stays complete (polling it again returns `Ready` again).
    #[must_use = "futures do nothing unless polled"]
    pub struct Draining {
        #[pin]
        inner: WaitForCancellationFutureOwned,
        // For the coordinator's own: keeps the shutdown driven (restarts a
        // driver that died with its runtime) while this is awaited. Never
        // completes by itself.
        driver: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    }
}

impl Draining {
    pub(crate) fn new(
        shared: &Shared,
        driver: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) -> Self {
        Self {
            inner: shared.soft.clone().cancelled_owned(),
            driver,
        }
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining").finish_non_exhaustive()
    }
}

impl Future for Draining {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(driver) = this.driver {
            let _ = driver.as_mut().poll(cx);
        }
        this.inner.poll(cx)
    }
}

pin_project! {
    /// Future returned by [`ShutdownSignal::forced`]: completes when the
    /// forced stop begins. `'static`, `Send`, cancel safe; once complete, it
    /// stays complete.
    #[must_use = "futures do nothing unless polled"]
    pub struct Forced {
        #[pin]
        inner: WaitForCancellationFutureOwned,
    }
}

impl fmt::Debug for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forced").finish_non_exhaustive()
    }
}

impl Future for Forced {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

/// Counts one unit of background work until dropped.
///
/// Background work gets one from [`ShutdownSignal::track`] or
/// [`Coordinator::track`](crate::Coordinator::track); it is named in the
/// straggler list if it outlives the drain deadline. (Requests are counted by
/// [`InFlight`](crate::in_flight::InFlight) or the [`Graceful`](crate::Graceful) stack
/// with a lighter guard of their own.) The drain completes only when every
/// guard and every request is gone.
#[must_use = "the guard holds the drain only while it lives: keep it for as long as the work runs"]
pub struct TaskGuard {
    shared: Arc<Shared>,
    ticket: Option<TaskTicket>,
}

impl TaskGuard {
    pub(crate) fn task(shared: Arc<Shared>, name: Cow<'static, str>) -> Self {
        let ticket = match shared.tracker.acquire_task(name) {
            Ok(ticket) => Some(ticket),
            Err(_refused) => {
                // Nobody waits any more: the drain completed. An inert guard,
                // so the caller's code path stays the same.
                tracing::debug!(
                    target: "tower_graceful",
                    "track() after the drain completed: not counted (shutdown is past waiting)"
                );
                None
            }
        };
        Self { shared, ticket }
    }

    /// Whether this guard holds the drain. `false` only for a guard taken
    /// after the drain had already completed (nothing waits for work any
    /// more; the process is closing).
    pub fn is_tracking(&self) -> bool {
        self.ticket.is_some()
    }

    /// Releases the guard now (same as dropping it).
    pub fn release(mut self) {
        self.release_now();
    }

    #[inline]
    fn release_now(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.tracker.release_task(ticket);
        }
    }
}

impl Drop for TaskGuard {
    #[inline]
    fn drop(&mut self) {
        self.release_now();
    }
}

impl fmt::Debug for TaskGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGuard")
            .field("held", &self.ticket.is_some())
            .finish()
    }
}
