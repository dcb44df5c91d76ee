//! Several servers, one coordinator: the `multi` example's servers
//! (`tower_graceful_examples::multi`, so these tests run exactly its wiring)
//! with real HTTP and gRPC clients over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_graceful::{report::DrainOutcome, Coordinator};
use tower_graceful_examples::demo::{CountRequest, DemoClient};
use tower_graceful_examples::multi;
use tower_graceful_tests::{listener, within, WAIT};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(c: &HttpClient, addr: SocketAddr, path: &str) -> http::Response<Incoming> {
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    within(path, c.get(uri)).await.expect("request succeeds")
}

async fn get(c: &HttpClient, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let res = send(c, addr, path).await;
    let status = res.status();
    let body = within("body", res.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of a metric line `name value` in the admin port's `/metrics`.
async fn metric(c: &HttpClient, admin: SocketAddr, name: &str) -> String {
    let (status, body) = get(c, admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
        .to_owned()
}

async fn start(graceful: &Coordinator) -> multi::Servers {
    let ((h, _), (g, _), (a, _)) = (listener().await, listener().await, listener().await);
    multi::start(graceful, h, g, a)
        .await
        .expect("servers start")
}

/// An HTTP download of `chunks` chunks and a gRPC stream of `ticks` ticks,
/// both 100 ms apart, are in flight when shutdown is triggered. The shutdown
/// must complete only after both have ended, whichever is longer.
async fn drain_waits_for_both(chunks: u32, ticks: u32) {
    let graceful = Coordinator::builder()
        .drain_deadline(Duration::from_secs(8))
        .cleanup_timeout(Duration::from_secs(1))
        .handle_signals(false)
        .build()
        .unwrap();
    let servers = start(&graceful).await;
    let (http_addr, admin) = (servers.http, servers.admin);
    let c = http_client();

    assert_eq!(get(&c, http_addr, "/").await.0, StatusCode::OK);
    assert_eq!(
        get(&c, admin, "/ready").await,
        (StatusCode::OK, "ready\n".into())
    );

    // HTTP download: the head and first chunk arrive at once.
    let res = send(&c, http_addr, &format!("/stream?chunks={chunks}&ms=100")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = within("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from("chunk 1\n"));

    // gRPC stream: the first tick after 100 ms.
    let mut grpc = within("grpc connect", DemoClient::connect(servers.grpc, WAIT))
        .await
        .unwrap();
    let mut stream = within(
        "count",
        grpc.count(CountRequest {
            count: ticks,
            interval_ms: 100,
            stop_on_shutdown: false,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let tick = within("first tick", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tick.seq, 1);

    // Both count; the admin port's own requests do not.
    assert_eq!(metric(&c, admin, "http_server_active_requests").await, "2");

    graceful.trigger();
    within("draining", graceful.signal().draining()).await;

    // The admin port keeps answering through the drain: readiness down,
    // liveness up, the gauge still shows the work being waited for.
    assert_eq!(
        get(&c, admin, "/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    );
    assert_eq!(
        get(&c, admin, "/live").await,
        (StatusCode::OK, "live\n".into())
    );
    assert_eq!(
        metric(&c, admin, "tower_graceful_phase{phase=\"draining\"}").await,
        "1"
    );
    assert_eq!(metric(&c, admin, "http_server_active_requests").await, "2");

    // Read both to the end. While either still has more to send, the
    // shutdown must not have completed.
    let g1 = graceful.clone();
    let http_done = async move {
        let mut got = vec![Bytes::from("chunk 1\n")];
        while let Some(frame) = within("chunk", body.frame()).await {
            let data = frame.expect("body frame").into_data().unwrap();
            got.push(data);
            if (got.len() as u32) < chunks {
                assert!(g1.report().is_none(), "done while HTTP still sending");
            }
        }
        got
    };
    let g2 = graceful.clone();
    let grpc_done = async move {
        let mut seqs = vec![1];
        while let Some(t) = within("tick", stream.message())
            .await
            .expect("grpc status OK")
        {
            seqs.push(t.seq);
            if t.seq < ticks {
                assert!(g2.report().is_none(), "done while gRPC still sending");
            }
        }
        seqs
    };
    let (chunks_got, seqs) = tokio::join!(http_done, grpc_done);
    let want: Vec<Bytes> = (1..=chunks)
        .map(|i| Bytes::from(format!("chunk {i}\n")))
        .collect();
    assert_eq!(chunks_got, want, "the whole HTTP download arrived");
    assert_eq!(
        seqs,
        (1..=ticks).collect::<Vec<_>>(),
        "every gRPC tick arrived"
    );

    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_drain, 2, "{report}");
    assert_eq!(report.completed_while_draining, 2, "{report}");
    assert!(report.is_clean(), "{report}");
    let longest = u64::from(chunks.max(ticks) - 1) * 100;
    assert!(
        report.drain >= Duration::from_millis(longest - 150),
        "the drain waited for the longer of the two: {report}"
    );

    // Every server stops: public and gRPC at draining, admin after the report.
    for (name, outcome) in servers.join(WAIT).await {
        assert_eq!(outcome, Ok(()), "{name} server");
    }
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin port closed after the shutdown"
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_longer_grpc_stream() {
    drain_waits_for_both(3, 9).await;
}

#[tokio::test]
async fn shutdown_waits_for_a_longer_http_download() {
    drain_waits_for_both(9, 3).await;
}

#[tokio::test]
async fn idle_servers_shut_down_at_once() {
    let graceful = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let servers = start(&graceful).await;
    let c = http_client();
    assert_eq!(
        metric(&c, servers.admin, "http_server_active_requests").await,
        "0"
    );
    graceful.trigger();
    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    assert!(report.drain < Duration::from_millis(500), "{report}");
    for (name, outcome) in servers.join(WAIT).await {
        assert_eq!(outcome, Ok(()), "{name} server");
    }
}

/// The admin port's `/metrics` (Prometheus text from
/// `tower_graceful::shutdown_metrics`), scraped with a real HTTP client
/// before, during and after a drain: each value moves when the coordinator
/// does, and the report's counters are there for a last scrape.
#[tokio::test]
async fn metrics_follow_the_drain() {
    let graceful = Coordinator::builder()
        .drain_deadline(Duration::from_secs(8))
        .cleanup_timeout(Duration::from_secs(1))
        .handle_signals(false)
        .build()
        .unwrap();
    let servers = start(&graceful).await;
    let (http_addr, admin) = (servers.http, servers.admin);
    let c = http_client();
    let m = |name: &'static str| metric(&c, admin, name);

    // Before: serving, ready, nothing in flight, nothing rejected.
    assert_eq!(m("http_server_active_requests").await, "0");
    assert_eq!(m("tower_graceful_active_tasks").await, "0");
    assert_eq!(m("tower_graceful_ready").await, "1");
    assert_eq!(m("tower_graceful_phase{phase=\"serving\"}").await, "1");
    assert_eq!(m("tower_graceful_phase{phase=\"draining\"}").await, "0");
    assert_eq!(m("tower_graceful_requests_rejected_total").await, "0");
    let (_, text) = get(&c, admin, "/metrics").await;
    assert!(
        text.contains("# TYPE http_server_active_requests gauge"),
        "{text}"
    );
    assert!(
        !text.contains("tower_graceful_shutdowns_total"),
        "no shutdown counted before one happened:\n{text}"
    );

    // A download that would run for a minute is in flight.
    let res = send(&c, http_addr, "/stream?chunks=1200&ms=50").await;
    let mut body = res.into_body();
    within("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(m("http_server_active_requests").await, "1");

    // During the drain: not ready, draining, the download still counted.
    graceful.trigger();
    within("draining", graceful.signal().draining()).await;
    assert_eq!(m("tower_graceful_ready").await, "0");
    assert_eq!(m("tower_graceful_phase{phase=\"serving\"}").await, "0");
    assert_eq!(m("tower_graceful_phase{phase=\"draining\"}").await, "1");
    assert_eq!(m("http_server_active_requests").await, "1");
    assert_eq!(
        m("tower_graceful_requests_completed_while_draining_total").await,
        "0"
    );

    // The client gives up on the download: it ends, the drain completes.
    drop(body);
    within("drained", graceful.drained()).await;
    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");

    // After: the admin port is still up (until `join`) with the report's
    // counters and histograms.
    assert_eq!(m("tower_graceful_phase{phase=\"done\"}").await, "1");
    assert_eq!(m("tower_graceful_phase{phase=\"draining\"}").await, "0");
    assert_eq!(m("http_server_active_requests").await, "0");
    assert_eq!(
        m("tower_graceful_requests_completed_while_draining_total").await,
        "1"
    );
    assert_eq!(
        m("tower_graceful_shutdowns_total{cause=\"api\",outcome=\"drained\"}").await,
        "1"
    );
    assert_eq!(
        m("tower_graceful_abandoned_total{kind=\"request\"}").await,
        "0"
    );
    assert_eq!(
        m("tower_graceful_phase_duration_seconds_count{phase=\"draining\"}").await,
        "1"
    );
    assert_eq!(
        m("tower_graceful_shutdown_duration_seconds_count").await,
        "1"
    );
    // The connection figures are the report's (the public server runs on
    // `tower_graceful::serve`, so the idle ones are counted too).
    assert_eq!(
        m("tower_graceful_connections_told_to_close_total").await,
        report.connections_told_to_close.to_string()
    );
    let idle = report.connections_closed_idle.expect("serve counts them");
    assert_eq!(
        m("tower_graceful_connections_closed_idle_total").await,
        idle.to_string()
    );
    // A second scrape does not count the shutdown twice.
    assert_eq!(
        m("tower_graceful_shutdowns_total{cause=\"api\",outcome=\"drained\"}").await,
        "1"
    );

    for (name, outcome) in servers.join(WAIT).await {
        assert_eq!(outcome, Ok(()), "{name} server");
    }
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin port closed once joined"
    );
}

/// `GRACEFUL_FINAL_SCRAPE`: after the report the `multi` binary keeps its
/// admin port answering until a scrape of `/metrics` has read the final
/// values, then exits at once (not after the whole linger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_values_can_be_scraped_after_the_report_and_the_process_then_exits() {
    use tower_graceful_tests::example::{binary, Example};
    let bin = tokio::task::spawn_blocking(|| binary("multi"))
        .await
        .unwrap();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.envs([
        ("PORT", "0"),
        ("GRPC_PORT", "0"),
        ("ADMIN_PORT", "0"),
        ("GRACEFUL_PRE_DRAIN", "0s"),
        ("GRACEFUL_FINAL_SCRAPE", "60s"),
    ]);
    let mut example = Example::spawn(cmd);
    let line = example.stdout.wait_for("admin listening on ").await;
    let admin: SocketAddr = line["admin listening on ".len()..].trim().parse().unwrap();
    let c = http_client();
    let (_, before) = get(&c, admin, "/metrics").await;
    assert!(
        !before.contains("tower_graceful_shutdowns_total"),
        "{before}"
    );

    example.sigterm();
    example
        .stderr
        .wait_for("admin: /metrics stays up for a scrape of the final values")
        .await;
    let (status, text) = get(&c, admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let shutdowns = text
        .lines()
        .find(|l| l.starts_with("tower_graceful_shutdowns_total{"))
        .unwrap_or_else(|| panic!("no final shutdown counter in the scrape:\n{text}"));
    assert!(shutdowns.contains("cause=\"SIGTERM\""), "{shutdowns}");
    assert!(shutdowns.ends_with(" 1"), "{shutdowns}");
    assert!(
        text.contains("tower_graceful_shutdown_duration_seconds"),
        "{text}"
    );
    let over = example.stderr.wait_for("admin: final scrape over").await;
    assert!(over.contains("scraped=true"), "{over}");
    // Well before the 60 s linger.
    let status = example.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
}
