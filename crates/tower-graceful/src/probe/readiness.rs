//! The handles of app-controlled readiness: [`Readiness`] (add gates, read
//! the status) and [`ReadinessGate`] (one condition).

use std::borrow::Cow;
use std::fmt;

use crate::core::readiness::{Gate, ReadinessStatus};
use crate::core::state::Shared;
use crate::core::sync::{lock, Arc};

/// Handle for app-controlled readiness: add gates, read the status
/// ([`Coordinator::readiness`](crate::Coordinator::readiness)). The probe
/// answers that report it are in [`probe`](crate::probe).
#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("status", &self.status())
            .finish()
    }
}

impl Readiness {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Adds a gate, initially **not ready** (warm-up, a dependency that is not
    /// connected yet). Readiness is up only while every gate is ready.
    /// Dropping the gate removes it, so a forgotten gate cannot hold the
    /// instance out of rotation forever.
    pub fn gate(&self, name: impl Into<Cow<'static, str>>) -> ReadinessGate {
        let mut g = lock(&self.shared.gates);
        let id = g.next_id;
        g.next_id += 1;
        g.gates.push(Gate {
            id,
            name: name.into(),
            ready: false,
        });
        drop(g);
        self.shared.gates_changed();
        ReadinessGate {
            shared: self.shared.clone(),
            id,
        }
    }

    /// The current status, as the probe would answer it.
    pub fn status(&self) -> ReadinessStatus {
        self.shared.readiness()
    }
}

/// One app-controlled readiness condition. See [`Readiness::gate`].
#[must_use = "dropping the gate removes it at once: keep it for as long as it should hold readiness"]
pub struct ReadinessGate {
    shared: Arc<Shared>,
    id: u64,
}

impl ReadinessGate {
    /// Marks the gate ready or not ready.
    pub fn set_ready(&self, ready: bool) {
        let changed = {
            let mut g = lock(&self.shared.gates);
            match g.gates.iter_mut().find(|g| g.id == self.id) {
                Some(gate) if gate.ready != ready => {
                    tracing::info!(target: "tower_graceful", gate = %gate.name, ready, "readiness gate changed");
                    gate.ready = ready;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.shared.gates_changed();
        }
    }

    /// Whether this gate is ready.
    pub fn is_ready(&self) -> bool {
        let g = lock(&self.shared.gates);
        g.gates.iter().any(|g| g.id == self.id && g.ready)
    }
}

impl Drop for ReadinessGate {
    fn drop(&mut self) {
        lock(&self.shared.gates).gates.retain(|g| g.id != self.id);
        self.shared.gates_changed();
    }
}

impl fmt::Debug for ReadinessGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessGate")
            .field("ready", &self.is_ready())
            .finish()
    }
}
