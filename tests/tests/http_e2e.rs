//! End to end over HTTP/1.1: a real axum server with `coordinator.layer()`
//! on loopback, real hyper clients, a programmatic trigger.
//!
//! What users rely on: accepted work finishes whole, readiness goes down at
//! the trigger while liveness stays up, late requests get a retryable 503,
//! the server future completes, and the report's numbers are right.

use std::time::Duration;

use http::{header, Request, StatusCode};
use tower_graceful::{report::DrainOutcome, report::TriggerCause, Phase};
use tower_graceful_tests::*;

/// A slow request and a chunked stream, both accepted before draining, are
/// delivered whole; the server future completes; the report counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_and_stream_complete_across_shutdown() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;

    let mut slow_conn = H1::connect(server.addr).await;
    let slow = tokio::spawn(slow_conn.sender.send_request(slow_conn.request("/slow")));
    app.events.expect("slow started").await;

    let mut stream_conn = H1::connect(server.addr).await;
    let stream = stream_conn
        .get("/stream")
        .await
        .expect("stream response head");
    assert_eq!(stream.status(), StatusCode::OK);
    app.events.expect("stream started").await;
    assert_eq!(
        graceful.in_flight(),
        2,
        "slow request and stream are counted"
    );

    assert!(graceful.trigger(), "first trigger starts the shutdown");
    assert!(!graceful.trigger(), "trigger is idempotent");
    within("draining to begin", graceful.signal().draining()).await;
    assert_eq!(graceful.phase(), Phase::Draining);
    assert_eq!(
        graceful.in_flight(),
        2,
        "draining does not cut accepted work"
    );
    assert!(
        graceful.report().is_none(),
        "drain waits for in-flight work"
    );

    app.gate.open();
    let slow = within("the slow response", slow)
        .await
        .unwrap()
        .expect("slow response head");
    assert_eq!(slow.status(), StatusCode::OK);
    let body = body_bytes(slow).await.expect("slow body arrives whole");
    assert_eq!(body.len(), SLOW_BODY_LEN);
    assert!(body == slow_body(), "slow body content intact");
    let text = body_text(stream).await.expect("stream arrives whole");
    assert_eq!(text, stream_body());

    server.stopped().await;

    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.cause, TriggerCause::Api);
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.stragglers.is_empty(), "{report}");
    assert_eq!(report.in_flight_at_drain, 2, "{report}");
    assert_eq!(report.completed_while_draining, 2, "{report}");
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(report.force_cancelled(), 0);
    assert!(report.is_clean(), "{report}");
    assert!(report.drain < DEADLINE, "{report}");
    assert_eq!(graceful.phase(), Phase::Done);
    assert_eq!(graceful.in_flight(), 0);
}

/// A request that arrives while draining (here: on a server whose listener
/// stays open through the drain, as axum's does with
/// `close_connections()`) is served, with `Connection: close`, and counted:
/// its client could not have sent it elsewhere. Probe keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_while_draining_is_served_with_connection_close() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve(app.router, graceful.close_connections()).await;

    // Something in flight, so the drain lasts while we send the late request.
    let mut slow_conn = H1::connect(server.addr).await;
    let slow = tokio::spawn(slow_conn.sender.send_request(slow_conn.request("/slow")));
    app.events.expect("slow started").await;

    graceful.trigger();
    within("draining to begin", graceful.signal().draining()).await;

    let mut late = H1::connect(server.addr).await;
    let res = late.get("/").await.expect("a response, not a reset");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    late.closed_by_server().await;
    assert_eq!(graceful.rejected(), 0);

    // Probe answer while draining.
    let mut probe = H1::connect(server.addr).await;
    let live = probe.get("/live").await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(body_text(live).await.unwrap().trim(), "live");
    let ready = probe.get("/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_text(ready).await.unwrap().trim(), "draining");
    drop(probe);

    app.gate.open();
    let slow = within("slow", slow).await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert_eq!(header_str(&slow, header::CONNECTION), "close");
    assert_eq!(body_bytes(slow).await.unwrap().len(), SLOW_BODY_LEN);

    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(report.served_while_draining, 1, "{report}");
    assert_eq!(report.in_flight_at_drain, 1, "{report}");
    assert_eq!(report.completed_while_draining, 2, "{report}");
    assert!(report.is_clean(), "{report}");
    server.stopped().await;
}

/// Readiness goes down at the trigger, during the pre-drain delay, while
/// liveness stays up and ordinary requests are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_at_trigger_while_liveness_stays_up() {
    // Long enough that the checks below surely run inside it.
    const PRE_DRAIN: Duration = Duration::from_secs(2);
    let graceful = coordinator(PRE_DRAIN);
    let app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let mut c = H1::connect(server.addr).await;

    let ready = c.get("/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(body_text(ready).await.unwrap().trim(), "ready");
    let head = Request::head("/ready")
        .header(header::HOST, server.addr.to_string())
        .body(Default::default())
        .unwrap();
    let head = c.send(head).await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(
        body_bytes(head).await.unwrap().is_empty(),
        "HEAD has no body"
    );

    graceful.trigger();
    within("the trigger", graceful.triggered()).await;

    let ready = c.get("/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_text(ready).await.unwrap().trim(), "draining");
    let live = c.get("/live").await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(body_text(live).await.unwrap().trim(), "live");
    let hello = c.get("/").await.unwrap();
    assert_eq!(
        hello.status(),
        StatusCode::OK,
        "served normally during pre-drain"
    );
    assert_eq!(body_text(hello).await.unwrap(), "hello\n");
    assert_eq!(
        graceful.phase(),
        Phase::Triggered,
        "all of the above happened inside the pre-drain delay"
    );
    assert!(!graceful.signal().is_draining());

    let report = within("the report", graceful.wait()).await;
    assert!(report.pre_drain >= PRE_DRAIN, "{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rejected, 0);
    c.closed_by_server().await;
    server.stopped().await;
}

/// With the recommended wiring (`with_graceful_shutdown(coordinator.draining())`),
/// an idle keep-alive connection is closed when draining starts, the server
/// future completes, and the listener is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_listener_stops_when_draining_starts() {
    let graceful = coordinator(Duration::ZERO);
    let app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let addr = server.addr;
    let mut idle = H1::connect(addr).await;
    idle.assert_kept_alive().await;

    graceful.trigger();
    idle.closed_by_server().await;
    server.stopped().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "the listener is closed after the server stopped"
    );

    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.in_flight_at_drain, 0, "{report}");
}
