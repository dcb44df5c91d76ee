//! The [`Coordinator`]: one per process, shared by every server, driving the
//! phases of a shutdown.
//!
//! ```text
//! serving ──trigger──▶ triggered ──pre-drain delay──▶ draining ──all done──▶ cleaning-up ──▶ done
//!                      readiness down                 ShutdownSignal fires     hooks           report
//!                                                     new requests rejected
//!                                                        │ deadline / 2nd signal
//!                                                        ▼
//!                                                      forced (hard signal, stragglers named)
//! ```
//!
//! Every transition is event-driven; nothing polls with sleeps. The driver is
//! one task spawned by [`Builder::build`](crate::Builder::build).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::builder::{Builder, Config, ConfigError};
use crate::graceful::{GracefulLayer, Stack};
use crate::probe::{LivenessService, Readiness, ReadinessService};
use crate::report::{
    DrainOutcome, HookOutcome, HookReport, ShutdownReport, Straggler, StragglerKind, TriggerCause,
};
use crate::signal::{InFlightGuard, ShutdownSignal};
use crate::state::{Phase, Shared, SharedRef};
use crate::sync::{lock, Arc, Mutex};
use crate::tracker::Kind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type HookFn = Box<dyn FnOnce() -> HookFuture + Send>;

struct Hook {
    name: Cow<'static, str>,
    timeout: Option<Duration>,
    run: HookFn,
}

