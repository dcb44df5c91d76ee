//! The library used the way real programs misuse it: `wait()` from many
//! places, a trigger before any server runs, a coordinator shared across
//! runtimes, every handle dropped, the extractor without the layer, and huge
//! requests against the draining rejection and the probes.
//!
//! Real servers on `127.0.0.1:0`, real clients; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::future::IntoFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;
use tower_graceful::{
    report::DrainOutcome, report::HookOutcome, report::TriggerCause, Coordinator, Phase,
    ShutdownSignal,
};
use tower_graceful_tests::{
    body_text, coordinator, serve, serve_draining, within, within_for, H1, REJECTION_BODY,
    RETRY_AFTER, WAIT,
};

// ------------------------------------------------------------ 4. wait() x N --

/// `wait()` awaited before the trigger by spawned tasks and by futures
/// already registered (polled once), awaited after a cancelled attempt, and
/// awaited again after the end: every call returns the same report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_from_many_tasks_and_twice_gives_the_same_report() {
    let graceful = coordinator(Duration::ZERO);
    graceful
        .on_shutdown("noop", || async { Ok::<_, std::io::Error>(()) })
        .unwrap();
    // Something in flight, so the drain has something to report.
    let job = graceful.track("job");

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let g = graceful.clone();
            tokio::spawn(async move { g.wait().await })
        })
        .collect();

    // Futures that have certainly registered as waiters before the trigger.
    let mut registered: Vec<_> = (0..4)
        .map(|_| {
            let g = graceful.clone();
            Box::pin(async move { g.wait().await })
        })
        .collect();
    for fut in &mut registered {
        assert!(
            fut.as_mut().now_or_never().is_none(),
            "wait() completed before the trigger"
        );
    }
    // A wait that is given up on (cancel safety: it only observes).
    assert!(
        tokio::time::timeout(Duration::from_millis(20), graceful.wait())
            .await
            .is_err(),
        "wait() completed before the trigger"
    );
    assert!(graceful.report().is_none());

    assert!(graceful.trigger());
    within("draining to begin", graceful.signal().draining()).await;
    drop(job);

    let first = within("the first wait()", graceful.wait()).await;
    let again = within("wait() after the end", graceful.wait()).await;
    let expected = format!("{first:?}");
    assert_eq!(format!("{again:?}"), expected);
    assert_eq!(format!("{:?}", graceful.report().unwrap()), expected);
    for (i, task) in tasks.into_iter().enumerate() {
        let r = within("a spawned wait()", task).await.expect("no panic");
        assert_eq!(format!("{r:?}"), expected, "spawned waiter {i}");
    }
    for (i, fut) in registered.into_iter().enumerate() {
        let r = within("a registered wait()", fut).await;
        assert_eq!(format!("{r:?}"), expected, "registered waiter {i}");
    }

    // And it is the right report.
    assert_eq!(first.cause, TriggerCause::Api);
    assert_eq!(first.drain_outcome, DrainOutcome::Drained, "{first}");
    assert_eq!(first.in_flight_at_drain, 1, "{first}");
    assert_eq!(first.hooks.len(), 1, "{first}");
    assert_eq!(first.hooks[0].outcome, HookOutcome::Completed, "{first}");
    assert_eq!(graceful.phase(), Phase::Done);
}

// ------------------------------------------- 5. trigger before any server --

/// A router whose only route counts its calls: the tests below prove that no
/// request reaches a handler once the shutdown is over.
fn counting_router(graceful: &Coordinator, calls: &Arc<AtomicUsize>) -> Router {
    let calls = calls.clone();
    Router::new()
        .route(
            "/",
            any(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { "hello\n" }
            }),
        )
        .layer(graceful.layer())
}

/// Triggered (and finished) before the server starts: the server future
/// handed `with_graceful_shutdown(coordinator.draining())` completes at once
/// and its listener is closed, so a new connection is **refused**
/// (`ECONNREFUSED`); no handler runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_started_after_the_trigger_stops_at_once_and_refuses_connections() {
    let graceful = coordinator(Duration::ZERO);
    assert!(graceful.trigger());
    let report = within("the report", graceful.wait()).await;
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");

    let calls = Arc::new(AtomicUsize::new(0));
    let server = serve_draining(counting_router(&graceful, &calls), &graceful).await;
    let addr = server.addr;
    within_for(
        Duration::from_secs(2),
        "the server future to complete at once",
        server.task,
    )
    .await
    .expect("server task panicked")
    .expect("server future failed");

    let err = within("connect", TcpStream::connect(addr))
        .await
        .expect_err("the listener is closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(graceful.rejected(), 0);
}

