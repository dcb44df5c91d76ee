//! `InFlight`: a request is counted from `call` until its response body
//! ends or is dropped, whatever happens to it (errors, panics, disconnects).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::timeout;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_graceful::coordinator::*;
use tower_graceful::in_flight::*;
use tower_graceful::probe::*;

mod common;
use common::*;

#[tokio::test]
async fn counter_follows_call_future_and_body() {
    let c = coordinator();
    let (tx, body) = channel_body();
    let mut body = Some(body);
    let mut svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(move |_req: Request<String>| {
            let b = body.take().expect("called once");
            async move { Ok::<_, Infallible>(Response::new(b)) }
        }));

    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    assert_eq!(c.in_flight(), 0, "poll_ready must not count");

    let fut = svc.call(get("/stream"));
    assert_eq!(c.in_flight(), 1, "counted from call");

    let res = fut.await.unwrap();
    assert_eq!(c.in_flight(), 1, "still counted while the body streams");

    let mut body = res.into_body();
    tx.send(Bytes::from_static(b"a")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");
    assert_eq!(c.in_flight(), 1);

    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(c.in_flight(), 0, "released when the body ends");
    drop(body);
    assert_eq!(c.in_flight(), 0, "not released twice");
}

#[tokio::test]
async fn counter_released_when_body_dropped_early() {
    let c = coordinator();
    let (tx, body) = channel_body();
    let mut body = Some(body);
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(move |_req: Request<String>| {
            let b = body.take().unwrap();
            async move { Ok::<_, Infallible>(Response::new(b)) }
        }));
    let res = svc.oneshot(get("/")).await.unwrap();
    tx.send(Bytes::from_static(b"partial")).await.unwrap();
    assert_eq!(c.in_flight(), 1);
    drop(res); // client went away mid-stream
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn counter_released_when_future_dropped() {
    let c = coordinator();
    let mut svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(|_req: Request<String>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let fut = svc.call(get("/hang"));
    assert_eq!(c.in_flight(), 1);
    drop(fut); // client disconnected before the response
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn untracked_paths_are_not_counted() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .untracked_path("/events/firehose")
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(ok_handler));
    let a = svc.call(get(GRPC_HEALTH_WATCH));
    let b = svc.call(get("/events/firehose"));
    assert_eq!(c.in_flight(), 0);
    let d = svc.call(get("/events"));
    assert_eq!(c.in_flight(), 1);
    drop((a, b, d));
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn counter_released_on_inner_error() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(|_req: Request<String>| async {
            Err::<Response<String>, _>(std::io::Error::other("boom"))
        }));
    assert!(svc.oneshot(get("/")).await.is_err());
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn fixed_length_body_keeps_exact_size_hint() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(FixedBody::new("hello")))
        }));
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(res.body().size_hint().exact(), Some(5));
    assert_eq!(c.in_flight(), 1);
    assert_eq!(body_text(res).await, "hello");
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn empty_body_is_released_without_polling() {
    // hyper skips polling a body whose is_end_stream() is already true.
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(FixedBody::empty()))
        }));
    let res = svc.oneshot(get("/")).await.unwrap();
    assert!(res.body().is_end_stream());
    assert_eq!(c.in_flight(), 0);
}

async fn panicking(_req: Request<String>) -> Result<Response<String>, Infallible> {
    panic!("handler bug")
}

#[tokio::test]
async fn counter_released_when_handler_panics_without_catch_panic() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(panicking));
    // As in hyper: the connection task panics and its future is dropped.
    let task = tokio::spawn(svc.oneshot(get("/panic")));
    let err = timeout(WAIT, task).await.unwrap().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn counter_released_when_handler_panics_with_catch_panic_outside() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(InFlightLayer::new(&c))
        .service(service_fn(panicking));
    let res = svc.oneshot(get("/panic")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn counter_released_when_handler_panics_with_catch_panic_inside() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service(service_fn(panicking));
    let res = svc.oneshot(get("/panic")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let _ = body_text(res).await;
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test]
async fn panic_in_synchronous_call_releases() {
    #[derive(Clone)]
    struct Explodes;
    impl Service<Request<String>> for Explodes {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<String>) -> Self::Future {
            panic!("sync panic in call")
        }
    }
    let c = coordinator();
    let mut svc = InFlight::new(Explodes, &c);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(get("/")));
    }));
    assert!(r.is_err());
    assert_eq!(c.in_flight(), 0);
}
