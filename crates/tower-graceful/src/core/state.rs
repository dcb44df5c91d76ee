//! The one piece of shared state per coordinator: the phase, the in-flight
//! counter, the signals and the readiness gates. It knows nothing of HTTP;
//! every layer and the coordinator sit on top of it.
//!
//! It lives in an `Arc`, and every clone of that `Arc` is an owner: the
//! coordinator's handles, the layers and their services, signals, gates,
//! request guards, the driver task. The OS-signal listener holds a `Weak`:
//! it ends when the state does ([`Shared::gone`]).

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use crate::core::counter::Tracker;
use crate::core::event::Event;
use crate::core::evidence::Evidence;
use crate::core::readiness::{Gates, ReadinessStatus};
use crate::core::sync::{lock, AtomicU8, Mutex};

/// Where a coordinator is in its shutdown. Phases only move forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Normal operation: readiness follows the gates, requests are served.
    Serving,
    /// Shutdown was triggered: readiness is down, requests are still served
    /// during the pre-drain delay so load balancers can notice.
    Triggered,
    /// [`ShutdownSignal`](crate::ShutdownSignal) has fired; requests on open
    /// connections are still served (the rejection is only for what cannot
    /// finish: see [`drain`](crate::drain)); the coordinator waits for
    /// in-flight work.
    Draining,
    /// The drain deadline passed (or a second signal arrived): the hard
    /// signal has fired and stragglers were recorded.
    Forced,
    /// Cleanup hooks are running.
    CleaningUp,
    /// Shutdown finished; the report is available.
    Done,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Serving,
            1 => Phase::Triggered,
            2 => Phase::Draining,
            3 => Phase::Forced,
            4 => Phase::CleaningUp,
            _ => Phase::Done,
        }
    }

    /// A short lowercase name, as used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Triggered => "triggered",
            Phase::Draining => "draining",
            Phase::Forced => "forced",
            Phase::CleaningUp => "cleaning-up",
            Phase::Done => "done",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) struct Shared {
    phase: AtomicU8,
    pub(crate) tracker: Tracker,
    /// Set when shutdown is triggered (by anyone).
    pub(crate) triggered: Event,
    /// Set when a forced stop is requested (second signal, `force()`).
    pub(crate) force_requested: Event,
    /// Set when the report is ready.
    pub(crate) done: Event,
    /// Cancelled when the state is dropped: what the OS-signal listener,
    /// which holds only a `Weak`, waits on to end.
    pub(crate) gone: CancellationToken,
    /// Bumped when a waiter should look again at who drives the shutdown:
    /// at the trigger, and when a driver or listener task died with its
    /// runtime. A `watch` keeps a version, so a bump between a waiter's
    /// check and its await is not lost.
    pub(crate) nudge: tokio::sync::watch::Sender<u64>,
    /// The soft signal: fires when draining starts.
    pub(crate) soft: CancellationToken,
    /// The hard signal: fires at the drain deadline or on force.
    pub(crate) hard: CancellationToken,
    /// When the drain deadline falls; set once when draining starts.
    pub(crate) deadline: OnceLock<tokio::time::Instant>,
    /// When shutdown was triggered; set once.
    pub(crate) triggered_at: OnceLock<tokio::time::Instant>,
    /// What the layers do with connections and late requests.
    pub(crate) policy: Policy,
    /// Kept by [`serve`](crate::serve): connections now open, HTTP/2
    /// connections sent GOAWAY.
    pub(crate) connections: ConnectionCounts,
    /// What the adaptive pre-drain watches: readiness checks refused since
    /// the trigger, arrivals from `serve`.
    pub(crate) evidence: Evidence,
    pub(crate) gates: Mutex<Gates>,
    /// Bumped after every change of a gate (added, set, dropped): what a
    /// watcher of the readiness status awaits instead of polling it. A
    /// `watch` keeps a version, so a change between `subscribe` and the
    /// await is not lost.
    pub(crate) gates_changed: tokio::sync::watch::Sender<()>,
    /// Whether a coordinator drives this state (false for a signal made from
    /// a bare `CancellationToken`).
    pub(crate) driven: bool,
    /// The key of this state in [`registry`] (0: not registered).
    key: u32,
    /// What the coordinator keeps beside the state (its settings, hooks,
    /// progress and report): opaque here, so that this module knows nothing
    /// of the coordinator above it. `()` for a standalone signal.
    pub(crate) coordination: Box<dyn std::any::Any + Send + Sync>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.gone.cancel();
        registry::remove(self.key);
    }
}

/// Every coordinated state by a small key, as a `Weak`: how
/// `ShutdownSignal::current` finds the state of the request being polled
/// from the key in a thread-local (see `core::guard`). A key is given back
/// when its state is dropped; it cannot be reused while anything that could
/// make it current (a guard, which holds an `Arc`) exists.
pub(crate) mod registry {
    use std::sync::{Arc, Mutex, PoisonError, Weak};

    use super::Shared;

    #[derive(Default)]
    struct Slab {
        slots: Vec<Weak<Shared>>,
        free: Vec<u32>,
    }

