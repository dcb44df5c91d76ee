//! The driver's death is an event (issue 17): whatever runtime built or
//! first drove the coordinator, every waiter either sees the shutdown through
//! or starts a new driver on its own runtime. Each wait is bounded.

use std::time::Duration;

use tower_graceful::report::DrainOutcome;
use tower_graceful::Coordinator;

const WAIT: Duration = Duration::from_secs(10);

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn build_on(rt: &tokio::runtime::Runtime, pre_drain: Duration) -> Coordinator {
    rt.block_on(async {
        Coordinator::builder()
            .handle_signals(false)
            .pre_drain_delay(pre_drain)
            .drain_deadline(Duration::from_secs(5))
            .build()
            .unwrap()
    })
}

/// Built on a current-thread runtime that stays alive but is never driven
/// again (a test's or a `main`'s first runtime): trigger and wait on another.
#[test]
fn trigger_and_wait_on_another_runtime_while_the_building_one_idles() {
    let idle = current_thread();
    let c = build_on(&idle, Duration::from_millis(20));
    let other = current_thread();
    let report = other.block_on(async {
        let task = c.track("job");
        c.trigger();
        drop(task);
        tokio::time::timeout(WAIT, c.wait())
            .await
            .expect("wait returned")
    });
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert_eq!(report.in_flight_at_drain, 0);
    drop(idle);
}

/// The shutdown was triggered on runtime A (its driver spawned there); a
/// waiter on runtime B has started when A is dropped: B's waiter is told
/// and drives the rest.
#[test]
fn a_waiter_takes_over_when_the_driving_runtime_is_dropped() {
    let a = current_thread();
    let c = build_on(&a, Duration::from_millis(50));
    let job = a.block_on(async {
        let job = c.track("job");
        c.trigger(); // the driver is spawned on `a`
        job
    });
    let b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let waiter = {
        let c = c.clone();
        b.spawn(async move { c.wait().await })
    };
    // The waiter is registered on `b`; now the driver's runtime goes.
    drop(a);
    drop(job);
    let report = b
        .block_on(async { tokio::time::timeout(WAIT, waiter).await })
        .expect("the waiter was told")
        .unwrap();
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert_eq!(
        report.in_flight_at_drain, 0,
        "the job ended before draining"
    );
    assert!(report.pre_drain >= Duration::from_millis(50));
}

/// `drained()`, `draining()` and `close_connections()` keep the shutdown
/// driven too, without `wait()`.
#[test]
fn every_waiting_future_drives_a_shutdown_triggered_off_runtime() {
    let idle = current_thread();
    let c = build_on(&idle, Duration::from_millis(10));
    // Triggered from a plain thread: no runtime to spawn a driver on.
    let t = {
        let c = c.clone();
        std::thread::spawn(move || c.trigger())
    };
    assert!(t.join().unwrap());
    let rt = current_thread();
    rt.block_on(async {
        tokio::time::timeout(WAIT, c.draining())
            .await
            .expect("draining");
        tokio::time::timeout(WAIT, c.close_connections())
            .await
            .expect("close_connections");
        tokio::time::timeout(WAIT, c.drained())
            .await
            .expect("drained");
        let report = tokio::time::timeout(WAIT, c.wait()).await.expect("wait");
        assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    });
}

/// Polled by an executor that is not Tokio's, a waiting future says what to
/// do instead of hanging.
#[test]
fn waiting_outside_a_tokio_runtime_panics_with_a_message() {
    let rt = current_thread();
    let c = build_on(&rt, Duration::ZERO);
    drop(rt);
    let panic = std::thread::spawn(move || block_on(c.wait()))
        .join()
        .expect_err("no runtime: a panic");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(
        message.contains("inside a Tokio runtime"),
        "panic message: {message:?}"
    );
}

/// A minimal executor that is not Tokio's: polls on this thread, parks
/// between wake-ups.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
