//! The pre-drain: how long the coordinator keeps serving normally after the
//! trigger, with readiness already down, so that load balancers stop sending
//! before it starts draining. A fixed delay, or an adaptive one that ends on
//! evidence ([`PreDrain::adaptive`]); and the driver's wait for it.

use std::time::Duration;

use tokio::time::Instant;

use crate::core::state::Shared;
use crate::report::PreDrainEnd;

/// Default number of readiness checks an adaptive pre-drain waits to have
/// answered `503`: 3, the default failure threshold of a Kubernetes
/// readiness probe (`failureThreshold`) and of HAProxy (`fall`).
pub const DEFAULT_READINESS_CHECKS: usize = 3;
/// Default quiet window of an adaptive pre-drain: 1 s.
pub const DEFAULT_QUIET_WINDOW: Duration = Duration::from_secs(1);

/// How long the pre-drain lasts: a fixed delay ([`PreDrain::fixed`], what
/// [`Builder::pre_drain_delay`](crate::Builder::pre_drain_delay) sets) or an
/// adaptive one ([`PreDrain::adaptive`]). Given to
/// [`Builder::pre_drain`](crate::Builder::pre_drain).
///
/// # Adaptive: what ends it
///
/// A fixed delay is sized for the slowest balancer and waited in full even
/// when every balancer noticed long before. The adaptive pre-drain watches
/// what the instance can see of the balancers instead, and ends as soon as
/// **both** hold:
///
/// 1. **Readiness checks**: the readiness probe (the layer's
///    [`readiness_path`](crate::Builder::readiness_path) or a
///    [`ReadinessService`](crate::probe::ReadinessService)) has answered
///    `503` to at least [`readiness_checks`](Self::readiness_checks) `GET`
///    or `HEAD` checks since the trigger (default 3,
///    [`DEFAULT_READINESS_CHECKS`]: a balancer with that failure threshold
///    has taken the instance out once it has seen them). With several
///    balancers, count all their checks (or raise the number).
/// 2. **A quiet window**: for [`quiet_window`](Self::quiet_window) (default
///    1 s, [`DEFAULT_QUIET_WINDOW`]) nothing has arrived that a balancer
///    sent after the trigger: with [`serve`](crate::serve), no request on
///    a connection accepted after the trigger, probes aside (a balancer's
///    health check opens connections of its own; requests on connections
///    opened before the trigger are the clients' pools, not the balancer's
///    choice, and are told to close by the lame duck); without `serve`,
///    where the crate cannot tell connections apart, no request at all
///    through the layer (probes aside). The window counts from the trigger, so a service
///    with no traffic has it after `quiet_window`.
///
/// and never before `min` nor after `max`. A second signal
/// ([`Coordinator::force`](crate::Coordinator::force)) cuts it short as
/// always. The [`ShutdownReport`](crate::ShutdownReport) says how long it
/// took and what ended it ([`PreDrainEnd`]), and so does the log line that
/// starts the drain.
///
/// # A quiet service
///
/// With no traffic, the quiet window holds from the start, and the
/// pre-drain ends when enough checks have been refused (at `min` at the
/// earliest). With **no readiness checks at all** it waits until `max`: an
/// instance nobody sends to cannot tell a balancer that noticed from one
/// that has not probed yet, and a request that arrives later would find it
/// draining. (Set [`readiness_checks(0)`](Self::readiness_checks) to trust
/// the quiet window alone, for example where the orchestrator, not a
/// probe, takes the instance out of rotation, as Kubernetes does at the
/// pod's deletion; a gRPC health check answered by `tonic-health` is not
/// seen by the crate either.)
///
/// # Budget
///
/// The budget arithmetic ([`Builder`](crate::Builder#budget-arithmetic))
/// counts `max`: that is the longest the pre-drain can take. The lame-duck
/// window defaults to `min` (every HTTP/1.x response announces the close by
/// the earliest end), and may be at most `max`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_graceful::coordinator::PreDrain;
/// use tower_graceful::report::PreDrainEnd;
/// use tower_graceful::Coordinator;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let graceful = Coordinator::builder()
///     .handle_signals(false)
///     .pre_drain(
///         PreDrain::adaptive(Duration::from_secs(1), Duration::from_secs(10))
///             .readiness_checks(2)
///             .quiet_window(Duration::from_secs(1)),
///     )
///     .readiness_path("/ready")
///     .build()?;
/// graceful.trigger();
/// // Nobody checks readiness: the pre-drain waits until its maximum.
/// let report = graceful.wait().await;
/// assert_eq!(report.pre_drain, Duration::from_secs(10));
/// assert_eq!(report.pre_drain_end, PreDrainEnd::MaxReached);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreDrain {
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fixed(Duration),
    Adaptive(Adaptive),
}

/// The settings of an adaptive pre-drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Adaptive {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) checks: usize,
    pub(crate) quiet: Duration,
}

impl PreDrain {
    /// A fixed delay: the pre-drain lasts `d` (unless a second signal cuts
    /// it short).
    pub fn fixed(d: Duration) -> Self {
        Self {
            kind: Kind::Fixed(d),
        }
    }

