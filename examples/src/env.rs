//! The configuration of the `tonic` and `multi` examples from the
//! environment: `HOST`, ports and the coordinator's `GRACEFUL_*` timings.

use std::net::SocketAddr;
use std::time::Duration;

use tower_graceful::Coordinator;

/// `250ms`, `2s`, `1.5s` or a bare number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0 && v * scale < 86_400.0).then(|| Duration::from_secs_f64(v * scale))
}

/// The duration in the variable `name` (`250ms`, `2s`, `1.5s` or a bare
/// number of seconds), or `default` when it is not set.
pub fn env_duration(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => parse_duration(&v)
            .ok_or_else(|| format!("{name}={v:?}: expected a duration such as 250ms, 2s or 2")),
        Err(_) => Ok(default),
    }
}

/// `HOST` (default `127.0.0.1`; `0.0.0.0` in a container) and a port.
pub fn bind_addr(port: u16) -> Result<SocketAddr, String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        format!("HOST={host:?}: expected an IP address such as 127.0.0.1 or 0.0.0.0")
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The coordinator's timing from the environment: `GRACEFUL_PRE_DRAIN`
/// (default 0s; `auto` for the adaptive pre-drain, see
/// [`pre_drain_from_env`](crate::pre_drain_from_env)), `GRACEFUL_DEADLINE` (default 10s), `GRACEFUL_CLEANUP`
/// (default 2s) and, if set, `GRACEFUL_TOTAL` (the orchestrator's kill
/// timer, e.g. `terminationGracePeriodSeconds`; the phases must fit in it).
pub fn builder_from_env() -> Result<tower_graceful::Builder, String> {
    let mut b = Coordinator::builder()
        .pre_drain(crate::pre_drain_from_env(
            |name| std::env::var(name).ok(),
            |name| match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(_) => env_duration(name, Duration::ZERO).map(Some),
            },
        )?)
        .drain_deadline(env_duration("GRACEFUL_DEADLINE", Duration::from_secs(10))?)
        .cleanup_timeout(env_duration("GRACEFUL_CLEANUP", Duration::from_secs(2))?);
    if std::env::var_os("GRACEFUL_TOTAL").is_some() {
        b = b.total_budget(env_duration("GRACEFUL_TOTAL", Duration::ZERO)?);
    }
    Ok(b)
}

/// The port in the variable `name` (`0` picks a free one), or `default`
/// when it is not set.
pub fn env_port(name: &str, default: u16) -> Result<u16, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?}: expected a port number (0 picks a free one)")),
        Err(_) => Ok(default),
    }
}