struct Inner {
    /// Leaked like the shared state, so layers can hold `&'static` parts of it.
    config: &'static Config,
    /// What every `Graceful` service of `layer()` points to (leaked too).
    stack: &'static Stack,
    /// `None` once cleanup has begun: later hooks are refused.
    hooks: Mutex<Option<Vec<Hook>>>,
    cause: Mutex<Option<TriggerCause>>,
    report: Mutex<Option<ShutdownReport>>,
    /// Whether a driver task is alive. It lives on the runtime that built
    /// the coordinator; if that runtime shuts down first, the next call to
    /// `trigger`, `force` or `wait` starts a new driver on the caller's
    /// runtime instead of leaving everyone waiting on a task that is gone.
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
/// let server = axum::serve(listener, app).with_graceful_shutdown(graceful.draining());
/// tokio::spawn(async move { server.await });
///
/// let report = graceful.wait().await; // SIGTERM / Ctrl-C, then drain, hooks
/// println!("{report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) shared: SharedRef,
    inner: Arc<Inner>,
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
        let shared = SharedRef::leak(Shared::with_policy(
            CancellationToken::new(),
            true,
            config.policy,
        ));
        let config: &'static Config = Box::leak(Box::new(config));
        let stack = Box::leak(Box::new(Stack::new(
            shared.as_static().expect("leaked above"),
            &config.reject,
            &config.probes,
            &config.untracked,
        )));
        let inner = Arc::new(Inner {
            config,
            stack,
            hooks: Mutex::new(Some(Vec::new())),
            cause: Mutex::new(None),
            report: Mutex::new(None),
            driver_alive: std::sync::atomic::AtomicBool::new(true),
        });
        let coordinator = Self { shared, inner };
        if coordinator.inner.config.handle_signals {
            signals::listen(coordinator.clone(), handle)?;
        }
        coordinator.spawn_driver(handle);
        Ok(coordinator)
    }

    pub(crate) fn shared_static(&self) -> &'static Shared {
        self.shared
            .as_static()
            .expect("a coordinator's state is allocated for the process")
    }

    pub(crate) fn config(&self) -> &'static Config {
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

    /// Completes when shutdown is triggered (readiness goes down then). For
    /// wiring other health systems; servers should use
    /// [`draining`](Self::draining). Cancel safe.
    pub async fn triggered(&self) {
        self.shared.triggered.wait().await
    }

    /// Completes when draining has begun and nothing is in flight (requests
    /// until their bodies end, tracked tasks): woken directly by the last
    /// guard to go, before the hooks run. Never completes if shutdown is not
    /// triggered. Cancel safe.
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
        ShutdownSignal::new(self.shared.clone())
    }

    /// Keeps the drain waiting until the guard is dropped (background jobs,
    /// WebSocket sessions). `name` appears in the report if it is still alive
    /// at the deadline.
    pub fn track(&self, name: impl Into<Cow<'static, str>>) -> InFlightGuard {
        InFlightGuard::task(&self.shared, name.into())
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
    /// keeps accepting while load balancers take the instance out.
    pub fn draining(&self) -> Draining {
        Draining {
            inner: self.shared.soft.clone().cancelled_owned(),
        }
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
    pub fn close_connections(&self) -> CloseConnections {
        CloseConnections {
            drained: self.shared_static().tracker.drained(),
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
        match hooks.as_mut() {
            Some(list) => {
                list.push(Hook {
                    name,
                    timeout,
                    run: Box::new(move || {
                        Box::pin(async move { hook().await.map_err(Into::into) })
                    }),
                });
                Ok(())
            }
            None => Err(HookRegistrationError { name }),
        }
    }

    /// Waits for the whole shutdown (trigger, pre-drain, drain, hooks) and
    /// returns the report. Does not trigger anything by itself. May be called
    /// any number of times, from any task; every call gets the same report.
    ///
    /// After a clean drain it also waits (within the cleanup timeout,
    /// alongside the hooks) until the connections of [`serve`](crate::serve)
    /// have written the end of their last responses and closed, so `main`
    /// may return or exit as soon as this does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
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
    /// [`SignalLayer`](crate::SignalLayer) inside it if you want the signal in
    /// request extensions too (one allocation per request).
    pub fn layer(&self) -> GracefulLayer {
        GracefulLayer::new(self.inner.stack)
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
        let alive = Alive(self.clone());
        handle.spawn(async move {
            let c = alive.0.clone();
            // One span per shutdown, from the trigger (not from the build:
            // a span as long as the process helps no one); `drive` records
            // each phase in it, and every event of the shutdown nests under
            // it. The cause is set before the trigger latch.
            c.shared.triggered.wait().await;
            let cause = lock(&c.inner.cause).clone().unwrap_or(TriggerCause::Api);
            let span = tracing::info_span!(
                target: "tower_graceful",
                "shutdown",
                %cause,
                phase = %Phase::Triggered,
            );
            c.drive().instrument(span).await;
            drop(alive);
        });
    }

    async fn drive(self) {
        let shared = &self.shared;
        let cfg = self.inner.config;
        shared.triggered.wait().await;
        let t0 = Instant::now();
        let cause = lock(&self.inner.cause).clone().unwrap_or(TriggerCause::Api);
        let span = tracing::Span::current();
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
                _ = tokio::time::sleep(cfg.pre_drain) => {}
                _ = shared.force_requested.wait() => {
                    tracing::warn!(target: "tower_graceful", "forced: pre-drain delay cut short");
                }
            }
        }
        let t_drain = Instant::now();
        let deadline = t_drain + cfg.drain_deadline;
        // Counted by the switch itself, before the signal fires and work
        // starts to finish.
        let in_flight_at_drain = shared.begin_draining(deadline);
        span.record("phase", tracing::field::display(Phase::Draining));
        tracing::info!(
            target: "tower_graceful",
            in_flight = in_flight_at_drain,
            deadline = ?cfg.drain_deadline,
            "draining: shutdown signal fired, new requests rejected"
        );

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
        let drain = t_drain.elapsed();
        // A deadline that passed just as the last work ended is a drain; a
        // forced stop stays one even with nothing left (the hard signal
        // fires, as `force` promises).
        let outcome = if stragglers.is_empty() && outcome == DrainOutcome::DeadlineExceeded {
            DrainOutcome::Drained
        } else {
            outcome
        };
        if outcome == DrainOutcome::Drained {
            tracing::info!(target: "tower_graceful", elapsed = ?drain, "drained: nothing in flight");
        } else {
            shared.advance(Phase::Forced);
            span.record("phase", tracing::field::display(Phase::Forced));
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

        shared.advance(Phase::CleaningUp);
        span.record("phase", tracing::field::display(Phase::CleaningUp));
        let t_clean = Instant::now();
        let hooks = lock(&self.inner.hooks).take().unwrap_or_default();
        let hooks = run_hooks(hooks, cfg.hook_timeout, cfg.cleanup_timeout);
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
            drain,
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
            stragglers,
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

async fn run_hooks(
    hooks: Vec<Hook>,
    default_timeout: Duration,
    budget: Duration,
) -> Vec<HookReport> {
    let end = Instant::now() + budget;
    let mut out = Vec::with_capacity(hooks.len());
    for hook in hooks {
        let left = end.saturating_duration_since(Instant::now());
        let timeout = hook.timeout.unwrap_or(default_timeout).min(left);
        if timeout.is_zero() {
            tracing::warn!(target: "tower_graceful", hook = %hook.name, "hook skipped: cleanup time used up");
            out.push(HookReport {
                name: hook.name,
                outcome: HookOutcome::Skipped,
                elapsed: Duration::ZERO,
                timeout,
            });
            continue;
        }
        let started = Instant::now();
        let run = hook.run;
        // Spawned, so a panic (even one raised before the first await) is
        // caught by the task and reported, and a hang can be aborted.
        // In the shutdown's span, so the hook's own events nest under it.
        let mut task =
            tokio::spawn(async move { run().await }.instrument(tracing::Span::current()));
        let outcome = match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Ok(()))) => HookOutcome::Completed,
            Ok(Ok(Err(e))) => HookOutcome::Failed(e.to_string()),
            Ok(Err(join)) if join.is_panic() => {
                HookOutcome::Panicked(panic_message(join.into_panic()))
            }
            Ok(Err(_)) => HookOutcome::Failed("hook task was cancelled".to_owned()),
            Err(_) => {
                task.abort();
                HookOutcome::TimedOut
            }
        };
        let elapsed = started.elapsed();
        match &outcome {
            HookOutcome::Completed => {
                tracing::info!(target: "tower_graceful", hook = %hook.name, ?elapsed, "hook completed")
            }
            other => {
                tracing::warn!(target: "tower_graceful", hook = %hook.name, ?elapsed, outcome = ?other, "hook did not complete")
            }
        }
        out.push(HookReport {
            name: hook.name,
            outcome,
            elapsed,
            timeout,
        });
    }
    out
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
    /// Future returned by [`Coordinator::draining`]: completes when draining
    /// begins. `'static`, `Send`, cancel safe.
    #[must_use = "futures do nothing unless polled"]
    pub struct Draining {
        #[pin]
        inner: WaitForCancellationFutureOwned,
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining").finish_non_exhaustive()
    }
}

