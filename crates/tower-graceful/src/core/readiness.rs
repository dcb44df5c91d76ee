//! Readiness: whether this instance should get new work. Down for good
//! from the moment shutdown is triggered; otherwise up while every
//! app-controlled [`ReadinessGate`] is ready. HTTP-free: the probe answers
//! that report it are in [`probe`](crate::probe), systemd's `READY=1` in the
//! systemd integration.

use std::borrow::Cow;
use std::fmt;

use crate::core::handle::Handle;
use crate::core::state::{Phase, Shared};
use crate::core::sync::lock;

#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) id: u64,
    pub(crate) name: Cow<'static, str>,
    pub(crate) ready: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Gates {
    pub(crate) next_id: u64,
    pub(crate) gates: Vec<Gate>,
}

impl Shared {
    /// The readiness status: shutting down from the trigger on, else the
    /// first gate that is not ready, else ready.
    pub(crate) fn readiness(&self) -> ReadinessStatus {
        if self.phase() >= Phase::Triggered || self.soft_fired_undriven() {
            return ReadinessStatus::ShuttingDown;
        }
        let g = lock(&self.gates);
        match g.gates.iter().find(|g| !g.ready) {
            Some(gate) => ReadinessStatus::NotReady(gate.name.clone()),
            None => ReadinessStatus::Ready,
        }
    }

    /// Wakes the watchers of the readiness status (call after releasing the
    /// gates' lock).
    pub(crate) fn gates_changed(&self) {
        self.gates_changed.send_replace(());
    }
}

/// What the readiness probe says, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadinessStatus {
    /// Every gate is ready and shutdown has not been triggered.
    Ready,
    /// A readiness gate (named) is not ready.
    NotReady(Cow<'static, str>),
    /// Shutdown was triggered: not ready, for good.
    ShuttingDown,
}

impl ReadinessStatus {
    /// Whether the probe answers `200 OK`.
    pub fn is_ready(&self) -> bool {
        matches!(self, ReadinessStatus::Ready)
    }
}

impl std::fmt::Display for ReadinessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadinessStatus::Ready => f.write_str("ready"),
            ReadinessStatus::NotReady(gate) => write!(f, "not ready: {gate}"),
            ReadinessStatus::ShuttingDown => f.write_str("draining"),
        }
    }
}

/// Handle for app-controlled readiness: add gates, read the status
/// ([`Coordinator::readiness`](crate::Coordinator::readiness)). The probe
/// answers that report it are in [`probe`](crate::probe).
#[derive(Clone)]
pub struct Readiness {
    shared: Handle,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("status", &self.status())
            .finish()
    }
}

impl Readiness {
    pub(crate) fn new(shared: Handle) -> Self {
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
    shared: Handle,
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
