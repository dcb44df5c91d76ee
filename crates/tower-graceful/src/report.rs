//! The [`ShutdownReport`]: what happened, phase by phase.
//!
//! [`Coordinator::wait`](crate::Coordinator::wait) returns it, and the
//! coordinator logs it (its `Display`) when the shutdown completes. Its
//! structs and enums are `#[non_exhaustive]`: fields and variants may be
//! added, so match with a wildcard arm.
//!
//! # Example
//!
//! ```
//! use tower_graceful::report::{DrainOutcome, TriggerCause};
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! graceful.trigger();
//! let report = graceful.wait().await;
//! assert_eq!(report.cause, TriggerCause::Api);
//! assert!(report.is_clean());
//! let exit_code = match report.drain_outcome {
//!     DrainOutcome::Drained => 0,
//!     _ => 1, // cut short: something was abandoned
//! };
//! assert_eq!(exit_code, 0);
//! println!("{report}");
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// What started the shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerCause {
    /// [`Coordinator::trigger`](crate::Coordinator::trigger) or
    /// [`Coordinator::force`](crate::Coordinator::force).
    Api,
    /// An OS signal (`"SIGTERM"`, `"SIGINT"`, `"ctrl-c"`).
    Signal(&'static str),
    /// The service was handed over to a successor process that reported
    /// ready (its process id): a restart in place
    /// (`restart::Restart`, feature `restart`).
    Restart {
        /// The successor's process id.
        successor: u32,
    },
}

impl fmt::Display for TriggerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerCause::Api => f.write_str("api"),
            TriggerCause::Signal(s) => f.write_str(s),
            TriggerCause::Restart { successor } => write!(f, "restart (successor pid {successor})"),
        }
    }
}

/// What ended the pre-drain (see
/// [`PreDrain`](crate::coordinator::PreDrain)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PreDrainEnd {
    /// A fixed delay ran out (or was zero).
    Fixed,
    /// Adaptive: the evidence said the balancers had stopped sending
    /// (enough readiness checks refused, and a quiet window with nothing
    /// new arriving), at `min` or later.
    Evidence,
    /// Adaptive: the maximum was reached without the evidence.
    MaxReached,
    /// A second signal or [`Coordinator::force`](crate::Coordinator::force)
    /// cut it short.
    Forced,
}

impl PreDrainEnd {
    /// A short lowercase name, as logged and used as a metrics label:
    /// `fixed`, `evidence`, `max_reached`, `forced`.
    pub fn as_str(self) -> &'static str {
        match self {
            PreDrainEnd::Fixed => "fixed",
            PreDrainEnd::Evidence => "evidence",
            PreDrainEnd::MaxReached => "max_reached",
            PreDrainEnd::Forced => "forced",
        }
    }
}

impl fmt::Display for PreDrainEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the drain phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainOutcome {
    /// Everything in flight finished before the deadline.
    Drained,
    /// The drain deadline passed with work still in flight (the phase used
    /// its whole allowance).
    DeadlineExceeded,
    /// A second signal or [`Coordinator::force`](crate::Coordinator::force)
    /// cut the drain short.
    Forced,
}

/// Work that was still in flight when the drain was cut short.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Straggler {
    /// What it was.
    pub what: StragglerKind,
    /// How long it had been running when the drain was cut short.
    pub age: Duration,
    /// `true` when the request started before shutdown was triggered: its
    /// start is not timed (a clock read per request would cost as much as
    /// the rest of the tracking), so `age` is the time since the trigger, a
    /// lower bound.
    pub age_is_lower_bound: bool,
}

/// The kind of a [`Straggler`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StragglerKind {
    /// A request, by method and path (the method is cut at 8 bytes, the path
    /// at 48, marked with `…`).
    Request {
        /// The request method.
        method: String,
        /// The request path (no query).
        path: String,
    },
    /// Requests that found no free slot to record their name (more than 64
    /// in flight on one thread, or on a thread beyond the tracker's shards).
    Unnamed {
        /// How many.
        count: usize,
    },
    /// Background work tracked with a guard, by the name it was given.
    Task {
        /// The name given to `track`.
        name: Cow<'static, str>,
    },
    /// HTTP/2 connections of [`serve`](crate::serve) whose graceful GOAWAY
    /// exchange (GOAWAY, PING, the client's PING ack) had not ended: a
    /// client that never answered the PING, within the drain.
    Connections {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for Straggler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ge = if self.age_is_lower_bound { "≥ " } else { "" };
        match &self.what {
            StragglerKind::Request { method, path } => {
                write!(f, "{method} {path} (age {ge}{:.1?})", self.age)
            }
            StragglerKind::Task { name } => write!(f, "task {name} (age {ge}{:.1?})", self.age),
            StragglerKind::Unnamed { count } => {
                let s = if *count == 1 { "" } else { "s" };
                write!(
                    f,
                    "{count} more request{s}, unnamed (age {ge}{:.1?})",
                    self.age
                )
            }
            StragglerKind::Connections { count } => {
                let s = if *count == 1 { "" } else { "s" };
                write!(
                    f,
                    "{count} HTTP/2 connection{s} whose GOAWAY exchange had not ended"
                )
            }
        }
    }
}

