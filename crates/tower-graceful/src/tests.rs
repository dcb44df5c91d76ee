//! Unit tests of the layers and the coordinator, in-process with
//! `ServiceBuilder` and `oneshot`, most on tokio's paused clock.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

use crate::add_signal::*;
use crate::coordinator::*;
use crate::drain::*;
use crate::in_flight::*;
use crate::probe::*;
use crate::report::*;
use crate::signal::*;
use crate::*;

const WAIT: Duration = Duration::from_secs(5);

fn coordinator() -> Coordinator {
    Coordinator::builder()
        .handle_signals(false)
        .build()
        .expect("valid config")
}

/// A streaming body fed by a channel: ends when the sender is dropped.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn channel_body() -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(8);
    (tx, ChannelBody { rx })
}

fn get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

async fn ok_handler(_req: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".to_owned()))
}

async fn body_text<B>(res: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = timeout(WAIT, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body ok")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

// ---------- in-flight counting ----------

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

// ---------- draining responder ----------

#[tokio::test(start_paused = true)]
async fn draining_rejects_new_requests_with_503() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .retry_after(Duration::from_secs(7))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    c.trigger();
    timeout(WAIT, c.draining()).await.unwrap();
    let res = svc.clone().oneshot(get("/api")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let h = res.headers();
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["connection"], "close");
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    let len: u64 = h["content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(res.body().size_hint().exact(), Some(len));
    assert_eq!(body_text(res).await, "service is shutting down; retry\n");
    assert_eq!(c.rejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn http2_rejection_has_no_connection_header() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c))
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    let mut req = get("/");
    *req.version_mut() = Version::HTTP_2;
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("connection").is_none());
}

#[tokio::test(start_paused = true)]
async fn grpc_request_gets_trailers_only_unavailable() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    let req = Request::post("/pkg.Svc/Method")
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc+proto")
        .body(String::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert!(!res.headers()["grpc-message"].is_empty());
    assert!(res.body().is_end_stream(), "trailers-only: no body");
}

#[tokio::test(start_paused = true)]
async fn exempt_paths_pass_while_draining() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .exempt_path("/metrics")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer().exempt("/internal"))
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    for path in ["/metrics", "/internal"] {
        let res = svc.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = svc.oneshot(get("/metrics/x")).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "exact match only"
    );
}

#[tokio::test(start_paused = true)]
async fn request_accepted_before_draining_completes() {
    let c = coordinator();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let mut release_rx = Some(release_rx);
    let svc =
        ServiceBuilder::new()
            .layer(c.layer())
            .service(service_fn(move |_req: Request<String>| {
                let rx = release_rx.take().unwrap();
                async move {
                    rx.await.unwrap();
                    Ok::<_, Infallible>(Response::new("done".to_owned()))
                }
            }));
    let fut = svc.oneshot(get("/slow"));
    let task = tokio::spawn(fut);
    tokio::task::yield_now().await;
    assert_eq!(c.in_flight(), 1);
    c.trigger();
    c.draining().await;
    assert_eq!(c.phase(), Phase::Draining);
    release_tx.send(()).unwrap();
    let res = timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await, "done");
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert_eq!(report.completed_while_draining, 1);
    assert_eq!(report.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_jitter_stays_in_range_and_varies() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .retry_after(Duration::from_secs(2))
        .retry_after_jitter(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c))
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let res = svc.clone().oneshot(get("/")).await.unwrap();
        let v: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((2..=7).contains(&v), "{v}");
        seen.insert(v);
    }
    assert!(seen.len() >= 3, "jitter should spread values: {seen:?}");
}

#[tokio::test(start_paused = true)]
async fn custom_rejection_response() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c).respond_with(|ctx| {
            let mut res = Response::new(Bytes::from_static(b"{\"error\":\"draining\"}"));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res.headers_mut()
                .insert("retry-after", ctx.retry_after().clone());
            res
        }))
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(body_text(res).await, "{\"error\":\"draining\"}");
}

#[tokio::test(start_paused = true)]
async fn rejection_does_not_echo_large_request() {
    let c = coordinator();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    c.trigger();
    c.draining().await;
    let big = "x".repeat(1 << 20);
    let req = Request::post("/upload")
        .header("x-big", big.clone())
        .body(big)
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let headers_len: usize = res
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    assert!(headers_len < 200, "{headers_len}");
    assert!(body_text(res).await.len() < 100);
}

