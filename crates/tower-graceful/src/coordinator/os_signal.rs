//! The OS-signal listener: SIGTERM and SIGINT (Ctrl-C elsewhere) trigger the
//! shutdown; a second one forces it.

use super::{ConfigError, Coordinator, TriggerCause};

#[cfg(unix)]
pub(super) fn listen(c: Coordinator, handle: &tokio::runtime::Handle) -> Result<(), ConfigError> {
    use tokio::signal::unix::{signal, SignalKind};
    let _enter = handle.enter();
    let err = |e: std::io::Error| ConfigError::signal(e);
    // Registered now, not in the task: a signal that arrives before the
    // task first runs is still seen.
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    handle.spawn(async move {
        let mut seen = 0u32;
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                _ = c.shared.done.wait() => return,
                // Nobody can be told of a shutdown any more: end, and let
                // the coordinator be freed.
                _ = c.shared.abandoned.wait(), if !c.shared.triggered.is_set() => return,
                else => return,
            };
            seen += 1;
            if seen == 1 {
                tracing::info!(target: "tower_graceful", signal = name, "signal received: starting graceful shutdown (send again to force)");
                c.trigger_with(TriggerCause::Signal(name));
            } else {
                tracing::warn!(target: "tower_graceful", signal = name, "second signal: forcing shutdown");
                c.shared.force();
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn listen(c: Coordinator, handle: &tokio::runtime::Handle) -> Result<(), ConfigError> {
    handle.spawn(async move {
        let mut seen = 0u32;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                _ = c.shared.done.wait() => return,
                _ = c.shared.abandoned.wait(), if !c.shared.triggered.is_set() => return,
            }
            seen += 1;
            if seen == 1 {
                c.trigger_with(TriggerCause::Signal("ctrl-c"));
            } else {
                c.shared.force();
            }
        }
    });
    Ok(())
}
