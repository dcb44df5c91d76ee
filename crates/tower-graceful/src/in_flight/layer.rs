//! [`InFlightLayer`]: builds [`InFlight`] around a service.

use std::fmt;

use tower_layer::Layer;

use super::InFlight;
use crate::core::sync::Arc;
use crate::stack::Stack;

/// Layer that applies [`InFlight`].
#[derive(Clone)]
pub struct InFlightLayer {
    stack: Arc<Stack>,
}

impl InFlightLayer {
    pub(crate) fn from_stack(stack: Arc<Stack>) -> Self {
        Self { stack }
    }
}

impl fmt::Debug for InFlightLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            stack: self.stack.clone(),
        }
    }
}
