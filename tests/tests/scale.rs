//! Scale and soak: 10,000 concurrent requests across a shutdown, and a
//! million short requests through the stack. In-process through a real axum
//! `Router` (10k loopback sockets would measure the kernel, not the crate).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;
use tower_graceful::{report::DrainOutcome, Coordinator};

const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_in_flight_across_a_shutdown() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(60))
        .build()
        .unwrap();
    let (release_tx, release_rx) = watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_arrived = Arc::new(Notify::new());

    let wait_release = {
        let arrived = arrived.clone();
        let all_arrived = all_arrived.clone();
        move |mut rx: watch::Receiver<bool>| {
            let arrived = arrived.clone();
            let all_arrived = all_arrived.clone();
            async move {
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 == N {
                    all_arrived.notify_one();
                }
                rx.wait_for(|r| *r).await.unwrap();
            }
        }
    };
    let (w1, w2) = (wait_release.clone(), wait_release);
    let (r1, r2) = (release_rx.clone(), release_rx);
    let app = Router::new()
        .route(
            "/unary",
            get(move || {
                let w = w1.clone();
                let r = r1.clone();
                async move {
                    w(r).await;
                    "unary done"
                }
            }),
        )
        .route(
            "/stream",
            get(move || {
                let w = w2.clone();
                let r = r2.clone();
                async move {
                    w(r).await;
                    let chunks = stream::iter(
                        ["a", "b", "c"].map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from(s))),
                    );
                    Body::from_stream(chunks)
                }
            }),
        )
        .layer(c.layer());

    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let app = app.clone();
        let path = if i % 2 == 0 { "/unary" } else { "/stream" };
        tasks.push(tokio::spawn(async move {
            let req = Request::get(path).body(Body::empty()).unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), all_arrived.notified())
        .await
        .expect("all 10k requests reached their handlers");
    assert_eq!(c.in_flight(), N);

    let t0 = Instant::now();
    c.trigger();
    tokio::time::timeout(Duration::from_secs(10), c.draining())
        .await
        .unwrap();
    // A request that still arrives while the 10k are in flight (on an open
    // connection, as an L4 balancer's client sends it) is served and
    // counted: the drain waits for it too.
    let late = tokio::spawn({
        let app = app.clone();
        async move {
            let req = Request::get("/unary").body(Body::empty()).unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            (status, res.into_body().collect().await.unwrap().to_bytes())
        }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while arrived.load(Ordering::SeqCst) <= N {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the late request reached its handler");
    assert_eq!(c.in_flight(), N + 1);

    release_tx.send(true).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), c.wait())
        .await
        .expect("drain completes");
    let drain_time = t0.elapsed();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let want: &[u8] = if i % 2 == 0 { b"unary done" } else { b"abc" };
        assert_eq!(&body[..], want, "request {i} arrived whole");
    }
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("the late request completes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"unary done");
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.stragglers.is_empty());
    assert_eq!(report.in_flight_at_drain, N);
    assert_eq!(report.completed_while_draining, N + 1);
    assert_eq!(report.served_while_draining, 1);
    assert_eq!(report.rejected, 0);
    assert_eq!(c.in_flight(), 0);
    println!(
        "drained {N} concurrent requests in {drain_time:?} (drain phase {:?})",
        report.drain
    );
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_a_million_requests_counter_returns_to_zero_and_memory_is_flat() {
    const TOTAL: usize = 1_000_000;
    const WORKERS: usize = 4;
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(c.layer());

    async fn run(app: Router, n: usize) {
        for _ in 0..n {
            let res = app
                .clone()
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().collect().await.unwrap();
        }
    }
    async fn batch(app: &Router, n: usize) {
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| tokio::spawn(run(app.clone(), n / WORKERS)))
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }

    let t0 = Instant::now();
    batch(&app, TOTAL / 5).await;
    assert_eq!(c.in_flight(), 0);
    let rss_warm = rss_kib("VmRSS:");
    batch(&app, TOTAL - TOTAL / 5).await;
    assert_eq!(c.in_flight(), 0, "counter back to exactly zero");
    let rss_end = rss_kib("VmRSS:");
    let peak = rss_kib("VmHWM:");
    println!(
        "soak: {TOTAL} requests in {:?}; RSS after 200k {:?} KiB, after 1M {:?} KiB, peak {:?} KiB",
        t0.elapsed(),
        rss_warm,
        rss_end,
        peak
    );
    if let (Some(a), Some(b)) = (rss_warm, rss_end) {
        // A leak of even 8 bytes per request would add 6 MiB here.
        assert!(
            b.saturating_sub(a) < 4 * 1024,
            "memory grew by {} KiB over 800k requests",
            b - a
        );
    }
    c.trigger();
    let report = tokio::time::timeout(Duration::from_secs(10), c.wait())
        .await
        .unwrap();
    assert!(report.is_clean());
}
