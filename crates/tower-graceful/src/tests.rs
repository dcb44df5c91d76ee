//! Unit tests of the configuration that need the crate's internals:
//! `Builder::validate` (crate-private) and the validated `Config`'s derived
//! drain deadline. The tests that need only the public API are integration
//! tests in `tests/` (`in_flight.rs`, `drain.rs`, `probe.rs`, `signal.rs`,
//! `coordinator.rs`, `graceful.rs`).

use std::time::Duration;

use crate::coordinator::*;

fn err(b: Builder) -> ConfigError {
    b.handle_signals(false).validate().unwrap_err()
}

#[test]
fn invalid_configurations_are_rejected_with_a_message() {
    let b = Coordinator::builder;
    let cases: Vec<(ConfigError, &str, &str)> = vec![
        (
            err(b().drain_deadline(Duration::ZERO)),
            "drain_deadline",
            "positive",
        ),
        (
            err(b().cleanup_timeout(Duration::ZERO)),
            "cleanup_timeout",
            "at least",
        ),
        (
            err(b().hook_timeout(Duration::ZERO)),
            "hook_timeout",
            "positive",
        ),
        (
            err(b()
                .cleanup_timeout(Duration::from_secs(1))
                .hook_timeout(Duration::from_secs(2))),
            "hook_timeout",
            "raise cleanup_timeout",
        ),
        (
            err(b().total_budget(Duration::ZERO)),
            "total_budget",
            "terminationGracePeriodSeconds",
        ),
        (
            err(b()
                .total_budget(Duration::from_secs(10))
                .pre_drain_delay(Duration::from_secs(5))
                .drain_deadline(Duration::from_secs(10))),
            "total_budget",
            "exceeds total_budget",
        ),
        (
            err(b()
                .total_budget(Duration::from_secs(10))
                .pre_drain_delay(Duration::from_secs(8))
                .cleanup_timeout(Duration::from_secs(2))),
            "total_budget",
            "leave no time to drain",
        ),
        (
            err(b().drain_deadline(Duration::MAX)),
            "drain_deadline",
            "exceeds a week",
        ),
        (
            err(b()
                .total_budget(Duration::MAX)
                .pre_drain_delay(Duration::from_secs(1))
                .cleanup_timeout(Duration::MAX)),
            "total_budget",
            "overflows",
        ),
        (
            err(b().pre_drain_delay(Duration::from_secs(7200))),
            "pre_drain_delay",
            "at most 1h",
        ),
        (
            err(b().retry_after(Duration::from_secs(100_000))),
            "retry_after",
            "one day",
        ),
        (
            err(b().retry_after_jitter(Duration::from_secs(4_000))),
            "retry_after_jitter",
            "one hour",
        ),
        (
            err(b().rejection_body(vec![b'x'; 2000])),
            "rejection_body",
            "at most 1024",
        ),
        (
            err(b().grpc_message("50% off")),
            "grpc_message",
            "visible ASCII",
        ),
        (
            err(b().grpc_message("line\nbreak")),
            "grpc_message",
            "visible ASCII",
        ),
        (
            err(b().readiness_path("ready")),
            "readiness_path",
            "absolute path",
        ),
        (
            err(b().readiness_path("/health").liveness_path("/health")),
            "liveness_path",
            "already used by readiness_path",
        ),
        (
            err(b().exempt_path("/m").exempt_path("/m")),
            "exempt_path",
            "each path may be used once",
        ),
        (err(b().exempt_path("/m?x=1")), "exempt_path", "no query"),
        (
            err(b().untracked_path("sse")),
            "untracked_path",
            "absolute path",
        ),
    ];
    for (e, field, needle) in cases {
        assert_eq!(e.field(), field, "{e}");
        assert!(e.to_string().contains(needle), "{field}: {e}");
        assert!(e
            .to_string()
            .starts_with("invalid tower-graceful configuration: "));
    }
}

#[test]
fn a_path_may_be_exempt_and_untracked_but_a_probe_path_nothing_else() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    Coordinator::builder()
        .handle_signals(false)
        .exempt_path(GRPC_HEALTH_WATCH) // untracked by default
        .build()
        .expect("exempt and untracked are independent");
    let e = err(Coordinator::builder()
        .readiness_path("/x")
        .exempt_path("/x"));
    assert_eq!(e.field(), "exempt_path");
    assert!(e.to_string().contains("readiness_path"), "{e}");
    let e = err(Coordinator::builder().exempt_path("/m").exempt_path("/m"));
    assert_eq!(e.field(), "exempt_path");
}

#[test]
fn total_budget_derives_the_drain_deadline() {
    let cfg = Coordinator::builder()
        .total_budget(Duration::from_secs(30))
        .pre_drain_delay(Duration::from_secs(5))
        .cleanup_timeout(Duration::from_secs(4))
        .validate()
        .unwrap();
    // 30 - 5 - 4 - margin(1s) = 20s
    assert_eq!(cfg.drain_deadline, Duration::from_secs(20));
    let cfg = Coordinator::builder().validate().unwrap();
    assert_eq!(cfg.drain_deadline, DEFAULT_DRAIN_DEADLINE);
}
