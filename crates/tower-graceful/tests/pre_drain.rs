//! The adaptive pre-drain on tokio's paused clock: what ends it (readiness
//! checks refused and a quiet window, between its minimum and maximum), what
//! starts the quiet window again (a request through the layer; with `serve`,
//! a request on a new connection, and not a probe nor a request on a
//! connection opened before the trigger), and what cuts it short.

use std::time::Duration;

use http::StatusCode;
use tokio::time::{timeout, Instant};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_graceful::report::*;
use tower_graceful::{Coordinator, PreDrain};

mod common;
use common::*;

const S: fn(u64) -> Duration = Duration::from_secs;

fn adaptive(min: u64, max: u64) -> PreDrain {
    PreDrain::adaptive(S(min), S(max))
        .readiness_checks(2)
        .quiet_window(S(1))
}

fn coordinator_with(pre_drain: PreDrain) -> Coordinator {
    Coordinator::builder()
        .handle_signals(false)
        .pre_drain(pre_drain)
        .readiness_path("/ready")
        .drain_deadline(S(5))
        .build()
        .expect("valid config")
}

/// One request through the coordinator's layer; returns its status.
async fn send(c: &Coordinator, path: &str) -> StatusCode {
    let svc = ServiceBuilder::new()
        .layer(c.layer())
        .service(service_fn(ok_handler));
    let res = timeout(WAIT, svc.oneshot(get(path)))
        .await
        .expect("answered in time")
        .unwrap();
    let status = res.status();
    let _ = body_text(res).await;
    status
}

/// Sleeps until `at` after `t0` (the paused clock jumps there).
async fn at(t0: Instant, after: Duration) {
    tokio::time::sleep_until(t0 + after).await;
}

async fn report(c: &Coordinator) -> ShutdownReport {
    timeout(S(60), c.wait()).await.expect("the report in time")
}

#[tokio::test(start_paused = true)]
async fn ends_at_min_when_the_evidence_is_already_there() {
    let c = coordinator_with(adaptive(2, 10));
    let t0 = Instant::now();
    c.trigger();
    assert_eq!(send(&c, "/ready").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&c, "/ready").await, StatusCode::SERVICE_UNAVAILABLE);
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
    assert_eq!(report.pre_drain, S(2), "never before min: {report}");
    assert!(report.to_string().contains("ended by evidence"), "{report}");
    assert!(t0.elapsed() >= S(2));
}

#[tokio::test(start_paused = true)]
async fn ends_when_checks_and_the_quiet_window_come_between_min_and_max() {
    let c = coordinator_with(adaptive(1, 10));
    let t0 = Instant::now();
    c.trigger();
    // Requests keep arriving (less than the quiet window apart) until
    // 3.2 s; the checks come at 1 s and 2 s.
    for (t, path) in [
        (500, "/"),
        (1_000, "/ready"),
        (1_500, "/"),
        (2_000, "/ready"),
        (2_500, "/"),
        (3_200, "/"),
    ] {
        at(t0, Duration::from_millis(t)).await;
        let status = send(&c, path).await;
        if path == "/" {
            assert_eq!(status, StatusCode::OK, "served during the pre-drain");
        }
    }
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
    // The last request at 3.2 s, then a quiet second.
    assert_eq!(report.pre_drain, Duration::from_millis(4_200), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_checks_latch_wakes_the_driver_before_max() {
    let c = coordinator_with(adaptive(1, 10));
    let t0 = Instant::now();
    c.trigger();
    at(t0, S(3)).await;
    send(&c, "/ready").await;
    at(t0, S(4)).await;
    send(&c, "/ready").await;
    // The quiet window held since the trigger: the second check ends it.
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
    assert_eq!(report.pre_drain, S(4), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_new_request_starts_the_quiet_window_again() {
    let c = coordinator_with(adaptive(0, 10));
    let t0 = Instant::now();
    c.trigger();
    send(&c, "/ready").await;
    send(&c, "/ready").await;
    // A request every 600 ms (less than the quiet window) until 5.4 s.
    for i in 1..=9 {
        at(t0, Duration::from_millis(600 * i)).await;
        assert_eq!(c.phase(), tower_graceful::Phase::Triggered, "at {i}");
        assert_eq!(send(&c, "/").await, StatusCode::OK);
    }
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
    assert_eq!(report.pre_drain, Duration::from_millis(6_400), "{report}");
}

#[tokio::test(start_paused = true)]
async fn ends_at_max_without_readiness_checks() {
    let c = coordinator_with(adaptive(1, 10));
    c.trigger();
    // Traffic stops at once, but nobody checked readiness: it cannot know
    // that a balancer noticed.
    send(&c, "/").await;
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::MaxReached, "{report}");
    assert_eq!(report.pre_drain, S(10), "{report}");
}

#[tokio::test(start_paused = true)]
async fn ends_at_max_when_traffic_never_stops() {
    let c = coordinator_with(adaptive(1, 4));
    let t0 = Instant::now();
    c.trigger();
    send(&c, "/ready").await;
    send(&c, "/ready").await;
    let traffic = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 1.. {
                at(t0, Duration::from_millis(500 * i)).await;
                if c.phase() != tower_graceful::Phase::Triggered {
                    break;
                }
                send(&c, "/").await;
            }
        })
    };
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::MaxReached, "{report}");
    assert_eq!(report.pre_drain, S(4), "never after max: {report}");
    timeout(WAIT, traffic).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_no_checks_needed_the_quiet_window_alone_decides() {
    let c = coordinator_with(adaptive(0, 10).readiness_checks(0));
    c.trigger();
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
    assert_eq!(report.pre_drain, S(1), "{report}");
}

