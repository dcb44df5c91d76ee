//! The coordinator's builder: documented defaults, validated at build time.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

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
    pub(crate) pre_drain: Duration,
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
/// `pre_drain_delay + drain_deadline + cleanup_timeout ≤ total_budget`,
/// with a small safety margin (5 % of the budget, at most 1 s) for the
/// process to exit. Give [`total_budget`](Self::total_budget) and leave
/// `drain_deadline` unset to have it derived as whatever is left.
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    pre_drain: Duration,
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
    reuse_grace: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            pre_drain: DEFAULT_PRE_DRAIN_DELAY,
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
            reuse_grace: DEFAULT_REUSE_GRACE,
        }
    }
}

impl Builder {
    /// How long to keep serving normally after the trigger, with readiness
    /// already down, so load balancers take the instance out of rotation
    /// before it starts rejecting. Default: 0 ([`DEFAULT_PRE_DRAIN_DELAY`]).
    /// A second signal cuts it short.
    pub fn pre_drain_delay(mut self, d: Duration) -> Self {
        self.pre_drain = d;
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
    /// the pre-drain delay.
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
        self.reuse_grace = d;
        self
    }

    /// The path the combined layer answers as the readiness probe.
    pub fn readiness_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = Some(path.into());
        self
    }

    /// The path the combined layer answers as the liveness probe.
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

    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        let secs = |d: Duration| format!("{:?}", d);
        if self.pre_drain > Duration::from_secs(3_600) {
            return Err(ConfigError::new(
                "pre_drain_delay",
                format!(
                    "pre_drain_delay is {}; it should cover the load balancer's probe \
                     interval × failure threshold, which is seconds, not hours: use at most 1h",
                    secs(self.pre_drain)
                ),
            ));
        }
        if self.cleanup_timeout.is_zero() {
            return Err(ConfigError::new(
                "cleanup_timeout",
                "cleanup_timeout is zero, so no hook could ever run: give it at least a few \
                 milliseconds (default 5s)",
            ));
        }
        let hook_timeout = self.hook_timeout.unwrap_or(self.cleanup_timeout);
        if hook_timeout.is_zero() {
            return Err(ConfigError::new(
                "hook_timeout",
                "hook_timeout is zero, so every hook would time out at once: give it a \
                 positive duration (default: cleanup_timeout)",
            ));
        }
        if hook_timeout > self.cleanup_timeout {
            return Err(ConfigError::new(
                "hook_timeout",
                format!(
                    "hook_timeout ({}) exceeds cleanup_timeout ({}), the time for all hooks \
                     together: lower hook_timeout or raise cleanup_timeout",
                    secs(hook_timeout),
                    secs(self.cleanup_timeout)
                ),
            ));
        }
        let drain_deadline = match (self.drain_deadline, self.total_budget) {
            (Some(d), _) if d.is_zero() => {
                return Err(ConfigError::new(
                    "drain_deadline",
                    "drain_deadline is zero, so every in-flight request would be abandoned at \
                     once: give it a positive duration (default 25s)",
                ))
            }
            (_, Some(t)) if t.is_zero() => {
                return Err(ConfigError::new(
                    "total_budget",
                    "total_budget is zero: set it to the orchestrator's kill timer (for \
                     example terminationGracePeriodSeconds)",
                ))
            }
            (Some(d), None) => d,
            (None, None) => DEFAULT_DRAIN_DEADLINE,
            (explicit, Some(total)) => {
                let margin = (total / 20).min(Duration::from_secs(1));
                let fixed = self
                    .pre_drain
                    .checked_add(self.cleanup_timeout)
                    .and_then(|d| d.checked_add(margin))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "total_budget",
                            "pre_drain_delay + cleanup_timeout overflows: use durations \
                             of at most hours",
                        )
                    })?;
                match explicit {
                    Some(d) => {
                        let need = fixed.checked_add(d).ok_or_else(|| {
                            ConfigError::new(
                                "drain_deadline",
                                "pre_drain_delay + drain_deadline + cleanup_timeout \
                                 overflows: use durations of at most hours",
                            )
                        })?;
                        if need > total {
                            return Err(ConfigError::new(
                                "total_budget",
                                format!(
                                    "pre_drain_delay ({}) + drain_deadline ({}) + \
                                     cleanup_timeout ({}) + exit margin ({}) = {} exceeds \
                                     total_budget ({}): shorten a phase, or leave \
                                     drain_deadline unset to derive it from the budget",
                                    secs(self.pre_drain),
                                    secs(d),
                                    secs(self.cleanup_timeout),
                                    secs(margin),
                                    secs(need),
                                    secs(total)
                                ),
                            ));
                        }
                        d
                    }
                    None => match total.checked_sub(fixed) {
                        Some(d) if !d.is_zero() => d,
                        _ => {
                            return Err(ConfigError::new(
                                "total_budget",
                                format!(
                                    "pre_drain_delay ({}) + cleanup_timeout ({}) + exit \
                                     margin ({}) leave no time to drain within total_budget \
                                     ({}): raise total_budget or shorten those phases",
                                    secs(self.pre_drain),
                                    secs(self.cleanup_timeout),
                                    secs(margin),
                                    secs(total)
                                ),
                            ))
                        }
                    },
                }
            }
        };
        // Overflow in the sum even without a budget would make deadlines
        // unrepresentable as instants.
        if self
            .pre_drain
            .checked_add(drain_deadline)
            .and_then(|d| d.checked_add(self.cleanup_timeout))
            .is_none_or(|d| d > Duration::from_secs(7 * 86_400))
        {
            return Err(ConfigError::new(
                "drain_deadline",
                "pre_drain_delay + drain_deadline + cleanup_timeout exceeds a week: \
                 shutdown budgets are seconds to minutes, use shorter durations",
            ));
        }
        let min_time_left = self
            .min_time_left
            .unwrap_or_else(|| (drain_deadline / 10).min(Duration::from_secs(1)));
        if min_time_left >= drain_deadline {
            return Err(ConfigError::new(
                "min_time_left",
                format!(
                    "min_time_left ({}) is not shorter than drain_deadline ({}), so every \
                     request on an open connection would be rejected while draining: lower \
                     min_time_left (default: a tenth of the deadline, at most 1s)",
                    secs(min_time_left),
                    secs(drain_deadline)
                ),
            ));
        }
        if self
            .lame_duck_window
            .is_some_and(|w| w > Duration::from_secs(3_600))
        {
            return Err(ConfigError::new(
                "lame_duck_window",
                "lame_duck_window is over an hour; it spreads reconnections over the \
                 pre-drain delay, which is seconds: use at most 1h",
            ));
        }
        if self.reuse_grace >= drain_deadline {
            return Err(ConfigError::new(
                "reuse_grace",
                format!(
                    "reuse_grace ({}) is not shorter than drain_deadline ({}): it is meant \
                     to be a round trip or two (default 200ms)",
                    secs(self.reuse_grace),
                    secs(drain_deadline)
                ),
            ));
        }
        let policy = Policy {
            lame_duck_window: self.lame_duck_window.unwrap_or(self.pre_drain),
            min_time_left,
            reuse_grace: self.reuse_grace,
        };
        let retry = ceil_secs(self.retry_after);
        if retry > MAX_RETRY_AFTER {
            return Err(ConfigError::new(
                "retry_after",
                format!("retry_after is {retry}s; use at most {MAX_RETRY_AFTER}s (one day)"),
            ));
        }
        let jitter = ceil_secs(self.retry_after_jitter);
        if jitter > MAX_JITTER {
            return Err(ConfigError::new(
                "retry_after_jitter",
                format!("retry_after_jitter is {jitter}s; use at most {MAX_JITTER}s (one hour)"),
            ));
        }
        if self.body.len() > MAX_BODY {
            return Err(ConfigError::new(
                "rejection_body",
                format!(
                    "rejection_body is {} bytes; keep it short (at most {MAX_BODY} bytes)",
                    self.body.len()
                ),
            ));
        }
        let grpc_message = HeaderValue::from_str(&self.grpc_message)
            .ok()
            .filter(|_| {
                self.grpc_message
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'%')
            })
            .ok_or_else(|| {
                ConfigError::new(
                    "grpc_message",
                    "grpc_message must be visible ASCII without '%' (it is sent as a \
                     header without percent-encoding)",
                )
            })?;
        let mut seen: Vec<(String, &'static str)> = Vec::new();
        let is_probe = |f: &str| f == "readiness_path" || f == "liveness_path";
        let mut check_path = |p: &str, field: &'static str| -> Result<(), ConfigError> {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    field,
                    format!("{field} {p:?} must be an absolute path like \"/ready\" with no query"),
                ));
            }
            // A path may be both exempt (never rejected) and untracked (never
            // counted); a probe path is answered by the layer and can be
            // nothing else; no list names a path twice.
            if let Some((_, other)) = seen
                .iter()
                .find(|(q, f)| *q == p && (*f == field || is_probe(f) || is_probe(field)))
            {
                return Err(ConfigError::new(
                    field,
                    format!("{field} {p:?} is already used by {other}: each path may be used once"),
                ));
            }
            seen.push((p.to_owned(), field));
            Ok(())
        };
        if let Some(p) = &self.ready_path {
            check_path(p, "readiness_path")?;
        }
        if let Some(p) = &self.live_path {
            check_path(p, "liveness_path")?;
        }
        for p in &self.exempt {
            check_path(p, "exempt_path")?;
        }
        let mut untracked: Vec<String> = Vec::new();
        for p in self.untracked {
            if p == GRPC_HEALTH_WATCH && untracked.contains(&p) {
                continue;
            }
            check_path(&p, "untracked_path")?;
            untracked.push(p);
        }
        Ok(Config {
            pre_drain: self.pre_drain,
            drain_deadline,
            cleanup_timeout: self.cleanup_timeout,
            hook_timeout,
            total_budget: self.total_budget,
            handle_signals: self.handle_signals,
            reject: RejectConfig::new(
                retry as u32,
                jitter as u32,
                self.body,
                grpc_message,
                self.exempt,
            ),
            untracked,
            probes: ProbePaths {
                ready: self.ready_path.map(Arc::from),
                live: self.live_path.map(Arc::from),
            },
            policy,
        })
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
