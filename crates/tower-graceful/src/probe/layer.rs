//! [`ProbeLayer`]: builds [`Probe`] around a service.

use std::fmt;

use tower_layer::Layer;

use super::Probe;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Layer that answers the readiness and liveness paths before the inner
/// service sees the request. Placed outside [`Drain`](crate::drain::Drain), the
/// probes keep answering even when other requests get the draining
/// rejection (after the drain completed, after a forced stop).
#[derive(Clone)]
pub struct ProbeLayer {
    stack: Arc<Stack>,
}

impl ProbeLayer {
    pub(crate) fn from_stack(stack: Arc<Stack>) -> Self {
        Self { stack }
    }
}

impl fmt::Debug for ProbeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeLayer")
            .field("paths", &self.stack.probes)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ProbeLayer {
    type Service = Probe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Probe {
            inner,
            stack: self.stack.clone(),
        }
    }
}
