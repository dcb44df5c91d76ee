//! Small helpers shared by the runnable examples in `src/bin/`.
//!
//! The examples themselves are the interesting part:
//!
//! * `cargo run -p tower-graceful-examples --bin demo`: a self-contained tour
//!   (server, traffic, shutdown, timeline, report) on loopback.
//! * `cargo run -p tower-graceful-examples --bin axum`: a realistic axum
//!   server to copy from (SIGTERM / Ctrl-C, probes, streams, SSE, WebSocket).
//! * `--bin tonic`: a gRPC server with `tonic-health`.
//! * `--bin hyper`: a plain hyper server (hyper-util's auto builder and
//!   `GracefulShutdown`) when you own the accept loop.
//! * `--bin multi`: public HTTP, gRPC and an admin port (probes, Prometheus
//!   metrics) draining as one.
//!
//! What the examples share lives here, so that the binaries stay short and
//! the end-to-end tests in `tests/` run exactly the examples' wiring:
//!
//! * [`demo`]: the hand-written `demo.v1.Demo` gRPC service (server and
//!   client) that the `tonic` and `multi` examples serve; the tests and the
//!   rolling-restart load client use the very same client and messages.
//! * [`grpc`]: the `tonic` example's server (`demo` and health behind
//!   `graceful.layer()`), also the `multi` example's gRPC server.
//! * [`multi`]: the `multi` example's public, gRPC and admin servers.
//! * [`env`](mod@env): the `tonic` and `multi` examples' configuration from
//!   the environment.
//! * [`pre_drain_from_env`]: `GRACEFUL_PRE_DRAIN` (a duration, or `auto`
//!   for the adaptive pre-drain) for every example.

use std::fmt;
use std::time::Duration;

pub use tower_graceful::PreDrain;

pub mod demo;
pub mod env;
pub mod grpc;
pub mod multi;

/// Why [`parse_duration`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a duration: use a whole number with a unit, like 500ms, 2s or 1m",
            self.input
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses a human duration: `500ms`, `2s`, `1m`, or `0`.
///
/// Units: `ms`, `s`, `m`. A bare number is accepted only when it is `0`, so
/// that `10` (seconds? milliseconds?) is an error rather than a guess.
///
/// ```
/// use std::time::Duration;
/// use tower_graceful_examples::parse_duration;
///
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
/// assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
/// assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
/// assert!(parse_duration("10").is_err());
/// assert!(parse_duration("fast").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_owned(),
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(err),
        _ => Err(err()),
    }
}

/// The pre-drain from the environment, for every example:
///
/// * `GRACEFUL_PRE_DRAIN` unset or a duration (`2s`): a fixed delay
///   (unset: none).
/// * `GRACEFUL_PRE_DRAIN=auto`: adaptive ([`PreDrain::adaptive`]): it ends
///   once readiness has answered `503` to `GRACEFUL_PRE_DRAIN_CHECKS` checks
///   (default 3) and nothing new has arrived for `GRACEFUL_PRE_DRAIN_QUIET`
///   (default 1s), at least `GRACEFUL_PRE_DRAIN_MIN` (default 1s) and at
///   most `GRACEFUL_PRE_DRAIN_MAX` (default 10s) after the signal.
///
/// `duration(name)` reads one variable as a duration (`None` when unset), in
/// the example's own format; `var(name)` reads it as text.
///
/// ```
/// use std::time::Duration;
/// use tower_graceful_examples::{parse_duration, pre_drain_from_env};
///
/// let env = |name: &str| match name {
///     "GRACEFUL_PRE_DRAIN" => Some("auto".to_owned()),
///     "GRACEFUL_PRE_DRAIN_MAX" => Some("5s".to_owned()),
///     _ => None,
/// };
/// let duration = |name: &str| match env(name) {
///     None => Ok(None),
///     Some(v) => parse_duration(&v).map(Some).map_err(|e| e.to_string()),
/// };
/// let pre_drain = pre_drain_from_env(env, duration).unwrap();
/// assert!(pre_drain.is_adaptive());
/// assert_eq!(pre_drain.max(), Duration::from_secs(5));
/// assert_eq!(pre_drain.min(), Duration::from_secs(1));
/// ```
pub fn pre_drain_from_env(
    var: impl Fn(&str) -> Option<String>,
    duration: impl Fn(&str) -> Result<Option<Duration>, String>,
) -> Result<PreDrain, String> {
    let auto = var("GRACEFUL_PRE_DRAIN").is_some_and(|v| v.trim() == "auto");
    if !auto {
        return Ok(PreDrain::fixed(
            duration("GRACEFUL_PRE_DRAIN")?.unwrap_or_default(),
        ));
    }
    let min = duration("GRACEFUL_PRE_DRAIN_MIN")?.unwrap_or(Duration::from_secs(1));
    let max = duration("GRACEFUL_PRE_DRAIN_MAX")?.unwrap_or(Duration::from_secs(10));
    let mut pre_drain = PreDrain::adaptive(min.min(max), max);
    if let Some(quiet) = duration("GRACEFUL_PRE_DRAIN_QUIET")? {
        pre_drain = pre_drain.quiet_window(quiet);
    }
    if let Some(n) = var("GRACEFUL_PRE_DRAIN_CHECKS") {
        let n = n.trim().parse().map_err(|_| {
            format!("invalid GRACEFUL_PRE_DRAIN_CHECKS: {n:?} is not a number of checks")
        })?;
        pre_drain = pre_drain.readiness_checks(n);
    }
    Ok(pre_drain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration(" 250ms ").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "ms",
            "-1s",
            "1.5s",
            "1h",
            "10",
            "1 s",
            "99999999999999999999s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("like 500ms"), "{bad:?}: {e}");
        }
    }
}
