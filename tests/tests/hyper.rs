//! The plain `hyper` example (`examples/src/bin/hyper.rs`: hyper-util's auto
//! builder, `TowerToHyperService`, `GracefulShutdown::watch` and
//! `graceful.layer()`) as a real process, stopped with SIGTERM and, if a test
//! fails, killed by its PID.

use http::{header, StatusCode};
use tower_graceful_tests::example::{assert_clean_sigterm_report, Example};
use tower_graceful_tests::{body_text, within, H1, H2};

/// SIGTERM while a slow request (HTTP/1.1) and a long-poll (HTTP/2) are in
/// flight: the slow request completes with its whole body and the
/// announcement that the connection closes, the long-poll answers at once
/// through `ShutdownSignal::current()`, the server closes both connections
/// and its listener, and the process prints a clean report and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_across_sigterm_complete_and_the_report_comes_out() {
    let (mut example, addr) = Example::start_bin(
        "hyper",
        &[("GRACEFUL_DEADLINE", "10s"), ("GRACEFUL_PRE_DRAIN", "0s")],
    )
    .await;

    // Served before the shutdown, on both protocols of the auto builder.
    let mut h1 = H1::connect(addr).await;
    let res = h1.get("/").await.expect("GET / over HTTP/1.1");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await.unwrap(), "hello from hyper\n");
    let h2 = H2::connect(addr).await;
    let res = within("GET / over HTTP/2", h2.get("/")).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(body_text(res).await.unwrap(), "hello from hyper\n");

    let slow = tokio::spawn(h1.sender.send_request(h1.request("/slow?ms=1500")));
    example.stderr.wait_for("slow request started").await;
    let poll = tokio::spawn(h2.get("/poll"));
    example.stderr.wait_for("long-poll started").await;

    example.sigterm();
    example.stderr.wait_for("shutdown triggered").await;

    let res = within("the long-poll answer", poll)
        .await
        .unwrap()
        .expect("long-poll response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await.unwrap(), "shutting down: poll again\n");

    let res = within("the slow response", slow)
        .await
        .unwrap()
        .expect("slow response head");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get(header::CONNECTION).map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "the response in progress announces the close"
    );
    assert_eq!(
        body_text(res).await.expect("full body"),
        "slow response after 1500 ms\n"
    );
    // The server closes the HTTP/1.1 connection after that response, and
    // the HTTP/2 one once its streams are done (GOAWAY).
    within("the HTTP/1.1 connection to close", h1.conn)
        .await
        .unwrap()
        .expect("HTTP/1.1 connection closed cleanly");
    within("the HTTP/2 connection to close", h2.conn)
        .await
        .unwrap()
        .expect("HTTP/2 connection closed cleanly");

    example.exited_zero().await;
    let out = example.report().await;
    assert_clean_sigterm_report(
        &out,
        "Drained: 2 in flight at start (requests and tasks), 2 requests completed, 0 rejected",
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
