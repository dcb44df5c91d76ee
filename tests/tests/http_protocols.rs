//! Protocol behaviour during a drain: HTTP/1.1 keep-alive, HTTP/2 GOAWAY,
//! server-sent events, WebSocket close handshakes. Real axum servers on
//! loopback, real clients (hyper, tokio-tungstenite).

use std::error::Error as _;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower_graceful::{report::DrainOutcome, report::StragglerKind, Coordinator, Phase};
use tower_graceful_tests::*;

// ------------------------------------------------------- HTTP/1.1 keep-alive --

/// A keep-alive connection opened while serving and reused while draining
/// (an L4 balancer's or a pool's) is served, with `Connection: close`, and
/// the server then closes that connection, so the client's next request
/// opens a new one (which a balancer sends elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_reused_while_draining_gets_connection_close() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    // Connections stay open through the drain.
    let server = serve(app.router, graceful.close_connections()).await;

    let mut conn = H1::connect(server.addr).await;
    conn.assert_kept_alive().await;

    let mut slow_conn = H1::connect(server.addr).await;
    let slow = tokio::spawn(slow_conn.sender.send_request(slow_conn.request("/slow")));
    app.events.expect("slow started").await;
    graceful.trigger();
    within("draining", graceful.signal().draining()).await;

    // Same connection, new request.
    let res = conn
        .get("/")
        .await
        .expect("a response on the reused connection");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONNECTION), "close");
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    conn.closed_by_server().await;

    app.gate.open();
    let slow = within("slow", slow).await.unwrap().unwrap();
    assert_eq!(body_bytes(slow).await.unwrap().len(), SLOW_BODY_LEN);
    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.rejected, 0, "{report}");
    assert_eq!(report.served_while_draining, 1, "{report}");
    assert!(report.is_clean(), "{report}");
    server.stopped().await;
}

/// With the recommended wiring, a keep-alive connection busy with a request
/// when draining starts finishes that response whole, then is closed by the
/// server rather than kept for reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_keep_alive_connection_finishes_then_closes() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;

    let mut conn = H1::connect(server.addr).await;
    let slow = tokio::spawn(conn.sender.send_request(conn.request("/slow")));
    app.events.expect("slow started").await;
    graceful.trigger();
    within("draining", graceful.signal().draining()).await;

    app.gate.open();
    let slow = within("slow", slow).await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    assert!(body_bytes(slow).await.unwrap() == slow_body());
    conn.closed_by_server().await;
    server.stopped().await;
    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.completed_while_draining, 1, "{report}");
}

// ------------------------------------------------------------------ HTTP/2 --

/// Whether a failed attempt to open a stream shows the client honouring
/// GOAWAY: hyper's client stops dispatching on a graceful GOAWAY and cancels
/// new requests without sending them; h2 itself would report GOAWAY or
/// REFUSED_STREAM.
fn refused_by_goaway(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.is_go_away() || h2e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// An HTTP/2 stream in flight when draining starts completes whole, while
/// the connection gets GOAWAY: new streams on it are refused (never reach
/// the server), and the connection closes once the in-flight stream is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_in_flight_stream_completes_while_goaway_refuses_new_streams() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let mut h2c = H2::connect(server.addr).await;

    let hello = within("h2 GET /", h2c.get("/")).await.unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.version(), http::Version::HTTP_2);
    body_text(hello).await.unwrap();

    let slow = tokio::spawn(h2c.get("/slow"));
    app.events.expect("slow started").await;
    graceful.trigger();

    within("draining", graceful.signal().draining()).await;

    // The GOAWAY reaches the client asynchronously (the server's connection
    // task writes it, the client's h2 connection task reads it), and hyper's
    // client exposes no event for it. Until then a new stream may still reach
    // the server, where it is served (its client could not have known; the
    // draining policy), never reset. So: a bounded retry until the client
    // refuses the new stream.
    let mut served_before_goaway = 0;
    let err = loop {
        match within("a new stream while draining", h2c.get("/")).await {
            Err(e) => break e,
            Ok(res) => {
                assert_eq!(
                    res.status(),
                    StatusCode::OK,
                    "a stream that reached the server while draining is served"
                );
                assert_eq!(
                    header_str(&res, header::CONNECTION),
                    "",
                    "no Connection header in h2"
                );
                body_text(res).await.unwrap();
                served_before_goaway += 1;
                assert!(served_before_goaway < 2000, "the client never saw GOAWAY");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    assert!(
        refused_by_goaway(&err),
        "refused for another reason: {err:?}"
    );
    assert!(
        !slow.is_finished(),
        "GOAWAY arrived while the first stream was in flight"
    );
    assert_eq!(graceful.in_flight(), 1);
    if err.is_canceled() {
        // hyper's client cancels new requests because its dispatch task
        // stopped on a graceful GOAWAY (NO_ERROR): that task ended cleanly,
        // while the in-flight stream lives on.
        within("the client dispatch to stop after GOAWAY", &mut h2c.conn)
            .await
            .unwrap()
            .expect("graceful GOAWAY, not a connection error");
    }

    app.gate.open();
    let slow = within("the in-flight stream", slow).await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    let body = body_bytes(slow)
        .await
        .expect("in-flight stream completes, no reset");
    assert!(
        body == slow_body(),
        "full body over HTTP/2 ({} bytes)",
        body.len()
    );

    // The server closes the connection after its last stream, and stops.
    server.stopped().await;
    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.in_flight_at_drain, 1, "{report}");
    assert_eq!(
        report.completed_while_draining,
        1 + served_before_goaway,
        "{report}"
    );
    assert_eq!(
        report.served_while_draining, served_before_goaway,
        "{report}"
    );
    assert_eq!(report.rejected, 0, "{report}");
}

// --------------------------------------------------------------------- SSE --

async fn sse_ends_cleanly(graceful: Coordinator, res: http::Response<hyper::body::Incoming>) {
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, header::CONTENT_TYPE), "text/event-stream");
    let mut events = SseReader::new(res);
    let first = events.next().await.unwrap().expect("first event");
    assert!(first.contains("event: hello"), "{first:?}");

    graceful.trigger();
    let last = events
        .next()
        .await
        .expect("no reset or cut")
        .expect("a final event before the end");
    assert!(last.contains("event: bye"), "{last:?}");
    assert!(last.contains("data: server restarting"), "{last:?}");
    assert!(last.contains("retry: 1500"), "{last:?}");
    assert_eq!(
        events.next().await,
        Ok(None),
        "clean end of stream after the final event"
    );

    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.completed_while_draining, 1, "{report}");
    assert!(
        report.drain < DEADLINE / 2,
        "ended at draining, not at the deadline: {report}"
    );
}

