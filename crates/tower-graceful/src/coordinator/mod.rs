//! The [`Coordinator`]: one per process, shared by every server, driving the
//! phases of a shutdown.
//!
//! ```text
//! serving ──trigger──▶ triggered ──pre-drain delay──▶ draining ──all done──▶ cleaning-up ──▶ done
//!                      readiness down                 ShutdownSignal fires     hooks           report
//!                                                     open connections still served
//!                                                        │ deadline / 2nd signal
//!                                                        ▼
//!                                                      forced (hard signal, stragglers named)
//! ```
//!
//! Every transition is event-driven; nothing polls with sleeps. The driver is
//! one task, spawned when the shutdown is triggered, on the runtime of the
//! caller of [`Coordinator::trigger`] (or of the OS-signal listener, which
//! runs on the runtime that built the coordinator). Every waiting method
//! ([`wait`](Coordinator::wait), [`drained`](Coordinator::drained),
//! [`draining`](Coordinator::draining),
//! [`close_connections`](Coordinator::close_connections)) keeps the shutdown
//! driven: if the driver's runtime shuts down (or nobody could spawn it, as
//! when `trigger` is called from a plain thread), the waiter starts a driver
//! on its own runtime, and the listener too. A restarted driver resumes where
//! the first one stopped: the pre-drain delay counts from the trigger, the
//! in-flight count at the start of draining and the drain's outcome are
//! kept, and a hook that was running when its runtime went away is reported
//! as [`HookOutcome::Abandoned`](crate::report::HookOutcome::Abandoned) (it was cancelled with that runtime, and is
//! not run twice); the hooks after it run.
//!
//! # Example
//!
//! The phases on tokio's paused clock: a pre-drain delay, a tracked job
//! that outlives the drain deadline, a cleanup hook.
//!
//! ```
//! use std::time::Duration;
//! use tower_graceful::report::{DrainOutcome, HookOutcome};
//! use tower_graceful::{Coordinator, Phase};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder()
//!     .handle_signals(false) // a real server leaves SIGTERM/SIGINT on
//!     .pre_drain_delay(Duration::from_secs(5))
//!     .drain_deadline(Duration::from_secs(10))
//!     .build()?;
//! graceful.on_shutdown("close pool", || async { Ok::<_, std::io::Error>(()) })?;
//! let _job = graceful.track("nightly export"); // never finishes
//!
//! graceful.trigger();
//! assert_eq!(graceful.phase(), Phase::Triggered);
//! let report = graceful.wait().await;
//! assert_eq!(report.pre_drain, Duration::from_secs(5));
//! assert_eq!(report.drain_outcome, DrainOutcome::DeadlineExceeded);
//! assert_eq!(report.stragglers.len(), 1); // the job, by name
//! assert_eq!(report.hooks[0].outcome, HookOutcome::Completed);
//! assert_eq!(graceful.phase(), Phase::Done);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) use self::builder::Config;
pub use self::builder::{
    Builder, ConfigError, ConfigErrorKind, DEFAULT_CLEANUP_TIMEOUT, DEFAULT_DRAIN_DEADLINE,
    DEFAULT_PRE_DRAIN_DELAY, DEFAULT_RETRY_AFTER, DEFAULT_REUSE_GRACE, GRPC_HEALTH_WATCH,
};
pub(crate) use self::driver::trigger_with;
pub use self::hooks::HookRegistrationError;
use self::hooks::{BoxError, Hooks};
pub use self::pre_drain::{PreDrain, DEFAULT_QUIET_WINDOW, DEFAULT_READINESS_CHECKS};
use self::state::{coordination, Coordination, Progress};
pub use crate::core::state::Phase;
use crate::core::state::Shared;
use crate::core::sync::{lock, Arc, Mutex};
use crate::graceful::GracefulLayer;
use crate::probe::{LivenessService, Readiness, ReadinessService};
use crate::report::{ShutdownReport, TriggerCause};
pub use crate::signal::Draining;
use crate::signal::{ShutdownSignal, TaskGuard};
use crate::stack::Stack;

/// What started the shutdown (see [`Coordinator::cause`]).
pub(crate) fn cause_of(shared: &Shared) -> Option<TriggerCause> {
    lock(&coordination(shared).cause).clone()
}

