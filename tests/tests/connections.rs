//! What happens to *connections* during a drain with the crate's own serve
//! path ([`tower_graceful::serve`]): the lame duck's `Connection: close` on
//! HTTP/1.1 from the trigger (never on HTTP/2, which gets GOAWAY), the
//! listener closed at drain start, open connections still served while
//! draining, idle ones closed only once nothing is in flight, and the serve
//! future completing without any timer. Real axum apps, real hyper clients,
//! 127.0.0.1 only, every wait bounded.

use std::time::Duration;

use http::{header, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower_graceful::Coordinator;
use tower_graceful_tests::*;

/// A coordinator whose lame duck announces the close on every response from
/// the trigger on (window zero), with a long pre-drain so the test decides
/// when draining starts (`force` is not used: it would cut the drain).
fn lame_duck_now(pre_drain: Duration) -> Coordinator {
    builder(pre_drain, DEADLINE)
        .lame_duck_window(Duration::ZERO)
        .cleanup_timeout(Duration::from_secs(5))
        .build()
        .expect("valid test configuration")
}

/// HTTP/1.1 responses carry no `Connection: close` while serving and carry it
/// from the trigger on, and the server then closes that connection; HTTP/2
/// responses never carry it, and the HTTP/2 connection gets GOAWAY at the
/// trigger (the client's connection ends once its streams are done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_on_http1_from_the_trigger_goaway_on_http2() {
    let graceful = lame_duck_now(Duration::from_secs(60));
    let app = app(&graceful);
    let server = serve_owned(app.router, &graceful).await;

    let mut h1 = H1::connect(server.addr).await;
    h1.assert_kept_alive().await;

    let h2 = H2::connect(server.addr).await;
    let res = within("h2 GET /", h2.get("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::CONNECTION).is_none());
    body_text(res).await.unwrap();

    graceful.trigger();
    within("triggered", graceful.triggered()).await;

    // Still serving (pre-drain), but the connection is told to close.
    let res = h1
        .get("/")
        .await
        .expect("served during the pre-drain delay");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    h1.closed_by_server().await;

    // HTTP/2: GOAWAY at the trigger; the connection ends with no stream open.
    let H2 { conn, .. } = h2;
    within("the HTTP/2 connection to end after GOAWAY", conn)
        .await
        .expect("h2 connection task")
        .expect("clean h2 close");

    // New connections are still accepted during the pre-drain delay.
    let mut late = H1::connect(server.addr).await;
    let res = late.get("/").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    body_text(res).await.unwrap();

    graceful.force(); // end the test: nothing is in flight
    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.connections_told_to_close, 3, "{report}");
    server.stopped().await;
}

/// From the start of draining: the listener is closed (new connections are
/// refused, so a balancer sends them elsewhere), while a keep-alive
/// connection opened before is still served, with `Connection: close`, and
/// counted by the drain. An idle connection stays open while a request is in
/// flight and is closed once nothing is left; the serve future completes
/// then, before the cleanup hook (still running) lets the report out: no
/// timer holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_served_while_draining_and_closed_only_when_idle_at_the_end() {
    let graceful = coordinator(Duration::ZERO);
    let (hook_tx, hook_rx) = oneshot::channel::<()>();
    graceful
        .on_shutdown("blocked hook", move || async move {
            let _ = hook_rx.await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let mut app = app(&graceful);
    let server = serve_owned(app.router, &graceful).await;

    let mut pinned = H1::connect(server.addr).await; // an L4 client's pooled connection
    let res = pinned.get("/").await.unwrap();
    body_text(res).await.unwrap();
    let mut idle = H1::connect(server.addr).await; // used once, then idle in the pool
    body_text(idle.get("/").await.unwrap()).await.unwrap();
    let fresh = H1::connect(server.addr).await; // connected, never sent anything
    let mut slow_conn = H1::connect(server.addr).await;
    let slow = tokio::spawn(slow_conn.sender.send_request(slow_conn.request("/slow")));
    app.events.expect("slow started").await;

    graceful.trigger();
    within("draining", graceful.signal().draining()).await;

    // The pinned connection is served, told to close, and closed.
    let res = pinned.get("/").await.expect("served on an open connection");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "not rejected: the client could not know"
    );
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    pinned.closed_by_server().await;

    // The listener closes at drain start.
    refused_within_bound(server.addr).await;

    // While /slow is in flight the idle connection stays open, and the
    // server has not finished.
    assert!(
        !idle.conn.is_finished(),
        "idle connection closed while work was in flight"
    );
    assert!(
        !fresh.conn.is_finished(),
        "fresh connection closed while work was in flight"
    );
    assert!(!server.task.is_finished());

    app.gate.open();
    let slow = within("slow", slow).await.unwrap().unwrap();
    assert_eq!(body_bytes(slow).await.unwrap().len(), SLOW_BODY_LEN);
    within("drained", graceful.drained()).await;
    idle.closed_by_server().await;
    // Closed too (hyper's client calls the end of a connection that never
    // carried a request an incomplete message: any end will do here).
    let _ = within("the fresh connection to be closed", fresh.conn).await;
    // The serve future completes while the hook still holds the report.
    let stopped = server.task;
    within("the serve future", stopped).await.unwrap().unwrap();
    assert!(graceful.report().is_none(), "serve waited for the hooks");
    hook_tx.send(()).unwrap();

    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(report.served_while_draining, 1, "{report}");
    assert_eq!(report.connections_closed_idle, Some(2), "{report}");
    assert!(report.connections_told_to_close >= 2, "{report}"); // /slow's and the pinned one's
    assert!(
        report.to_string().contains("2 closed idle at the end"),
        "{report}"
    );
}

/// A request that arrives on an open connection after the drain completed
/// (nothing was in flight; a cleanup hook is still running) gets the
/// rejection with `Connection: close` instead of being served while pools
/// close, and a gRPC one gets trailers-only UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_drain_completed_is_rejected() {
    let graceful = coordinator(Duration::ZERO);
    let (hook_tx, hook_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    graceful
        .on_shutdown("blocked hook", move || async move {
            let _ = started_tx.send(());
            let _ = hook_rx.await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    let app = app(&graceful);
    // axum's own loop with the listener and connections kept until the end,
    // so a connection is still open after the drain.
    let server = serve_until_done(app.router, &graceful).await;
    let mut conn = H1::connect(server.addr).await;
    body_text(conn.get("/").await.unwrap()).await.unwrap();

    graceful.trigger();
    within("the hook to start", started_rx).await.unwrap();
    let res = conn.get("/").await.expect("a response");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    assert_eq!(header_str(&res, header::RETRY_AFTER), RETRY_AFTER);
    assert_eq!(body_text(res).await.unwrap(), REJECTION_BODY);
    // Probe still answer.
    let mut probe = H1::connect(server.addr).await;
    let res = probe.get("/live").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    hook_tx.send(()).unwrap();
    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.rejected, 1, "{report}");
    server.stopped().await;
}

/// Connects until the listener refuses. A connection that the kernel
/// accepted into the backlog just before the listener closed is reset when
/// it closes: each attempt waits for that event, and the attempts are few.
async fn refused_within_bound(addr: std::net::SocketAddr) {
    for _ in 0..20 {
        match TcpStream::connect(addr).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e:?}");
                return;
            }
            Ok(mut s) => {
                let mut b = [0u8; 1];
                let _ = within("the backlog connection to be dropped", s.read(&mut b)).await;
            }
        }
    }
    panic!("the listener still accepts connections after draining began");
}