/// How one cleanup hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookOutcome {
    /// It returned `Ok`.
    Completed,
    /// It returned an error (its `Display`).
    Failed(String),
    /// It panicked (the panic message, when it was a string).
    Panicked(String),
    /// It did not finish within its timeout and was aborted.
    TimedOut,
    /// It never ran: the cleanup time was used up by the hooks before it.
    Skipped,
    /// It was cut off by its runtime: the runtime that ran the shutdown was
    /// shut down while the hook ran, which cancelled the hook, and the
    /// shutdown was finished by a driver restarted on another runtime (by
    /// [`Coordinator::wait`](crate::Coordinator::wait), `trigger` or
    /// `force`). It is not run again: it may have done part of its work,
    /// and a hook runs at most once.
    Abandoned,
}

impl HookOutcome {
    /// Whether the hook completed successfully.
    pub fn is_ok(&self) -> bool {
        matches!(self, HookOutcome::Completed)
    }
}

/// One hook's entry in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookReport {
    /// The name it was registered with.
    pub name: Cow<'static, str>,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran.
    pub elapsed: Duration,
    /// The timeout it had.
    pub timeout: Duration,
}

/// `1 request`, `2 requests`.
struct Count(usize, &'static str);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
}

/// What a shutdown did, returned by [`Coordinator::wait`](crate::Coordinator::wait)
/// and logged with `tracing` when it completes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// What started it.
    pub cause: TriggerCause,
    /// Time from the trigger to the start of draining (the pre-drain delay,
    /// or less if a second signal cut it short; for an adaptive pre-drain,
    /// until the evidence came, between its minimum and maximum).
    pub pre_drain: Duration,
    /// What ended the pre-drain.
    pub pre_drain_end: PreDrainEnd,
    /// Time spent draining.
    pub drain: Duration,
    /// How the drain ended.
    pub drain_outcome: DrainOutcome,
    /// Time spent in cleanup: the hooks and, alongside them after a clean
    /// drain, the connections of `serve` finishing their writes and closing.
    pub cleanup: Duration,
    /// Trigger to done.
    pub total: Duration,
    /// Requests and tracked tasks in flight at the moment draining began
    /// (counted before `ShutdownSignal` fired).
    pub in_flight_at_drain: usize,
    /// Requests that finished (body ended or dropped) while draining.
    pub completed_while_draining: usize,
    /// Requests answered with the draining rejection.
    pub rejected: usize,
    /// Requests that arrived on open connections after draining began and
    /// were served (see the [`drain`](crate::drain) policy).
    pub served_while_draining: usize,
    /// Connections told to close after the trigger: HTTP/1.x responses that
    /// announced `Connection: close`, plus HTTP/2 connections sent GOAWAY by
    /// [`serve`](crate::serve).
    pub connections_told_to_close: usize,
    /// Connections still open, all idle, when nothing was left in flight,
    /// and so closed by [`serve`](crate::serve) at the end of the drain.
    /// `None` without [`serve`](crate::serve) (the server's own loop owns
    /// the connections).
    pub connections_closed_idle: Option<usize>,
    /// Requests and tasks still in flight when the drain was cut short.
    pub stragglers: Vec<Straggler>,
    /// Each hook, in the order they ran.
    pub hooks: Vec<HookReport>,
}

impl ShutdownReport {
    /// Requests (not tasks) abandoned at the forced stop.
    pub fn force_cancelled(&self) -> usize {
        self.stragglers
            .iter()
            .map(|s| match s.what {
                StragglerKind::Request { .. } => 1,
                StragglerKind::Unnamed { count } => count,
                _ => 0,
            })
            .sum()
    }

