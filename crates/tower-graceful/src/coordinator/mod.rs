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
//! one task spawned by [`Builder::build`](crate::Builder::build) on the
//! runtime that builds the coordinator. If that runtime shuts down before the
//! shutdown is done, the next call to [`Coordinator::trigger`],
//! [`Coordinator::force`] or [`Coordinator::wait`] restarts the driver on the
//! caller's runtime, and it resumes where the first one stopped: the
//! pre-drain delay counts from the trigger, the in-flight count at the start
//! of draining and the drain's outcome are kept, and a hook that was running
//! when its runtime went away is reported as [`HookOutcome::Abandoned`] (it
//! was cancelled with that runtime, and is not run twice); the hooks after it
//! run.
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
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

pub(crate) use self::builder::Config;
pub use self::builder::{
    Builder, ConfigError, ConfigErrorKind, DEFAULT_CLEANUP_TIMEOUT, DEFAULT_DRAIN_DEADLINE,
    DEFAULT_PRE_DRAIN_DELAY, DEFAULT_RETRY_AFTER, DEFAULT_REUSE_GRACE, GRPC_HEALTH_WATCH,
};
use crate::core::handle::{Counted, Handle, Internal, Kept};
pub use crate::core::state::Phase;
use crate::core::state::Shared;
use crate::core::sync::{lock, Arc, Mutex};
use crate::core::tracker::Kind;
use crate::graceful::{GracefulLayer, Stack};
use crate::probe::{LivenessService, Readiness, ReadinessService};
use crate::report::{
    DrainOutcome, HookOutcome, HookReport, ShutdownReport, Straggler, StragglerKind, TriggerCause,
};
pub use crate::signal::Draining;
use crate::signal::{ShutdownSignal, TaskGuard};

mod builder;
mod layers;
mod os_signal;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type HookFn = Box<dyn FnOnce() -> HookFuture + Send>;

struct Hook {
    name: Cow<'static, str>,
    timeout: Option<Duration>,
    run: HookFn,
}

/// The cleanup hooks: registered, queued, taken one at a time by the driver,
/// reported.
#[derive(Default)]
struct Hooks {
    /// Set when cleanup begins: later registrations are refused.
    closed: bool,
    /// Not run yet, in registration order.
    queue: std::collections::VecDeque<Hook>,
    /// The hook a driver has taken and not yet reported: its name, when it
    /// started and its timeout. A driver that finds one here took over from
    /// a driver that died while the hook ran (see `Inner::driver_alive`):
    /// the hook's task was spawned on the dead driver's runtime and was
    /// cancelled with it, so it is reported as [`HookOutcome::Abandoned`]
    /// and not run again (its closure is spent, and it may have done part
    /// of its work).
    running: Option<(Cow<'static, str>, Instant, Duration)>,
    /// What became of each hook taken so far, in the order they were taken.
    done: Vec<HookReport>,
}

/// How the drain ended, recorded once (see [`Progress`]).
struct DrainEnd {
    outcome: DrainOutcome,
    stragglers: Vec<Straggler>,
    elapsed: Duration,
}

/// The driver's progress, kept in the shared state rather than in the
/// driver's task, so that a driver restarted on another runtime (see
/// `Inner::driver_alive`) resumes where the dead one stopped: it sleeps only
/// what is left of the pre-drain delay (counted from
/// [`Shared::triggered_at`](crate::core::state::Shared)), reports the
/// in-flight count taken when draining began, keeps the drain's outcome and
/// the cleanup budget, and accounts for every hook (see [`Hooks`]).
#[derive(Default)]
struct Progress {
    /// When draining began, and what was in flight then.
    drain_start: OnceLock<(Instant, usize)>,
    drain_end: OnceLock<DrainEnd>,
    /// When cleanup began: the hooks' budget counts from it.
    cleanup_start: OnceLock<Instant>,
}

struct Inner {
    /// Kept by the shared state (its arena), so layers can point to parts
    /// of it while they hold a reference to the state.
    config: Kept<Config>,
    /// What every `Graceful` service of `layer()` points to (kept too).
    stack: Kept<Stack>,
    hooks: Mutex<Hooks>,
    progress: Progress,
    cause: Mutex<Option<TriggerCause>>,
    report: Mutex<Option<ShutdownReport>>,
    /// Whether a driver task is alive. It lives on the runtime that built
    /// the coordinator; if that runtime shuts down first, the next call to
    /// `trigger`, `force` or `wait` starts a new driver on the caller's
    /// runtime instead of leaving everyone waiting on a task that is gone.
    /// The new driver resumes from [`Progress`].
    driver_alive: std::sync::atomic::AtomicBool,
}

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
    pub(crate) shared: Owner,
    inner: Arc<Inner>,
    /// `None` in the coordinator's own tasks (the driver, the OS-signal
    /// listener): only the user's handles keep the coordinator wanted.
    _user: Option<Arc<UserHandles>>,
}