// ---------- readiness and liveness ----------

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

// ---------- ShutdownSignal ----------

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

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_and_missing_layer_rejection() {
    use axum::routing::get as route_get;
    use axum::Router;
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

// ---------- configuration ----------

fn err(b: Builder) -> ConfigError {
    b.handle_signals(false).validate().unwrap_err()
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
    assert_send::<crate::in_flight::ResponseFuture<Fut>>();
    assert_send::<crate::drain::ResponseFuture<Fut>>();
    assert_send::<crate::in_flight::ResponseBody<String>>();
    assert_sync::<crate::in_flight::ResponseBody<String>>();
    assert_send::<crate::drain::ResponseBody<String>>();
    assert_sync::<crate::drain::ResponseBody<String>>();
    assert_send::<Draining>();
    assert_send::<ReadinessService>();
    assert_sync::<ReadinessService>();
}

// ---------- placement ----------

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

// ---------- connections: the lame duck; the draining policy ----------

fn h1_close(res: &Response<impl Body>) -> bool {
    res.headers()
        .get("connection")
        .is_some_and(|v| v == "close")
}

/// Sends `n` requests of `version` through `svc`; returns how many
/// responses announced `Connection: close`.
async fn closes<S, B>(svc: &S, n: usize, version: Version) -> usize
where
    S: Service<Request<String>, Response = Response<B>, Error = Infallible> + Clone,
    B: Body,
{
    let mut count = 0;
    for _ in 0..n {
        let mut req = get("/");
        *req.version_mut() = version;
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        count += usize::from(h1_close(&res));
    }
    count
}

#[tokio::test(start_paused = true)]
async fn lame_duck_share_rises_over_the_window_never_on_http2() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(10)) // the window, by default
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    let _job = c.track("keeps the drain open");
    const N: usize = 1000;
    assert_eq!(closes(&svc, N, Version::HTTP_11).await, 0, "serving");
    c.trigger();
    assert_eq!(closes(&svc, N, Version::HTTP_11).await, 0, "at the trigger");
    tokio::time::advance(Duration::from_millis(2_500)).await;
    let quarter = closes(&svc, N, Version::HTTP_11).await;
    tokio::time::advance(Duration::from_millis(5_000)).await;
    let three_quarters = closes(&svc, N, Version::HTTP_11).await;
    // Binomial(1000, p): 6 standard deviations are under ±0.09.
    assert!((160..=340).contains(&quarter), "{quarter} of {N} at 25 %");
    assert!(
        (660..=840).contains(&three_quarters),
        "{three_quarters} of {N} at 75 %"
    );
    assert_eq!(closes(&svc, N, Version::HTTP_2).await, 0, "HTTP/2 at 75 %");
    tokio::time::advance(Duration::from_millis(2_600)).await;
    timeout(WAIT, c.draining()).await.unwrap();
    assert_eq!(closes(&svc, N, Version::HTTP_11).await, N, "draining: all");
    assert_eq!(closes(&svc, N, Version::HTTP_10).await, N, "HTTP/1.0 too");
    assert_eq!(closes(&svc, N, Version::HTTP_2).await, 0, "never on HTTP/2");
    drop(_job);
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert_eq!(
        report.connections_told_to_close,
        quarter + three_quarters + 2 * N
    );
    assert_eq!(report.served_while_draining, 3 * N, "{report}");
    assert_eq!(report.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn lame_duck_window_zero_closes_every_response_from_the_trigger() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(10))
        .lame_duck_window(Duration::ZERO)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c))
        .layer(InFlightLayer::new(&c))
        .service(service_fn(ok_handler));
    c.trigger();
    assert_eq!(closes(&svc, 50, Version::HTTP_11).await, 50);
    // An upgrade answer is left alone: `Connection: upgrade` must stand.
    let upgrade =
        ServiceBuilder::new()
            .layer(c.layer())
            .service(service_fn(|_req: Request<String>| async {
                let mut res = Response::new(String::new());
                *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                res.headers_mut()
                    .insert("connection", "upgrade".parse().unwrap());
                Ok::<_, Infallible>(res)
            }));
    let res = upgrade.oneshot(get("/ws")).await.unwrap();
    assert_eq!(res.headers()["connection"], "upgrade");
}

