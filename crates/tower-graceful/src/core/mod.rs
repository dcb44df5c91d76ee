//! The shared state of one coordinator, at the bottom of the crate, each
//! file one job and every arrow pointing down the list:
//!
//! * [`guard`]: what a request holds: its ticket and an `Arc` of the state;
//!   the thread's current state for `ShutdownSignal::current`;
//! * [`state`]: `Shared`, behind that `Arc`: the phase, the signals, the
//!   gates, the connection counts;
//! * [`counter`]: the in-flight count (per-thread slots, the seal at drain
//!   start, zero is terminal), which names requests through [`names`] and
//!   tasks through [`tasks`], and owns shards by [`thread_index`];
//! * [`readiness`]: the gates and the status they add up to;
//! * [`evidence`]: what the adaptive pre-drain watches (readiness checks
//!   refused, the last arrival);
//! * [`event`]: the one-shot latch everything wakes through;
//! * [`sync`]: `std` or `loom` atomics.
//!
//! Nothing here knows HTTP, layers or the coordinator.

pub(crate) mod counter;
pub(crate) mod event;
pub(crate) mod evidence;
pub(crate) mod guard;
pub(crate) mod names;
pub(crate) mod readiness;
pub(crate) mod state;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod thread_index;
