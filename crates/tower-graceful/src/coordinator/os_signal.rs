//! The OS-signal listener: SIGTERM and SIGINT (Ctrl-C elsewhere) trigger the
//! shutdown; a second one forces it.
//!
//! The listener holds only a `Weak` of the state until a signal arrives, so
//! it keeps nothing alive: it ends when the state does (`Shared::gone`).
//! Like the driver, it dies with its runtime; its guard then clears
//! [`listener_alive`](super::Coordination::listener_alive) and nudges the
//! waiters, and the next of them starts it again on its own runtime
//! (the coordinator's waiting methods). The number of signals seen is kept with the
//! coordinator, so a restarted listener still forces on the second one.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};

use super::driver::trigger_with;
use super::state::coordination;
use crate::core::state::Shared;
use crate::core::sync::Arc;
use crate::report::TriggerCause;

/// Starts the listener on `handle` unless one is alive. Signals are
/// registered now, not in the task: one that arrives before the task first
/// runs is still seen.
pub(super) fn ensure(shared: &Arc<Shared>, handle: &tokio::runtime::Handle) -> std::io::Result<()> {
    let c = coordination(shared);
    if c.listener_alive
        .compare_exchange(false, true, AcqRel, Acquire)
        .is_err()
    {
        return Ok(());
    }
    let guard = Alive(Arc::downgrade(shared));
    let _enter = handle.enter();
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            drop(guard); // not listening after all
            return Err(e);
        }
    };
    let gone = shared.gone.clone();
    handle.spawn(async move {
        let guard = guard;
        loop {
            let name = tokio::select! {
                name = signals.recv() => name,
                // Nothing left to shut down.
                _ = gone.cancelled() => return,
            };
            let Some(name) = name else { return };
            let Some(shared) = guard.0.upgrade() else { return };
            if shared.done.is_set() {
                return;
            }
            let seen = coordination(&shared).signals_seen.fetch_add(1, AcqRel) + 1;
            if seen == 1 {
                tracing::info!(target: "tower_graceful", signal = name, "signal received: starting graceful shutdown (send again to force)");
                trigger_with(&shared, TriggerCause::Signal(name));
            } else {
                tracing::warn!(target: "tower_graceful", signal = name, "second signal: forcing shutdown");
                trigger_with(&shared, TriggerCause::Signal(name));
                shared.force();
            }
        }
    });
    Ok(())
}

/// Clears the flag when the listener task ends or is dropped with its
/// runtime, and nudges the waiters so that one starts it again.
struct Alive(std::sync::Weak<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            coordination(&shared).listener_alive.store(false, Release);
            shared.nudge();
        }
    }
}

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name; `None` if neither can be received any more.
    async fn recv(&mut self) -> Option<&'static str> {
        tokio::select! {
            Some(()) = self.term.recv() => Some("SIGTERM"),
            Some(()) = self.int.recv() => Some("SIGINT"),
            else => None,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> Option<&'static str> {
        tokio::signal::ctrl_c().await.ok().map(|()| "ctrl-c")
    }
}
