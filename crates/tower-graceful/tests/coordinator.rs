//! The coordinator: phases, tracked background work, the drain deadline,
//! `force()`, cleanup hooks and their budget, the report, and `build()`
//! outside a runtime.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_graceful::coordinator::*;
use tower_graceful::report::*;

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn tracked_background_work_holds_the_drain() {
    let c = coordinator();
    let guard = c.signal().track("ws session");
    let job = c.track("job");
    c.trigger();
    c.draining().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.phase(), Phase::Draining, "guards hold the drain");
    drop(guard);
    assert!(
        timeout(Duration::from_millis(10), c.drained())
            .await
            .is_err(),
        "one guard left"
    );
    job.release();
    timeout(WAIT, c.drained())
        .await
        .expect("drained once the last guard went");
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.drain >= Duration::from_secs(1));
}

// ---------- deadline, force, hooks ----------

#[tokio::test(start_paused = true)]
async fn deadline_cancels_a_handler_that_never_finishes() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(2))
        .cleanup_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc =
        ServiceBuilder::new()
            .layer(c.layer())
            .service(service_fn(|_req: Request<String>| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
    let forced = c.signal();
    let task = tokio::spawn(
        svc.oneshot(
            Request::post("/stuck/forever?q=1")
                .body(String::new())
                .unwrap(),
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    c.trigger();
    let report = timeout(Duration::from_secs(10), c.wait()).await.unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(
        took < Duration::from_millis(2_100),
        "deadline + margin: {took:?}"
    );
    assert_eq!(report.drain_outcome, DrainOutcome::DeadlineExceeded);
    assert_eq!(report.force_cancelled(), 1);
    let s = &report.stragglers[0];
    assert_eq!(
        s.what,
        StragglerKind::Request {
            method: "POST".into(),
            path: "/stuck/forever".into()
        }
    );
    // Started before the trigger: its age is the time since the trigger,
    // marked as a lower bound.
    assert!(s.age_is_lower_bound);
    assert!(s.age >= Duration::from_secs(2), "{:?}", s.age);
    assert!(report.to_string().contains("age ≥ 2.0s"), "{report}");
    assert!(forced.is_forced(), "hard signal fired");
    assert_eq!(c.phase(), Phase::Done);
    assert!(report.to_string().contains("POST /stuck/forever"));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn force_skips_pre_drain_and_drain() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(30))
        .drain_deadline(Duration::from_secs(60))
        .build()
        .unwrap();
    let guard = c.track("stuck job");
    let t0 = Instant::now();
    c.trigger();
    tokio::task::yield_now().await;
    c.force();
    let report = timeout(Duration::from_secs(5), c.wait()).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(report.drain_outcome, DrainOutcome::Forced);
    assert_eq!(report.stragglers.len(), 1);
    assert_eq!(report.force_cancelled(), 0, "a task, not a request");
    drop(guard);
}

/// `force()` keeps its promise with nothing in flight too: the hard signal
/// fires, the phase passes `Forced`, the report says `Forced`.
#[tokio::test(start_paused = true)]
async fn force_with_nothing_in_flight_fires_the_hard_signal() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(30))
        .build()
        .unwrap();
    let signal = c.signal();
    c.force();
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert!(signal.is_forced(), "hard signal");
    assert_eq!(report.drain_outcome, DrainOutcome::Forced, "{report}");
    assert!(report.stragglers.is_empty());
    assert_eq!(c.phase(), Phase::Done);
}

#[tokio::test(start_paused = true)]
async fn hooks_are_isolated_and_reported() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .cleanup_timeout(Duration::from_secs(10))
        .hook_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (ran_tx, mut ran_rx) = mpsc::unbounded_channel::<&'static str>();
    let tx = ran_tx.clone();
    c.on_shutdown("errors", move || async move {
        tx.send("errors").unwrap();
        Err::<(), _>(std::io::Error::other("pool already closed"))
    })
    .unwrap();
    c.on_shutdown("panics", || async {
        if true {
            panic!("hook bug");
        }
        Ok::<(), Infallible>(())
    })
    .unwrap();
    c.on_shutdown("hangs", || async {
        std::future::pending::<()>().await;
        Ok::<(), Infallible>(())
    })
    .unwrap();
    let tx = ran_tx.clone();
    c.on_shutdown_with_timeout("flush", Duration::from_secs(1), move || async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send("flush").unwrap();
        Ok::<(), Infallible>(())
    })
    .unwrap();
    drop(ran_tx);
    c.trigger();
    let report = timeout(Duration::from_secs(30), c.wait()).await.unwrap();
    let outcomes: Vec<_> = report
        .hooks
        .iter()
        .map(|h| (h.name.as_ref(), h.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("errors", HookOutcome::Failed("pool already closed".into())),
            ("panics", HookOutcome::Panicked("hook bug".into())),
            ("hangs", HookOutcome::TimedOut),
            ("flush", HookOutcome::Completed),
        ]
    );
    assert_eq!(report.hooks[2].elapsed, Duration::from_secs(2));
    assert!(report.cleanup < Duration::from_secs(3));
    assert_eq!(ran_rx.recv().await, Some("errors"));
    assert_eq!(ran_rx.recv().await, Some("flush"));
    assert!(!report.is_clean());
    // Too late to register now.
    let err = c
        .on_shutdown("late", || async { Ok::<(), Infallible>(()) })
        .unwrap_err();
    assert!(err.to_string().contains("after cleanup began"));
}

#[tokio::test(start_paused = true)]
async fn hooks_share_the_cleanup_budget() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .cleanup_timeout(Duration::from_secs(3))
        .hook_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for name in ["a", "b", "c"] {
        c.on_shutdown(name, || async {
            std::future::pending::<()>().await;
            Ok::<(), Infallible>(())
        })
        .unwrap();
    }
    c.trigger();
    let report = c.wait().await;
    let o: Vec<_> = report.hooks.iter().map(|h| h.outcome.clone()).collect();
    assert_eq!(
        o,
        vec![
            HookOutcome::TimedOut,
            HookOutcome::TimedOut,
            HookOutcome::Skipped
        ]
    );
    assert_eq!(report.hooks[1].timeout, Duration::from_secs(1));
    assert!(report.cleanup <= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn trigger_is_idempotent_and_wait_repeatable() {
    let c = coordinator();
    assert!(c.trigger());
    assert!(!c.trigger());
    let a = c.wait().await;
    let b = c.wait().await;
    assert_eq!(a.total, b.total);
    assert_eq!(a.cause, TriggerCause::Api);
    assert!(!c.trigger());
    assert_eq!(c.phase(), Phase::Done);
}

// ---------- configuration ----------

#[test]
fn build_outside_a_runtime_says_so() {
    let e = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "runtime");
    assert_eq!(e.kind(), ConfigErrorKind::NoRuntime);
    assert!(e.is_no_runtime(), "{e}");
    assert!(
        e.to_string()
            .contains("call build() inside a Tokio runtime"),
        "{e}"
    );
    // Not a configuration mistake: the message does not say so.
    assert!(!e.to_string().contains("invalid"), "{e}");
    assert!(std::error::Error::source(&e).is_none());
}
