//! gRPC end to end: the `tonic` example's server
//! (`tower_graceful_examples::grpc::serve_grpc`, so these tests run exactly
//! its wiring) and a real tonic client over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower_graceful::{report::DrainOutcome, Coordinator};
use tower_graceful_examples::demo::{
    CountRequest, DemoClient, DemoServer, HelloRequest, Tick, SERVICE_NAME,
};
use tower_graceful_examples::grpc::serve_grpc;
use tower_graceful_tests::{listener, within, WAIT};

fn coordinator(pre_drain: Duration) -> Coordinator {
    Coordinator::builder()
        .pre_drain_delay(pre_drain)
        .drain_deadline(Duration::from_secs(8))
        .cleanup_timeout(Duration::from_secs(1))
        .handle_signals(false)
        .build()
        .expect("valid configuration")
}

/// The example's server (tonic's `Routes` behind `graceful.layer()`, served
/// by `tower_graceful::serve`) on a free loopback port.
async fn start(
    graceful: &Coordinator,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (l, addr) = listener().await;
    let task = serve_grpc(graceful, l).await;
    (addr, task)
}

async fn client(addr: SocketAddr) -> DemoClient {
    within("connect", DemoClient::connect(addr, WAIT))
        .await
        .expect("connect to the demo server")
}

async fn next_tick(stream: &mut tonic::codec::Streaming<Tick>) -> Option<Tick> {
    within("next tick", stream.message())
        .await
        .expect("stream ends with status OK")
}

