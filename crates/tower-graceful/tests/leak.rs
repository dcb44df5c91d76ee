//! Nothing is leaked per coordinator or per call: 10,000 coordinators, each
//! configured with every configuring method, serving a request, triggered
//! or not, and dropped, leave the resident memory where it was.
//!
//! The heap is measured exactly (a counting allocator); the resident set
//! size is printed too (Linux), and checked loosely.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;
use tower::{service_fn, Layer, ServiceExt};
use tower_graceful::add_signal::AddSignalLayer;
use tower_graceful::drain::DrainLayer;
use tower_graceful::in_flight::InFlightLayer;
use tower_graceful::probe::ProbeLayer;
use tower_graceful::{Coordinator, ShutdownSignal};

const ROUNDS: usize = 10_000;

/// Counts the bytes allocated and not freed, exactly (the resident set size
/// is printed too, for the note, but allocators keep freed memory).
struct Counting;

static LIVE_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}
const WARM_UP: usize = 1_000;

/// Resident set size in KiB (Linux), `None` elsewhere.
fn rss_kib() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

fn app() -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

async fn one_coordinator(i: usize) {
    let c = Coordinator::builder()
        .pre_drain_delay(Duration::ZERO)
        .readiness_path("/ready")
        .liveness_path("/live")
        .exempt_path("/metrics")
        .build()
        .unwrap();
    // Every configuring method of every layer, once per coordinator.
    let graceful = c
        .layer()
        .exempt("/extra")
        .respond_with(|_| Response::new(Bytes::from_static(b"busy")));
    let drain = DrainLayer::new(&c)
        .exempt("/extra")
        .respond_with(|_| Response::new(Bytes::from_static(b"busy")));
    let stack = tower::ServiceBuilder::new()
        .layer(ProbeLayer::new(&c))
        .layer(drain)
        .layer(InFlightLayer::new(&c))
        .layer(AddSignalLayer::new(&c))
        .service(app());
    let fused = graceful.layer(app());
    let body = fused
        .oneshot(Request::new(Full::new(Bytes::new())))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "ok");
    let _ = stack
        .oneshot(Request::new(Full::new(Bytes::new())))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let gate = c.readiness().gate("warm-up");
    gate.set_ready(true);
    let task = c.track("job");
    let standalone = ShutdownSignal::from(CancellationToken::new());
    let _child = standalone.track("work");
    if i % 2 == 0 {
        // Half of them shut down before being dropped.
        drop(task);
        c.trigger();
        let report = c.wait().await;
        assert_eq!(report.in_flight_at_drain, 0);
    }
}

/// What one signal made from a bare token costs while it lives, and that it
/// is all given back. Part of the one test of this binary: the heap is one
/// for the whole process, and the test harness allocates while other tests
/// run.
fn a_signal_from_a_token_is_small_and_freed() {
    let before = live_bytes();
    let signal = ShutdownSignal::from(CancellationToken::new());
    let alive = live_bytes() - before;
    drop(signal);
    let after = live_bytes() - before;
    println!("ShutdownSignal::from(CancellationToken): {alive} bytes while alive, {after} after");
    // One shard of the tracker, not one per core.
    assert!(alive < 16 * 1024, "{alive} bytes for a standalone signal");
    assert_eq!(after, 0);
}

#[test]
fn nothing_is_leaked() {
    a_signal_from_a_token_is_small_and_freed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(coordinators_leave_memory_flat());
}

async fn coordinators_leave_memory_flat() {
    for i in 0..WARM_UP {
        one_coordinator(i).await;
        tokio::task::yield_now().await;
    }
    let before = rss_kib();
    let bytes_before = live_bytes();
    for i in 0..ROUNDS {
        one_coordinator(i).await;
        // The coordinators' own tasks end when they see that nothing can
        // trigger them any more: let them run.
        tokio::task::yield_now().await;
    }
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    let after = rss_kib();
    let bytes_after = live_bytes();
    println!("live heap bytes before {bytes_before}, after {ROUNDS} coordinators {bytes_after}");
    // Exact: nothing of a coordinator may stay (a few KiB of slack for the
    // runtime's own bookkeeping).
    assert!(
        bytes_after - bytes_before < 16 * 1024,
        "{} bytes stayed allocated over {ROUNDS} coordinators",
        bytes_after - bytes_before
    );
    match (before, after) {
        (Some(before), Some(after)) => {
            println!("RSS before {before} KiB, after {ROUNDS} coordinators {after} KiB");
            // A leak of the state alone (one tracker shard is about 5 KiB,
            // a coordinator has at least 8) would add hundreds of MiB.
            assert!(
                after.saturating_sub(before) < 8 * 1024,
                "resident memory grew from {before} KiB to {after} KiB over {ROUNDS} coordinators"
            );
        }
        _ => println!("skipped the memory check: no /proc/self/statm on this system"),
    }
}
