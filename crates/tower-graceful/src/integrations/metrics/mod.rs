//! The coordinator's state as [`metrics`](https://docs.rs/metrics) gauges,
//! counters and histograms (feature `metrics`), for any exporter: Prometheus,
//! OpenTelemetry, StatsD.
//!
//! Nothing here runs on the serving path. An [`Emitter`] reads the
//! coordinator the way a scrape would ([`Coordinator::in_flight`],
//! [`Coordinator::phase`], [`Coordinator::readiness`],
//! [`Coordinator::rejected`], the [`ShutdownReport`]) every
//! [`interval`](Emitter::interval), at once when shutdown is triggered,
//! starts draining, drains or is forced, and a last time when the report is
//! out. A request costs exactly what it costs without metrics. For a pull
//! exporter, call [`Emitter::record_now`] in the scrape handler as well, so a
//! scrape is never older than itself.
//!
//! (The module is `shutdown_metrics`, not `metrics`, so that importing it
//! never shadows the `metrics` crate.)
//!
//! # What is recorded
//!
//! Names follow the Prometheus conventions (base unit in the name,
//! `_total` on counters) and, where one exists, the OpenTelemetry semantic
//! convention: in-flight requests are `http.server.active_requests`, which a
//! Prometheus exporter writes as `http_server_active_requests`. Every metric
//! also carries the labels given to [`Emitter::label`] (for example
//! `server="public"`, when several coordinators share a recorder).
//!
//! | name | type | unit | labels | meaning |
//! |---|---|---|---|---|
//! | [`ACTIVE_REQUESTS`] `http.server.active_requests` | gauge | requests | | requests in flight (until their body ends) |
//! | [`ACTIVE_TASKS`] `tower_graceful_active_tasks` | gauge | tasks | | tracked background work (`track()` guards) alive |
//! | [`READY`] `tower_graceful_ready` | gauge | 0/1 | | 1 while the readiness probe answers 200 |
//! | [`PHASE`] `tower_graceful_phase` | gauge | 0/1 | `phase` | 1 for the current [`Phase`], 0 for the others |
//! | [`REQUESTS_REJECTED`] `tower_graceful_requests_rejected_total` | counter | requests | | answered with the draining rejection |
//! | [`REQUESTS_COMPLETED_WHILE_DRAINING`] `tower_graceful_requests_completed_while_draining_total` | counter | requests | | finished after draining began |
//! | [`REQUESTS_SERVED_WHILE_DRAINING`] `tower_graceful_requests_served_while_draining_total` | counter | requests | | arrived on open connections after draining began, and served |
//! | [`CONNECTIONS_TOLD_TO_CLOSE`] `tower_graceful_connections_told_to_close_total` | counter | connections | | HTTP/1.x responses that announced `Connection: close`, HTTP/2 GOAWAYs sent by `serve` |
//! | [`CONNECTIONS_CLOSED_IDLE`] `tower_graceful_connections_closed_idle_total` | counter | connections | | idle connections `serve` closed at the end of the drain (only with `serve`) |
//! | [`ABANDONED`] `tower_graceful_abandoned_total` | counter | requests or tasks | `kind` = `request`, `task` | still in flight at the forced stop |
//! | [`SHUTDOWNS`] `tower_graceful_shutdowns_total` | counter | shutdowns | `cause`, `outcome` | one per finished shutdown |
//! | [`HOOKS`] `tower_graceful_hooks_total` | counter | hooks | `hook`, `outcome` | one per cleanup hook that ran, was skipped or abandoned |
//! | [`PRE_DRAINS`] `tower_graceful_pre_drains_total` | counter | shutdowns | `ended_by` = `fixed`, `evidence`, `max_reached`, `forced` | what ended the pre-drain ([`PreDrainEnd`](crate::report::PreDrainEnd)); its length is `phase_duration_seconds{phase="triggered"}` |
//! | [`PHASE_DURATION`] `tower_graceful_phase_duration_seconds` | histogram | seconds | `phase` = `triggered`, `draining`, `cleaning-up` | time spent in each phase of the shutdown |
//! | [`SHUTDOWN_DURATION`] `tower_graceful_shutdown_duration_seconds` | histogram | seconds | | trigger to done |
//! | [`HOOK_DURATION`] `tower_graceful_hook_duration_seconds` | histogram | seconds | `hook` | how long each hook ran |
//!
//! `cause` is the [`TriggerCause`](crate::report::TriggerCause) as logged (`SIGTERM`, `SIGINT`, `ctrl-c`,
//! `api`); `outcome` of a shutdown is `drained`, `deadline_exceeded` or
//! `forced`; `outcome` of a hook is `completed`, `failed`, `panicked`,
//! `timed_out`, `skipped` or `abandoned`. The counters derived from the report move once,
//! when the report is out: scrape (or push) before the process exits, for
//! example by keeping the metrics endpoint up until
//! [`Emitter::final_scrape`] completes.
//!
//! The histograms are `metrics` histograms; `metrics-exporter-prometheus`
//! writes them as Prometheus summaries unless buckets are set for them
//! (`PrometheusBuilder::set_buckets_for_metric`, or `set_buckets`).
//!
//! # Example
//!
//! ```
//! use tower_graceful::shutdown_metrics::Emitter;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let graceful = tower_graceful::Coordinator::builder().build().unwrap();
//! // Install a recorder first, for example
//! // let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! let metrics = Emitter::new(&graceful).label("server", "api");
//! tokio::spawn(metrics.clone().run());
//!
//! // In the admin port's `/metrics` handler, so a scrape is never stale:
//! metrics.record_now();
//! // handle.render()
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Label, Recorder, SharedString, Unit};