#[tokio::test]
async fn unary_call_is_served() {
    let graceful = coordinator(Duration::ZERO);
    let (addr, server) = start(&graceful).await;
    let mut c = client(addr).await;
    let reply = within(
        "hello",
        c.hello(HelloRequest {
            name: "grpc".into(),
        }),
    )
    .await
    .expect("hello succeeds")
    .into_inner();
    assert_eq!(reply.message, "hello, grpc");
    graceful.trigger();
    within("shutdown", graceful.wait()).await;
    within("server stop", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn in_flight_stream_completes_with_every_message_after_trigger() {
    let graceful = coordinator(Duration::ZERO);
    let (addr, server) = start(&graceful).await;
    let mut c = client(addr).await;
    let count = 6;
    let mut stream = within(
        "count call",
        c.count(CountRequest {
            count,
            interval_ms: 100,
            stop_on_shutdown: false,
        }),
    )
    .await
    .expect("count call accepted")
    .into_inner();

    let first = next_tick(&mut stream).await.expect("first tick");
    assert_eq!(first.seq, 1);
    assert_eq!(graceful.in_flight(), 1);
    assert!(graceful.trigger());
    // Draining begins at once (no pre-drain delay): the stream keeps going.
    within("draining", graceful.signal().draining()).await;

    let mut seen = vec![first.seq];
    while let Some(tick) = next_tick(&mut stream).await {
        assert!(
            !tick.shutting_down,
            "stream was not asked to stop on shutdown"
        );
        seen.push(tick.seq);
        if tick.seq < count {
            // More to come, so the coordinator must still be waiting.
            assert!(
                graceful.report().is_none(),
                "shutdown finished while the stream was still sending (tick {})",
                tick.seq
            );
        }
    }
    assert_eq!(
        seen,
        (1..=count).collect::<Vec<_>>(),
        "every message arrived"
    );

    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_drain, 1, "{report}");
    assert_eq!(report.completed_while_draining, 1, "{report}");
    assert!(report.is_clean(), "{report}");
    // It waited for the stream: 5 more ticks at 100 ms.
    assert!(report.drain >= Duration::from_millis(400), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn stream_watching_the_signal_ends_cleanly_when_draining_begins() {
    let graceful = coordinator(Duration::ZERO);
    let (addr, server) = start(&graceful).await;
    let mut c = client(addr).await;
    let mut stream = within(
        "count call",
        c.count(CountRequest {
            count: 10_000,
            interval_ms: 50,
            stop_on_shutdown: true,
        }),
    )
    .await
    .expect("count call accepted")
    .into_inner();
    let first = next_tick(&mut stream).await.expect("first tick");
    assert!(!first.shutting_down);

    graceful.trigger();
    let mut last = first;
    while let Some(tick) = next_tick(&mut stream).await {
        last = tick;
    }
    assert!(
        last.shutting_down,
        "the last tick says the stream was cut short: {last:?}"
    );
    assert!(last.seq < 10_000);

    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    assert!(report.is_clean(), "{report}");
    assert!(
        report.drain < Duration::from_secs(1),
        "the stream ended promptly instead of holding the drain: {report}"
    );
    within("server stop", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn new_call_while_draining_fails_with_unavailable() {
    let graceful = coordinator(Duration::ZERO);
    let (addr, server) = start(&graceful).await;
    let mut c = client(addr).await;
    // An in-flight stream keeps the drain (and the server) going meanwhile.
    let mut stream = within(
        "count call",
        c.count(CountRequest {
            count: 15,
            interval_ms: 100,
            stop_on_shutdown: false,
        }),
    )
    .await
    .expect("count call accepted")
    .into_inner();
    next_tick(&mut stream).await.expect("first tick");

    graceful.trigger();
    within("draining", graceful.signal().draining()).await;

    // On the channel that is already connected: its connection got a GOAWAY
    // and still carries the open stream. Depending on whether the client has
    // read the GOAWAY yet, the call either reaches the draining responder
    // (UNAVAILABLE) or is failed by the hyper client before it is sent
    // (CANCELLED "connection closed": a known tonic client behaviour, see
    // s2-streamstore/s2-sdk-rust#149); either way it is not served. The next
    // call on that channel reconnects, finds the listener closed, and gets
    // UNAVAILABLE.
    let mut old = c.clone();
    let err = within(
        "hello on the old channel",
        old.hello(HelloRequest::default()),
    )
    .await
    .expect_err("no new call is served while draining");
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Cancelled),
        "{err:?}"
    );
    let err = within(
        "retry on the old channel",
        old.hello(HelloRequest::default()),
    )
    .await
    .expect_err("no new call is served while draining");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // On a new connection (the listener is closed): UNAVAILABLE.
    let fresh = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(WAIT)
        .connect_lazy();
    let err = within(
        "hello on a new channel",
        DemoClient::new(fresh).hello(HelloRequest::default()),
    )
    .await
    .expect_err("no new call is served while draining");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // The accepted stream still finishes.
    let mut n = 1;
    while next_tick(&mut stream).await.is_some() {
        n += 1;
    }
    assert_eq!(n, 15);
    let report = within("shutdown report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

/// A server whose connections stay open through the drain (as behind an L4
/// balancer): a call while draining is served; a call after the drain
/// completed gets a trailers-only `UNAVAILABLE` from the draining responder.
#[tokio::test]
async fn draining_responder_answers_unavailable_trailers_only() {
    let graceful = Coordinator::builder()
        .drain_deadline(Duration::from_secs(8))
        .handle_signals(false)
        .grpc_message("draining, try another replica")
        .build()
        .unwrap();
    let (started_tx, hook_started) = tokio::sync::oneshot::channel::<()>();
    let (release_hook, hook_rx) = tokio::sync::oneshot::channel::<()>();
    graceful
        .on_shutdown("blocked hook", move || async move {
            let _ = started_tx.send(());
            let _ = hook_rx.await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let (l, addr) = listener().await;
    let done = graceful.clone();
    let server = tokio::spawn(
        Server::builder()
            .layer(graceful.layer())
            .add_service(DemoServer::new())
            .serve_with_incoming_shutdown(TcpIncoming::from(l), async move {
                done.wait().await;
            }),
    );
    let mut c = client(addr).await;
    let mut stream = within(
        "count call",
        c.count(CountRequest {
            count: 5,
            interval_ms: 100,
            stop_on_shutdown: false,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    next_tick(&mut stream).await.expect("first tick");

    graceful.trigger();
    within("draining", graceful.signal().draining()).await;
    // A call on the open connection while draining is served: a pooled
    // client behind an L4 balancer could not have sent it elsewhere.
    within("hello while draining", c.hello(HelloRequest::default()))
        .await
        .expect("served while draining");

    while next_tick(&mut stream).await.is_some() {}
    // Nothing in flight: the drain completes, the hook runs; a call that
    // still arrives gets the retryable rejection.
    within("the hook to start", hook_started).await.unwrap();
    let err = within("hello after the drain", c.hello(HelloRequest::default()))
        .await
        .expect_err("rejected after the drain completed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "draining, try another replica");
    assert_eq!(graceful.rejected(), 1);
    release_hook.send(()).unwrap();
    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.rejected, 1, "{report}");
    assert_eq!(report.served_while_draining, 1, "{report}");
    assert!(report.is_clean(), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn health_reports_not_serving_from_the_trigger() {
    // A pre-drain delay: the server still serves while balancers notice.
    let graceful = coordinator(Duration::from_millis(1500));
    let (addr, server) = start(&graceful).await;
    let channel = within(
        "connect",
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };

    for service in ["", SERVICE_NAME] {
        let status = within("check", health.check(check(service)))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(
            status,
            ServingStatus::Serving,
            "{service:?} before the trigger"
        );
    }

    // Watch sees the flip as an event.
    let mut watch = within("watch", health.watch(check(SERVICE_NAME)))
        .await
        .unwrap()
        .into_inner();
    let first = within("watch", watch.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    graceful.trigger();
    let next = within("watch after trigger", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    // The health Watch stream never ends by itself; let it go so it does not
    // hold the drain.
    drop(watch);

    for service in ["", SERVICE_NAME] {
        let status = within("check after trigger", health.check(check(service)))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(
            status,
            ServingStatus::NotServing,
            "{service:?} after the trigger"
        );
    }
    // Still in the pre-drain delay: ordinary calls are still served.
    assert!(graceful.report().is_none());
    let mut c = DemoClient::new(health_channel(addr).await);
    within("hello during pre-drain", c.hello(HelloRequest::default()))
        .await
        .expect("served during the pre-drain delay");

    let report = within("shutdown report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

async fn health_channel(addr: SocketAddr) -> tonic::transport::Channel {
    within(
        "connect",
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap()
}

/// A tonic server with only `tonic-health` and `report_health` (nothing else
/// marks the service): `Check` and `Watch` answer `SERVING` from the start,
/// not `NotFound`, and `NOT_SERVING` once shutdown is triggered.
#[tokio::test]
async fn report_health_marks_services_serving_until_the_trigger() {
    let graceful = coordinator(Duration::from_secs(1));
    let (reporter, health) = tonic_health::server::health_reporter();
    tower_graceful::grpc_health::report_health(&graceful, reporter, ["demo.v1.Bare"]).await;
    let (l, addr) = listener().await;
    let server = tokio::spawn(
        Server::builder()
            .layer(graceful.layer())
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(l), graceful.draining()),
    );
    let mut health = HealthClient::new(health_channel(addr).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };

    for service in ["", "demo.v1.Bare"] {
        let got = serving_status(&mut health, service).await;
        assert_eq!(
            got,
            ServingStatus::Serving,
            "{service:?} before the trigger"
        );
    }
    // A name nobody registered is still unknown: only the named ones are marked.
    let err = within("check unknown", health.check(check("demo.v1.Other")))
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let mut watch = within("watch", health.watch(check("demo.v1.Bare")))
        .await
        .expect("watch accepted")
        .into_inner();
    let first = within("first watch message", watch.message())
        .await
        .unwrap()
        .expect("a first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    graceful.trigger();
    let next = within("watch after trigger", watch.message())
        .await
        .unwrap()
        .expect("a status change");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    for service in ["", "demo.v1.Bare"] {
        let got = serving_status(&mut health, service).await;
        assert_eq!(
            got,
            ServingStatus::NotServing,
            "{service:?} after the trigger"
        );
    }

    let report = within("shutdown report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

/// Called after the trigger, `report_health` marks the services
/// `NOT_SERVING` at once, never `SERVING`.
#[tokio::test]
async fn report_health_after_the_trigger_reports_not_serving() {
    // Long enough a pre-drain delay that the server is still up to ask.
    let graceful = coordinator(Duration::from_secs(2));
    graceful.trigger();
    let (reporter, health) = tonic_health::server::health_reporter();
    let task =
        tower_graceful::grpc_health::report_health(&graceful, reporter, ["demo.v1.Bare"]).await;
    within("health task", task).await.expect("health task");
    let (l, addr) = listener().await;
    let server = tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(l), graceful.draining()),
    );
    let mut health = HealthClient::new(health_channel(addr).await);
    assert_eq!(
        serving_status(&mut health, "demo.v1.Bare").await,
        ServingStatus::NotServing
    );
    within("shutdown report", graceful.wait()).await;
    within("server stop", server).await.unwrap().unwrap();
}

/// `Check` for `service` (bounded), which must answer.
async fn serving_status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let req = HealthCheckRequest {
        service: service.to_owned(),
    };
    within("health check", health.check(req))
        .await
        .unwrap_or_else(|e| panic!("health check for {service:?}: {e:?}"))
        .into_inner()
        .status()
}

/// Health agrees with readiness: a warm-up gate that holds `/ready` at 503
/// holds gRPC health at `NOT_SERVING` too; opening it makes the services
/// `SERVING`, closing it again `NOT_SERVING`, and the trigger `NOT_SERVING`
/// for good. Every flip is seen on a `Watch` stream of a real tonic-health
/// client, as an event.
#[tokio::test]
async fn health_follows_readiness_gates() {
    let graceful = coordinator(Duration::from_secs(1));
    let warm_up = graceful.readiness().gate("warm-up");
    let (reporter, health) = tonic_health::server::health_reporter();
    tower_graceful::grpc_health::report_health(&graceful, reporter, ["demo.v1.Bare"]).await;
    let (l, addr) = listener().await;
    let server = tokio::spawn(
        Server::builder()
            .layer(graceful.layer())
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(l), graceful.draining()),
    );
    let mut health = HealthClient::new(health_channel(addr).await);
    for service in ["", "demo.v1.Bare"] {
        assert_eq!(
            serving_status(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?} while the warm-up gate is closed"
        );
    }
    let mut watch = within(
        "watch",
        health.watch(HealthCheckRequest {
            service: "demo.v1.Bare".into(),
        }),
    )
    .await
    .expect("watch accepted")
    .into_inner();
    assert_eq!(next(&mut watch).await, ServingStatus::NotServing);

    warm_up.set_ready(true);
    assert_eq!(
        next(&mut watch).await,
        ServingStatus::Serving,
        "gate opened"
    );
    assert_eq!(
        serving_status(&mut health, "").await,
        ServingStatus::Serving
    );
    warm_up.set_ready(false);
    assert_eq!(
        next(&mut watch).await,
        ServingStatus::NotServing,
        "gate closed again"
    );
    warm_up.set_ready(true);
    assert_eq!(
        next(&mut watch).await,
        ServingStatus::Serving,
        "gate opened again"
    );

    graceful.trigger();
    assert_eq!(
        next(&mut watch).await,
        ServingStatus::NotServing,
        "triggered"
    );
    drop(watch);
    // A gate that opens after the trigger changes nothing.
    drop(warm_up);
    for service in ["", "demo.v1.Bare"] {
        assert_eq!(
            serving_status(&mut health, service).await,
            ServingStatus::NotServing,
            "{service:?} after the trigger"
        );
    }
    let report = within("shutdown report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    within("server stop", server).await.unwrap().unwrap();
}

/// The next status on a health `Watch` stream (bounded).
async fn next(
    watch: &mut tonic::codec::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> ServingStatus {
    within("next watch message", watch.message())
        .await
        .expect("watch stream ok")
        .expect("a status")
        .status()
}

/// A custom rejection that answers HTTP in the API's own format and falls
/// back (`None`) for gRPC: a real tonic client still gets the trailers-only
/// `UNAVAILABLE`, with the retry hint of gRFC A6 (`grpc-retry-pushback-ms`,
/// the `Retry-After` time in milliseconds) a retry policy acts on.
#[tokio::test]
async fn custom_rejection_falls_back_to_unavailable_with_retry_pushback() {
    let graceful = Coordinator::builder()
        .drain_deadline(Duration::from_secs(8))
        .retry_after(Duration::from_secs(2))
        .handle_signals(false)
        .build()
        .unwrap();
    let (started_tx, hook_started) = tokio::sync::oneshot::channel::<()>();
    let (release_hook, hook_rx) = tokio::sync::oneshot::channel::<()>();
    graceful
        .on_shutdown("blocked hook", move || async move {
            let _ = started_tx.send(());
            let _ = hook_rx.await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let (reasons_tx, mut reasons) = tokio::sync::mpsc::unbounded_channel();
    let layer = graceful.layer().respond_with_or_default(move |ctx| {
        let _ = reasons_tx.send((ctx.reason(), ctx.method().clone(), ctx.path().to_owned()));
        if ctx.is_grpc() {
            return None;
        }
        Some(http::Response::new(bytes::Bytes::from_static(
            b"{\"error\":\"draining\"}",
        )))
    });
    let (l, addr) = listener().await;
    let done = graceful.clone();
    let server = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(DemoServer::new())
            .serve_with_incoming_shutdown(TcpIncoming::from(l), async move {
                done.wait().await;
            }),
    );
    let mut c = client(addr).await;
    within("hello", c.hello(HelloRequest::default()))
        .await
        .expect("served");
    graceful.trigger();
    // Nothing in flight: the drain completes, the hook holds the server up.
    within("the hook to start", hook_started).await.unwrap();
    let err = within("hello after the drain", c.hello(HelloRequest::default()))
        .await
        .expect_err("rejected after the drain completed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("2000"),
        "{err:?}"
    );
    let (reason, method, path) = within("the function's context", reasons.recv())
        .await
        .unwrap();
    assert_eq!(reason, tower_graceful::drain::RejectReason::DrainCompleted);
    assert_eq!(method, http::Method::POST);
    assert_eq!(path, "/demo.v1.Demo/Hello");
    release_hook.send(()).unwrap();
    let report = within("shutdown report", graceful.wait()).await;
    assert_eq!(report.rejected, 1, "{report}");
    within("server stop", server).await.unwrap().unwrap();
}