impl Future for Draining {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// Future returned by [`Coordinator::close_connections`]. `'static`,
    /// `Send`, cancel safe.
    #[must_use = "futures do nothing unless polled"]
    pub struct CloseConnections {
        drained: crate::event::Wait<'static>,
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

mod signals {
    use super::*;

    #[cfg(unix)]
    pub(super) fn listen(
        c: Coordinator,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), ConfigError> {
        use tokio::signal::unix::{signal, SignalKind};
        let _enter = handle.enter();
        let err = |e: std::io::Error| ConfigError::signal(e);
        // Registered now, not in the task: a signal that arrives before the
        // task first runs is still seen.
        let mut term = signal(SignalKind::terminate()).map_err(err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(err)?;
        handle.spawn(async move {
            let mut seen = 0u32;
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    _ = c.shared.done.wait() => return,
                    else => return,
                };
                seen += 1;
                if seen == 1 {
                    tracing::info!(target: "tower_graceful", signal = name, "signal received: starting graceful shutdown (send again to force)");
                    c.trigger_with(TriggerCause::Signal(name));
                } else {
                    tracing::warn!(target: "tower_graceful", signal = name, "second signal: forcing shutdown");
                    c.shared.force();
                }
            }
        });
        Ok(())
    }

    #[cfg(not(unix))]
    pub(super) fn listen(
        c: Coordinator,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), ConfigError> {
        handle.spawn(async move {
            let mut seen = 0u32;
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                    _ = c.shared.done.wait() => return,
                }
                seen += 1;
                if seen == 1 {
                    c.trigger_with(TriggerCause::Signal("ctrl-c"));
                } else {
                    c.shared.force();
                }
            }
        });
        Ok(())
    }
}
