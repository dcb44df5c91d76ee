//! The coordinator's builder: documented defaults, validated at build time.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use super::pre_drain::PreDrain;
use crate::answer::RejectConfig;
use crate::core::state::Policy;
use crate::core::sync::Arc;
use crate::stack::ProbePaths;
use crate::Coordinator;

/// Default pre-drain delay: none. Behind a load balancer, set it to at least
/// the balancer's health-check interval × failure threshold.
pub const DEFAULT_PRE_DRAIN_DELAY: Duration = Duration::ZERO;
/// Default drain deadline: 25 s (with the default 5 s cleanup, 30 s in all:
/// Kubernetes' default `terminationGracePeriodSeconds`).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(25);
/// Default time for all cleanup hooks together: 5 s.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The gRPC health `Watch` method's path, untracked by default (see
/// [`Builder::untracked_path`]).
pub const GRPC_HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
/// Default reuse grace: 200 ms (see [`Builder::reuse_grace`]).
pub const DEFAULT_REUSE_GRACE: Duration = Duration::from_millis(200);
/// Default `Retry-After` on the draining rejection: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

const MAX_RETRY_AFTER: u64 = 86_400;
const MAX_JITTER: u64 = 3_600;
const MAX_BODY: usize = 1_024;

/// Why [`Builder::build`] failed: an invalid configuration (the message
/// names the setting and says what to change), no Tokio runtime to start
/// on, or OS-signal handlers that could not be installed. [`kind`](Self::kind)
/// tells which.
#[derive(Clone, Debug)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    field: &'static str,
    message: String,
    /// The OS error behind a [`ConfigErrorKind::Signals`] (an `Arc` keeps the
    /// error `Clone`).
    source: Option<Arc<std::io::Error>>,
}

/// The kind of a [`ConfigError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A setting, or a combination of settings, cannot work;
    /// [`ConfigError::field`] names the setting.
    Invalid,
    /// [`Builder::build`] was called outside a Tokio runtime: call it inside
    /// one (from `#[tokio::main]`, `Runtime::block_on` or after
    /// `Runtime::enter`). Not a configuration mistake.
    NoRuntime,
    /// The SIGTERM/SIGINT handlers could not be installed; the OS error is
    /// the [`source`](std::error::Error::source). Turn
    /// [`handle_signals`](Builder::handle_signals) off and trigger the
    /// shutdown yourself.
    Signals,
}

impl ConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ConfigErrorKind::Invalid,
            field,
            message: message.into(),
            source: None,
        }
    }

    fn no_runtime() -> Self {
        Self {
            kind: ConfigErrorKind::NoRuntime,
            field: "runtime",
            message: "no Tokio runtime: call build() inside a Tokio runtime (from \
                      #[tokio::main], Runtime::block_on or after Runtime::enter); the \
                      coordinator spawns its driver task on it"
                .to_owned(),
            source: None,
        }
    }

    pub(crate) fn signal(e: std::io::Error) -> Self {
        Self {
            kind: ConfigErrorKind::Signals,
            field: "handle_signals",
            message: "could not install the SIGTERM/SIGINT handlers: set \
                      handle_signals(false) and trigger the shutdown yourself"
                .to_owned(),
            source: Some(Arc::new(e)),
        }
    }

    /// What went wrong: an invalid setting, no runtime, or the signal
    /// handlers.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// Whether [`Builder::build`] was called outside a Tokio runtime
    /// ([`ConfigErrorKind::NoRuntime`]).
    pub fn is_no_runtime(&self) -> bool {
        self.kind == ConfigErrorKind::NoRuntime
    }

    /// The builder setting at fault (for example `"drain_deadline"`);
    /// `"runtime"` for [`ConfigErrorKind::NoRuntime`], `"handle_signals"` for
    /// [`ConfigErrorKind::Signals`].
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl PartialEq for ConfigError {
    /// Compares the kind, the field and the message (an OS error has no
    /// equality of its own).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.field == other.field && self.message == other.message
    }
}

impl Eq for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ConfigErrorKind::Invalid => {
                write!(f, "invalid tower-graceful configuration: {}", self.message)
            }
            _ => write!(f, "tower-graceful: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) pre_drain: PreDrain,
    pub(crate) drain_deadline: Duration,
    pub(crate) cleanup_timeout: Duration,
    pub(crate) hook_timeout: Duration,
    pub(crate) total_budget: Option<Duration>,
    pub(crate) handle_signals: bool,
    pub(crate) reject: RejectConfig,
    pub(crate) untracked: Vec<String>,
    pub(crate) probes: ProbePaths,
    pub(crate) policy: Policy,
}