    static SLAB: Mutex<Slab> = Mutex::new(Slab {
        slots: Vec::new(),
        free: Vec::new(),
    });

    fn slab() -> std::sync::MutexGuard<'static, Slab> {
        SLAB.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A key for a state about to be built (never 0).
    pub(crate) fn reserve() -> u32 {
        let mut s = slab();
        match s.free.pop() {
            Some(key) => key,
            None => {
                s.slots.push(Weak::new());
                u32::try_from(s.slots.len()).expect("fewer than 2^32 coordinators alive")
            }
        }
    }

    /// Records the built state under its key.
    pub(crate) fn insert(shared: &Arc<Shared>) {
        let key = shared.key;
        if key != 0 {
            slab().slots[key as usize - 1] = Arc::downgrade(shared);
        }
    }

    /// The state under `key`, while it is alive.
    pub(crate) fn lookup(key: u32) -> Option<Arc<Shared>> {
        slab().slots.get(key as usize - 1).and_then(Weak::upgrade)
    }

    pub(super) fn remove(key: u32) {
        if key != 0 {
            let mut s = slab();
            s.slots[key as usize - 1] = Weak::new();
            s.free.push(key);
        }
    }
}

/// Connection counts kept by the crate's own serve path (zero otherwise).
#[derive(Debug)]
pub(crate) struct ConnectionCounts {
    pub(crate) open: std::sync::atomic::AtomicUsize,
    pub(crate) goaway: std::sync::atomic::AtomicUsize,
    pub(crate) served: std::sync::atomic::AtomicBool,
    /// Connection tasks of `serve` not yet ended: a task ends only once its
    /// socket is closed, after hyper has written everything it had queued
    /// (the end of the last response). A `watch`, so the driver's wait for
    /// zero ([`Self::all_closed`]) cannot miss the last one going (it keeps
    /// a version; the value is read under its lock).
    live: tokio::sync::watch::Sender<usize>,
}