/// Dropped with the last of the user's coordinator handles: references to
/// the shared state are counted exactly from then on, so the drop that ends
/// the last one (of layers, services, signals, gates) knows it; then the
/// coordinator's own tasks end unless a shutdown is under way, and the state
/// is freed once they and the last request are gone. Until that drop,
/// clones and drops of references touch only their thread's shard; after
/// it, one shared counter (keep a handle while serving: `wait` needs one
/// anyway).
struct UserHandles(Handle);

impl Drop for UserHandles {
    fn drop(&mut self) {
        self.0.seal();
    }
}

/// How a coordinator handle holds the state: a reference (the user's
/// handles), or, in the coordinator's own tasks, an [`Internal`] hold that
/// does not keep it wanted.
#[derive(Clone)]
pub(crate) enum Owner {
    User(Handle),
    Internal(Internal),
}

impl Owner {
    /// A counted reference, for signals, layers and services.
    pub(crate) fn handle(&self) -> Handle {
        match self {
            Owner::User(h) => h.clone(),
            Owner::Internal(i) => i.handle(),
        }
    }
}

impl std::ops::Deref for Owner {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        match self {
            Owner::User(h) => h,
            Owner::Internal(i) => i,
        }
    }
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("phase", &self.phase())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
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
        let shared = Handle::new(
            Shared::with_policy(CancellationToken::new(), true, config.policy),
            false,
        );
        let stack = shared.keep(Stack::new(
            &shared,
            config.reject.clone(),
            config.probes.clone(),
            config.untracked.clone(),
        ));
        let config = shared.keep(config);
        let inner = Arc::new(Inner {
            config,
            stack,
            hooks: Mutex::new(Hooks::default()),
            progress: Progress::default(),
            cause: Mutex::new(None),
            report: Mutex::new(None),
            driver_alive: std::sync::atomic::AtomicBool::new(true),
        });
        let user = Some(Arc::new(UserHandles(shared.clone())));
        let coordinator = Self {
            shared: Owner::User(shared),
            inner,
            _user: user,
        };
        if coordinator.inner.config.handle_signals {
            os_signal::listen(coordinator.internal(), handle)?;
        }
        coordinator.spawn_driver(handle);
        Ok(coordinator)
    }

    /// A handle for the coordinator's own tasks, which must not keep it
    /// wanted (see [`UserHandles`]).
    fn internal(&self) -> Self {
        Self {
            shared: Owner::Internal(match &self.shared {
                Owner::User(h) => Internal::new(h),
                Owner::Internal(i) => i.clone(),
            }),
            inner: self.inner.clone(),
            _user: None,
        }
    }

    pub(crate) fn config(&self) -> Kept<Config> {
        self.inner.config
    }

    /// Starts the shutdown (idempotent: later calls do nothing). Returns
    /// whether this call started it.
    pub fn trigger(&self) -> bool {
        self.trigger_with(TriggerCause::Api)
    }

    /// Restarts the driver on the current runtime if the one it ran on is
    /// gone (see `Inner::driver_alive`).
    fn ensure_driver(&self) {
        use std::sync::atomic::Ordering::AcqRel;
        if self.shared.done.is_set() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .inner
            .driver_alive
            .compare_exchange(false, true, AcqRel, std::sync::atomic::Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                target: "tower_graceful",
                "the runtime that built the coordinator is gone: driving shutdown from this one"
            );
            self.spawn_driver(&handle);
        }
    }

    pub(crate) fn trigger_with(&self, cause: TriggerCause) -> bool {
        self.ensure_driver();
        {
            let mut c = lock(&self.inner.cause);
            if c.is_none() {
                *c = Some(cause);
            }
        }
        self.shared.trigger()
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
        self.shared.tracker.drained().await
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
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
        ShutdownSignal::new(self.shared.handle())
    }

    /// Keeps the drain waiting until the guard is dropped (background jobs,
    /// WebSocket sessions). `name` appears in the report if it is still alive
    /// at the deadline.
    pub fn track(&self, name: impl Into<Cow<'static, str>>) -> TaskGuard {
        TaskGuard::task(self.shared.handle(), name.into())
    }

    /// App-controlled readiness gates and the current status.
    pub fn readiness(&self) -> Readiness {
        Readiness::new(self.shared.handle())
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
        Draining::new(&self.shared)
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
        CloseConnections {
            drained: crate::core::handle::OwnedWait::drained(self.shared.handle()),
            forced: self.shared.hard.clone().cancelled_owned(),
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
        let mut hooks = lock(&self.inner.hooks);
        if hooks.closed {
            return Err(HookRegistrationError { name });
        }
        hooks.queue.push_back(Hook {
            name,
            timeout,
            run: Box::new(move || Box::pin(async move { hook().await.map_err(Into::into) })),
        });
        Ok(())
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
        self.ensure_driver();
        self.shared.done.wait().await;
        lock(&self.inner.report)
            .clone()
            .expect("report is stored before `done` is set")
    }

    /// The report, if the shutdown has finished.
    pub fn report(&self) -> Option<ShutdownReport> {
        lock(&self.inner.report).clone()
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
        GracefulLayer::new(Counted::new(self.inner.stack))
    }

    /// Spawns the driver. The guard is moved into the task's future when it
    /// is created, so it is dropped with the task even if the task never ran
    /// (its runtime shut down first).
    fn spawn_driver(&self, handle: &tokio::runtime::Handle) {
        struct Alive(Coordinator);
        impl Drop for Alive {
            fn drop(&mut self) {
                if !self.0.shared.done.is_set() {
                    self.0
                        .inner
                        .driver_alive
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
        let alive = Alive(self.internal());
        handle.spawn(async move {
            let c = alive.0.clone();
            // One span per shutdown, from the trigger (not from the build:
            // a span as long as the process helps no one); `drive` records
            // each phase in it, and every event of the shutdown nests under
            // it. The cause is set before the trigger latch.
            tokio::select! {
                _ = c.shared.triggered.wait() => {}
                // Nobody can trigger it any more: end, and let it be freed.
                _ = c.shared.abandoned.wait() => {
                    if !c.shared.triggered.is_set() {
                        return;
                    }
                }
            }
            let cause = lock(&c.inner.cause).clone().unwrap_or(TriggerCause::Api);
            let span = tracing::info_span!(
                target: "tower_graceful",
                "shutdown",
                %cause,
                // `Triggered`, or further on for a restarted driver.
                phase = %c.shared.phase(),
            );
            c.drive().instrument(span).await;
            drop(alive);
        });
    }

    async fn drive(self) {
        let shared = &self.shared;
        let cfg = self.inner.config;
        let progress = &self.inner.progress;
        shared.triggered.wait().await;
        // Everything counts from the trigger (stamped before the latch), not
        // from when this driver woke: a driver restarted on another runtime
        // wakes late and must not sleep the whole pre-drain delay again.
        let t0 = shared
            .triggered_at
            .get()
            .copied()
            .unwrap_or_else(Instant::now);
        let cause = lock(&self.inner.cause).clone().unwrap_or(TriggerCause::Api);
        let span = tracing::Span::current();
        if progress.drain_start.get().is_none() {
            tracing::info!(
                target: "tower_graceful",
                %cause,
                in_flight = shared.tracker.in_flight(),
                pre_drain = ?cfg.pre_drain,
                drain_deadline = ?cfg.drain_deadline,
                cleanup_timeout = ?cfg.cleanup_timeout,
                total_budget = ?cfg.total_budget,
                "shutdown triggered: readiness down"
            );
            // Pre-drain: keep serving while balancers notice; a force skips it.
            if !cfg.pre_drain.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep_until(t0 + cfg.pre_drain) => {}
                    _ = shared.force_requested.wait() => {
                        tracing::warn!(target: "tower_graceful", "forced: pre-drain delay cut short");
                    }
                }
            }
        }
        let &(t_drain, in_flight_at_drain) = progress.drain_start.get_or_init(|| {
            let t_drain = Instant::now();
            // Counted by the switch itself, before the signal fires and work
            // starts to finish.
            let in_flight = shared.begin_draining(t_drain + cfg.drain_deadline);
            span.record("phase", tracing::field::display(Phase::Draining));
            tracing::info!(
                target: "tower_graceful",
                in_flight,
                deadline = ?cfg.drain_deadline,
                "draining: shutdown signal fired; requests on open connections are still served"
            );
            (t_drain, in_flight)
        });
        let drain = match progress.drain_end.get() {
            Some(end) => end,
            None => {
                let end = self.drain(t_drain).await;
                progress.drain_end.get_or_init(|| end)
            }
        };
        let outcome = drain.outcome;

        shared.advance(Phase::CleaningUp);
        span.record("phase", tracing::field::display(Phase::CleaningUp));
        let t_clean = *progress.cleanup_start.get_or_init(Instant::now);
        let hooks = self.inner.run_hooks(t_clean + cfg.cleanup_timeout);
        // After a clean drain, the connections `serve` owns still have the
        // end of the last responses to write (a body is done when hyper has
        // *taken* its last frame, not when that frame is on the wire), then
        // a lingering close. The report, and so `wait` and the process exit,
        // waits for them alongside the hooks, within the cleanup time. After
        // a forced stop they are closed once the report is out, as before.
        let hooks = if outcome == DrainOutcome::Drained {
            let closing = connections_closed(shared, t_clean + cfg.cleanup_timeout);
            tokio::join!(hooks, closing).0
        } else {
            hooks.await
        };
        let cleanup = t_clean.elapsed();
        // Connections `serve` closed at the end of the drain stay in `open`
        // (see `connection::Open`): read now, it counts them exactly.
        let connections_closed_idle = {
            use std::sync::atomic::Ordering::Acquire;
            let c = &shared.connections;
            (c.served.load(Acquire) && outcome == DrainOutcome::Drained)
                .then(|| c.open.load(Acquire))
        };

        let report = ShutdownReport {
            cause,
            pre_drain: t_drain.saturating_duration_since(t0),
            drain: drain.elapsed,
            drain_outcome: outcome,
            cleanup,
            total: t0.elapsed(),
            in_flight_at_drain,
            completed_while_draining: shared.tracker.completed_while_draining(),
            rejected: self.rejected(),
            served_while_draining: shared.tracker.admitted_while_draining(),
            connections_told_to_close: shared.tracker.closes()
                + shared
                    .connections
                    .goaway
                    .load(std::sync::atomic::Ordering::Acquire),
            connections_closed_idle,
            stragglers: drain.stragglers.clone(),
            hooks,
        };
        if report.is_clean() {
            tracing::info!(target: "tower_graceful", total = ?report.total, "shutdown complete\n{report}");
        } else {
            tracing::warn!(target: "tower_graceful", total = ?report.total, "shutdown complete with problems\n{report}");
        }
        *lock(&self.inner.report) = Some(report);
        shared.advance(Phase::Done);
        span.record("phase", tracing::field::display(Phase::Done));
        shared.done.set();
    }

    /// Waits for the drain to end (everything done, the deadline, a forced
    /// stop) and, unless it drained, fires the hard signal and names the
    /// stragglers.
    async fn drain(&self, t_drain: Instant) -> DrainEnd {
        let shared = &self.shared;
        let deadline = shared
            .deadline
            .get()
            .copied()
            .unwrap_or(t_drain + self.inner.config.drain_deadline);
        let outcome = if shared.force_requested.is_set() {
            DrainOutcome::Forced
        } else {
            tokio::select! {
                biased;
                _ = shared.tracker.drained() => DrainOutcome::Drained,
                _ = shared.force_requested.wait() => DrainOutcome::Forced,
                _ = tokio::time::sleep_until(deadline) => DrainOutcome::DeadlineExceeded,
            }
        };
        let mut stragglers = Vec::new();
        if outcome != DrainOutcome::Drained && !shared.tracker.is_drained() {
            let now = Instant::now();
            stragglers = shared
                .tracker
                .snapshot()
                .into_iter()
                .map(|l| Straggler {
                    what: match l.kind {
                        Kind::Request { method, path } => StragglerKind::Request { method, path },
                        Kind::Task { name } => StragglerKind::Task { name },
                        Kind::Unnamed { count } => StragglerKind::Unnamed { count },
                    },
                    age: l
                        .since
                        .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
                    age_is_lower_bound: l.lower_bound,
                })
                .collect();
        }
        let elapsed = t_drain.elapsed();
        // A deadline that passed just as the last work ended is a drain; a
        // forced stop stays one even with nothing left (the hard signal
        // fires, as `force` promises).
        let outcome = if stragglers.is_empty() && outcome == DrainOutcome::DeadlineExceeded {
            DrainOutcome::Drained
        } else {
            outcome
        };
        if outcome == DrainOutcome::Drained {
            tracing::info!(target: "tower_graceful", ?elapsed, "drained: nothing in flight");
        } else {
            shared.advance(Phase::Forced);
            tracing::Span::current().record("phase", tracing::field::display(Phase::Forced));
            shared.hard.cancel();
            tracing::warn!(
                target: "tower_graceful",
                ?outcome,
                stragglers = stragglers.len(),
                "forced stop: hard signal fired, abandoning work still in flight"
            );
            for s in &stragglers {
                tracing::warn!(target: "tower_graceful", straggler = %s, "still in flight at forced stop");
            }
        }
        DrainEnd {
            outcome,
            stragglers,
            elapsed,
        }
    }
}

/// Waits until every connection task of [`serve`](crate::serve) has ended
/// (its socket flushed and closed; at once when `serve` is not used), until
/// `until`, or until a forced stop is requested. The ones still open then
/// are cut when the report is out.
async fn connections_closed(shared: &Shared, until: Instant) {
    tokio::select! {
        biased;
        _ = shared.connections.all_closed() => {}
        _ = shared.force_requested.wait() => {}
        _ = tokio::time::sleep_until(until) => {
            tracing::warn!(
                target: "tower_graceful",
                "connections still closing at the end of the cleanup time: cut when the report is out"
            );
        }
    }
}

impl Inner {
    /// Runs the hooks still queued, one at a time, each within its timeout
    /// and all before `end`, and returns the report of every hook taken so
    /// far (by this driver or a dead one).
    async fn run_hooks(&self, end: Instant) -> Vec<HookReport> {
        loop {
            let (hook, timeout, started) = {
                let mut hooks = lock(&self.hooks);
                hooks.closed = true;
                if let Some((name, started, timeout)) = hooks.running.take() {
                    tracing::warn!(
                        target: "tower_graceful",
                        hook = %name,
                        "hook abandoned: the runtime that ran it shut down, and with it the hook; not run again"
                    );
                    hooks.done.push(HookReport {
                        name,
                        outcome: HookOutcome::Abandoned,
                        elapsed: Instant::now().saturating_duration_since(started),
                        timeout,
                    });
                }
                let Some(hook) = hooks.queue.pop_front() else {
                    return hooks.done.clone();
                };
                let left = end.saturating_duration_since(Instant::now());
                let timeout = hook.timeout.unwrap_or(self.config.hook_timeout).min(left);
                if timeout.is_zero() {
                    tracing::warn!(target: "tower_graceful", hook = %hook.name, "hook skipped: cleanup time used up");
                    hooks.done.push(HookReport {
                        name: hook.name,
                        outcome: HookOutcome::Skipped,
                        elapsed: Duration::ZERO,
                        timeout,
                    });
                    continue;
                }
                // Taken and marked running in one step: a driver that dies
                // from here on leaves the hook for the next one to report.
                let started = Instant::now();
                hooks.running = Some((hook.name.clone(), started, timeout));
                (hook, timeout, started)
            };
            let outcome = run_hook(hook.run, timeout).await;
            let elapsed = started.elapsed();
            match &outcome {
                HookOutcome::Completed => {
                    tracing::info!(target: "tower_graceful", hook = %hook.name, ?elapsed, "hook completed")
                }
                other => {
                    tracing::warn!(target: "tower_graceful", hook = %hook.name, ?elapsed, outcome = ?other, "hook did not complete")
                }
            }
            let mut hooks = lock(&self.hooks);
            hooks.running = None;
            hooks.done.push(HookReport {
                name: hook.name,
                outcome,
                elapsed,
                timeout,
            });
        }
    }
}

async fn run_hook(run: HookFn, timeout: Duration) -> HookOutcome {
    // Spawned, so a panic (even one raised before the first await) is
    // caught by the task and reported, and a hang can be aborted.
    // In the shutdown's span, so the hook's own events nest under it.
    let mut task = tokio::spawn(async move { run().await }.instrument(tracing::Span::current()));
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(()))) => HookOutcome::Completed,
        Ok(Ok(Err(e))) => HookOutcome::Failed(e.to_string()),
        Ok(Err(join)) if join.is_panic() => HookOutcome::Panicked(panic_message(join.into_panic())),
        Ok(Err(_)) => HookOutcome::Failed("hook task was cancelled".to_owned()),
        Err(_) => {
            task.abort();
            HookOutcome::TimedOut
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "non-string panic payload".to_owned(),
        },
    }
}

/// A hook was registered after cleanup had begun; it will not run.
#[derive(Debug)]
pub struct HookRegistrationError {
    name: Cow<'static, str>,
}

impl fmt::Display for HookRegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cleanup hook {:?} was registered after cleanup began and will not run: \
             register hooks before shutdown is triggered",
            self.name
        )
    }
}

impl std::error::Error for HookRegistrationError {}

pin_project_lite::pin_project! {
    /// Future returned by [`Coordinator::close_connections`]. `'static`,
    /// `Send`, cancel safe; once complete, it stays complete (polling it again
    /// returns `Ready` again).
    #[must_use = "futures do nothing unless polled"]
    pub struct CloseConnections {
        drained: crate::core::handle::OwnedWait,
        #[pin]
        forced: WaitForCancellationFutureOwned,
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
        if Pin::new(this.drained).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.forced.poll(cx)
    }
}