#[tokio::test(start_paused = true)]
async fn while_draining_requests_are_served_until_too_late() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(10))
        .min_time_left(Duration::from_secs(2))
        .exempt_path("/metrics")
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    let job = c.track("long job");
    c.trigger();
    timeout(WAIT, c.draining()).await.unwrap();
    let res = svc.clone().oneshot(get("/api")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "8 s left: served");
    assert!(h1_close(&res));
    body_text(res).await;
    tokio::time::advance(Duration::from_millis(7_900)).await;
    let res = svc.clone().oneshot(get("/api")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "2.1 s left: served");
    body_text(res).await;
    tokio::time::advance(Duration::from_millis(200)).await;
    let res = svc.clone().oneshot(get("/api")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "1.9 s left");
    assert_eq!(res.headers()["connection"], "close");
    body_text(res).await;
    let res = svc.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "exempt paths always pass");
    body_text(res).await;
    assert_eq!(c.in_flight(), 1, "the rejected request is not counted");
    drop(job);
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert_eq!(report.rejected, 1, "{report}");
    assert_eq!(report.served_while_draining, 3, "{report}");
    assert_eq!(
        report.completed_while_draining, 3,
        "a turned-away request is no completion: {report}"
    );
}

/// The check-then-act of issue "served after the drain was declared done":
/// a request passes `Drain` while work is in flight, then waits in a
/// middleware while the last work ends and the drain completes (the hooks
/// start); when it reaches `InFlight` the counter refuses it in the same
/// step that would count it, and the handler never runs.
#[tokio::test(start_paused = true)]
async fn no_request_reaches_the_handler_after_the_drain_completed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let c = coordinator();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let counted = ServiceBuilder::new()
        .layer(InFlightLayer::new(&c))
        .service(service_fn(move |req: Request<String>| {
            seen.fetch_add(1, Ordering::SeqCst);
            ok_handler(req)
        }));
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(Some(go_rx)));
    // An async middleware between the layers (auth, rate limiting, ...).
    let middle = service_fn(move |req: Request<String>| {
        let counted = counted.clone();
        let go = go.lock().unwrap().take();
        async move {
            if let Some(go) = go {
                let _ = go.await;
            }
            counted.oneshot(req).await
        }
    });
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c))
        .service(middle);
    let job = c.track("last work");
    c.trigger();
    timeout(WAIT, c.draining()).await.unwrap();
    let late = tokio::spawn(svc.oneshot(get("/api"))); // passes Drain: work in flight
    tokio::task::yield_now().await;
    drop(job);
    timeout(WAIT, c.drained()).await.unwrap();
    go_tx.send(()).unwrap();
    let res = timeout(WAIT, late).await.unwrap().unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler ran after the drain"
    );
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.rejected(), 1);
}

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

/// A stream whose head went out before the trigger ends while draining:
/// its HTTP/1.1 connection was never told to close, so its client may send
/// the next request at once. The drain waits the reuse grace for it (served,
/// with the close announced), then completes; a response that announced the
/// close does not linger.
#[tokio::test(start_paused = true)]
async fn an_unannounced_stream_ending_while_draining_holds_the_drain_for_the_reuse_grace() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .reuse_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let (tx, body) = channel_body();
    let body = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
    let svc =
        ServiceBuilder::new()
            .layer(c.layer())
            .service(service_fn(move |req: Request<String>| {
                let b = if req.uri().path() == "/stream" {
                    body.lock().unwrap().take()
                } else {
                    None
                };
                async move {
                    Ok::<_, Infallible>(match b {
                        Some(b) => Response::new(http_body_util::Either::Left(b)),
                        None => Response::new(http_body_util::Either::Right(String::from("ok"))),
                    })
                }
            }));
    let res = svc.clone().oneshot(get("/stream")).await.unwrap();
    assert!(!h1_close(&res), "head before the trigger");
    c.trigger();
    timeout(WAIT, c.draining()).await.unwrap();
    drop(tx); // the stream ends while draining
    body_text(res).await;
    assert_eq!(c.in_flight(), 1, "held for the reuse grace");
    // The client's next request on that connection: served, close announced.
    let next = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert!(h1_close(&next));
    body_text(next).await; // announced: released at once
    assert_eq!(c.in_flight(), 1);
    tokio::time::advance(Duration::from_millis(201)).await;
    timeout(WAIT, c.drained()).await.unwrap();
    assert_eq!(c.in_flight(), 0);
    let report = timeout(WAIT, c.wait()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rejected, 0);
}