impl Default for ConnectionCounts {
    fn default() -> Self {
        Self {
            open: Default::default(),
            goaway: Default::default(),
            served: Default::default(),
            live: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ConnectionCounts {
    /// A connection task is about to be spawned.
    #[cfg(feature = "serve")]
    pub(crate) fn task_started(&self) {
        // No wake-up: only the way down to zero is awaited.
        self.live.send_if_modified(|n| {
            *n += 1;
            false
        });
    }

    /// A connection task ended (its socket is closed); wakes
    /// [`Self::all_closed`] when it was the last.
    #[cfg(feature = "serve")]
    pub(crate) fn task_ended(&self) {
        self.live.send_if_modified(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// Completes when no connection task of `serve` is left (at once when
    /// `serve` is not used). Cancel safe.
    pub(crate) async fn all_closed(&self) {
        let mut rx = self.live.subscribe();
        // Err only if the sender is gone, which it cannot be while `self` is.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// The connection and admission policy the layers apply (from the builder).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    /// Over how long after the trigger the share of HTTP/1.x responses that
    /// announce `Connection: close` rises from 0 to 1 (zero: all at once).
    pub(crate) lame_duck_window: std::time::Duration,
    /// A request admitted while draining with less than this left before the
    /// drain deadline is turned away (it could not finish anyway).
    pub(crate) min_time_left: std::time::Duration,
    /// How long an HTTP/1.x response that ended while draining without
    /// announcing the close keeps the drain open, for its client's next
    /// request on that connection (served, with the close announced).
    pub(crate) reuse_grace: std::time::Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("phase", &self.phase())
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl Shared {
    #[cfg(all(test, tower_graceful_loom))]
    pub(crate) fn new(soft: CancellationToken, driven: bool) -> Self {
        Self::build(
            soft,
            driven,
            Policy::default(),
            Tracker::default_shards(),
            0,
            Box::new(()),
        )
    }

    /// For a signal made from a bare `CancellationToken`: no coordinator,
    /// one shard (a few KiB instead of one shard per thread).
    pub(crate) fn standalone(soft: CancellationToken) -> Self {
        Self::build(soft, false, Policy::default(), 1, 0, Box::new(()))
    }

    /// A coordinator's state, with what it keeps beside it.
    /// `checks_needed`: the readiness checks refused that the adaptive
    /// pre-drain waits for.
    pub(crate) fn coordinated(
        policy: Policy,
        checks_needed: usize,
        coordination: Box<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        Self::build(
            CancellationToken::new(),
            true,
            policy,
            Tracker::default_shards(),
            checks_needed,
            coordination,
        )
    }

    fn build(
        soft: CancellationToken,
        driven: bool,
        policy: Policy,
        shards: usize,
        checks_needed: usize,
        coordination: Box<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Serving as u8),
            tracker: Tracker::new(shards),
            triggered: Event::new(),
            force_requested: Event::new(),
            done: Event::new(),
            gone: CancellationToken::new(),
            nudge: tokio::sync::watch::Sender::new(0),
            soft,
            hard: CancellationToken::new(),
            deadline: OnceLock::new(),
            triggered_at: OnceLock::new(),
            policy,
            connections: ConnectionCounts::default(),
            evidence: Evidence::new(checks_needed),
            gates: Mutex::new(Gates::default()),
            gates_changed: tokio::sync::watch::Sender::new(()),
            driven,
            key: if driven { registry::reserve() } else { 0 },
            coordination,
        }
    }

    /// This state's key in the [`registry`].
    #[inline]
    pub(crate) fn key(&self) -> u32 {
        self.key
    }

    /// Tells the waiters to look again at who drives the shutdown.
    pub(crate) fn nudge(&self) {
        self.nudge.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The readiness status: shutting down from the trigger on, else the
    /// first gate that is not ready, else ready.
    pub(crate) fn readiness(&self) -> ReadinessStatus {
        if self.phase() >= Phase::Triggered || self.soft_fired_undriven() {
            return ReadinessStatus::ShuttingDown;
        }
        lock(&self.gates).status()
    }

    /// Wakes the watchers of the readiness status (call after releasing the
    /// gates' lock).
    pub(crate) fn gates_changed(&self) {
        self.gates_changed.send_replace(());
    }

    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        // Acquire pairs with the AcqRel in `advance`: whoever sees a phase
        // also sees what was published before entering it.
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves the phase forward to `to`. Returns `false` (and changes nothing)
    /// if the phase is already at or past `to`.
    pub(crate) fn advance(&self, to: Phase) -> bool {
        let to = to as u8;
        let mut cur = self.phase.load(Ordering::Acquire);
        loop {
            if cur >= to {
                return false;
            }
            match self
                .phase
                .compare_exchange(cur, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether draining has begun (the policy of what to turn away applies).
    #[inline]
    pub(crate) fn draining(&self) -> bool {
        self.phase.load(Ordering::Acquire) >= Phase::Draining as u8 || self.soft_fired_undriven()
    }

    /// Whether shutdown was triggered (responses may announce the close).
    #[inline]
    pub(crate) fn triggered(&self) -> bool {
        self.phase.load(Ordering::Acquire) >= Phase::Triggered as u8
    }

    /// While draining: whether a request must be turned away although the
    /// counter admitted it, because it could not finish: the forced stop has
    /// begun, or less than `min_time_left` is left before the deadline.
    pub(crate) fn too_late(&self) -> bool {
        if self.phase() >= Phase::Forced {
            return true;
        }
        let min = self.policy.min_time_left;
        !min.is_zero()
            && self
                .deadline
                .get()
                .is_some_and(|d| d.saturating_duration_since(tokio::time::Instant::now()) < min)
    }

    #[inline]
    pub(crate) fn soft_fired_undriven(&self) -> bool {
        !self.driven && self.soft.is_cancelled()
    }

    /// Programmatic trigger. Idempotent; returns whether this call triggered.
    pub(crate) fn trigger(&self) -> bool {
        // The time first: whoever sees the phase at `Triggered` (the lame
        // duck's share) finds it set.
        let _ = self.triggered_at.set(tokio::time::Instant::now());
        let first = self.advance(Phase::Triggered);
        if first {
            self.tracker.stamp_live();
        }
        self.triggered.set();
        first
    }

    /// Requests the forced stop (implies a trigger).
    pub(crate) fn force(&self) {
        self.trigger();
        self.force_requested.set();
    }

    /// Enters draining: readiness is already down; fire the soft signal, switch
    /// the tracker to exact counting. Idempotent.
    /// Returns the number of requests and tasks in flight at the switch.
    pub(crate) fn begin_draining(&self, deadline: tokio::time::Instant) -> usize {
        let _ = self.deadline.set(deadline);
        self.advance(Phase::Draining);
        // Order matters: the phase is published first so that a request that
        // sees the soft signal also sees `draining() == true`; then the
        // counter switches; then handlers are told.
        let live = self.tracker.begin_drain().unwrap_or(0);
        self.soft.cancel();
        live
    }

    pub(crate) fn count_rejected(&self) {
        // On the thread's own shard: while draining, every core may be
        // rejecting at once, and one shared counter would bounce between them.
        self.tracker.count_rejected();
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two concurrent triggers: exactly one reports the transition; the phase
    /// ends at Triggered and the latch is set either way.
    #[test]
    fn concurrent_triggers() {
        loom::model(|| {
            let s = Arc::new(Shared::new(CancellationToken::new(), true));
            let s2 = s.clone();
            let h = thread::spawn(move || s2.trigger());
            let a = s.trigger();
            let b = h.join().unwrap();
            assert!(a ^ b);
            assert_eq!(s.phase(), Phase::Triggered);
            assert!(s.triggered.is_set());
        });
    }

    /// Phase never moves backwards when a late trigger races the drain.
    #[test]
    fn trigger_racing_drain_is_monotonic() {
        loom::model(|| {
            let s = Arc::new(Shared::new(CancellationToken::new(), true));
            let s2 = s.clone();
            let h = thread::spawn(move || {
                s2.trigger();
            });
            s.advance(Phase::Triggered);
            s.advance(Phase::Draining);
            h.join().unwrap();
            assert_eq!(s.phase(), Phase::Draining);
        });
    }
}