/// Builds a [`Coordinator`]. Every setting has a documented default; `build`
/// checks the combination and says what to change if it cannot work.
///
/// # Budget arithmetic
///
/// The orchestrator kills the process `terminationGracePeriodSeconds` (or
/// Docker's 10 s) after SIGTERM. Everything must fit:
/// `pre_drain_delay + drain_deadline + cleanup_timeout ≤ total_budget`
/// (for an [adaptive pre-drain](PreDrain::adaptive), its maximum counts),
/// with a small safety margin (5 % of the budget, at most 1 s) for the
/// process to exit. Give [`total_budget`](Self::total_budget) and leave
/// `drain_deadline` unset to have it derived as whatever is left.
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    pre_drain: PreDrain,
    drain_deadline: Option<Duration>,
    cleanup_timeout: Duration,
    hook_timeout: Option<Duration>,
    total_budget: Option<Duration>,
    handle_signals: bool,
    retry_after: Duration,
    retry_after_jitter: Duration,
    body: Bytes,
    grpc_message: String,
    exempt: Vec<String>,
    untracked: Vec<String>,
    ready_path: Option<String>,
    live_path: Option<String>,
    lame_duck_window: Option<Duration>,
    min_time_left: Option<Duration>,
    /// `None`: the default ([`DEFAULT_REUSE_GRACE`]), so that a message
    /// about it can say the user did not set it.
    reuse_grace: Option<Duration>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            pre_drain: PreDrain::fixed(DEFAULT_PRE_DRAIN_DELAY),
            drain_deadline: None,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            hook_timeout: None,
            total_budget: None,
            handle_signals: true,
            retry_after: DEFAULT_RETRY_AFTER,
            retry_after_jitter: Duration::ZERO,
            body: Bytes::from_static(b"service is shutting down; retry\n"),
            grpc_message: "server is shutting down".to_owned(),
            exempt: Vec::new(),
            untracked: vec![GRPC_HEALTH_WATCH.to_owned()],
            ready_path: None,
            live_path: None,
            lame_duck_window: None,
            min_time_left: None,
            reuse_grace: None,
        }
    }
}

impl Builder {
    /// How long to keep serving normally after the trigger, with readiness
    /// already down, so load balancers take the instance out of rotation
    /// before it starts rejecting. Default: 0 ([`DEFAULT_PRE_DRAIN_DELAY`]).
    /// A second signal cuts it short. The same as
    /// `pre_drain(PreDrain::fixed(d))`; see [`pre_drain`](Self::pre_drain)
    /// for one that ends on evidence.
    pub fn pre_drain_delay(mut self, d: Duration) -> Self {
        self.pre_drain = PreDrain::fixed(d);
        self
    }

    /// The pre-drain: a fixed delay ([`PreDrain::fixed`], like
    /// [`pre_drain_delay`](Self::pre_drain_delay)) or an adaptive one
    /// ([`PreDrain::adaptive`]) that ends as soon as the readiness checks it
    /// refused and a quiet window with nothing new arriving say that the
    /// balancers have stopped sending, between a minimum and a maximum.
    /// Default: no pre-drain. `build` checks `min ≤ max` and counts `max` in
    /// the [budget](Self#budget-arithmetic).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_graceful::coordinator::PreDrain;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let graceful = tower_graceful::Coordinator::builder()
    ///     .pre_drain(PreDrain::adaptive(Duration::from_secs(1), Duration::from_secs(10)))
    ///     .readiness_path("/ready")
    ///     .total_budget(Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// # drop(graceful); }
    /// ```
    pub fn pre_drain(mut self, pre_drain: PreDrain) -> Self {
        self.pre_drain = pre_drain;
        self
    }

    /// How long draining may take before stragglers are abandoned (the hard
    /// signal fires and the report names them). Default: 25 s
    /// ([`DEFAULT_DRAIN_DEADLINE`]), or derived from
    /// [`total_budget`](Self::total_budget).
    pub fn drain_deadline(mut self, d: Duration) -> Self {
        self.drain_deadline = Some(d);
        self
    }

    /// Time for all cleanup hooks together. Default: 5 s
    /// ([`DEFAULT_CLEANUP_TIMEOUT`]).
    pub fn cleanup_timeout(mut self, d: Duration) -> Self {
        self.cleanup_timeout = d;
        self
    }

    /// Default timeout of one hook (a hook may set its own). Must not exceed
    /// [`cleanup_timeout`](Self::cleanup_timeout). Default: the cleanup
    /// timeout.
    pub fn hook_timeout(mut self, d: Duration) -> Self {
        self.hook_timeout = Some(d);
        self
    }

    /// The whole time the process has from trigger to exit (for example the
    /// orchestrator's kill timer). With it, `build` checks that the phases
    /// fit, or derives the drain deadline when it was not set.
    pub fn total_budget(mut self, d: Duration) -> Self {
        self.total_budget = Some(d);
        self
    }

