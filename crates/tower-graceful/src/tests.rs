//! Unit tests of the configuration that need the crate's internals:
//! `Builder::validate` (crate-private) and the validated `Config`'s derived
//! drain deadline. The tests that need only the public API are integration
//! tests in `tests/` (`in_flight.rs`, `drain.rs`, `probe.rs`, `signal.rs`,
//! `coordinator.rs`, `graceful.rs`).

use std::time::Duration;

use std::convert::Infallible;

use tokio::time::{timeout, Instant};

use crate::coordinator::*;
use crate::report::*;

fn err(b: Builder) -> ConfigError {
    b.handle_signals(false).validate().unwrap_err()
}

#[test]
fn an_adaptive_pre_drain_counts_its_maximum_and_defaults_the_lame_duck_to_its_minimum() {
    let cfg = Coordinator::builder()
        .handle_signals(false)
        .total_budget(Duration::from_secs(30))
        .pre_drain(PreDrain::adaptive(
            Duration::from_secs(2),
            Duration::from_secs(10),
        ))
        .validate()
        .unwrap();
    // 30s - 10s (max) - 5s (cleanup) - 1s (margin).
    assert_eq!(cfg.drain_deadline, Duration::from_secs(14));
    assert_eq!(cfg.policy.lame_duck_window, Duration::from_secs(2));
    assert!(cfg.pre_drain.is_adaptive());
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
            err(b().pre_drain(PreDrain::adaptive(
                Duration::from_secs(5),
                Duration::from_secs(2),
            ))),
            "pre_drain",
            "min (5s) is longer than its max (2s)",
        ),
        (
            err(b().pre_drain(PreDrain::adaptive(
                Duration::ZERO,
                Duration::from_secs(7200),
            ))),
            "pre_drain",
            "at most 1h",
        ),
        (
            err(b().pre_drain(
                PreDrain::adaptive(Duration::ZERO, Duration::from_secs(2))
                    .quiet_window(Duration::from_secs(3)),
            )),
            "pre_drain",
            "quiet_window (3s) is longer than its max (2s)",
        ),
        (
            err(b().pre_drain(
                PreDrain::adaptive(Duration::ZERO, Duration::from_secs(2)).readiness_checks(5_000),
            )),
            "pre_drain",
            "at most 1000",
        ),
        (
            // The maximum counts in the budget, not the minimum.
            err(b()
                .total_budget(Duration::from_secs(30))
                .pre_drain(PreDrain::adaptive(
                    Duration::from_secs(1),
                    Duration::from_secs(20),
                ))
                .drain_deadline(Duration::from_secs(10))),
            "total_budget",
            "the adaptive pre_drain's max (20s) + drain_deadline (10s)",
        ),
        (
            err(b()
                .pre_drain(PreDrain::adaptive(
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                ))
                .lame_duck_window(Duration::from_secs(6))),
            "lame_duck_window",
            "longer than the adaptive pre_drain's max (5s)",
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
        // A short deadline is blamed on the deadline the user gave, not on
        // the reuse grace they left at its default.
        (
            err(b().drain_deadline(Duration::from_millis(1))),
            "drain_deadline",
            "drain_deadline (1ms) leaves no time to drain: it is not longer than reuse_grace \
             (200ms, the default)",
        ),
        (
            err(b().drain_deadline(Duration::from_millis(1))),
            "drain_deadline",
            "or set reuse_grace(Duration::ZERO)",
        ),
        (
            err(b()
                .drain_deadline(Duration::from_secs(1))
                .reuse_grace(Duration::from_secs(2))),
            "reuse_grace",
            "reuse_grace (2s) is not shorter than drain_deadline (1s)",
        ),
        (
            err(b()
                .total_budget(Duration::from_millis(1150))
                .cleanup_timeout(Duration::from_secs(1))),
            "total_budget",
            "the drain deadline (92.5ms, derived from total_budget (1.15s)) leaves no time",
        ),
        (
            err(b()
                .total_budget(Duration::from_secs(10))
                .min_time_left(Duration::from_secs(9))),
            "min_time_left",
            "not shorter than the drain deadline (4.5s, derived from total_budget (10s))",
        ),
        (
            err(b()
                .pre_drain_delay(Duration::from_secs(5))
                .lame_duck_window(Duration::from_secs(10))),
            "lame_duck_window",
            "lame_duck_window (10s) is longer than pre_drain_delay (5s)",
        ),
        (
            err(b().lame_duck_window(Duration::from_secs(1))),
            "lame_duck_window",
            "is longer than pre_drain_delay (0ns)",
        ),
        (
            err(b().cleanup_timeout(Duration::from_secs(30 * 86_400))),
            "cleanup_timeout",
            "exceeds a week: shutdown budgets are seconds to minutes, shorten cleanup_timeout",
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
fn the_limits_of_the_checks_are_accepted() {
    let b = || Coordinator::builder().handle_signals(false);
    for ok in [
        // The window may be the whole pre-drain delay, or none of it.
        b().pre_drain_delay(Duration::from_secs(5))
            .lame_duck_window(Duration::from_secs(5)),
        b().lame_duck_window(Duration::ZERO),
        // A short deadline is fine once the reuse grace is off.
        b().drain_deadline(Duration::from_millis(1))
            .reuse_grace(Duration::ZERO),
    ] {
        if let Err(e) = ok.clone().validate() {
            panic!("{ok:?}: {e}");
        }
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

// ---------- a driver restarted on another runtime ----------

fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// Hole 5, first half: the runtime that ran the driver is dropped during the
/// pre-drain delay, and `wait` restarts the driver on runtime B. The new
/// driver sleeps only what is left of the delay (it counts from the
/// trigger), not the whole delay again.
#[test]
fn a_driver_restarted_during_the_pre_drain_sleeps_only_the_rest_of_it() {
    let pre_drain = Duration::from_secs(10);
    let a = runtime(false);
    let c = a.block_on(async {
        let c = Coordinator::builder()
            .handle_signals(false)
            .pre_drain_delay(pre_drain)
            .build()
            .unwrap();
        assert!(c.trigger());
        // Let the driver wake up and start sleeping the delay.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!(c.phase(), Phase::Triggered);
        c
    });
    drop(a);
    runtime(true).block_on(async {
        // 6 s of the delay pass before anyone on runtime B waits.
        tokio::time::advance(Duration::from_secs(6)).await;
        let before = Instant::now();
        let report = timeout(Duration::from_secs(60), c.wait())
            .await
            .expect("the restarted driver finishes");
        let waited = before.elapsed();
        assert!(
            waited <= Duration::from_secs(4),
            "waited {waited:?} on runtime B: the restarted driver slept the pre-drain \
             delay again instead of what was left of it\n{report}"
        );
        assert!(report.pre_drain >= Duration::from_secs(9), "{report}");
        assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    });
}

/// Hole 5, the drain: runtime A is dropped while the drain waits for a
/// tracked job; the job ends later, seen by a driver restarted on runtime B,
/// which reports the count taken when draining began on A.
#[test]
fn a_driver_restarted_during_the_drain_reports_what_was_in_flight_at_its_start() {
    let a = runtime(true);
    let (c, job) = a.block_on(async {
        let c = Coordinator::builder()
            .handle_signals(false)
            .pre_drain_delay(Duration::from_secs(2))
            .build()
            .unwrap();
        let job = c.track("job");
        assert!(c.trigger());
        timeout(Duration::from_secs(60), c.signal().draining())
            .await
            .expect("draining begins on A");
        assert_eq!(c.phase(), Phase::Draining);
        (c, job)
    });
    drop(a);
    runtime(true).block_on(async {
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait().await }
        });
        tokio::task::yield_now().await;
        drop(job);
        let report = timeout(Duration::from_secs(60), waiter)
            .await
            .expect("the restarted driver finishes")
            .unwrap();
        assert_eq!(report.in_flight_at_drain, 1, "{report}");
        assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
        assert_eq!(report.pre_drain, Duration::from_secs(2), "{report}");
    });
}

/// Hole 5, second half: runtime A is dropped while a cleanup hook runs (the
/// drain is over), and `wait` restarts the driver on runtime B. The new
/// driver does not sleep the pre-drain again, reports what was in flight
/// when draining began on A, reports the hook A's driver had taken as
/// abandoned (it is not run twice) and runs the hooks after it.
#[test]
fn a_driver_restarted_during_a_hook_accounts_for_every_hook() {
    let pre_drain = Duration::from_secs(10);
    let a = runtime(true);
    let c = a.block_on(async {
        let c = Coordinator::builder()
            .handle_signals(false)
            .pre_drain_delay(pre_drain)
            .build()
            .unwrap();
        let job = c.track("job");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        c.on_shutdown("interrupted", move || async move {
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        c.on_shutdown("after", || async { Ok::<(), Infallible>(()) })
            .unwrap();
        assert!(c.trigger());
        timeout(Duration::from_secs(60), c.signal().draining())
            .await
            .expect("draining begins on A");
        drop(job);
        timeout(Duration::from_secs(1), started_rx)
            .await
            .expect("the first hook starts on A")
            .unwrap();
        assert_eq!(c.phase(), Phase::CleaningUp);
        c
    });
    drop(a); // cancels the driver and the hook it runs
    runtime(true).block_on(async {
        let before = Instant::now();
        let report = timeout(Duration::from_secs(60), c.wait())
            .await
            .expect("the restarted driver finishes");
        assert!(
            before.elapsed() < pre_drain,
            "the restarted driver slept the pre-drain delay again\n{report}"
        );
        assert_eq!(report.in_flight_at_drain, 1, "{report}");
        assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
        assert_eq!(report.pre_drain, pre_drain, "{report}");
        let hooks: Vec<_> = report
            .hooks
            .iter()
            .map(|h| (h.name.as_ref(), h.outcome.clone()))
            .collect();
        assert_eq!(
            hooks,
            vec![
                ("interrupted", HookOutcome::Abandoned),
                ("after", HookOutcome::Completed)
            ],
            "{report}"
        );
        assert!(!report.is_clean(), "{report}");
    });
}

#[test]
fn an_invalid_setting_is_its_own_kind_with_no_source() {
    let e = err(Coordinator::builder().cleanup_timeout(Duration::ZERO));
    assert_eq!(e.kind(), ConfigErrorKind::Invalid);
    assert!(!e.is_no_runtime());
    assert!(std::error::Error::source(&e).is_none());
}

#[test]
fn a_signal_handler_error_keeps_the_os_error_as_its_source() {
    let os = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no signals here");
    let e = ConfigError::signal(os);
    assert_eq!(e.kind(), ConfigErrorKind::Signals);
    assert_eq!(e.field(), "handle_signals");
    assert!(e.to_string().contains("handle_signals(false)"), "{e}");
    let source = std::error::Error::source(&e).expect("the io::Error is the source");
    assert_eq!(source.to_string(), "no signals here");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    // The source's message is not repeated in the error's own (the
    // `std::error::Error` convention: a reporter prints the chain).
    assert!(!e.to_string().contains("no signals here"), "{e}");
}