    /// Whether nothing was abandoned and every hook completed.
    pub fn is_clean(&self) -> bool {
        self.stragglers.is_empty() && self.hooks.iter().all(|h| h.outcome.is_ok())
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shutdown report (cause: {})", self.cause)?;
        writeln!(
            f,
            "  pre-drain   {:>10.1?}  ended by {}",
            self.pre_drain, self.pre_drain_end
        )?;
        write!(
            f,
            "  drain       {:>10.1?}  {:?}: {} in flight at start (requests and tasks), {} completed, ",
            self.drain,
            self.drain_outcome,
            self.in_flight_at_drain,
            Count(self.completed_while_draining, "request"),
        )?;
        if !self.stragglers.is_empty() {
            // Without this, work cut off at the deadline would read as
            // "0 requests completed" and nothing else.
            let tasks = self
                .stragglers
                .iter()
                .filter(|s| matches!(s.what, StragglerKind::Task { .. }))
                .count();
            let requests = self.force_cancelled();
            let at = match self.drain_outcome {
                DrainOutcome::Forced => "the forced stop",
                _ => "the deadline",
            };
            match (requests, tasks) {
                (r, 0) => write!(f, "{} abandoned at {at}, ", Count(r, "request"))?,
                (0, t) => write!(f, "{} abandoned at {at}, ", Count(t, "task"))?,
                (r, t) => write!(
                    f,
                    "{} and {} abandoned at {at}, ",
                    Count(r, "request"),
                    Count(t, "task")
                )?,
            }
        }
        writeln!(f, "{} rejected", self.rejected)?;
        write!(
            f,
            "    connections: {} told to close",
            self.connections_told_to_close
        )?;
        if let Some(idle) = self.connections_closed_idle {
            write!(f, ", {idle} closed idle at the end")?;
        }
        writeln!(
            f,
            "; {} served on open connections while draining",
            self.served_while_draining
        )?;
        for s in &self.stragglers {
            writeln!(f, "    straggler: {s}")?;
        }
        writeln!(f, "  cleanup     {:>10.1?}", self.cleanup)?;
        for h in &self.hooks {
            writeln!(
                f,
                "    hook {:<16} {:?} in {:.1?} (timeout {:.1?})",
                h.name, h.outcome, h.elapsed, h.timeout
            )?;
        }
        write!(f, "  total       {:>10.1?}", self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: DrainOutcome, stragglers: Vec<Straggler>) -> ShutdownReport {
        ShutdownReport {
            cause: TriggerCause::Signal("SIGTERM"),
            pre_drain: Duration::ZERO,
            pre_drain_end: PreDrainEnd::Fixed,
            drain: Duration::from_secs(3),
            drain_outcome: outcome,
            cleanup: Duration::ZERO,
            total: Duration::from_secs(3),
            in_flight_at_drain: 3,
            completed_while_draining: 1,
            rejected: 2,
            served_while_draining: 0,
            connections_told_to_close: 0,
            connections_closed_idle: None,
            stragglers,
            hooks: Vec::new(),
        }
    }

    fn drain_line(r: &ShutdownReport) -> String {
        r.to_string()
            .lines()
            .find(|l| l.trim_start().starts_with("drain "))
            .expect("a drain line")
            .to_owned()
    }

    fn request(path: &str) -> Straggler {
        Straggler {
            what: StragglerKind::Request {
                method: "GET".into(),
                path: path.into(),
            },
            age: Duration::from_secs(3),
            age_is_lower_bound: false,
        }
    }

    #[test]
    fn counts_read_in_the_singular_and_the_plural() {
        let mut r = report(DrainOutcome::Drained, Vec::new());
        assert!(
            drain_line(&r).ends_with(
                "3 in flight at start (requests and tasks), 1 request completed, 2 rejected"
            ),
            "{r}"
        );
        r.completed_while_draining = 2;
        assert!(drain_line(&r).contains(", 2 requests completed, "), "{r}");
        r.completed_while_draining = 0;
        assert!(drain_line(&r).contains(", 0 requests completed, "), "{r}");
        let one = Straggler {
            what: StragglerKind::Unnamed { count: 1 },
            age: Duration::ZERO,
            age_is_lower_bound: true,
        };
        assert!(
            one.to_string().starts_with("1 more request, unnamed"),
            "{one}"
        );
    }

    #[test]
    fn work_cut_off_at_the_deadline_is_counted_as_abandoned() {
        let task = Straggler {
            what: StragglerKind::Task {
                name: "ws session".into(),
            },
            age: Duration::from_secs(3),
            age_is_lower_bound: false,
        };
        let r = report(
            DrainOutcome::DeadlineExceeded,
            vec![request("/slow"), request("/stream"), task.clone()],
        );
        assert!(
            drain_line(&r).ends_with(
                "1 request completed, 2 requests and 1 task abandoned at the deadline, 2 rejected"
            ),
            "{r}"
        );
        let r = report(DrainOutcome::Forced, vec![request("/slow")]);
        assert!(
            drain_line(&r).contains("1 request abandoned at the forced stop, "),
            "{r}"
        );
        let r = report(DrainOutcome::DeadlineExceeded, vec![task]);
        assert!(
            drain_line(&r).contains("1 task abandoned at the deadline, "),
            "{r}"
        );
        // Nothing abandoned: no mention.
        let r = report(DrainOutcome::Drained, Vec::new());
        assert!(!drain_line(&r).contains("abandoned"), "{r}");
    }
}
