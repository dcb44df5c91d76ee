//! The settings every layer of one coordinator shares: the state, the
//! rejection, the probe paths and the untracked paths, in one `Arc` so that
//! a service is its inner service plus one pointer, and the clone per
//! request that hyper-util, axum and tonic make is one reference count.
//!
//! A layer configured differently (`exempt`, `respond_with`) gets a stack of
//! its own; nothing is kept anywhere but in the layers that use it.

use std::sync::Arc;

use crate::answer::{Answer, ProbeMethod, RejectConfig};
use crate::core::state::Shared;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) shared: Arc<Shared>,
    pub(crate) reject: RejectConfig,
    pub(crate) probes: ProbePaths,
    pub(crate) untracked: Vec<String>,
    /// Bit `len % 64` is set for the length of every probe and untracked
    /// path: a request whose path length is not in it skips every string
    /// comparison.
    special_lens: u64,
}

impl Stack {
    pub(crate) fn new(
        shared: Arc<Shared>,
        reject: RejectConfig,
        probes: ProbePaths,
        untracked: Vec<String>,
    ) -> Self {
        let mut special_lens = 0u64;
        let paths = [probes.ready.as_deref(), probes.live.as_deref()];
        for p in paths
            .into_iter()
            .flatten()
            .chain(untracked.iter().map(String::as_str))
        {
            special_lens |= len_bit(p);
        }
        Self {
            shared,
            reject,
            probes,
            untracked,
            special_lens,
        }
    }

    /// Whether `path` may be a probe or untracked path (one test of a bit).
    #[inline]
    pub(crate) fn maybe_special(&self, path: &str) -> bool {
        self.special_lens & len_bit(path) != 0
    }

    /// Whether `path` is one of the untracked paths.
    #[inline]
    pub(crate) fn is_untracked(&self, path: &str) -> bool {
        self.maybe_special(path) && self.untracked.iter().any(|p| p == path)
    }

    /// The same settings with other rejection settings.
    pub(crate) fn with_reject(&self, reject: RejectConfig) -> Self {
        Self::new(
            self.shared.clone(),
            reject,
            self.probes.clone(),
            self.untracked.clone(),
        )
    }
}

#[inline]
fn len_bit(path: &str) -> u64 {
    1 << (path.len() % 64)
}

/// The paths the layers answer as probes.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProbePaths {
    pub(crate) ready: Option<Arc<str>>,
    pub(crate) live: Option<Arc<str>>,
}

impl ProbePaths {
    /// The probe answer for `path`, if it is a probe path.
    #[inline]
    pub(crate) fn answer(
        &self,
        shared: &Arc<Shared>,
        path: &str,
        method: ProbeMethod,
    ) -> Option<Answer> {
        if self.ready.as_deref() == Some(path) {
            return Some(Answer::Ready {
                shared: shared.clone(),
                method,
            });
        }
        if self.live.as_deref() == Some(path) {
            return Some(Answer::Live { method });
        }
        None
    }
}
