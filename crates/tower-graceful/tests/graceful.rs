//! The combined layer (`coordinator.layer()`, `Graceful`): a custom
//! rejection keeps what makes it retryable; services, futures and bodies are
//! `Send` and `Sync`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use tokio::time::timeout;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_graceful::coordinator::*;
use tower_graceful::probe::*;
use tower_graceful::signal::*;
use tower_graceful::*;

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn custom_rejection_on_the_combined_layer_keeps_what_makes_it_retryable() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .retry_after(Duration::from_secs(3))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer().respond_with(|ctx| {
            let mut res = Response::new(Bytes::from_static(b"{\"error\":\"draining\"}"));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            if ctx.path() == "/keep" {
                res.headers_mut()
                    .insert("connection", "keep-alive".parse().unwrap());
            }
            res
        }))
        .service(service_fn(ok_handler));
    c.trigger();
    timeout(WAIT, c.wait()).await.unwrap(); // drained at once: every request is rejected
    let res = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3", "added");
    assert_eq!(res.headers()["connection"], "close", "added on HTTP/1.1");
    assert_eq!(body_text(res).await, "{\"error\":\"draining\"}");
    let res = svc.clone().oneshot(get("/keep")).await.unwrap();
    assert_eq!(
        res.headers()["connection"],
        "keep-alive",
        "the function's own value stands"
    );
    let mut req = get("/");
    *req.version_mut() = Version::HTTP_2;
    let res = svc.oneshot(req).await.unwrap();
    assert!(res.headers().get("connection").is_none(), "never on HTTP/2");
    assert_eq!(res.headers()["retry-after"], "3");
}

// ---------- auto traits ----------

#[allow(dead_code)]
fn assert_send<T: Send>() {}
#[allow(dead_code)]
fn assert_sync<T: Sync>() {}

#[test]
fn services_futures_and_bodies_are_send_and_sync() {
    type Svc = tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>;
    type Fut = <Svc as Service<Request<String>>>::Future;
    assert_send::<Coordinator>();
    assert_sync::<Coordinator>();
    assert_send::<ShutdownSignal>();
    assert_sync::<ShutdownSignal>();
    assert_send::<TaskGuard>();
    assert_sync::<TaskGuard>();
    assert_send::<Graceful<Svc>>();
    assert_sync::<Graceful<Svc>>();
    assert_send::<GracefulLayer>();
    assert_sync::<GracefulLayer>();
    assert_send::<tower_graceful::in_flight::ResponseFuture<Fut>>();
    assert_send::<tower_graceful::drain::ResponseFuture<Fut>>();
    assert_send::<tower_graceful::in_flight::ResponseBody<String>>();
    assert_sync::<tower_graceful::in_flight::ResponseBody<String>>();
    assert_send::<tower_graceful::drain::ResponseBody<String>>();
    assert_sync::<tower_graceful::drain::ResponseBody<String>>();
    assert_send::<Draining>();
    assert_send::<ReadinessService>();
    assert_sync::<ReadinessService>();
}