mod builder;
mod driver;
mod hooks;
mod layers;
mod os_signal;
mod pre_drain;
mod state;

/// Ties the layers, the signal and the phases together. One per process,
/// cheap to clone, shared by every server (HTTP, gRPC, admin).
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_graceful::Coordinator;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let graceful = Coordinator::builder()
///     .pre_drain_delay(Duration::from_secs(5))
///     .total_budget(Duration::from_secs(30))
///     .readiness_path("/ready")
///     .liveness_path("/live")
///     .build()?;
///
/// let app = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(graceful.layer());
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // Connections stay open (and are served) until nothing is in flight, so
/// // a client of an L4 balancer loses nothing; `tower_graceful::serve`
/// // (feature `serve`) also closes the listener when draining starts.
/// // (`graceful.draining()` here would close every connection at drain
/// // start: right behind an L7 balancer only.)
/// let server = axum::serve(listener, app).with_graceful_shutdown(graceful.close_connections());
/// tokio::spawn(async move { server.await });
///
/// let report = graceful.wait().await; // SIGTERM / Ctrl-C, then drain, hooks
/// println!("{report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) shared: Arc<Shared>,
    /// What `layer()` hands to every `Graceful` service.
    stack: Arc<Stack>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("phase", &self.phase())
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

/// Runs `fut` while keeping the shutdown driven: whenever the trigger fires
/// or a driver or listener dies with its runtime, the missing task is
/// started again on the runtime polling this. What every waiting method of
/// the coordinator is built on, so that none can wait for a task that is
/// gone.
///
/// # Panics
///
/// Outside a Tokio runtime, with a message that says so.
async fn driving<F: Future>(shared: Arc<Shared>, fut: F) -> F::Output {
    // Subscribed before the first look: a nudge between the look and the
    // await is not lost (the receiver keeps the version it saw).
    let mut nudges = shared.nudge.subscribe();
    let mut fut = pin!(fut);
    loop {
        if coordination(&shared).config.handle_signals && !shared.done.is_set() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                if let Err(e) = os_signal::ensure(&shared, &handle) {
                    tracing::warn!(target: "tower_graceful", error = %e, "could not listen for SIGTERM/SIGINT again");
                }
            }
        }
        assert!(
            driver::ensure_driver(&shared),
            "tower-graceful: a Coordinator's waiting futures (wait, drained, draining, \
             close_connections) must be polled inside a Tokio runtime: run them under \
             #[tokio::main] or Runtime::block_on"
        );
        tokio::select! {
            biased;
            out = &mut fut => return out,
            changed = nudges.changed() => {
                // Err only if the sender is gone, which it cannot be while
                // `shared` is held.
                debug_assert!(changed.is_ok());
            }
        }
    }
}

