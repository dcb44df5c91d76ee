//! [`Builder::validate`]: one function per group of settings, each message
//! naming the setting the user gave and what to change.

use std::time::Duration;

use http::HeaderValue;

use super::{
    Builder, Config, ConfigError, DEFAULT_DRAIN_DEADLINE, DEFAULT_REUSE_GRACE, GRPC_HEALTH_WATCH,
    MAX_BODY, MAX_JITTER, MAX_RETRY_AFTER,
};
use crate::answer::RejectConfig;
use crate::core::state::Policy;
use crate::core::sync::Arc;
use crate::stack::ProbePaths;

impl Builder {
    pub(crate) fn validate(self) -> Result<Config, ConfigError> {
        self.check_pre_drain()?;
        let hook_timeout = self.check_cleanup()?;
        let deadline = self.resolve_deadline()?;
        self.check_total_span(&deadline)?;
        let policy = self.policy(&deadline)?;
        let (retry, jitter, grpc_message) = self.check_rejection()?;
        self.check_paths()?;
        let mut untracked: Vec<String> = Vec::new();
        for p in self.untracked {
            // The default entry, given again by the user: once is enough.
            if !untracked.contains(&p) {
                untracked.push(p);
            }
        }
        Ok(Config {
            pre_drain: self.pre_drain,
            drain_deadline: deadline.value,
            cleanup_timeout: self.cleanup_timeout,
            hook_timeout,
            total_budget: self.total_budget,
            handle_signals: self.handle_signals,
            reject: RejectConfig::new(retry, jitter, self.body, grpc_message, self.exempt),
            untracked,
            probes: ProbePaths {
                ready: self.ready_path.map(Arc::from),
                live: self.live_path.map(Arc::from),
            },
            policy,
        })
    }

    fn check_pre_drain(&self) -> Result<(), ConfigError> {
        let Some(a) = self.pre_drain.adaptive_settings() else {
            if self.pre_drain.max() > Duration::from_secs(3_600) {
                return Err(ConfigError::new(
                    "pre_drain_delay",
                    format!(
                        "pre_drain_delay is {:?}; it should cover the load balancer's probe \
                         interval × failure threshold, which is seconds, not hours: use at most 1h",
                        self.pre_drain.max()
                    ),
                ));
            }
            return Ok(());
        };
        if a.min > a.max {
            return Err(ConfigError::new(
                "pre_drain",
                format!(
                    "the adaptive pre_drain's min ({:?}) is longer than its max ({:?}): give \
                     PreDrain::adaptive(min, max) with min ≤ max",
                    a.min, a.max
                ),
            ));
        }
        if a.max > Duration::from_secs(3_600) {
            return Err(ConfigError::new(
                "pre_drain",
                format!(
                    "the adaptive pre_drain's max is {:?}; it should cover the slowest load \
                     balancer's probe interval × failure threshold, which is seconds, not \
                     hours: use at most 1h",
                    a.max
                ),
            ));
        }
        if a.quiet > a.max {
            return Err(ConfigError::new(
                "pre_drain",
                format!(
                    "the adaptive pre_drain's quiet_window ({:?}) is longer than its max \
                     ({:?}), so the evidence could never be complete: shorten quiet_window \
                     (default 1s) or raise max",
                    a.quiet, a.max
                ),
            ));
        }
        if a.checks > 1_000 {
            return Err(ConfigError::new(
                "pre_drain",
                format!(
                    "the adaptive pre_drain's readiness_checks is {}; it is a balancer's \
                     failure threshold (2 or 3) times the number of balancers: use at most 1000",
                    a.checks
                ),
            ));
        }
        Ok(())
    }