/// A client that connected (and sent its request) before the server started
/// sits in the listener's backlog. axum may still accept it in the moment
/// before it sees the finished shutdown future; either way the request never
/// reaches a handler: the client gets the draining `503` with the documented
/// body, or the connection is closed without a response. Which one happens
/// is axum's race, so both are accepted and the one seen is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_queued_before_a_server_started_after_the_trigger_is_never_served() {
    let graceful = coordinator(Duration::ZERO);
    assert!(graceful.trigger());
    within("the report", graceful.wait()).await;

    let calls = Arc::new(AtomicUsize::new(0));
    let router = counting_router(&graceful, &calls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = within("connect", TcpStream::connect(addr)).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();

    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(graceful.draining())
            .into_future(),
    );
    within("the server future to complete", server)
        .await
        .expect("server task panicked")
        .expect("server future failed");

    let mut got = Vec::new();
    let read = within("the connection to end", client.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    if got.is_empty() {
        eprintln!("queued request: connection closed without a response ({read:?})");
    } else {
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.ends_with(REJECTION_BODY), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(graceful.rejected(), 1);
        eprintln!("queued request: answered 503 by the draining responder");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a handler ran: {text}");
}

// ------------------------------------------------ 6. across two runtimes --

/// Keeps runtime A's thread alive until dropped.
struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Builds a coordinator (with a hook) on runtime A, on its own thread, and
/// hands a clone out. With `keep_running`, A keeps running until the
/// returned guard is dropped; otherwise A is shut down (and its thread
/// joined) before this returns.
fn coordinator_on_runtime_a(keep_running: bool) -> (Coordinator, StopOnDrop) {
    let (coord_tx, coord_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let a = std::thread::spawn(move || {
        let rt = current_thread_runtime();
        rt.block_on(async move {
            let graceful = Coordinator::builder()
                .handle_signals(false)
                .drain_deadline(Duration::from_secs(5))
                .cleanup_timeout(Duration::from_secs(1))
                .build()
                .expect("valid configuration");
            graceful
                .on_shutdown("hook", || async { Ok::<_, std::io::Error>(()) })
                .unwrap();
            coord_tx.send(graceful).unwrap();
            if keep_running {
                let _ = stop_rx.await;
            }
        });
        // Dropping `rt` shuts runtime A down: its tasks are dropped.
    });
    let graceful = coord_rx
        .recv_timeout(WAIT)
        .expect("runtime A built the coordinator");
    if !keep_running {
        a.join().expect("runtime A's thread");
    }
    (graceful, StopOnDrop(Some(stop_tx)))
}

/// Runs `f` on a fresh current-thread runtime B on its own thread and
/// returns its output (a panic in B fails the test).
fn on_runtime_b<F, T>(f: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || current_thread_runtime().block_on(f))
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A coordinator built on runtime A and used only from runtime B (its
/// `layer()` on a server in B, `signal()`, `trigger()`, `wait()`): the
/// shutdown runs to completion, driven by A, and B sees everything.
#[test]
fn coordinator_built_on_one_runtime_works_from_another() {
    let (graceful, _keep_a) = coordinator_on_runtime_a(true);
    let report = on_runtime_b(async move {
        let (tx, mut started) = mpsc::unbounded_channel::<()>();
        let router = Router::new()
            .route(
                "/poll",
                get(move |signal: ShutdownSignal| {
                    let _ = tx.send(());
                    async move {
                        signal.draining().await;
                        "bye\n"
                    }
                }),
            )
            .layer(graceful.layer());
        let server = serve_draining(router, &graceful).await;
        let mut conn = H1::connect(server.addr).await;
        let poll = tokio::spawn(conn.sender.send_request(conn.request("/poll")));
        within("the long-poll to start", started.recv()).await;
        assert_eq!(graceful.in_flight(), 1);

        let signal = graceful.signal();
        assert!(!signal.is_draining());
        assert!(graceful.trigger());
        within("the signal (driven by runtime A)", signal.draining()).await;
        let res = within("the long-poll's answer", poll)
            .await
            .unwrap()
            .expect("response");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await.unwrap(), "bye\n");
        let report = within("wait() from runtime B", graceful.wait()).await;
        server.stopped().await;
        report
    });
    assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
    assert_eq!(report.in_flight_at_drain, 1, "{report}");
    assert_eq!(report.completed_while_draining, 1, "{report}");
    assert_eq!(report.hooks.len(), 1, "{report}");
    assert_eq!(report.hooks[0].outcome, HookOutcome::Completed, "{report}");
}

/// The runtime that built the coordinator is shut down before the trigger;
/// a clone is then used from runtime B. The driver task lived on A, so
/// nothing drives the phases unless the library restarts the driver.
///
/// The library notices that its driver task is gone and starts a new one on
/// the runtime of whoever calls `trigger()` / `wait()`, so the shutdown still
/// runs to its report instead of hanging.
#[test]
fn coordinator_whose_runtime_is_gone_does_not_hang_wait() {
    let (graceful, _a_is_gone) = coordinator_on_runtime_a(false);
    on_runtime_b(async move {
        assert!(graceful.trigger());
        // A spawned task, so that a panic inside `wait()` (a loud failure)
        // counts as "did not hang".
        let waiter = tokio::spawn({
            let g = graceful.clone();
            async move { g.wait().await }
        });
        let outcome = tokio::time::timeout(Duration::from_secs(3), waiter).await;
        // The library restarts the driver on the caller's runtime.
        let report = outcome.as_ref().ok().and_then(|r| r.as_ref().ok()).cloned();
        assert!(
            report.is_some(),
            "wait() still pending 3 s after the trigger although nothing is in flight \
             (phase {:?}): it hangs forever once the runtime that built the coordinator \
             is gone",
            graceful.phase()
        );
    });
}

// ------------------------------------------------ 7. every handle dropped --

/// Every `Coordinator` handle dropped while a server runs with its layer:
/// the server keeps serving (handlers still get a `ShutdownSignal`), and
/// the signal clones say "not shutting down". Nothing can trigger any more
/// (no handle, OS signals off), and nothing breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_coordinator_handle_keeps_serving() {
    let graceful = coordinator(Duration::ZERO);
    let signal = graceful.signal();
    let router = Router::new()
        .route(
            "/",
            get(|s: ShutdownSignal| async move { format!("shutting down: {}\n", s.is_draining()) }),
        )
        .layer(graceful.layer());
    let server = serve_draining(router, &graceful).await;
    drop(graceful);

    for round in 0..20 {
        // A new connection each time too: the listener is still open.
        let mut conn = H1::connect(server.addr).await;
        for _ in 0..5 {
            let res = conn
                .get("/")
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(body_text(res).await.unwrap(), "shutting down: false\n");
        }
    }
    let probe = H1::connect(server.addr).await.get("/ready").await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    assert_eq!(body_text(probe).await.unwrap(), "ready\n");
    assert!(!signal.is_draining());
    assert!(!signal.clone().is_draining());
    assert!(!signal.is_forced());
    assert!(signal.deadline().is_none());
    assert!(!server.task.is_finished(), "the server stopped by itself");
    server.task.abort();
}

/// The same with the OS signal handlers on: with every handle dropped, the
/// signal is the only way left to shut down, and it works: SIGTERM (sent to
/// this test process, which the coordinator's handler owns from `build()`
/// on) drains, fires the signal clones and stops the server.
///
/// The only test in this binary that installs signal handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_handle_dropped_the_os_signal_still_shuts_down() {
    let graceful = Coordinator::builder()
        .drain_deadline(Duration::from_secs(5))
        .cleanup_timeout(Duration::from_secs(1))
        .build()
        .expect("valid configuration");
    let signal = graceful.signal();
    let router = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(graceful.layer());
    let server = serve_draining(router, &graceful).await;
    drop(graceful);

    let res = H1::connect(server.addr).await.get("/").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!signal.is_draining());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    within("SIGTERM to start the drain", signal.draining()).await;
    assert!(signal.is_draining());
    server.stopped().await;
}

