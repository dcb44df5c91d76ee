//! What a request holds while it is in flight: its [`Ticket`] in the
//! counter and an `Arc` of the state that counter is part of, in one
//! [`RequestGuard`] that moves from the response future into the response
//! body and releases the count when it is dropped; and the thread's *current
//! state*, which [`ShutdownSignal::current`](crate::ShutdownSignal::current)
//! reads while a guard is being polled.
//!
//! The current state is a number in a thread-local (`Cell<u32>`: entering
//! and leaving are two plain stores), the state's key in a process-wide
//! registry of `Weak`s (`core::state::registry`). Only `current()` looks it
//! up, and the `Weak` upgrades because the guard being polled holds an
//! `Arc` of that state.
//!
//! The state's lifetime is the `Arc`'s business alone: nothing here frees
//! anything, and nothing holds a pointer the `Arc` does not own.

use std::cell::Cell;
use std::fmt;

use crate::core::counter::{HoldTicket, Ticket};
use crate::core::state::Shared;
use crate::core::sync::Arc;

/// A request's count (if it is counted) and its handle to the state.
/// Dropping it ends the request. Holders keep it in an `Option` and take it
/// out to release it exactly once.
pub(crate) struct RequestGuard {
    shared: Arc<Shared>,
    /// `None` for a request that is not counted (an exempt path after the
    /// drain completed, an untracked path), and once released.
    ticket: Option<Ticket>,
}

impl RequestGuard {
    /// A counted request.
    #[inline]
    pub(crate) fn counted(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Self {
            shared,
            ticket: Some(ticket),
        }
    }

    /// A request that is served without being counted: it still needs the
    /// state (for [`ShutdownSignal::current`](crate::ShutdownSignal::current)
    /// and the lame duck).
    pub(crate) fn uncounted(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            ticket: None,
        }
    }

    /// Whether the request is counted.
    pub(crate) fn is_counted(&self) -> bool {
        self.ticket.is_some()
    }

    /// The state.
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Makes the state the thread's current one until the returned value is
    /// dropped (also when unwinding), then restores the previous one.
    #[inline]
    pub(crate) fn enter(&self) -> Entered {
        Entered::enter(self.shared.key())
    }

    /// Frees the request's slot. If draining has begun its `+1` stays in the
    /// exact counter, returned as a [`Hold`], so the caller decides when the
    /// request ends (the reuse grace); before draining it is a plain release.
    #[inline]
    pub(crate) fn release_holding(mut self) -> Option<Hold> {
        let ticket = self.ticket.take()?;
        if self.shared.tracker.release_slot(ticket) {
            Some(Hold {
                shared: self.shared.clone(),
            })
        } else {
            None
        }
    }

    /// Releases a request that is turned away after it was counted: like a
    /// drop, but it does not count as a request completed while draining.
    pub(crate) fn turn_away(mut self) {
        if let Some(ticket) = self.ticket.take() {
            if self.shared.tracker.release_slot(ticket) {
                self.shared.tracker.end_turned_away();
            }
        }
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.tracker.release(ticket);
        }
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("counted", &self.ticket.is_some())
            .finish()
    }
}

/// The thread's current state (see the [module docs](self)) while it lives.
pub(crate) struct Entered {
    prev: u32,
}

impl Entered {
    #[inline]
    fn enter(key: u32) -> Self {
        Self {
            prev: CURRENT.try_with(|c| c.replace(key)).unwrap_or(NONE),
        }
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.prev));
    }
}

/// No current state.
const NONE: u32 = 0;

thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(NONE) };
}

/// The state of the request being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<Shared>> {
    let key = CURRENT.try_with(Cell::get).unwrap_or(NONE);
    if key == NONE {
        return None;
    }
    crate::core::state::registry::lookup(key)
}

/// A request's `+1` in the exact counter, kept after its slot was freed:
/// dropped, it ends the request.
pub(crate) struct Hold {
    shared: Arc<Shared>,
}

impl Hold {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.shared.tracker.end_while_draining();
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hold")
    }
}

/// A hold on the drain that is neither a request nor a task (see
/// [`HoldTicket`]): the drain does not complete while it lives. Dropped, it
/// is released (and may complete the drain).
pub(crate) struct DrainHold {
    shared: Arc<Shared>,
    ticket: Option<HoldTicket>,
}

impl DrainHold {
    /// Takes a hold, or `None` once the drain has completed.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn acquire(shared: &Arc<Shared>) -> Option<Self> {
        let ticket = shared.tracker.acquire_hold().ok()?;
        Some(Self {
            shared: shared.clone(),
            ticket: Some(ticket),
        })
    }
}

impl Drop for DrainHold {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.tracker.release_hold(ticket);
        }
    }
}

impl fmt::Debug for DrainHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrainHold")
    }
}
