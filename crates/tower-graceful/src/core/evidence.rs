//! What the adaptive pre-drain watches to tell that the load balancers have
//! stopped sending (see [`PreDrain::adaptive`](crate::coordinator::PreDrain::adaptive)):
//! how many readiness checks were answered `503` since the trigger, and when
//! the last *arrival* was (a request, not a probe, on a connection accepted
//! after the trigger; without `serve`, any request admitted after it). The serving paths only write here, each with one
//! relaxed atomic; the driver reads it when its timer fires.
//!
//! Nothing here knows HTTP: the probe answer calls [`Evidence::check_refused`],
//! `serve` records its [`Evidence::arrivals`], the counter its own
//! [`Arrivals`] of requests admitted after the trigger.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use tokio::time::Instant;

use crate::core::event::Event;

/// Arrivals closer together than this are recorded once: the stamp is at
/// most this much early, which only shortens the quiet window by as much,
/// and a burst of arrivals on every core writes the shared word at most
/// once per millisecond instead of once per arrival.
const COARSE_NANOS: u64 = 1_000_000;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Evidence {
    /// Readiness answers of `503 draining` so far.
    checks: AtomicUsize,
    /// How many the adaptive pre-drain needs.
    needed: usize,
    /// Set when `checks` reaches `needed` (at once when none are needed):
    /// what the driver awaits while it lacks them.
    enough_checks: Event,
    /// Requests (not probes) on connections `serve` accepted after the
    /// trigger.
    pub(crate) arrivals: Arrivals,
}

impl Evidence {
    pub(crate) fn new(needed: usize) -> Self {
        let enough_checks = Event::new();
        if needed == 0 {
            enough_checks.set();
        }
        Self {
            checks: AtomicUsize::new(0),
            needed,
            enough_checks,
            arrivals: Arrivals::new(),
        }
    }

    /// The readiness probe answered `503 draining`.
    pub(crate) fn check_refused(&self) {
        // Relaxed: a count, read for the logs and compared here; the latch
        // below carries the ordering the driver relies on.
        let n = self.checks.fetch_add(1, Relaxed) + 1;
        if n == self.needed {
            self.enough_checks.set();
        }
    }

    /// Readiness checks answered `503` so far.
    pub(crate) fn checks(&self) -> usize {
        self.checks.load(Relaxed)
    }

    /// Set once enough checks were answered `503`.
    pub(crate) fn enough_checks(&self) -> &Event {
        &self.enough_checks
    }
}

/// When the last of some kind of arrival was: one word, written at most once
/// per millisecond however many cores record.
#[derive(Debug)]
pub(crate) struct Arrivals {
    /// Nanoseconds since `epoch`, plus one (0: none yet).
    last: AtomicU64,
    epoch: Instant,
}

impl Arrivals {
    pub(crate) fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Something arrived now.
    #[inline]
    pub(crate) fn record(&self) {
        let now = stamp(self.epoch, Instant::now());
        // Relaxed: the driver reads this word when its timer fires and
        // needs no other data published with it; an arrival that races
        // the end of the pre-drain is one that came just after it.
        if now > self.last.load(Relaxed).saturating_add(COARSE_NANOS) {
            self.last.fetch_max(now, Relaxed);
        }
    }

    /// When the last arrival was, if any.
    pub(crate) fn last(&self) -> Option<Instant> {
        match self.last.load(Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }
}

fn stamp(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

#[cfg(all(test, not(tower_graceful_loom)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn arrivals_are_stamped_and_checks_latch_at_the_threshold() {
        let e = Evidence::new(2);
        let a = &e.arrivals;
        assert_eq!(a.last(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        a.record();
        assert_eq!(a.last(), Some(a.epoch + Duration::from_secs(1)));
        // Within the coarse step: not written again.
        tokio::time::advance(Duration::from_micros(10)).await;
        a.record();
        assert_eq!(a.last(), Some(a.epoch + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        a.record();
        assert_eq!(
            a.last(),
            Some(a.epoch + Duration::from_secs(2) + Duration::from_micros(10))
        );
        e.check_refused();
        assert!(!e.enough_checks().is_set());
        e.check_refused();
        assert!(e.enough_checks().is_set());
        assert_eq!(e.checks(), 2);
        assert!(Evidence::new(0).enough_checks().is_set());
    }
}