// ------------------------------------------ 8. the extractor, no layer --

/// A handler that asks for `ShutdownSignal` on a route the layer does not
/// cover (no layer at all, or a route added after `Router::layer`) answers
/// `500` with a message that names the fix; `Option<ShutdownSignal>` gets
/// `None` and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractor_without_the_layer_is_a_500_naming_the_layer() {
    let graceful = coordinator(Duration::ZERO);
    let needs = |_: ShutdownSignal| async { "has signal\n" };
    let router = Router::new()
        .route("/covered", get(needs))
        .layer(graceful.layer())
        // Added after `layer`: not covered (a classic wiring mistake).
        .route("/late", get(needs))
        .route(
            "/optional",
            get(|s: Option<ShutdownSignal>| async move { format!("signal: {}\n", s.is_some()) }),
        );
    let bare = Router::new().route("/bare", get(needs));
    let server = serve(router.merge(bare), std::future::pending()).await;
    let mut conn = H1::connect(server.addr).await;

    let res = conn.get("/covered").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await.unwrap(), "has signal\n");

    for path in ["/late", "/bare"] {
        let res = conn.get(path).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        let text = body_text(res).await.unwrap();
        assert!(text.contains("ShutdownSignal"), "{path}: {text}");
        assert!(text.contains("coordinator.layer()"), "{path}: {text}");
        assert!(text.contains("Router::layer"), "{path}: {text}");
    }

    let res = conn.get("/optional").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await.unwrap(), "signal: false\n");
    server.task.abort();
}

