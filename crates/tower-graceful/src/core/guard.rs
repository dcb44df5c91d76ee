//! What a request holds while it is in flight: its [`Ticket`] in the
//! counter and an `Arc` of the state that counter is part of, in one
//! [`RequestGuard`] that moves from the response future into the response
//! body and releases the count when it is dropped; and the thread's *current
//! state*, which [`ShutdownSignal::current`](crate::ShutdownSignal::current)
//! reads while a guard is being polled.
//!
//! The state's lifetime is the `Arc`'s business alone: nothing here frees
//! anything, and nothing holds a pointer the `Arc` does not own.

use std::cell::Cell;
use std::fmt;

use crate::core::counter::Ticket;
use crate::core::state::Shared;
use crate::core::sync::Arc;

/// A request's count (if it is counted) and its handle to the state (until
/// released). Dropping it ends the request.
pub(crate) struct RequestGuard {
    /// `None` once released, and while lent to the thread (see [`lend`]).
    ///
    /// [`lend`]: RequestGuard::lend
    shared: Option<Arc<Shared>>,
    /// `None` for a request that is not counted (an exempt path after the
    /// drain completed, an untracked path), and once released.
    ticket: Option<Ticket>,
}

impl RequestGuard {
    /// A counted request.
    #[inline]
    pub(crate) fn counted(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Self {
            shared: Some(shared),
            ticket: Some(ticket),
        }
    }

    /// A request that is served without being counted: it still needs the
    /// state (for [`ShutdownSignal::current`](crate::ShutdownSignal::current)
    /// and the lame duck).
    pub(crate) fn uncounted(shared: Arc<Shared>) -> Self {
        Self {
            shared: Some(shared),
            ticket: None,
        }
    }

    /// Holds nothing (a body that was already finished).
    pub(crate) fn released() -> Self {
        Self {
            shared: None,
            ticket: None,
        }
    }

    /// Whether the request is counted.
    pub(crate) fn is_counted(&self) -> bool {
        self.ticket.is_some()
    }

    /// The state, while held.
    #[inline]
    pub(crate) fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Moves what is held out, leaving nothing.
    #[inline]
    pub(crate) fn take(&mut self) -> Self {
        Self {
            shared: self.shared.take(),
            ticket: self.ticket.take(),
        }
    }

    /// Makes the state the thread's current one until the returned value is
    /// dropped (also when unwinding), then takes it back. Moving the `Arc`
    /// into the thread-local and back costs no reference count; only
    /// [`current`] clones it, and only when a handler asks.
    #[inline]
    pub(crate) fn lend(&mut self) -> Lent<'_> {
        let mut shared = self.shared.take();
        let prev = if shared.is_some() {
            // The closure borrows `shared`: if the thread-locals are being
            // destroyed (it does not run), the state is still ours.
            match CURRENT.try_with(|c| c.replace(shared.take())) {
                Ok(prev) => Some(prev),
                Err(_) => {
                    self.shared = shared;
                    None
                }
            }
        } else {
            None
        };
        Lent { slot: self, prev }
    }

    /// Frees the request's slot. If draining has begun its `+1` stays in the
    /// exact counter, returned as a [`Hold`], so the caller decides when the
    /// request ends (the reuse grace); before draining it is a plain release.
    pub(crate) fn release_holding(mut self) -> Option<Hold> {
        let ticket = self.ticket.take()?;
        let shared = self.shared.take()?;
        // `then`, not `then_some`: a `Hold` built and dropped would end the
        // request a second time.
        let sealed = shared.tracker.release_slot(ticket);
        sealed.then(|| Hold { shared })
    }

    /// Releases a request that is turned away after it was counted: like a
    /// drop, but it does not count as a request completed while draining.
    pub(crate) fn turn_away(mut self) {
        if let (Some(ticket), Some(shared)) = (self.ticket.take(), self.shared.take()) {
            if shared.tracker.release_slot(ticket) {
                shared.tracker.end_turned_away();
            }
        }
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            match &self.shared {
                Some(shared) => shared.tracker.release(ticket),
                // Only if the thread-locals went away while the state was
                // lent (a poll inside a thread-local destructor): the count
                // cannot be given back, the drain will report it.
                None => debug_assert!(false, "a counted request without its state"),
            }
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

/// The state lent to the thread by [`RequestGuard::lend`]; given back on
/// drop.
pub(crate) struct Lent<'a> {
    slot: &'a mut RequestGuard,
    /// What was current before (`None`: nothing was lent).
    prev: Option<Option<Arc<Shared>>>,
}

impl Drop for Lent<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            if let Ok(mine) = CURRENT.try_with(|c| c.replace(prev)) {
                self.slot.shared = mine;
            }
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<Arc<Shared>>> = const { Cell::new(None) };
}

/// The state of the request being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<Shared>> {
    CURRENT
        .try_with(|c| {
            let shared = c.take();
            let copy = shared.clone();
            c.set(shared);
            copy
        })
        .ok()
        .flatten()
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
