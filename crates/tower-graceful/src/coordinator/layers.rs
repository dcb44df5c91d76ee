//! The layers' constructors that take a [`Coordinator`]: they live here, by
//! the coordinator, so that the layer modules depend only on the shared
//! state below them (the module graph has no upward arrows).

use tower_layer::Layer;

use super::Coordinator;
use crate::add_signal::{AddSignal, AddSignalLayer};
use crate::drain::{Drain, DrainLayer};
use crate::in_flight::{InFlight, InFlightLayer};
use crate::probe::{ProbeLayer, ReadinessService};

impl InFlightLayer {
    /// Counts requests for `coordinator`.
    pub fn new(coordinator: &Coordinator) -> Self {
        InFlightLayer::from_stack(coordinator.stack())
    }
}

impl<S> InFlight<S> {
    /// Wraps `inner`, counting for `coordinator`.
    pub fn new(inner: S, coordinator: &Coordinator) -> Self {
        InFlightLayer::new(coordinator).layer(inner)
    }

    /// Returns a [`Layer`] that wraps services with this middleware.
    pub fn layer(coordinator: &Coordinator) -> InFlightLayer {
        InFlightLayer::new(coordinator)
    }
}

impl DrainLayer {
    /// Applies `coordinator`'s draining policy with the rejection settings
    /// from its builder: from the trigger, responses announce
    /// `Connection: close` (the lame duck); while draining, requests on open
    /// connections are still served, and only a request that could not
    /// finish (after the drain completed, after a forced stop, or with less
    /// than [`min_time_left`](crate::Builder::min_time_left) before the
    /// deadline) gets the rejection. See the [policy](crate::drain).
    pub fn new(coordinator: &Coordinator) -> Self {
        DrainLayer::from_stack(coordinator.stack())
    }
}

impl<S> Drain<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, coordinator: &Coordinator) -> Self {
        DrainLayer::new(coordinator).layer(inner)
    }

    /// Returns a [`Layer`] that wraps services with this middleware.
    pub fn layer(coordinator: &Coordinator) -> DrainLayer {
        DrainLayer::new(coordinator)
    }
}

impl ReadinessService {
    /// The readiness probe of `coordinator`.
    pub fn new(coordinator: &Coordinator) -> Self {
        ReadinessService::from_shared(coordinator.shared.clone())
    }
}

impl ProbeLayer {
    /// Probe with the paths from `coordinator`'s builder
    /// ([`readiness_path`](crate::Builder::readiness_path),
    /// [`liveness_path`](crate::Builder::liveness_path)).
    pub fn new(coordinator: &Coordinator) -> Self {
        ProbeLayer::from_stack(coordinator.stack())
    }
}

impl AddSignalLayer {
    /// Inserts `coordinator`'s signal into request extensions.
    pub fn new(coordinator: &Coordinator) -> Self {
        AddSignalLayer::from_signal(coordinator.signal())
    }
}

impl<S> AddSignal<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, coordinator: &Coordinator) -> Self {
        AddSignalLayer::new(coordinator).layer(inner)
    }

    /// Returns a [`Layer`] that wraps services with this middleware.
    pub fn layer(coordinator: &Coordinator) -> AddSignalLayer {
        AddSignalLayer::new(coordinator)
    }
}
