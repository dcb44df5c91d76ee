//! A one-shot, latched event: set once, observed by any number of waiters,
//! including those that arrive after it was set.
//!
//! This is the wake-up path that decides when shutdown may proceed, so it is
//! written on [`crate::core::sync`] and model-checked with loom (`tests` below).
//!
//! Why not `tokio::sync::Notify`: `notify_waiters` stores nothing for a waiter
//! that registers a moment later (the lost wake-up of poem #661 / granian
//! #904). A latch has no such window: [`Event::set`] first publishes the flag,
//! then takes the waiter list; a waiter re-checks the flag *under the same
//! lock* before it parks, so either it sees the flag or `set` sees its waker.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::core::sync::{lock, AtomicBool, Mutex};
use std::sync::atomic::Ordering;

#[derive(Debug, Default)]
pub(crate) struct Event {
    set: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Event {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether the event has been set. Never goes back to `false`.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        // Acquire pairs with the Release half of the `swap` in `set`, so state
        // published before `set` is visible to whoever observes `true`.
        self.set.load(Ordering::Acquire)
    }

    /// Sets the event and wakes every waiter. Returns `true` for the call that
    /// set it, `false` if it was already set (idempotent).
    pub(crate) fn set(&self) -> bool {
        // AcqRel: Release publishes what happened before `set`; Acquire makes
        // concurrent setters agree on who was first.
        if self.set.swap(true, Ordering::AcqRel) {
            return false;
        }
        let wakers: Vec<Waker> = {
            let mut w = lock(&self.waiters);
            w.free.clear();
            w.slots.drain(..).flatten().collect()
        };
        for waker in wakers {
            waker.wake();
        }
        true
    }

    /// A future that completes once the event is set.
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait {
            event: self,
            slot: None,
        }
    }

    pub(crate) fn poll_wait(&self, slot: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            return Poll::Ready(());
        }
        let mut w = lock(&self.waiters);
        // Re-check under the lock: `set` stores the flag before it takes the
        // lock, so if we do not see it here, `set` has not yet drained the
        // list and will find the waker we are about to store.
        if self.set.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match *slot {
            Some(i) if i < w.slots.len() => match &mut w.slots[i] {
                Some(old) if old.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            _ => {
                let waker = Some(cx.waker().clone());
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = waker;
                        i
                    }
                    None => {
                        w.slots.push(waker);
                        w.slots.len() - 1
                    }
                };
                *slot = Some(i);
            }
        }
        Poll::Pending
    }

    pub(crate) fn cancel_wait(&self, slot: usize) {
        if self.is_set() {
            return;
        }
        let mut w = lock(&self.waiters);
        if let Some(entry) = w.slots.get_mut(slot) {
            if entry.take().is_some() {
                w.free.push(slot);
            }
        }
    }
}

/// Future returned by [`Event::wait`]. Cancel safe: dropping it removes its
/// waker; no state is lost.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub(crate) struct Wait<'a> {
    event: &'a Event,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let r = this.event.poll_wait(&mut this.slot, cx);
        if r.is_ready() {
            this.slot = None;
        }
        r
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.event.cancel_wait(slot);
        }
    }
}

#[cfg(all(test, tower_graceful_loom))]
mod tests {
    use super::*;
    use loom::future::block_on;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn waiter_never_misses_set() {
        loom::model(|| {
            let ev = Arc::new(Event::new());
            let ev2 = ev.clone();
            let t = thread::spawn(move || {
                ev2.set();
            });
            block_on(ev.wait());
            assert!(ev.is_set());
            t.join().unwrap();
        });
    }

    #[test]
    fn concurrent_sets_exactly_one_wins() {
        loom::model(|| {
            let ev = Arc::new(Event::new());
            let ev2 = ev.clone();
            let t = thread::spawn(move || ev2.set());
            let a = ev.set();
            let b = t.join().unwrap();
            assert!(a ^ b, "exactly one set() call must report the transition");
        });
    }
}
