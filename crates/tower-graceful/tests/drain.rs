//! `Drain`: the answer to requests that arrive while draining (`503`,
//! gRPC `UNAVAILABLE`, custom), exempt paths, and the connections: the lame
//! duck's rising share of `Connection: close`, the draining policy and the
//! reuse grace.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::time::timeout;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_graceful::coordinator::*;
use tower_graceful::drain::*;
use tower_graceful::in_flight::*;
use tower_graceful::report::*;

mod common;
use common::*;

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

/// A custom rejection sees why (each reason of the policy table), the
/// method and the path, and falls back to the built-in answer with `None`:
/// the gRPC request keeps its trailers-only `UNAVAILABLE` while HTTP gets
/// the custom body.
#[tokio::test(start_paused = true)]
async fn custom_rejection_sees_the_reason_and_can_fall_back() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(10))
        .min_time_left(Duration::from_secs(2))
        .retry_after(Duration::from_secs(3))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer().respond_with_or_default(|ctx| {
            if ctx.is_grpc() {
                return None;
            }
            let body = format!("{} {} {}", ctx.reason(), ctx.method(), ctx.path());
            let mut res = Response::new(Bytes::from(body));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Some(res)
        }))
        .service(service_fn(ok_handler));
    let grpc = || {
        Request::post("/pkg.Svc/Method")
            .version(Version::HTTP_2)
            .header("content-type", "application/grpc")
            .body(String::new())
            .unwrap()
    };
    let job = c.track("job");
    c.trigger();
    timeout(WAIT, c.draining()).await.unwrap();

    // Too late for the deadline.
    tokio::time::advance(Duration::from_millis(8_100)).await;
    let res = svc.clone().oneshot(get("/a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()["retry-after"],
        "3",
        "added to a custom answer"
    );
    assert_eq!(body_text(res).await, "too late for the deadline GET /a");
    let res = svc.clone().oneshot(grpc()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "built-in: trailers-only");
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["grpc-retry-pushback-ms"], "3000");
    assert!(res.body().is_end_stream());

    // The forced stop (the deadline passes with the job still running).
    tokio::time::advance(Duration::from_secs(2)).await;
    timeout(WAIT, c.signal().forced()).await.unwrap();
    let res = svc
        .clone()
        .oneshot(Request::delete("/b").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(body_text(res).await, "forced stop DELETE /b");
    drop(job);
    timeout(WAIT, c.wait()).await.unwrap();
    let res = svc.clone().oneshot(get("/c")).await.unwrap();
    assert_eq!(
        body_text(res).await,
        "forced stop GET /c",
        "forced stays forced"
    );
}

/// After a clean drain: "drain completed"; `default_response` is the
/// built-in answer, to start from.
#[tokio::test(start_paused = true)]
async fn custom_rejection_after_the_drain_and_default_response() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .retry_after(Duration::from_secs(2))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DrainLayer::new(&c).respond_with(|ctx| {
            assert_eq!(ctx.reason(), RejectReason::DrainCompleted);
            let mut res = ctx.default_response();
            res.headers_mut()
                .insert("x-reason", ctx.reason().as_str().parse().unwrap());
            res
        }))
        .layer(InFlightLayer::new(&c))
        .service(service_fn(ok_handler));
    c.trigger();
    timeout(WAIT, c.drained()).await.unwrap();
    let res = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["x-reason"], "drain completed");
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(body_text(res).await, "service is shutting down; retry\n");
    let mut req = get("/pkg.Svc/M");
    req.headers_mut()
        .insert("content-type", "application/grpc+proto".parse().unwrap());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["grpc-retry-pushback-ms"], "2000");
    assert!(res.headers().get("retry-after").is_none());
}

/// The gRPC retry hint follows the jittered `Retry-After`: 1000 × one of
/// its seconds.
#[tokio::test(start_paused = true)]
async fn grpc_retry_pushback_follows_the_jitter() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .retry_after(Duration::from_secs(1))
        .retry_after_jitter(Duration::from_secs(4))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    c.trigger();
    timeout(WAIT, c.drained()).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let mut req = get("/pkg.Svc/M");
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        let res = svc.clone().oneshot(req).await.unwrap();
        let ms: u64 = res.headers()["grpc-retry-pushback-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1000..=5000).contains(&ms) && ms % 1000 == 0, "{ms}");
        seen.insert(ms);
    }
    assert!(seen.len() >= 3, "jittered: {seen:?}");
}