    /// The cleanup phase; returns the hook timeout.
    fn check_cleanup(&self) -> Result<Duration, ConfigError> {
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
                    "hook_timeout ({:?}) exceeds cleanup_timeout ({:?}), the time for all hooks \
                     together: lower hook_timeout or raise cleanup_timeout",
                    hook_timeout, self.cleanup_timeout
                ),
            ));
        }
        Ok(hook_timeout)
    }

    /// The drain deadline, given, derived from the budget, or the default,
    /// with where it came from (so that a message blames a setting the user
    /// gave).
    fn resolve_deadline(&self) -> Result<Deadline, ConfigError> {
        let explicit = |value| Deadline {
            value,
            field: "drain_deadline",
            described: format!("drain_deadline ({value:?})"),
        };
        match (self.drain_deadline, self.total_budget) {
            (Some(d), _) if d.is_zero() => Err(ConfigError::new(
                "drain_deadline",
                "drain_deadline is zero, so every in-flight request would be abandoned at \
                 once: give it a positive duration (default 25s)",
            )),
            (_, Some(t)) if t.is_zero() => Err(ConfigError::new(
                "total_budget",
                "total_budget is zero: set it to the orchestrator's kill timer (for \
                 example terminationGracePeriodSeconds)",
            )),
            (Some(d), None) => Ok(explicit(d)),
            (None, None) => Ok(Deadline {
                value: DEFAULT_DRAIN_DEADLINE,
                field: "drain_deadline",
                described: format!("drain_deadline ({DEFAULT_DRAIN_DEADLINE:?}, the default)"),
            }),
            (Some(d), Some(total)) => {
                self.check_budget(d, total)?;
                Ok(explicit(d))
            }
            (None, Some(total)) => {
                let value = self.derive_from_budget(total)?;
                Ok(Deadline {
                    value,
                    field: "total_budget",
                    described: format!(
                        "the drain deadline ({value:?}, derived from total_budget ({total:?}))"
                    ),
                })
            }
        }
    }

    /// The exit margin within `total` and the phases other than the drain.
    fn fixed_phases(&self, total: Duration) -> Result<(Duration, Duration), ConfigError> {
        let margin = (total / 20).min(Duration::from_secs(1));
        let fixed = self
            .pre_drain
            .max()
            .checked_add(self.cleanup_timeout)
            .and_then(|d| d.checked_add(margin))
            .ok_or_else(|| {
                ConfigError::new(
                    "total_budget",
                    "pre_drain_delay + cleanup_timeout overflows: use durations of at most hours",
                )
            })?;
        Ok((margin, fixed))
    }

    fn check_budget(&self, deadline: Duration, total: Duration) -> Result<(), ConfigError> {
        let (margin, fixed) = self.fixed_phases(total)?;
        let need = fixed.checked_add(deadline).ok_or_else(|| {
            ConfigError::new(
                "drain_deadline",
                "pre_drain_delay + drain_deadline + cleanup_timeout overflows: use durations \
                 of at most hours",
            )
        })?;
        if need > total {
            return Err(ConfigError::new(
                "total_budget",
                format!(
                    "{} + drain_deadline ({:?}) + cleanup_timeout ({:?}) + \
                     exit margin ({:?}) = {:?} exceeds total_budget ({:?}): shorten a phase, or \
                     leave drain_deadline unset to derive it from the budget",
                    self.pre_drain_described(),
                    deadline,
                    self.cleanup_timeout,
                    margin,
                    need,
                    total
                ),
            ));
        }
        Ok(())
    }

    fn derive_from_budget(&self, total: Duration) -> Result<Duration, ConfigError> {
        let (margin, fixed) = self.fixed_phases(total)?;
        match total.checked_sub(fixed) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(ConfigError::new(
                "total_budget",
                format!(
                    "{} + cleanup_timeout ({:?}) + exit margin ({:?}) leave \
                     no time to drain within total_budget ({:?}): raise total_budget or shorten \
                     those phases",
                    self.pre_drain_described(),
                    self.cleanup_timeout,
                    margin,
                    total
                ),
            )),
        }
    }

    /// Overflow in the sum, even without a budget, would make deadlines
    /// unrepresentable as instants. Blames the longest phase the user gave.
    fn check_total_span(&self, deadline: &Deadline) -> Result<(), ConfigError> {
        let within_a_week = self
            .pre_drain
            .max()
            .checked_add(deadline.value)
            .and_then(|d| d.checked_add(self.cleanup_timeout))
            .is_some_and(|d| d <= Duration::from_secs(7 * 86_400));
        if within_a_week {
            return Ok(());
        }
        let field = if self.cleanup_timeout > deadline.value {
            "cleanup_timeout"
        } else {
            deadline.field
        };
        Err(ConfigError::new(
            field,
            format!(
                "{} + drain deadline ({:?}) + cleanup_timeout ({:?}) exceeds \
                 a week: shutdown budgets are seconds to minutes, shorten {field}",
                self.pre_drain_described(),
                deadline.value,
                self.cleanup_timeout
            ),
        ))
    }

    /// How a message names the pre-drain: `pre_drain_delay (5s)`, or the
    /// adaptive one's maximum.
    fn pre_drain_described(&self) -> String {
        if self.pre_drain.is_adaptive() {
            format!("the adaptive pre_drain's max ({:?})", self.pre_drain.max())
        } else {
            format!("pre_drain_delay ({:?})", self.pre_drain.max())
        }
    }

    /// The draining policy: `min_time_left`, `lame_duck_window`,
    /// `reuse_grace`, each checked against the phases it must fit in.
    fn policy(&self, deadline: &Deadline) -> Result<Policy, ConfigError> {
        let min_time_left = self
            .min_time_left
            .unwrap_or_else(|| (deadline.value / 10).min(Duration::from_secs(1)));
        // The default is a tenth of the deadline: only a given one can fail.
        if min_time_left >= deadline.value {
            return Err(ConfigError::new(
                "min_time_left",
                format!(
                    "min_time_left ({min_time_left:?}) is not shorter than {}, so every \
                     request on an open connection would be rejected while draining: lower \
                     min_time_left (default: a tenth of the deadline, at most 1s)",
                    deadline.described
                ),
            ));
        }
        if let Some(w) = self.lame_duck_window {
            if w > Duration::from_secs(3_600) {
                return Err(ConfigError::new(
                    "lame_duck_window",
                    "lame_duck_window is over an hour; it spreads reconnections over the \
                     pre-drain delay, which is seconds: use at most 1h",
                ));
            }
            if w > self.pre_drain.max() {
                return Err(ConfigError::new(
                    "lame_duck_window",
                    format!(
                        "lame_duck_window ({w:?}) is longer than {}: from \
                         the start of draining every response announces the close, so the rest \
                         of the window would never be used; make lame_duck_window at most \
                         pre_drain_delay (leave it unset to use the whole delay), or lengthen \
                         pre_drain_delay",
                        self.pre_drain_described()
                    ),
                ));
            }
        }
        let reuse_grace = self.reuse_grace.unwrap_or(DEFAULT_REUSE_GRACE);
        if reuse_grace >= deadline.value {
            return Err(match self.reuse_grace {
                Some(_) => ConfigError::new(
                    "reuse_grace",
                    format!(
                        "reuse_grace ({reuse_grace:?}) is not shorter than {}: it is meant to \
                         be a round trip or two (default 200ms); lower reuse_grace (ZERO turns \
                         it off)",
                        deadline.described
                    ),
                ),
                // Not the user's setting: blame the deadline they gave.
                None => ConfigError::new(
                    deadline.field,
                    format!(
                        "{} leaves no time to drain: it is not longer than reuse_grace \
                         ({reuse_grace:?}, the default), the wait for a client's next request \
                         on a connection; give {} at least a second or two, or set \
                         reuse_grace(Duration::ZERO)",
                        deadline.described, deadline.field
                    ),
                ),
            });
        }
        Ok(Policy {
            lame_duck_window: self.lame_duck_window.unwrap_or(self.pre_drain.min()),
            min_time_left,
            reuse_grace,
        })
    }

    /// The draining rejection; returns `Retry-After`, its jitter (seconds)
    /// and the `grpc-message`.
    fn check_rejection(&self) -> Result<(u32, u32, HeaderValue), ConfigError> {
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
        // Both at most a day: they fit.
        Ok((retry as u32, jitter as u32, grpc_message))
    }

    /// Probe, exempt and untracked paths: absolute, no query, each used once
    /// (a path may be both exempt and untracked; a probe path is answered by
    /// the layer and can be nothing else).
    fn check_paths(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(&str, &'static str)> = Vec::new();
        let is_probe = |f: &str| f == "readiness_path" || f == "liveness_path";
        let probes = [
            self.ready_path.as_deref().map(|p| (p, "readiness_path")),
            self.live_path.as_deref().map(|p| (p, "liveness_path")),
        ];
        let exempt = self.exempt.iter().map(|p| (p.as_str(), "exempt_path"));
        let mut default_watch = true;
        let untracked = self.untracked.iter().filter_map(|p| {
            // The default entry, given again by the user, is no duplicate.
            if p == GRPC_HEALTH_WATCH && std::mem::take(&mut default_watch) {
                return Some((p.as_str(), "untracked_path"));
            }
            (p != GRPC_HEALTH_WATCH).then_some((p.as_str(), "untracked_path"))
        });
        for (p, field) in probes.into_iter().flatten().chain(exempt).chain(untracked) {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                return Err(ConfigError::new(
                    field,
                    format!("{field} {p:?} must be an absolute path like \"/ready\" with no query"),
                ));
            }
            if let Some((_, other)) = seen
                .iter()
                .find(|(q, f)| *q == p && (*f == field || is_probe(f) || is_probe(field)))
            {
                return Err(ConfigError::new(
                    field,
                    format!("{field} {p:?} is already used by {other}: each path may be used once"),
                ));
            }
            seen.push((p, field));
        }
        Ok(())
    }
}

/// The drain deadline `validate` works with, and which setting it came
/// from.
#[derive(Clone, Debug)]
struct Deadline {
    value: Duration,
    /// The setting to blame: `drain_deadline` (given, or the default), or
    /// `total_budget` (derived from it).
    field: &'static str,
    /// How a message names it, with its value and origin.
    described: String,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