impl Coordinator {
    /// A builder with the documented defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn start(
        config: Config,
        handle: &tokio::runtime::Handle,
    ) -> Result<Self, ConfigError> {
        let config = Arc::new(config);
        let coordination = Coordination {
            config: config.clone(),
            hooks: Mutex::new(Hooks::default()),
            progress: Progress::default(),
            cause: Mutex::new(None),
            report: Mutex::new(None),
            driver_alive: AtomicBool::new(false),
            drivers_started: AtomicUsize::new(0),
            listener_alive: AtomicBool::new(false),
            signals_seen: AtomicU32::new(0),
        };
        let shared = Arc::new(Shared::coordinated(
            config.policy,
            config.pre_drain.checks_needed(),
            Box::new(coordination),
        ));
        crate::core::state::registry::insert(&shared);
        let stack = Arc::new(Stack::new(
            shared.clone(),
            config.reject.clone(),
            config.probes.clone(),
            config.untracked.clone(),
        ));
        if config.handle_signals {
            os_signal::ensure(&shared, handle).map_err(ConfigError::signal)?;
        }
        Ok(Self { shared, stack })
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        coordination(&self.shared).config.clone()
    }

    /// The settings every layer of this coordinator shares.
    pub(crate) fn stack(&self) -> Arc<Stack> {
        self.stack.clone()
    }

    /// Starts the shutdown (idempotent: later calls do nothing). Returns
    /// whether this call started it.
    pub fn trigger(&self) -> bool {
        self.trigger_with(TriggerCause::Api)
    }

    pub(crate) fn trigger_with(&self, cause: TriggerCause) -> bool {
        trigger_with(&self.shared, cause)
    }

    /// Skips straight to the forced stop: cuts the pre-drain delay and the
    /// drain short, fires the hard signal, then runs the hooks. Triggers
    /// first if needed. What a second SIGTERM / Ctrl-C does.
    pub fn force(&self) {
        self.trigger_with(TriggerCause::Api);
        self.shared.force();
    }

    /// Completes when shutdown is triggered (readiness goes down then), at
    /// once if it already was. For wiring other health systems; servers
    /// should use [`draining`](Self::draining).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes. Dropping it (in a `tokio::select!`
    /// branch that lost, say) loses nothing; a later call sees the same
    /// state.
    pub async fn triggered(&self) {
        self.shared.triggered.wait().await
    }

    /// Completes when draining has begun and nothing is in flight (requests
    /// until their bodies end, tracked tasks): woken directly by the last
    /// guard to go, before the hooks run. Never completes if shutdown is not
    /// triggered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes. Dropping it (in a `tokio::select!`
    /// branch that lost, say) loses nothing; a later call sees the same
    /// state.
    pub async fn drained(&self) {
        let shared = self.shared.clone();
        driving(self.shared.clone(), shared.tracker.drained()).await
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// What started the shutdown, once it has started (`None` before the
    /// trigger). The first cause recorded wins: a later trigger or signal
    /// does not change it.
    pub fn cause(&self) -> Option<TriggerCause> {
        cause_of(&self.shared)
    }

    /// Requests and tracked tasks in flight now (sums the shards: for gauges
    /// and tests, not for per-request use).
    pub fn in_flight(&self) -> usize {
        self.shared.tracker.in_flight()
    }

    /// Requests answered with the draining rejection so far.
    pub fn rejected(&self) -> usize {
        self.shared.tracker.rejected()
    }

    /// The signal handlers watch. See [`ShutdownSignal`].
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal::new(self.shared.clone())
    }

    /// Keeps the drain waiting until the guard is dropped (background jobs,
    /// WebSocket sessions). `name` appears in the report if it is still alive
    /// at the deadline.
    pub fn track(&self, name: impl Into<Cow<'static, str>>) -> TaskGuard {
        TaskGuard::task(self.shared.clone(), name.into())
    }

    /// App-controlled readiness gates and the current status.
    pub fn readiness(&self) -> Readiness {
        Readiness::new(self.shared.clone())
    }

    /// The readiness probe as a tower service (for axum's `route_service`).
    pub fn readiness_service(&self) -> ReadinessService {
        ReadinessService::new(self)
    }

    /// The liveness probe as a tower service.
    pub fn liveness_service(&self) -> LivenessService {
        LivenessService::new()
    }

    /// A future that completes when draining begins: hand it to
    /// `axum::serve(..).with_graceful_shutdown(..)`, tonic's
    /// `serve_with_shutdown(..)` or hyper-util's `GracefulShutdown`, so the
    /// listener closes and HTTP/2 connections get GOAWAY. It completes after
    /// the pre-drain delay, not at the trigger: during the delay the server
    /// keeps accepting while load balancers take the instance out. The
    /// future owns a handle (`'static`, `Send`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes; a new call sees the same state.
    pub fn draining(&self) -> Draining {
        Draining::new(&self.shared, Some(self.keep_driven()))
    }

    /// A future that never completes and keeps the shutdown driven while it
    /// is polled (see `driver::driving`).
    fn keep_driven(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(driving(self.shared.clone(), std::future::pending::<()>()))
    }

    /// A future that completes when a server should close the connections it
    /// still has: once draining began and nothing is left in flight, or when
    /// the drain is cut short (deadline, second signal). Hand it to
    /// `axum::serve(..).with_graceful_shutdown(..)`, tonic's
    /// `serve_with_shutdown(..)` or hyper-util's `GracefulShutdown` instead
    /// of [`draining`](Self::draining) when clients reach this instance
    /// through an L4 balancer or a connection pool: open keep-alive
    /// connections keep being served (with `Connection: close`) through the
    /// drain, instead of being closed under their clients at its start. Its
    /// cost: those servers keep their listener open until then too
    /// (new connections are served the same way). [`serve`](crate::serve)
    /// does better: it closes the listener when draining begins and the idle
    /// connections only at the end.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes; a new call sees the same state.
    pub fn close_connections(&self) -> CloseConnections {
        let shared = self.shared.clone();
        CloseConnections {
            inner: Box::pin(driving(self.shared.clone(), async move {
                tokio::select! {
                    _ = shared.tracker.drained() => {}
                    _ = shared.hard.cancelled() => {}
                }
            })),
            done: false,
        }
    }

    /// Registers a cleanup hook (close pools, flush buffers). Hooks run after
    /// the drain, **in registration order**, one at a time, each within the
    /// builder's `hook_timeout` and all within `cleanup_timeout`. An error, a
    /// panic or a hang in one is reported and never stops the others or the
    /// exit. Returns an error if cleanup has already begun.
    pub fn on_shutdown<F, Fut, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        hook: F,
    ) -> Result<(), HookRegistrationError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.add_hook(name.into(), None, hook)
    }

    /// Like [`on_shutdown`](Self::on_shutdown) with this hook's own timeout
    /// (capped by what is left of `cleanup_timeout` when it runs).
    pub fn on_shutdown_with_timeout<F, Fut, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        timeout: Duration,
        hook: F,
    ) -> Result<(), HookRegistrationError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.add_hook(name.into(), Some(timeout), hook)
    }

    fn add_hook<F, Fut, E>(
        &self,
        name: Cow<'static, str>,
        timeout: Option<Duration>,
        hook: F,
    ) -> Result<(), HookRegistrationError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        hooks::add(&coordination(&self.shared).hooks, name, timeout, hook)
    }

    /// Waits for the whole shutdown (trigger, pre-drain, drain, hooks) and
    /// returns the report. Does not trigger anything by itself. May be called
    /// any number of times, from any task; every call gets the same report.
    ///
    /// If the runtime that built the coordinator has shut down, `wait`
    /// restarts the driver on the caller's runtime, and it resumes where the
    /// first one stopped (see the [module docs](self)).
    ///
    /// After a clean drain it also waits (within the cleanup timeout,
    /// alongside the hooks) until the connections of [`serve`](crate::serve)
    /// have written the end of their last responses and closed, so `main`
    /// may return or exit as soon as this does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes (a driver it restarted is a task of
    /// its own and runs on). A later call gets the same report.
    pub async fn wait(&self) -> ShutdownReport {
        let shared = self.shared.clone();
        driving(self.shared.clone(), shared.done.wait()).await;
        self.report()
            .expect("report is stored before `done` is set")
    }

    /// The report, if the shutdown has finished.
    pub fn report(&self) -> Option<ShutdownReport> {
        lock(&coordination(&self.shared).report).clone()
    }

    /// The whole stack for the common case, outermost first: probes (if
    /// paths were configured) → draining responder → in-flight counting
    /// (which also makes [`ShutdownSignal::current`] and the axum extractor
    /// work), fused into one service ([`Graceful`](crate::Graceful)).
    /// Apply it around the whole router: `Router::layer`, or cheaper,
    /// `ServiceBuilder::new().layer(..).service(router)` (axum boxes every
    /// route of a `Router::layer`); tonic's `Server::builder().layer`. Not
    /// `Router::route_layer`: that runs only for requests that match a route,
    /// so the probe paths (which are not routes) answer `404`. Add
    /// [`AddSignalLayer`](crate::add_signal::AddSignalLayer) inside it if you want the signal in
    /// request extensions too (one allocation per request).
    pub fn layer(&self) -> GracefulLayer {
        GracefulLayer::new(self.stack.clone())
    }
}

pin_project_lite::pin_project! {
    /// Future returned by [`Coordinator::close_connections`]. `'static`,
    /// `Send`, cancel safe; once complete, it stays complete (polling it again
    /// returns `Ready` again).
    #[must_use = "futures do nothing unless polled"]
    pub struct CloseConnections {
        inner: Pin<Box<dyn Future<Output = ()> + Send>>,
        done: bool,
    }
}

impl fmt::Debug for CloseConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseConnections").finish_non_exhaustive()
    }
}

impl Future for CloseConnections {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if !*this.done {
            std::task::ready!(this.inner.as_mut().poll(cx));
            *this.done = true;
        }
        Poll::Ready(())
    }
}