use crate::report::{DrainOutcome, HookOutcome, ShutdownReport, StragglerKind, TriggerCause};
use crate::{Coordinator, Phase};

/// Requests in flight (OpenTelemetry's `http.server.active_requests`;
/// `http_server_active_requests` in Prometheus). Gauge.
pub const ACTIVE_REQUESTS: &str = "http.server.active_requests";
/// Tracked background work alive ([`Coordinator::track`],
/// [`ShutdownSignal::track`](crate::ShutdownSignal::track)). Gauge.
pub const ACTIVE_TASKS: &str = "tower_graceful_active_tasks";
/// 1 while the readiness probe answers `200`, else 0. Gauge.
pub const READY: &str = "tower_graceful_ready";
/// 1 for the current phase (label `phase`), 0 for the others. Gauge.
pub const PHASE: &str = "tower_graceful_phase";
/// Requests answered with the draining rejection. Counter.
pub const REQUESTS_REJECTED: &str = "tower_graceful_requests_rejected_total";
/// Requests that finished after draining began. Counter.
pub const REQUESTS_COMPLETED_WHILE_DRAINING: &str =
    "tower_graceful_requests_completed_while_draining_total";
/// Requests that arrived on open connections after draining began and were
/// served. Counter.
pub const REQUESTS_SERVED_WHILE_DRAINING: &str =
    "tower_graceful_requests_served_while_draining_total";
/// Connections told to close after the trigger: HTTP/1.x responses that
/// announced `Connection: close`, HTTP/2 connections sent GOAWAY by
/// `tower_graceful::serve`. Counter.
pub const CONNECTIONS_TOLD_TO_CLOSE: &str = "tower_graceful_connections_told_to_close_total";
/// Idle connections `tower_graceful::serve` closed at the end of the drain
/// (recorded with the report, and only when `serve` owned the
/// connections). Counter.
pub const CONNECTIONS_CLOSED_IDLE: &str = "tower_graceful_connections_closed_idle_total";
/// Requests and tasks (label `kind`) still in flight at the forced stop.
/// Counter.
pub const ABANDONED: &str = "tower_graceful_abandoned_total";
/// Finished shutdowns, by `cause` and `outcome`. Counter.
pub const SHUTDOWNS: &str = "tower_graceful_shutdowns_total";
/// Finished pre-drains, by what ended them (label `ended_by`: `fixed`,
/// `evidence`, `max_reached`, `forced`). Counter; the pre-drain's length
/// is [`PHASE_DURATION`] with `phase="triggered"`.
pub const PRE_DRAINS: &str = "tower_graceful_pre_drains_total";
/// Cleanup hooks, by `hook` and `outcome`. Counter.
pub const HOOKS: &str = "tower_graceful_hooks_total";
/// Time spent in each phase of the shutdown (label `phase`). Histogram,
/// seconds.
pub const PHASE_DURATION: &str = "tower_graceful_phase_duration_seconds";
/// Trigger to done. Histogram, seconds.
pub const SHUTDOWN_DURATION: &str = "tower_graceful_shutdown_duration_seconds";
/// How long each hook (label `hook`) ran. Histogram, seconds.
pub const HOOK_DURATION: &str = "tower_graceful_hook_duration_seconds";