    /// Whether to listen for SIGTERM and SIGINT (Ctrl-C elsewhere). The first
    /// triggers shutdown, the second forces it. Default: `true`. Once
    /// installed, tokio's handler stays for the life of the process.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// `Retry-After` on the draining rejection, in whole seconds (a fraction
    /// rounds up). Default: 1 s ([`DEFAULT_RETRY_AFTER`]); at most one day.
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// Adds a random 0..=`jitter` seconds to each `Retry-After`, so rejected
    /// clients do not come back as one burst. Default: 0; at most one hour.
    pub fn retry_after_jitter(mut self, jitter: Duration) -> Self {
        self.retry_after_jitter = jitter;
        self
    }

    /// The plain-text body of the HTTP rejection (at most 1 KiB).
    pub fn rejection_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The `grpc-message` of the gRPC rejection (visible ASCII).
    pub fn grpc_message(mut self, message: impl Into<String>) -> Self {
        self.grpc_message = message.into();
        self
    }

    /// A path (exact match) that the draining responder always lets through,
    /// for example `/metrics`. Probe paths set with
    /// [`readiness_path`](Self::readiness_path) need no exemption.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.exempt.push(path.into());
        self
    }

    /// A path (exact match) whose requests are **not counted** in flight, so
    /// the drain does not wait for them: streams that by design never end
    /// on their own and do not watch [`ShutdownSignal`](crate::ShutdownSignal).
    /// The gRPC health `Watch` stream ([`GRPC_HEALTH_WATCH`]) is untracked by
    /// default: a load balancer watching health would otherwise hold every
    /// drain until its deadline. Such requests still see the draining
    /// rejection when they arrive late.
    pub fn untracked_path(mut self, path: impl Into<String>) -> Self {
        self.untracked.push(path.into());
        self
    }

    /// Over how long after the trigger HTTP/1.x keep-alive connections are
    /// told to close: the share of responses that carry `Connection: close`
    /// rises linearly from 0 to 1 across this window (Envoy's gradual
    /// drain), so their clients reconnect elsewhere a few at a time instead
    /// of as one burst. From the start of draining every response carries
    /// it. `Duration::ZERO`: every response from the trigger on. Default:
    /// the pre-drain delay (for an adaptive pre-drain, its minimum). At most
    /// the pre-drain delay (an adaptive one's maximum): a longer window
    /// would be cut short when draining starts, so `build` rejects it,
    /// naming both.
    pub fn lame_duck_window(mut self, d: Duration) -> Self {
        self.lame_duck_window = Some(d);
        self
    }

    /// A request that arrives while draining with less than this left before
    /// the drain deadline gets the draining rejection instead of being
    /// served: it could not finish anyway, and its client can retry it
    /// elsewhere at once. Every other request on an open connection is
    /// served while draining (see the [`drain`](crate::drain) module's
    /// policy table). Default: a tenth of the drain deadline, at most 1 s.
    /// Must be shorter than the drain deadline.
    pub fn min_time_left(mut self, d: Duration) -> Self {
        self.min_time_left = Some(d);
        self
    }

    /// How long an HTTP/1.x response that ends while draining *without*
    /// having announced `Connection: close` (its head went out before the
    /// trigger: a stream, a long download) keeps the drain open, so that its
    /// client's next request on that connection, which may follow at once,
    /// is served (with the close announced) instead of racing the close of
    /// an idle connection at the end of the drain. Only such responses
    /// linger; a forced stop cuts it short. Default: 200 ms
    /// ([`DEFAULT_REUSE_GRACE`]); `ZERO` turns it off. Applies to the
    /// combined layer ([`Coordinator::layer`]).
    pub fn reuse_grace(mut self, d: Duration) -> Self {
        self.reuse_grace = Some(d);
        self
    }

    /// The path the combined layer answers as the readiness probe.
    ///
    /// The layer answers it before the application sees the request, so an
    /// application route with the same path is never reached: pick a path
    /// the application does not use. (The layer cannot see the
    /// application's routes to tell; `build` rejects a probe path that is
    /// also a liveness, exempt or untracked path.)
    pub fn readiness_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = Some(path.into());
        self
    }

    /// The path the combined layer answers as the liveness probe. Like
    /// [`readiness_path`](Self::readiness_path), it takes the path over from
    /// any application route of the same path.
    pub fn liveness_path(mut self, path: impl Into<String>) -> Self {
        self.live_path = Some(path.into());
        self
    }

    /// Validates the configuration and starts the coordinator.
    ///
    /// Must be called within a Tokio runtime: the coordinator spawns one small
    /// driver task (and, with [`handle_signals`](Self::handle_signals), one
    /// signal listener). Outside one it fails with
    /// [`ConfigErrorKind::NoRuntime`].
    pub fn build(self) -> Result<Coordinator, ConfigError> {
        let config = self.validate()?;
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| ConfigError::no_runtime())?;
        Coordinator::start(config, &handle)
    }
}

mod validate;