#[tokio::test(start_paused = true)]
async fn a_force_cuts_it_short() {
    let c = coordinator_with(adaptive(1, 10));
    let t0 = Instant::now();
    c.trigger();
    at(t0, S(3)).await;
    c.force();
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Forced, "{report}");
    assert_eq!(report.pre_drain, S(3), "{report}");
    assert_eq!(report.drain_outcome, DrainOutcome::Forced);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_delay_says_so() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(S(2))
        .build()
        .unwrap();
    c.trigger();
    let report = report(&c).await;
    assert_eq!(report.pre_drain_end, PreDrainEnd::Fixed, "{report}");
    assert_eq!(report.pre_drain, S(2));
}

// ---------- with `serve`: connections ----------

#[cfg(feature = "serve")]
mod serve {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// One HTTP/1.1 request on `stream`; returns the status line.
    async fn request_on(stream: &mut TcpStream, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Every answer here is small, with a length: read until the body ends.
        loop {
            let n = timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("a response in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len = text[..head_end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= head_end + 4 + len {
                    return text.lines().next().unwrap_or_default().to_owned();
                }
            }
        }
    }

    async fn serving(c: &Coordinator) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = ServiceBuilder::new().layer(c.layer()).service(service_fn(
            |_req: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new("ok".to_owned()))
            },
        ));
        tokio::spawn(tower_graceful::serve(listener, app, c));
        addr
    }

    #[tokio::test(start_paused = true)]
    async fn with_serve_only_requests_on_new_connections_restart_the_quiet_window() {
        let c = coordinator_with(adaptive(0, 10));
        let addr = serving(&c).await;
        let mut old = TcpStream::connect(addr).await.unwrap();
        assert!(request_on(&mut old, "/").await.contains("200"));
        let t0 = Instant::now();
        c.trigger();
        for _ in 0..2 {
            let mut probe = TcpStream::connect(addr).await.unwrap();
            assert!(request_on(&mut probe, "/ready").await.contains("503"));
        }
        // Requests on the connection opened before the trigger are the client's
        // pool, not the balancer's choice: they do not hold the pre-drain.
        at(t0, Duration::from_millis(500)).await;
        let status = request_on(&mut old, "/").await;
        assert!(status.contains("200"), "{status}");
        // A request on a new connection at 800 ms does.
        at(t0, Duration::from_millis(800)).await;
        let mut new = TcpStream::connect(addr).await.unwrap();
        assert!(request_on(&mut new, "/").await.contains("200"));
        // A health check on a connection of its own (HAProxy's) does not.
        at(t0, Duration::from_millis(1_500)).await;
        let mut check = TcpStream::connect(addr).await.unwrap();
        assert!(request_on(&mut check, "/ready").await.contains("503"));
        let report = report(&c).await;
        assert_eq!(report.pre_drain_end, PreDrainEnd::Evidence, "{report}");
        let took = report.pre_drain;
        assert!(
            took >= Duration::from_millis(1_800) && took < Duration::from_millis(1_900),
            "the quiet window counts from the request on the new connection at 800 ms: {report}"
        );
    }
}