/// An SSE stream watching `ShutdownSignal` ends at draining with a complete
/// final event and a clean end of the chunked body (HTTP/1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_cleanly_at_draining_http1() {
    let graceful = coordinator(Duration::ZERO);
    let app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let mut conn = H1::connect(server.addr).await;
    let res = conn.get("/sse").await.unwrap();
    sse_ends_cleanly(graceful, res).await;
    server.stopped().await;
}

/// The same over HTTP/2: the stream ends with END_STREAM, not RST_STREAM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_cleanly_at_draining_http2() {
    let graceful = coordinator(Duration::ZERO);
    let app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let h2c = H2::connect(server.addr).await;
    let res = within("h2 GET /sse", h2c.get("/sse")).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    sse_ends_cleanly(graceful, res).await;
    server.stopped().await;
}

// --------------------------------------------------------------- WebSocket --

async fn ws_connect(addr: std::net::SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let (mut ws, res) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
    )
    .await
    .expect("upgrade");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::Text("ping".into())).await.unwrap();
    match within("the echo", ws.next()).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "ping"),
        other => panic!("expected the echo, got {other:?}"),
    }
    ws
}

/// Reads until the server's close frame and returns its code and reason.
/// Does not reply: tungstenite sends the reply on the next read or flush.
async fn ws_close_frame(ws: &mut WebSocketStream<TcpStream>) -> (u16, String) {
    loop {
        match within("the server's close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// When draining starts the client receives close 1012 "service restart";
/// the drain waits for the close handshake (the session's guard is held
/// until the client replies), then the report is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_gets_close_frame_and_drain_waits_for_the_handshake() {
    let graceful = coordinator(Duration::ZERO);
    let mut app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let mut ws = ws_connect(server.addr).await;
    assert_eq!(
        graceful.in_flight(),
        1,
        "the session is tracked after the upgrade"
    );

    graceful.trigger();
    let (code, reason) = ws_close_frame(&mut ws).await;
    assert_eq!(code, WS_CLOSE_CODE);
    assert_eq!(reason, "service restart");

    // The client has not replied yet: the drain must still be waiting.
    assert_eq!(graceful.phase(), Phase::Draining);
    assert_eq!(
        graceful.in_flight(),
        1,
        "the session guard is held until the handshake"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), graceful.wait())
            .await
            .is_err(),
        "the drain finished before the client answered the close frame"
    );
    assert_eq!(graceful.in_flight(), 1);

    // Reply (tungstenite flushes the queued close reply on the next read),
    // then see the server end the connection.
    loop {
        match within("the end of the WebSocket", ws.next()).await {
            None => break,
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(other)) => panic!("unexpected message after close: {other:?}"),
            Some(Err(e)) => panic!("close handshake failed: {e}"),
        }
    }
    app.events.expect("ws session over").await;

    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained);
    assert!(report.is_clean(), "{report}");
    assert!(
        report.drain >= Duration::from_millis(300),
        "the drain waited: {report}"
    );
    assert_eq!(graceful.in_flight(), 0);
    server.stopped().await;
}

/// A WebSocket client that never answers the close frame is abandoned at
/// the drain deadline, and the report names the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_that_never_answers_is_named_as_straggler_at_deadline() {
    let graceful = coordinator_with_deadline(Duration::ZERO, Duration::from_millis(500));
    let mut app = app(&graceful);
    let server = serve_draining(app.router, &graceful).await;
    let mut ws = ws_connect(server.addr).await;

    graceful.trigger();
    let (code, _) = ws_close_frame(&mut ws).await;
    assert_eq!(code, WS_CLOSE_CODE);
    // Never read or write again: the close reply is never sent.

    let report = within("the report", graceful.wait()).await;
    assert_eq!(
        report.drain_outcome,
        DrainOutcome::DeadlineExceeded,
        "{report}"
    );
    assert_eq!(report.stragglers.len(), 1, "{report}");
    match &report.stragglers[0].what {
        StragglerKind::Task { name } => assert_eq!(name, "ws session"),
        other => panic!("expected the ws session task, got {other:?}"),
    }
    assert_eq!(report.force_cancelled(), 0, "a task, not a request");
    assert!(!report.is_clean());
    // The session saw the hard signal and ended.
    app.events.expect("ws session over").await;
    drop(ws);
    server.stopped().await;
}