    /// An adaptive pre-drain: it ends on evidence that the balancers have
    /// stopped sending (see [the type's docs](Self#adaptive-what-ends-it)),
    /// never before `min`, never after `max`. `min ≤ max` is checked by
    /// [`Builder::build`](crate::Builder::build).
    pub fn adaptive(min: Duration, max: Duration) -> Self {
        Self {
            kind: Kind::Adaptive(Adaptive {
                min,
                max,
                checks: DEFAULT_READINESS_CHECKS,
                quiet: DEFAULT_QUIET_WINDOW,
            }),
        }
    }

    /// How many readiness checks answered `503` since the trigger the
    /// adaptive pre-drain waits for (default 3, [`DEFAULT_READINESS_CHECKS`]).
    /// `0`: the quiet window alone decides. No effect on a fixed delay.
    pub fn readiness_checks(mut self, n: usize) -> Self {
        if let Kind::Adaptive(a) = &mut self.kind {
            a.checks = n;
        }
        self
    }

    /// How long nothing new may have arrived before the adaptive pre-drain
    /// ends (default 1 s, [`DEFAULT_QUIET_WINDOW`]). No effect on a fixed
    /// delay.
    pub fn quiet_window(mut self, d: Duration) -> Self {
        if let Kind::Adaptive(a) = &mut self.kind {
            a.quiet = d;
        }
        self
    }

    /// The shortest the pre-drain can be (the fixed delay, or `min`).
    pub fn min(&self) -> Duration {
        match self.kind {
            Kind::Fixed(d) => d,
            Kind::Adaptive(a) => a.min,
        }
    }

    /// The longest the pre-drain can be (the fixed delay, or `max`): what
    /// the budget arithmetic counts.
    pub fn max(&self) -> Duration {
        match self.kind {
            Kind::Fixed(d) => d,
            Kind::Adaptive(a) => a.max,
        }
    }

    /// Whether this is an adaptive pre-drain.
    pub fn is_adaptive(&self) -> bool {
        matches!(self.kind, Kind::Adaptive(_))
    }

    pub(crate) fn adaptive_settings(&self) -> Option<Adaptive> {
        match self.kind {
            Kind::Fixed(_) => None,
            Kind::Adaptive(a) => Some(a),
        }
    }

    /// The readiness checks the shared state counts towards.
    pub(crate) fn checks_needed(&self) -> usize {
        self.adaptive_settings().map_or(0, |a| a.checks)
    }
}

impl Default for PreDrain {
    /// No pre-drain: a fixed delay of zero.
    fn default() -> Self {
        Self::fixed(Duration::ZERO)
    }
}

/// What the pre-drain's evidence said when it ended.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ended {
    pub(super) by: PreDrainEnd,
    /// Readiness checks refused since the trigger.
    pub(super) checks: usize,
    /// When the last arrival was, if any came after the trigger.
    pub(super) last_arrival: Option<Instant>,
}

/// Waits out the pre-drain that began at `t0` (a restarted driver waits only
/// what is left of it). Event-driven: it sleeps until the earliest instant
/// at which the evidence could be complete and wakes early only for the
/// readiness checks' latch or a force. An arrival moves the end of the
/// quiet window later; it is read when that end comes, so nobody wakes the
/// driver on the serving path.
pub(super) async fn wait(shared: &Shared, pre_drain: &PreDrain, t0: Instant) -> Ended {
    let ended = |by| Ended {
        by,
        checks: shared.evidence.checks(),
        last_arrival: last_arrival(shared),
    };
    let forced = || async {
        shared.force_requested.wait().await;
        tracing::warn!(target: "tower_graceful", "forced: pre-drain delay cut short");
    };
    let a = match pre_drain.kind {
        Kind::Fixed(d) if d.is_zero() => return ended(PreDrainEnd::Fixed),
        Kind::Fixed(d) => {
            tokio::select! {
                _ = tokio::time::sleep_until(t0 + d) => return ended(PreDrainEnd::Fixed),
                _ = forced() => return ended(PreDrainEnd::Forced),
            }
        }
        Kind::Adaptive(a) => a,
    };
    let (earliest, latest) = (t0 + a.min, t0 + a.max);
    let checks = shared.evidence.enough_checks();
    loop {
        if shared.force_requested.is_set() {
            return ended(PreDrainEnd::Forced);
        }
        // With enough checks, the end is the later of `min` and the end of
        // the quiet window after the last arrival (or after the trigger);
        // without them, `max`, unless the latch says they came.
        let end = if checks.is_set() {
            let quiet_from = last_arrival(shared).map_or(t0, |l| l.max(t0));
            earliest.max(quiet_from + a.quiet)
        } else {
            latest
        };
        let now = Instant::now();
        if end <= latest && end <= now && checks.is_set() {
            return ended(PreDrainEnd::Evidence);
        }
        if now >= latest {
            return ended(PreDrainEnd::MaxReached);
        }
        tokio::select! {
            biased;
            _ = forced() => return ended(PreDrainEnd::Forced),
            _ = checks.wait(), if !checks.is_set() => {}
            _ = tokio::time::sleep_until(end.min(latest)) => {}
        }
    }
}

/// The last arrival a balancer sent after the trigger: from `serve` when it
/// owns the connections, else any request the layer admitted.
fn last_arrival(shared: &Shared) -> Option<Instant> {
    use std::sync::atomic::Ordering::Acquire;
    let from_serve = shared.evidence.arrivals.last();
    if shared.connections.served.load(Acquire) {
        from_serve
    } else {
        from_serve.max(shared.tracker.admitted_after_trigger.last())
    }
}