// ------------------------------------- 9. huge requests, fixed responses --

const MIB: usize = 1024 * 1024;

/// The documented header set of the HTTP/1.1 draining rejection.
const REJECTION_HEADERS: [&str; 4] = [
    "connection",
    "content-length",
    "content-type",
    "retry-after",
];
/// The documented header set of a probe answer.
const PROBE_HEADERS: [&str; 2] = ["cache-control", "content-type"];

fn header_names(headers: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// A request carrying a 1 MiB header and a 1 MiB body (or tiny ones).
fn request(method: Method, path: &str, huge: bool) -> Request<Body> {
    let filler = if huge {
        "a".repeat(MIB)
    } else {
        "a".to_owned()
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "test")
        .header("x-filler", filler.clone())
        .header(header::CONTENT_LENGTH, filler.len())
        .body(Body::from(filler))
        .unwrap()
}

/// In process (`oneshot`), while draining: the rejection, the gRPC rejection
/// and the probes are byte-for-byte the documented answers whatever the size
/// of the request, with only the documented headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_and_probes_do_not_depend_on_the_request_in_process() {
    let graceful = coordinator(Duration::ZERO);
    let calls = Arc::new(AtomicUsize::new(0));
    let router = counting_router(&graceful, &calls);
    graceful.trigger();
    within("the report", graceful.wait()).await;

    async fn answer(router: &Router, req: Request<Body>) -> (http::response::Parts, Bytes) {
        let res = within("the response", router.clone().oneshot(req))
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = within("the body", body.collect()).await.unwrap().to_bytes();
        (parts, body)
    }

    let mut seen = Vec::new();
    for huge in [false, true] {
        let (parts, body) = answer(&router, request(Method::POST, "/", huge)).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header_names(&parts.headers), REJECTION_HEADERS);
        assert_eq!(parts.headers[header::RETRY_AFTER], RETRY_AFTER);
        assert_eq!(parts.headers[header::CONNECTION], "close");
        assert_eq!(
            parts.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            parts.headers[header::CONTENT_LENGTH],
            REJECTION_BODY.len().to_string().as_str()
        );
        assert_eq!(body, REJECTION_BODY);
        seen.push((parts.headers.clone(), body));

        // HTTP/2: no connection-level header.
        let mut req = request(Method::POST, "/", huge);
        *req.version_mut() = Version::HTTP_2;
        let (parts, body) = answer(&router, req).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            header_names(&parts.headers),
            ["content-length", "content-type", "retry-after"]
        );
        assert_eq!(body, REJECTION_BODY);

        // gRPC: trailers-only UNAVAILABLE, empty body.
        let mut req = request(Method::POST, "/pkg.Svc/Method", huge);
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        let (parts, body) = answer(&router, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(
            header_names(&parts.headers),
            [
                "content-type",
                "grpc-message",
                "grpc-retry-pushback-ms",
                "grpc-status"
            ]
        );
        assert_eq!(parts.headers["grpc-status"], "14");
        assert!(body.is_empty());

        for (method, path, status, text) in [
            (
                Method::GET,
                "/ready",
                StatusCode::SERVICE_UNAVAILABLE,
                "draining\n",
            ),
            (Method::HEAD, "/ready", StatusCode::SERVICE_UNAVAILABLE, ""),
            (Method::GET, "/live", StatusCode::OK, "live\n"),
            (Method::HEAD, "/live", StatusCode::OK, ""),
        ] {
            let (parts, body) = answer(&router, request(method.clone(), path, huge)).await;
            assert_eq!(parts.status, status, "{method} {path}");
            assert_eq!(
                header_names(&parts.headers),
                PROBE_HEADERS,
                "{method} {path}"
            );
            assert_eq!(body, text, "{method} {path}");
        }
    }
    assert_eq!(
        seen[0], seen[1],
        "the rejection changed with the request size"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(graceful.rejected(), 6);
}

