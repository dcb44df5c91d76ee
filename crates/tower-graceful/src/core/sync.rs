//! `std` / `loom` switch for every primitive whose interleavings matter.
//!
//! Under `--cfg loom` the counter, the phase word and the drain latch are
//! built on loom's model-checked primitives; otherwise on `std`'s.

#[cfg(tower_graceful_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicIsize, AtomicU64, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};

#[cfg(not(tower_graceful_loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicIsize, AtomicU64, AtomicU8, AtomicUsize},
    Mutex, MutexGuard,
};

/// Ownership only (no interleavings to explore), so always `std`'s.
pub(crate) use std::sync::Arc;

/// Locks `m`, ignoring poisoning.
///
/// Nothing this crate keeps behind a mutex can be left half-updated by a
/// panic (every critical section is a few field writes that cannot unwind),
/// so a poisoned lock still guards consistent data. Ignoring poison keeps one
/// panicking handler from turning every later request into a panic.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(tower_graceful_loom)]
    {
        m.lock().unwrap()
    }
    #[cfg(not(tower_graceful_loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