/// The placement that avoids axum's per-route boxing, the layer around the
/// finished router, served as it is by `serve` (any response body): counted,
/// probed, told to close, drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_around_the_finished_router_is_served_as_it_is() {
    use axum::routing::get;
    let graceful = lame_duck_now(Duration::ZERO);
    let router = axum::Router::new().route("/", get(|| async { "hello\n" }));
    let app = tower::ServiceBuilder::new()
        .layer(graceful.layer())
        .service(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tower_graceful::serve(listener, app, &graceful));
    let mut conn = H1::connect(addr).await;
    let res = conn.get("/ready").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    body_text(res).await.unwrap();
    let res = conn.get("/").await.unwrap();
    assert_eq!(
        header_str(&res, header::CONTENT_LENGTH),
        "6",
        "exact size kept"
    );
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    let job = graceful.track("holds the drain open");
    graceful.trigger();
    within("draining", graceful.signal().draining()).await;
    let res = conn.get("/").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    body_text(res).await.unwrap();
    conn.closed_by_server().await;
    drop(job);
    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.served_while_draining, 1, "{report}");
    within("the serve future", server).await.unwrap().unwrap();
}

/// The end of the last response reaches the client before the shutdown is
/// over. A response is done, and with it the drain, once hyper has *taken*
/// the body's last frame, not once HTTP/2 has written it: here the client's
/// flow-control window (1 KiB) holds almost all of `/slow`'s 256 KiB body
/// back in the server until the drain has completed. `serve` must still
/// deliver every byte, with a clean end of stream, and `Coordinator::wait`
/// (after which a process exits) must not return before it has. Without
/// that, the report came out at once and the connection was cut with the
/// body in hyper's send queue: the rolling gRPC scenario's streams ended
/// after their 4th of 5 ticks ("stream closed because of a broken pipe").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_last_response_is_written_before_the_shutdown_is_over() {
    const WINDOW: u32 = 1024;
    let graceful = lame_duck_now(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve_owned(app.router, &graceful).await;

    // A raw HTTP/2 client: the window is given back only when the test says.
    let tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let (client, conn) = within(
        "the HTTP/2 handshake",
        h2::client::Builder::new()
            .initial_window_size(WINDOW)
            .handshake::<_, bytes::Bytes>(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let mut client = within("the client to be ready", client.ready())
        .await
        .unwrap();
    let req = http::Request::get(format!("http://{}/slow", server.addr))
        .body(())
        .unwrap();
    let (res, _) = client.send_request(req, true).unwrap();
    app.events.expect("slow started").await;

    graceful.trigger();
    within("draining", graceful.signal().draining()).await;
    app.gate.open();
    let res = within("the response head", res).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The body has been handed over whole: nothing is in flight any more,
    // while at most one window of it can have left the server.
    within("drained", graceful.drained()).await;

    let mut body = res.into_body();
    let mut got = Vec::with_capacity(SLOW_BODY_LEN);
    while let Some(chunk) = within("the next DATA frame", body.data()).await {
        let chunk = chunk.unwrap_or_else(|e| {
            panic!(
                "the response was cut after {} of {SLOW_BODY_LEN} bytes: {e}",
                got.len()
            )
        });
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), SLOW_BODY_LEN, "a clean end of stream, early");
    assert!(got == slow_body(), "the body's bytes differ");

    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    // By now the server has closed the connection (GOAWAY, then its FIN).
    drop(client);
    within("the client connection to end", conn)
        .await
        .unwrap()
        .expect("a clean HTTP/2 close");
    server.stopped().await;
}
