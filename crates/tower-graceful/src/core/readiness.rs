//! Readiness, as data: the app-controlled gates and the status they add up
//! to. Down for good from the moment shutdown is triggered (the state
//! decides that); otherwise up while every gate is ready. The handles users
//! hold ([`Readiness`](crate::probe::Readiness), [`ReadinessGate`](crate::probe::ReadinessGate))
//! are in [`probe`](crate::probe).

use std::borrow::Cow;

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

impl Gates {
    /// The first gate that is not ready, else ready.
    pub(crate) fn status(&self) -> ReadinessStatus {
        match self.gates.iter().find(|g| !g.ready) {
            Some(gate) => ReadinessStatus::NotReady(gate.name.clone()),
            None => ReadinessStatus::Ready,
        }
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