/// Every phase, in order, for the [`PHASE`] state set.
const PHASES: [Phase; 6] = [
    Phase::Serving,
    Phase::Triggered,
    Phase::Draining,
    Phase::Forced,
    Phase::CleaningUp,
    Phase::Done,
];

/// Reads a [`Coordinator`] and records what it finds with the `metrics`
/// facade. See the [module docs](self) for the metrics.
///
/// Cheap to clone (one `Arc`): clones share the once-only recording of the
/// report, so [`run`](Self::run) in a task and
/// [`record_now`](Self::record_now) in a scrape handler never count a
/// shutdown twice. Use one emitter (and its clones) per coordinator and
/// recorder.
#[derive(Clone)]
pub struct Emitter {
    inner: Arc<Inner>,
}

struct Inner {
    coordinator: Coordinator,
    labels: Vec<Label>,
    interval: Duration,
    recorder: Option<Box<dyn Recorder + Send + Sync>>,
    described: AtomicBool,
    report_recorded: AtomicBool,
    /// Cancelled once [`Emitter::record_now`] ran after the report was out:
    /// a scrape has seen the final values.
    final_values_read: tokio_util::sync::CancellationToken,
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("labels", &self.inner.labels)
            .field("interval", &self.inner.interval)
            .field("own_recorder", &self.inner.recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl Emitter {
    /// The default [`interval`](Self::interval): one second.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// An emitter for `coordinator`, recording into the global recorder
    /// (or the thread's local one, as the `metrics` macros do) every second.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            inner: Arc::new(Inner {
                coordinator: coordinator.clone(),
                labels: Vec::new(),
                interval: Self::DEFAULT_INTERVAL,
                recorder: None,
                described: AtomicBool::new(false),
                report_recorded: AtomicBool::new(false),
                final_values_read: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner)
            .expect("configure an Emitter before cloning it or starting it")
    }

    /// Adds a label to every metric, such as `server="public"` when several
    /// coordinators (or processes sharing a recorder) must be told apart.
    ///
    /// # Panics
    ///
    /// If called on an emitter that was already cloned.
    pub fn label(mut self, key: impl Into<SharedString>, value: impl Into<SharedString>) -> Self {
        self.inner_mut()
            .labels
            .push(Label::new(key.into(), value.into()));
        self
    }

    /// How often [`run`](Self::run) records the gauges and the live
    /// counters when nothing happens (it also records at every phase
    /// change). Default [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL).
    ///
    /// # Panics
    ///
    /// If `interval` is zero, or the emitter was already cloned.
    pub fn interval(mut self, interval: Duration) -> Self {
        assert!(
            !interval.is_zero(),
            "Emitter::interval must be more than zero (the default is 1 s)"
        );
        self.inner_mut().interval = interval;
        self
    }

    /// Records into `recorder` instead of the global one: for a process that
    /// keeps one registry per server, and for tests.
    ///
    /// # Panics
    ///
    /// If called on an emitter that was already cloned.
    pub fn recorder<R>(mut self, recorder: R) -> Self
    where
        R: Recorder + Send + Sync + 'static,
    {
        self.inner_mut().recorder = Some(Box::new(recorder));
        self
    }

