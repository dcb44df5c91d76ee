//! The shared state of one coordinator, at the bottom of the crate: the
//! phase machine ([`state`]), the in-flight counter ([`tracker`]), the
//! one-shot latch both wake through ([`event`]) and the atomics they are
//! built on ([`sync`]: `std`, or `loom` under `--cfg tower_graceful_loom`).
//! Nothing here knows HTTP, layers or the coordinator.

pub(crate) mod event;
pub(crate) mod handle;
pub(crate) mod readiness;
pub(crate) mod state;
pub(crate) mod sync;
pub(crate) mod tracker;
