//! The driver: the task that takes a triggered coordinator through its
//! phases (pre-drain → drain → deadline → cleanup → report), and what keeps
//! one alive.
//!
//! The driver is spawned when the shutdown is triggered, on the runtime of
//! whoever triggers it, and holds the state until the report is out. Its
//! death is an event: a driver dropped with its runtime before the report
//! clears [`Coordination::driver_alive`] and nudges the waiters
//! (`Coordinator`'s waiting methods), and the first of them to look spawns a new driver on its
//! own runtime, which resumes from [`Progress`]. The OS-signal listener is
//! kept alive the same way (`os_signal`).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::hooks;
use super::pre_drain;
use super::state::coordination;
use super::state::DrainEnd;
use crate::core::names::LiveKind;
use crate::core::state::{Phase, Shared};
use crate::core::sync::{lock, Arc};
use crate::report::{
    DrainOutcome, PreDrainEnd, ShutdownReport, Straggler, StragglerKind, TriggerCause,
};

/// The drain-start log line (the README quotes it; a test keeps them equal).
const DRAINING_LOG: &str =
    "draining: shutdown signal fired; requests on open connections are still served";

/// Records the cause (the first one wins), triggers, and makes sure a
/// driver runs (on the current runtime, if there is one; otherwise the
/// first waiter starts it).
pub(crate) fn trigger_with(shared: &Arc<Shared>, cause: TriggerCause) -> bool {
    {
        let mut c = lock(&coordination(shared).cause);
        if c.is_none() {
            *c = Some(cause);
        }
    }
    let first = shared.trigger();
    shared.nudge();
    ensure_driver(shared);
    first
}

/// Spawns the driver on the current runtime if the shutdown was triggered,
/// the report is not out and no driver is alive. Returns `false` outside a
/// runtime (nothing spawned: the first waiter does it).
pub(super) fn ensure_driver(shared: &Arc<Shared>) -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let c = coordination(shared);
    // The flag is taken before the spawn and given back by the task's
    // guard: two callers racing here spawn one driver.
    if shared.triggered.is_set()
        && !shared.done.is_set()
        && c.driver_alive
            .compare_exchange(false, true, AcqRel, Acquire)
            .is_ok()
    {
        if c.drivers_started.fetch_add(1, AcqRel) > 0 {
            tracing::warn!(
                target: "tower_graceful",
                "the runtime that drove the shutdown is gone: driving it from this one"
            );
        }
        spawn_driver(shared.clone(), &handle);
    }
    true
}

/// The driver task. Its guard is moved into the future when the task is
/// created, so it is dropped with the task even if the task never ran (its
/// runtime shut down first).
fn spawn_driver(shared: Arc<Shared>, handle: &tokio::runtime::Handle) {
    struct Alive(Arc<Shared>);
    impl Drop for Alive {
        fn drop(&mut self) {
            if !self.0.done.is_set() {
                coordination(&self.0).driver_alive.store(false, Release);
                self.0.nudge();
            }
        }
    }
    let alive = Alive(shared);
    handle.spawn(async move {
        let shared = &alive.0;
        let cause = lock(&coordination(shared).cause)
            .clone()
            .unwrap_or(TriggerCause::Api);
        // One span per shutdown, from the trigger (not from the build: a
        // span as long as the process helps no one); `drive` records each
        // phase in it, and every event of the shutdown nests under it.
        let span = tracing::info_span!(
            target: "tower_graceful",
            "shutdown",
            %cause,
            // `Triggered`, or further on for a restarted driver.
            phase = %shared.phase(),
        );
        drive(shared).instrument(span).await;
    });
}

async fn drive(shared: &Arc<Shared>) {
    let c = coordination(shared);
    let cfg = &*c.config;
    let progress = &c.progress;
    shared.triggered.wait().await;
    // Everything counts from the trigger (stamped before the latch), not
    // from when this driver woke: a driver restarted on another runtime
    // wakes late and must not sleep the whole pre-drain delay again.
    let t0 = shared
        .triggered_at
        .get()
        .copied()
        .unwrap_or_else(Instant::now);
    let cause = lock(&c.cause).clone().unwrap_or(TriggerCause::Api);
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
        let ended = pre_drain::wait(shared, &cfg.pre_drain, t0).await;
        let _ = progress.pre_drain_end.set(ended.by);
        tracing::info!(
            target: "tower_graceful",
            elapsed = ?t0.elapsed(),
            ended_by = %ended.by,
            readiness_checks_refused = ended.checks,
            last_arrival_after_trigger = ?ended.last_arrival.map(|l| l.saturating_duration_since(t0)),
            "pre-drain over: {}", ended_by_message(ended.by)
        );
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
            "{}", DRAINING_LOG
        );
        (t_drain, in_flight)
    });
    let drain = match progress.drain_end.get() {
        Some(end) => end,
        None => {
            let end = drain(shared, t_drain).await;
            progress.drain_end.get_or_init(|| end)
        }
    };
    let outcome = drain.outcome;

    shared.advance(Phase::CleaningUp);
    span.record("phase", tracing::field::display(Phase::CleaningUp));
    let t_clean = *progress.cleanup_start.get_or_init(Instant::now);
    let hooks = hooks::run(&c.hooks, cfg.hook_timeout, t_clean + cfg.cleanup_timeout);
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
        (c.served.load(Acquire) && outcome == DrainOutcome::Drained).then(|| c.open.load(Acquire))
    };

    let report = ShutdownReport {
        cause,
        pre_drain: t_drain.saturating_duration_since(t0),
        // Unset only if draining began without this driver's pre-drain
        // (a driver restarted after it, whose predecessor set it first).
        pre_drain_end: progress
            .pre_drain_end
            .get()
            .copied()
            .unwrap_or(PreDrainEnd::Fixed),
        drain: drain.elapsed,
        drain_outcome: outcome,
        cleanup,
        total: t0.elapsed(),
        in_flight_at_drain,
        completed_while_draining: shared.tracker.completed_while_draining(),
        rejected: shared.tracker.rejected(),
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
    *lock(&c.report) = Some(report);
    shared.advance(Phase::Done);
    span.record("phase", tracing::field::display(Phase::Done));
    shared.done.set();
}

/// The end of the pre-drain's log line.
fn ended_by_message(by: PreDrainEnd) -> &'static str {
    match by {
        PreDrainEnd::Fixed => "the fixed delay is up",
        PreDrainEnd::Evidence => {
            "the balancers have stopped sending (readiness checks refused, nothing new arriving)"
        }
        PreDrainEnd::MaxReached => "its maximum was reached without the evidence",
        PreDrainEnd::Forced => "forced",
    }
}

/// Waits for the drain to end (everything done, the deadline, a forced
/// stop) and, unless it drained, fires the hard signal and names the
/// stragglers.
async fn drain(shared: &Shared, t_drain: Instant) -> DrainEnd {
    let deadline = shared
        .deadline
        .get()
        .copied()
        .unwrap_or(t_drain + coordination(shared).config.drain_deadline);
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
                    LiveKind::Request { method, path } => StragglerKind::Request { method, path },
                    LiveKind::Task { name } => StragglerKind::Task { name },
                    LiveKind::Unnamed { count } => StragglerKind::Unnamed { count },
                    LiveKind::Connections { count } => StragglerKind::Connections { count },
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