    /// Records every value now: the gauges, the live counters, and, once the
    /// shutdown is over, the report's counters and histograms (once per
    /// emitter, however often this is called). Takes no lock on the serving
    /// path; reading the in-flight count sums the coordinator's shards.
    ///
    /// Called after the report is out, it also marks the final values as
    /// read, which ends [`final_scrape`](Self::final_scrape).
    pub fn record_now(&self) {
        if self.record() {
            self.inner.final_values_read.cancel();
        }
    }

    /// Records every value; whether the report's were among them.
    fn record(&self) -> bool {
        let mut final_values = false;
        self.with_recorder(|| {
            self.describe();
            self.record_live();
            if let Some(report) = self.inner.coordinator.report() {
                self.record_report(&report);
                final_values = true;
            }
        });
        final_values
    }

    /// Completes once a scrape has read the shutdown's final values, or
    /// `linger` after the report, whichever comes first; `true` if a scrape
    /// read them.
    ///
    /// The report's counters and histograms are recorded once the report is
    /// out, and a process that exits right after it leaves them to a scrape
    /// that never comes (a 15–30 s scrape interval almost never falls in
    /// that moment). With a pull exporter, keep the endpoint that serves the
    /// metrics answering until this completes (use it in that server's
    /// shutdown future), and exit after it: "read" means a call of
    /// [`record_now`](Self::record_now), in the scrape handler, after the
    /// report was out. Give `linger` at least the scrape interval plus the
    /// scrape timeout, and count it in the orchestrator's budget
    /// (`terminationGracePeriodSeconds`, `TimeoutStopSec=`): it comes after
    /// the cleanup. With a push exporter, push once the report is out
    /// instead ([`run`](Self::run) records it before it returns).
    ///
    /// Waits for the report first, however long the shutdown takes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # use std::future::IntoFuture;
    /// # use std::time::Duration;
    /// # use tower_graceful::{shutdown_metrics::Emitter, Coordinator};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let graceful = Coordinator::builder().build()?;
    /// # let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
    /// let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    /// let emitter = Emitter::new(&graceful);
    /// tokio::spawn(emitter.clone().run());
    /// let scrape = emitter.clone();
    /// let admin = axum::Router::new().route(
    ///     "/metrics",
    ///     axum::routing::get(move || async move {
    ///         scrape.record_now();
    ///         handle.render()
    ///     }),
    /// );
    /// let last = emitter.clone();
    /// let admin_server = tokio::spawn(
    ///     axum::serve(admin_listener, admin)
    ///         .with_graceful_shutdown(async move { last.final_scrape(Duration::from_secs(35)).await; })
    ///         .into_future(),
    /// );
    /// let report = graceful.wait().await;
    /// admin_server.await??; // the final values were scraped, or 35 s passed
    /// # Ok(()) }
    /// ```
    pub async fn final_scrape(&self, linger: Duration) -> bool {
        self.inner.coordinator.wait().await;
        tokio::time::timeout(linger, self.inner.final_values_read.cancelled())
            .await
            .is_ok()
    }

