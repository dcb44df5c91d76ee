//! Drain wake latency: on a 2-worker multi-thread runtime, the time from the
//! last guard (or response body) being dropped in one runtime task to the task
//! awaiting the drain being woken and running, for:
//!
//! * tower-graceful: `c.trigger(); c.draining().await`, then a task awaits
//!   `c.drained()` (woken by the last guard itself) or `c.wait()` (the
//!   report: one more task hop, through the coordinator's driver; pre-drain
//!   0, no hooks) while another drops the last `c.track(..)` guard, or the
//!   last response body of the full stack;
//! * tokio-util: `TaskTracker::close()` + `wait()` vs the last `token()`;
//! * tokio-graceful: trigger, then `Shutdown::shutdown()` vs the last
//!   `ShutdownGuard`.
//!
//! The releaser stamps `Instant::now()` just before the drop; the waiter stamps
//! it right after its await returns. An iteration counts only if the waiter
//! was really parked (its future returned `Pending` at least once). Scenarios
//! are interleaved per iteration. Prints a Markdown table of percentiles.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench drain_wake`
//! (`BENCH_WAKE_ITERS`, default 5000 per scenario).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tower_graceful_benches::report::{self, env_or};
use tower_graceful_benches::services::{get_root, Hello};
use tower_layer::Layer;
use tower_service::Service;

/// Awaits `f`, and says whether it ever returned `Pending`.
async fn parked<F: Future>(f: F) -> (F::Output, bool) {
    let mut f = pin!(f);
    let mut pended = false;
    let out = poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Pending => {
            pended = true;
            Poll::Pending
        }
        ready => ready,
    })
    .await;
    (out, pended)
}

/// Gives the waiter time to park after it said it is about to.
fn settle() {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(20) {
        std::hint::spin_loop();
    }
}

/// Runs `wait` in one task and drops `release` in another once `wait` is
/// parked; returns the latency if the waiter was really parked.
async fn measure<W, R>(wait: W, release: R) -> Option<Duration>
where
    W: Future + Send + 'static,
    R: Send + 'static,
{
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let waiter = tokio::spawn(async move {
        let _ = ready_tx.send(());
        let (_, pended) = parked(wait).await;
        (Instant::now(), pended)
    });
    let releaser = tokio::spawn(async move {
        let _ = ready_rx.await;
        settle();
        let t0 = Instant::now();
        drop(release);
        t0
    });
    let t0 = releaser.await.unwrap();
    let (t1, pended) = waiter.await.unwrap();
    pended.then(|| t1.saturating_duration_since(t0))
}

async fn tower_graceful_guard(report: bool) -> Option<Duration> {
    let c = tower_graceful_benches::coordinator();
    let guard = c.track("bench");
    c.trigger();
    c.draining().await;
    let waiter = c.clone();
    if report {
        measure(async move { waiter.wait().await }, guard).await
    } else {
        measure(async move { waiter.drained().await }, guard).await
    }
}

async fn tower_graceful_body(report: bool) -> Option<Duration> {
    let c = tower_graceful_benches::coordinator();
    let mut svc = c.layer().layer(Hello);
    let res = svc.call(get_root()).await.unwrap();
    let body = res.into_body();
    assert_eq!(c.in_flight(), 1, "the body holds the request");
    c.trigger();
    c.draining().await;
    let waiter = c.clone();
    if report {
        measure(async move { waiter.wait().await }, body).await
    } else {
        measure(async move { waiter.drained().await }, body).await
    }
}

async fn task_tracker() -> Option<Duration> {
    let tracker = tokio_util::task::TaskTracker::new();
    let token = tracker.token();
    tracker.close();
    measure(async move { tracker.wait().await }, token).await
}

async fn tokio_graceful() -> Option<Duration> {
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = tokio_graceful::Shutdown::new(async move {
        let _ = rx.await;
    });
    let guard = shutdown.guard();
    let _ = tx.send(());
    guard.cancelled().await;
    measure(async move { shutdown.shutdown().await }, guard).await
}

type Scenario = fn() -> std::pin::Pin<Box<dyn Future<Output = Option<Duration>> + Send>>;

fn main() {
    if !report::is_bench_run() {
        return; // `cargo test --benches`: nothing to smoke-test beyond compiling
    }
    let iters = env_or("BENCH_WAKE_ITERS", 5000usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenarios: [(&str, Scenario); 6] = [
        (
            "tower-graceful: last `track` guard -> `c.drained()`",
            || Box::pin(tower_graceful_guard(false)),
        ),
        (
            "tower-graceful: last response body -> `c.drained()`",
            || Box::pin(tower_graceful_body(false)),
        ),
        ("tower-graceful: last `track` guard -> `c.wait()`", || {
            Box::pin(tower_graceful_guard(true))
        }),
        ("tower-graceful: last response body -> `c.wait()`", || {
            Box::pin(tower_graceful_body(true))
        }),
        ("tokio-util: last `TaskTracker::token` -> `wait()`", || {
            Box::pin(task_tracker())
        }),
        (
            "tokio-graceful: last `ShutdownGuard` -> `shutdown()`",
            || Box::pin(tokio_graceful()),
        ),
    ];
    // Warm-up.
    for (_, s) in &scenarios {
        for _ in 0..50 {
            rt.block_on(s());
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); scenarios.len()];
    let mut skipped = vec![0usize; scenarios.len()];
    for i in 0..iters {
        for k in 0..scenarios.len() {
            let j = (i + k) % scenarios.len();
            match rt.block_on((scenarios[j].1)()) {
                Some(d) => samples[j].push(d.as_nanos() as f64 / 1000.0),
                None => skipped[j] += 1,
            }
        }
    }
    println!();
    println!("### drain wake latency (µs), {iters} iterations per scenario, 2 workers");
    println!();
    println!("| scenario | n | median | p90 | p99 | max | mean |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (j, (name, _)) in scenarios.iter().enumerate() {
        let v = &samples[j];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            v.len(),
            report::median(v),
            report::percentile(v, 90.0),
            report::percentile(v, 99.0),
            report::percentile(v, 100.0),
            mean
        );
    }
    println!();
    if skipped.iter().any(|&s| s > 0) {
        println!("(iterations discarded because the waiter was not parked yet: {skipped:?})");
    }
}
