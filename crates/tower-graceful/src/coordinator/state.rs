//! What a coordinator keeps beside its shared state (in
//! `Shared::coordination`), read by the handle, the driver and the listener:
//! the settings, the hooks, the driver's progress, the cause and the report,
//! and which of its tasks are alive.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::builder::Config;
use super::hooks::Hooks;
use crate::core::state::Shared;
use crate::core::sync::{Arc, Mutex};
use crate::report::{DrainOutcome, PreDrainEnd, ShutdownReport, Straggler, TriggerCause};

/// What a coordinator keeps beside its shared state (in
/// `Shared::coordination`): its settings, its hooks, the driver's progress
/// and the report.
pub(crate) struct Coordination {
    pub(crate) config: Arc<Config>,
    pub(super) hooks: Mutex<Hooks>,
    pub(super) progress: Progress,
    pub(super) cause: Mutex<Option<TriggerCause>>,
    pub(super) report: Mutex<Option<ShutdownReport>>,
    /// Whether a driver task exists (taken before it is spawned, given back
    /// by its guard if it dies before the report: see `driver`).
    pub(super) driver_alive: AtomicBool,
    /// Drivers spawned so far (more than one: one died with its runtime).
    pub(super) drivers_started: AtomicUsize,
    /// Whether an OS-signal listener task exists (see `os_signal`).
    pub(super) listener_alive: AtomicBool,
    /// SIGTERM/SIGINT seen so far: the second forces.
    pub(super) signals_seen: AtomicU32,
}

/// The coordinator's part of a coordinated state.
pub(crate) fn coordination(shared: &Shared) -> &Coordination {
    shared
        .coordination
        .downcast_ref()
        .expect("the state of a coordinator")
}

/// How the drain ended, recorded once (see [`Progress`]).
pub(super) struct DrainEnd {
    pub(super) outcome: DrainOutcome,
    pub(super) stragglers: Vec<Straggler>,
    pub(super) elapsed: Duration,
}

/// The driver's progress, kept in the shared state rather than in the
/// driver's task, so that a driver restarted on another runtime (see
/// `Coordination::driver_alive`) resumes where the dead one stopped: it sleeps only
/// what is left of the pre-drain delay (counted from
/// [`Shared::triggered_at`](crate::core::state::Shared)), reports the
/// in-flight count taken when draining began, keeps the drain's outcome and
/// the cleanup budget, and accounts for every hook (see [`Hooks`]).
#[derive(Default)]
pub(super) struct Progress {
    /// What ended the pre-drain.
    pub(super) pre_drain_end: OnceLock<PreDrainEnd>,
    /// When draining began, and what was in flight then.
    pub(super) drain_start: OnceLock<(Instant, usize)>,
    pub(super) drain_end: OnceLock<DrainEnd>,
    /// When cleanup began: the hooks' budget counts from it.
    pub(super) cleanup_start: OnceLock<Instant>,
}