/// Serves `router` with hyper's HTTP/1.1 server directly, with the header
/// buffer raised to 4 MiB (axum::serve cannot change it) and no shutdown
/// wiring, so the listener stays open while draining.
async fn serve_with_big_header_limit(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(4 * MIB)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A raw HTTP/1.1 exchange: writes `head` and `body` (in a task, so a
/// server that answers before reading everything cannot block us), reads the
/// response until the server closes the connection or `Content-Length`
/// bytes of body arrived. Returns the status line, the header names and
/// values, and the body.
async fn raw_exchange(
    addr: SocketAddr,
    head: String,
    body: Bytes,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        // Errors are expected if the server closes before reading it all.
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (status, headers, body_start, len) = loop {
        let n = within("response bytes", rd.read(&mut chunk))
            .await
            .expect("read the response");
        assert!(
            n > 0,
            "connection closed before a full response head: {buf:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).expect("ASCII head");
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap().to_owned();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(':').expect("header line");
                    (k.trim().to_ascii_lowercase(), v.trim().to_owned())
                })
                .collect();
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse::<usize>().unwrap());
            break (status, headers, end + 4, len);
        }
    };
    let mut body = buf[body_start..].to_vec();
    loop {
        if len.is_some_and(|len| body.len() >= len) {
            break;
        }
        match within("response body bytes", rd.read(&mut chunk)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    writer.abort();
    (status, headers, body)
}

fn raw_head(method: &str, path: &str, filler_len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nx-filler: {}\r\ncontent-length: {filler_len}\r\n\r\n",
        "a".repeat(filler_len)
    )
}

/// Over a real connection, while draining: a request with a 1 MiB header
/// and a 1 MiB body gets exactly the documented rejection (status, headers,
/// body), the same as a one-byte request; the probes likewise. hyper's
/// header limit is raised so the request reaches the layer; hyper adds only
/// `date`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_and_probes_do_not_depend_on_the_request_over_the_wire() {
    let graceful = coordinator(Duration::ZERO);
    let calls = Arc::new(AtomicUsize::new(0));
    let (addr, server) = serve_with_big_header_limit(counting_router(&graceful, &calls)).await;
    graceful.trigger();
    within("the report", graceful.wait()).await;

    let mut rejections = Vec::new();
    for filler in [1, MIB] {
        let body = Bytes::from("b".repeat(filler));
        let (status, headers, body) = raw_exchange(addr, raw_head("POST", "/", filler), body).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{filler}");
        let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "connection",
                "content-length",
                "content-type",
                "date",
                "retry-after"
            ],
            "{filler}"
        );
        let without_date: Vec<_> = headers.into_iter().filter(|(k, _)| k != "date").collect();
        assert!(without_date.contains(&("retry-after".into(), RETRY_AFTER.into())));
        assert!(without_date.contains(&("connection".into(), "close".into())));
        assert_eq!(String::from_utf8(body).unwrap(), REJECTION_BODY, "{filler}");
        let mut sorted = without_date;
        sorted.sort();
        rejections.push(sorted);

        for (path, status_line, text) in [
            ("/ready", "HTTP/1.1 503 Service Unavailable", "draining\n"),
            ("/live", "HTTP/1.1 200 OK", "live\n"),
        ] {
            let body = Bytes::from("b".repeat(filler));
            let (status, headers, body) =
                raw_exchange(addr, raw_head("GET", path, filler), body).await;
            assert_eq!(status, status_line, "{path} {filler}");
            let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
            names.sort();
            assert_eq!(
                names,
                ["cache-control", "content-length", "content-type", "date"],
                "{path} {filler}"
            );
            assert_eq!(String::from_utf8(body).unwrap(), text, "{path} {filler}");
        }
    }
    assert_eq!(
        rejections[0], rejections[1],
        "the rejection grew with the request"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(graceful.rejected(), 2);
    server.abort();
}

/// With `axum::serve`'s defaults, a 1 MiB header never reaches the layer:
/// hyper refuses it at the protocol level (`431`), before any middleware,
/// and the coordinator counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_is_refused_by_hyper_before_the_layer_with_axum_defaults() {
    let graceful = coordinator(Duration::ZERO);
    let calls = Arc::new(AtomicUsize::new(0));
    let server = serve(counting_router(&graceful, &calls), std::future::pending()).await;
    graceful.trigger();
    within("the report", graceful.wait()).await;

    let (status, _headers, body) = raw_exchange(
        server.addr,
        raw_head("POST", "/", MIB),
        Bytes::from("b".repeat(MIB)),
    )
    .await;
    assert_eq!(
        status, "HTTP/1.1 431 Request Header Fields Too Large",
        "{body:?}"
    );
    assert!(body.is_empty(), "{body:?}");
    assert_eq!(graceful.rejected(), 0, "the layer never saw it");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.task.abort();
}