    /// Records every [`interval`](Self::interval) and at each phase change
    /// until the shutdown report is out, records the report, and returns.
    /// Spawn it: `tokio::spawn(emitter.run())`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it stops the recording and loses nothing that a
    /// later [`record_now`](Self::record_now) or `run` would not record.
    pub async fn run(self) {
        let c = self.inner.coordinator.clone();
        let signal = c.signal();
        let period = self.inner.interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let triggered = c.triggered();
        let draining = signal.draining();
        let drained = c.drained();
        let forced = signal.forced();
        let done = c.wait();
        tokio::pin!(triggered, draining, drained, forced, done);
        let (mut t, mut d, mut dr, mut f) = (false, false, false, false);
        loop {
            self.record();
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut triggered, if !t => t = true,
                _ = &mut draining, if !d => d = true,
                _ = &mut drained, if !dr => dr = true,
                _ = &mut forced, if !f => f = true,
                _ = &mut done => break,
            }
        }
        self.record();
    }

    /// `tokio::spawn(self.run())`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, like `tokio::spawn`.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    fn with_recorder(&self, f: impl FnOnce()) {
        match &self.inner.recorder {
            Some(r) => metrics::with_local_recorder(&**r, f),
            None => f(),
        }
    }

    fn labels(&self, extra: &[(&'static str, SharedString)]) -> Vec<Label> {
        let mut labels = self.inner.labels.clone();
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, v.clone())));
        labels
    }

    fn describe(&self) {
        if self.inner.described.swap(true, Ordering::Relaxed) {
            return;
        }
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(
            ACTIVE_REQUESTS,
            Unit::Count,
            "Requests in flight, until their response body ends."
        );
        describe_gauge!(
            ACTIVE_TASKS,
            Unit::Count,
            "Tracked background work (track() guards) alive."
        );
        describe_gauge!(READY, "1 while the readiness probe answers 200, else 0.");
        describe_gauge!(PHASE, "1 for the current shutdown phase, 0 for the others.");
        describe_counter!(
            REQUESTS_REJECTED,
            Unit::Count,
            "Requests answered with the draining rejection."
        );
        describe_counter!(
            REQUESTS_COMPLETED_WHILE_DRAINING,
            Unit::Count,
            "Requests that finished after draining began."
        );
        describe_counter!(
            REQUESTS_SERVED_WHILE_DRAINING,
            Unit::Count,
            "Requests that arrived on open connections after draining began, and were served."
        );
        describe_counter!(
            CONNECTIONS_TOLD_TO_CLOSE,
            Unit::Count,
            "Connections told to close after the trigger (Connection: close, GOAWAY)."
        );
        describe_counter!(
            CONNECTIONS_CLOSED_IDLE,
            Unit::Count,
            "Idle connections closed by serve at the end of the drain."
        );
        describe_counter!(
            ABANDONED,
            Unit::Count,
            "Requests and tasks still in flight when the drain was cut short."
        );
        describe_counter!(
            SHUTDOWNS,
            Unit::Count,
            "Finished shutdowns, by cause and outcome."
        );
        describe_counter!(
            PRE_DRAINS,
            Unit::Count,
            "Finished pre-drains, by what ended them (fixed, evidence, max_reached, forced)."
        );
        describe_counter!(HOOKS, Unit::Count, "Cleanup hooks, by name and outcome.");
        describe_histogram!(
            PHASE_DURATION,
            Unit::Seconds,
            "Time spent in each phase of the shutdown."
        );
        describe_histogram!(
            SHUTDOWN_DURATION,
            Unit::Seconds,
            "Time from the trigger to the end of the shutdown."
        );
        describe_histogram!(
            HOOK_DURATION,
            Unit::Seconds,
            "How long each cleanup hook ran."
        );
    }

    fn record_live(&self) {
        let c = &self.inner.coordinator;
        let tasks = c.shared.tracker.tasks_in_flight();
        // Two reads, not one snapshot: a task taken between them is briefly
        // counted as a request. Fine for a gauge.
        let requests = c.in_flight().saturating_sub(tasks);
        let none = self.labels(&[]);
        metrics::gauge!(ACTIVE_REQUESTS, none.clone()).set(requests as f64);
        metrics::gauge!(ACTIVE_TASKS, none.clone()).set(tasks as f64);
        let ready = c.readiness().status().is_ready();
        metrics::gauge!(READY, none.clone()).set(f64::from(u8::from(ready)));
        let phase = c.phase();
        for p in PHASES {
            let labels = self.labels(&[("phase", p.as_str().into())]);
            metrics::gauge!(PHASE, labels).set(f64::from(u8::from(p == phase)));
        }
        metrics::counter!(REQUESTS_REJECTED, none.clone()).absolute(c.rejected() as u64);
        let tracker = &c.shared.tracker;
        let completed = tracker.completed_while_draining();
        metrics::counter!(REQUESTS_COMPLETED_WHILE_DRAINING, none.clone())
            .absolute(completed as u64);
        let served = tracker.admitted_while_draining();
        metrics::counter!(REQUESTS_SERVED_WHILE_DRAINING, none.clone()).absolute(served as u64);
        // The sum the report makes (see `connections_told_to_close`).
        let goaway = c.shared.connections.goaway.load(Ordering::Acquire);
        metrics::counter!(CONNECTIONS_TOLD_TO_CLOSE, none)
            .absolute((tracker.closes() + goaway) as u64);
    }

    fn record_report(&self, report: &ShutdownReport) {
        if self.inner.report_recorded.swap(true, Ordering::AcqRel) {
            return;
        }
        // The report is final: the live counters read their last values now.
        metrics::counter!(REQUESTS_REJECTED, self.labels(&[])).absolute(report.rejected as u64);
        metrics::counter!(REQUESTS_COMPLETED_WHILE_DRAINING, self.labels(&[]))
            .absolute(report.completed_while_draining as u64);
        metrics::counter!(REQUESTS_SERVED_WHILE_DRAINING, self.labels(&[]))
            .absolute(report.served_while_draining as u64);
        metrics::counter!(CONNECTIONS_TOLD_TO_CLOSE, self.labels(&[]))
            .absolute(report.connections_told_to_close as u64);
        if let Some(idle) = report.connections_closed_idle {
            metrics::counter!(CONNECTIONS_CLOSED_IDLE, self.labels(&[])).absolute(idle as u64);
        }

        let tasks = report
            .stragglers
            .iter()
            .filter(|s| matches!(s.what, StragglerKind::Task { .. }))
            .count();
        for (kind, n) in [("request", report.force_cancelled()), ("task", tasks)] {
            metrics::counter!(ABANDONED, self.labels(&[("kind", kind.into())])).absolute(n as u64);
        }

        let shutdown = self.labels(&[
            // A label, so no process id in it (one series per cause).
            (
                "cause",
                match &report.cause {
                    TriggerCause::Restart { .. } => "restart".into(),
                    other => other.to_string().into(),
                },
            ),
            ("outcome", drain_outcome(report.drain_outcome).into()),
        ]);
        metrics::counter!(SHUTDOWNS, shutdown).increment(1);
        let ended_by = self.labels(&[("ended_by", report.pre_drain_end.as_str().into())]);
        metrics::counter!(PRE_DRAINS, ended_by).increment(1);

        for h in &report.hooks {
            let name: SharedString = h.name.clone().into();
            let labels = self.labels(&[
                ("hook", name.clone()),
                ("outcome", hook_outcome(&h.outcome).into()),
            ]);
            metrics::counter!(HOOKS, labels).increment(1);
            metrics::histogram!(HOOK_DURATION, self.labels(&[("hook", name)]))
                .record(h.elapsed.as_secs_f64());
        }

        for (phase, d) in [
            (Phase::Triggered, report.pre_drain),
            (Phase::Draining, report.drain),
            (Phase::CleaningUp, report.cleanup),
        ] {
            let labels = self.labels(&[("phase", phase.as_str().into())]);
            metrics::histogram!(PHASE_DURATION, labels).record(d.as_secs_f64());
        }
        metrics::histogram!(SHUTDOWN_DURATION, self.labels(&[])).record(report.total.as_secs_f64());
    }
}

fn drain_outcome(o: DrainOutcome) -> &'static str {
    match o {
        DrainOutcome::Drained => "drained",
        DrainOutcome::DeadlineExceeded => "deadline_exceeded",
        DrainOutcome::Forced => "forced",
    }
}

fn hook_outcome(o: &HookOutcome) -> &'static str {
    match o {
        HookOutcome::Completed => "completed",
        HookOutcome::Failed(_) => "failed",
        HookOutcome::Panicked(_) => "panicked",
        HookOutcome::TimedOut => "timed_out",
        HookOutcome::Skipped => "skipped",
        HookOutcome::Abandoned => "abandoned",
    }
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests;
