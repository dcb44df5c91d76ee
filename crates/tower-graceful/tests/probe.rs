//! Readiness, liveness and readiness gates, and where the probe paths
//! answer (`Router::layer` against `Router::route_layer`).

use std::time::Duration;

use http::{Request, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_graceful::coordinator::*;
use tower_graceful::probe::*;

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn readiness_flips_at_trigger_before_pre_drain_ends() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(10))
        .readiness_path("/ready")
        .liveness_path("/live")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    let probe = |p: &'static str| {
        let svc = svc.clone();
        async move {
            let res = svc.oneshot(get(p)).await.unwrap();
            let status = res.status();
            (status, body_text(res).await)
        }
    };
    assert_eq!(probe("/ready").await, (StatusCode::OK, "ready\n".into()));
    let t0 = Instant::now();
    c.trigger();
    assert_eq!(
        probe("/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    );
    assert_eq!(probe("/live").await, (StatusCode::OK, "live\n".into()));
    // Still serving during the pre-drain delay.
    assert_eq!(probe("/api").await.0, StatusCode::OK);
    assert_eq!(c.phase(), Phase::Triggered);
    c.draining().await;
    assert!(t0.elapsed() >= Duration::from_secs(10));
    assert_eq!(probe("/live").await.0, StatusCode::OK, "liveness stays up");
    assert_eq!(probe("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(probe("/api").await.0, StatusCode::SERVICE_UNAVAILABLE);
    c.wait().await;
    assert_eq!(
        probe("/live").await.0,
        StatusCode::OK,
        "liveness up to the end"
    );
}

#[tokio::test]
async fn readiness_gates() {
    let c = coordinator();
    let readiness = c.readiness();
    let mut svc = c.readiness_service();
    let status = |svc: &mut ReadinessService| {
        let fut = svc.call(get("/ready"));
        async move {
            let res = fut.await.unwrap();
            (res.status(), body_text(res).await)
        }
    };
    assert_eq!(status(&mut svc).await.0, StatusCode::OK);
    let warmup = readiness.gate("warmup");
    assert_eq!(
        status(&mut svc).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: warmup\n".into()
        )
    );
    warmup.set_ready(true);
    assert!(warmup.is_ready());
    assert_eq!(status(&mut svc).await.0, StatusCode::OK);
    let db = readiness.gate("db");
    assert_eq!(readiness.status(), ReadinessStatus::NotReady("db".into()));
    drop(db);
    assert_eq!(
        readiness.status(),
        ReadinessStatus::Ready,
        "dropped gate is removed"
    );
    c.trigger();
    assert_eq!(readiness.status(), ReadinessStatus::ShuttingDown);
    warmup.set_ready(true);
    assert_eq!(status(&mut svc).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn probes_answer_head_and_reject_other_methods() {
    let c = coordinator();
    let res = c
        .readiness_service()
        .oneshot(Request::head("/ready").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.body().is_end_stream());
    let res = c
        .liveness_service()
        .oneshot(Request::post("/live").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
}

/// What the README and `Coordinator::layer` say about placement: with
/// `Router::layer` the configured probe paths answer; with
/// `Router::route_layer` they are not routes, so they answer 404.
#[tokio::test]
async fn probe_paths_answer_under_layer_and_404_under_route_layer() {
    use axum::routing::get;
    let c = Coordinator::builder()
        .handle_signals(false)
        .readiness_path("/ready")
        .build()
        .unwrap();
    let app = || axum::Router::new().route("/", get(|| async { "hello" }));
    let ready = || {
        Request::get("/ready")
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let res = app().layer(c.layer()).oneshot(ready()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app().route_layer(c.layer()).oneshot(ready()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
