//! `ShutdownSignal`: when it fires, `ShutdownSignal::current()`, the
//! `AddSignalLayer` extension, the conversion from a `CancellationToken`, and
//! the axum extractor (feature `axum`).

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::{timeout, Instant};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_graceful::add_signal::*;
use tower_graceful::coordinator::*;
use tower_graceful::report::*;
use tower_graceful::signal::*;

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn signal_fires_at_start_of_draining_not_at_trigger() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(3))
        .build()
        .unwrap();
    let signal = c.signal();
    assert!(!signal.is_draining());
    assert!(signal.deadline().is_none());
    let t0 = Instant::now();
    c.trigger();
    tokio::task::yield_now().await;
    assert!(!signal.is_draining(), "not during the pre-drain delay");
    timeout(WAIT, signal.draining()).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert!(signal.is_draining());
    assert!(signal.deadline().is_some());
    // A late subscriber sees it fired.
    let late = c.signal();
    assert!(late.is_draining());
    timeout(Duration::from_millis(1), late.draining())
        .await
        .expect("already fired");
    let token = late.cancellation_token();
    assert!(token.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn looping_handler_exits_and_drain_completes() {
    let c = coordinator();
    let svc = ServiceBuilder::new().layer(c.layer()).service(service_fn(
        |_req: Request<String>| async move {
            let signal = ShutdownSignal::current().expect("polled by the InFlight layer");
            let mut ticks = 0u32;
            loop {
                tokio::select! {
                    _ = signal.draining() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => ticks += 1,
                }
            }
            Ok::<_, Infallible>(Response::new(format!("ticks {ticks}")))
        },
    ));
    let task = tokio::spawn(svc.oneshot(get("/loop")));
    tokio::time::sleep(Duration::from_millis(550)).await;
    c.trigger();
    let res = timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    assert_eq!(c.in_flight(), 1, "counted until the body is read");
    assert_eq!(body_text(res).await, "ticks 5");
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.stragglers.is_empty());
}

#[tokio::test]
async fn current_signal_is_scoped_to_the_layer_and_signal_layer_fills_extensions() {
    let c = coordinator();
    assert!(
        ShutdownSignal::current().is_none(),
        "nothing outside a request"
    );
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .layer(AddSignalLayer::new(&c))
        .service(service_fn(|req: Request<String>| async move {
            let from_ext = req.extensions().get::<ShutdownSignal>().is_some();
            let current = ShutdownSignal::current().is_some();
            Ok::<_, Infallible>(Response::new(format!("{from_ext} {current}")))
        }));
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(body_text(res).await, "true true");
    assert!(
        ShutdownSignal::current().is_none(),
        "restored after the poll"
    );
}

#[tokio::test]
async fn signal_from_cancellation_token() {
    let token = tokio_util::sync::CancellationToken::new();
    let signal = ShutdownSignal::from(token.clone());
    assert!(!signal.is_draining());
    token.cancel();
    timeout(WAIT, signal.draining()).await.unwrap();
    let back: tokio_util::sync::CancellationToken = signal.into();
    assert!(back.is_cancelled());
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_and_missing_layer_rejection() {
    use axum::routing::get as route_get;
    use axum::Router;
    use http::StatusCode;
    async fn handler(signal: ShutdownSignal) -> String {
        format!("shutting down: {}", signal.is_draining())
    }
    async fn optional(signal: Option<ShutdownSignal>) -> String {
        format!("present: {}", signal.is_some())
    }
    let c = coordinator();
    let with = Router::new()
        .route("/", route_get(handler))
        .layer(c.layer());
    let res = with.oneshot(get_axum("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, "shutting down: false");

    let without = Router::new()
        .route("/", route_get(handler))
        .route("/opt", route_get(optional));
    let res = without.clone().oneshot(get_axum("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_text(res).await;
    assert!(text.contains("coordinator.layer()"), "{text}");
    assert!(text.contains("AddSignalLayer"), "{text}");
    let res = without.oneshot(get_axum("/opt")).await.unwrap();
    assert_eq!(body_text(res).await, "present: false");
}

#[cfg(feature = "axum")]
fn get_axum(path: &str) -> Request<axum::body::Body> {
    Request::get(path).body(axum::body::Body::empty()).unwrap()
}
