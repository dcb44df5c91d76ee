//! Shared helpers for the end-to-end tests in `tests/tests/`: a test app
//! whose slow handlers the test releases explicitly (no timing guesses), real
//! axum servers on `127.0.0.1:0`, real hyper clients (HTTP/1.1 and HTTP/2
//! with prior knowledge), waits that are always bounded, and the examples as
//! child processes ([`example`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower_graceful::{Coordinator, ShutdownSignal};

pub mod example;

/// The bound on every single wait in these tests. Generous, because a loaded
/// CI machine is slow; a correct run takes milliseconds per step.
pub const WAIT: Duration = Duration::from_secs(10);

/// The drain deadline used by [`coordinator`].
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The `Retry-After` configured by [`coordinator`].
pub const RETRY_AFTER: &str = "2";

/// The rejection body configured by [`coordinator`].
pub const REJECTION_BODY: &str = "draining: retry on another instance\n";

/// The close code the test app's WebSocket sends on shutdown.
pub const WS_CLOSE_CODE: u16 = close_code::RESTART;

/// Awaits `fut`, failing the test with `what` if it takes longer than
/// [`WAIT`].
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within_for<F: IntoFuture>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A coordinator for tests: no OS signal handlers (several coordinators live
/// in one test process), probes on `/ready` and `/live`, `Retry-After: 2`
/// without jitter, a recognizable rejection body, a 5 s drain deadline.
pub fn coordinator(pre_drain: Duration) -> Coordinator {
    coordinator_with_deadline(pre_drain, DEADLINE)
}

/// Like [`coordinator`] with another drain deadline.
pub fn coordinator_with_deadline(pre_drain: Duration, deadline: Duration) -> Coordinator {
    builder(pre_drain, deadline)
        .build()
        .expect("valid test configuration")
}

/// The builder behind [`coordinator`], for tests that set more.
pub fn builder(pre_drain: Duration, deadline: Duration) -> tower_graceful::Builder {
    Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(pre_drain)
        .drain_deadline(deadline)
        .cleanup_timeout(Duration::from_secs(1))
        .retry_after(Duration::from_secs(2))
        .rejection_body(REJECTION_BODY)
        .readiness_path("/ready")
        .liveness_path("/live")
}

// ----------------------------------------------------------------- the app --

/// What the handlers report to the test, in order.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<&'static str>,
    seen: VecDeque<&'static str>,
}

impl Events {
    /// Waits (bounded) until the handlers have reported `what`. Other events
    /// that arrive meanwhile are kept for later calls.
    pub async fn expect(&mut self, what: &'static str) {
        if let Some(i) = self.seen.iter().position(|e| *e == what) {
            self.seen.remove(i);
            return;
        }
        loop {
            let got = within(what, self.rx.recv())
                .await
                .unwrap_or_else(|| panic!("app dropped before reporting {what:?}"));
            if got == what {
                return;
            }
            self.seen.push_back(got);
        }
    }
}

/// Lets the test app's slow handlers finish: `/slow` answers and `/stream`
/// sends the rest of its chunks only once the test opens the gate.
#[derive(Clone, Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    /// Opens the gate for every waiting and future handler.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    async fn passed(&self) {
        let mut rx = self.0.subscribe();
        // Err only if the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[derive(Clone)]
struct Shared {
    events: mpsc::UnboundedSender<&'static str>,
    gate: Gate,
}

impl Shared {
    fn report(&self, what: &'static str) {
        let _ = self.events.send(what);
    }
}

/// The test app: routes, its event feed and its gate.
pub struct TestApp {
    /// The router with `coordinator.layer()` applied.
    pub router: Router,
    /// What the handlers report.
    pub events: Events,
    /// Releases `/slow` and `/stream`.
    pub gate: Gate,
}

/// Size of the `/slow` response body.
pub const SLOW_BODY_LEN: usize = 256 * 1024;
/// Chunks in a `/stream` response.
pub const STREAM_CHUNKS: usize = 8;

/// The exact body `/slow` answers: large enough to span several HTTP/2 flow
/// control windows and TCP writes, with content that shows truncation.
pub fn slow_body() -> Vec<u8> {
    (0..SLOW_BODY_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Chunk `i` of `/stream`.
pub fn stream_chunk(i: usize) -> String {
    format!("chunk {i}: {}\n", "x".repeat(4096))
}

/// The exact body `/stream` sends.
pub fn stream_body() -> String {
    (0..STREAM_CHUNKS).map(stream_chunk).collect()
}

/// Routes:
///
/// * `/`: `hello`.
/// * `/slow`: reports `"slow started"`, waits for the gate, answers
///   [`slow_body`].
/// * `/stream`: sends chunk 0 at once and reports `"stream started"`, sends
///   the other chunks once the gate is open ([`stream_body`] in all).
/// * `/sse`: an `event: hello` at once, then, when the `ShutdownSignal`
///   fires, a final `event: bye` and the end of the stream.
/// * `/ws`: echo; on shutdown a close frame [`WS_CLOSE_CODE`]
///   "service restart", then waits for the client's close frame (or the
///   forced stop) while holding a `signal.track("ws session")` guard.
///   Reports `"ws session over"` when the session ends.
pub fn app(coordinator: &Coordinator) -> TestApp {
    let (tx, rx) = mpsc::unbounded_channel();
    let gate = Gate(watch::channel(false).0);
    let shared = Shared {
        events: tx,
        gate: gate.clone(),
    };
    let router = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route("/stream", get(chunked))
        .route("/sse", get(sse))
        .route("/ws", get(websocket))
        .layer(Extension(shared))
        .layer(coordinator.layer());
    TestApp {
        router,
        events: Events {
            rx,
            seen: VecDeque::new(),
        },
        gate,
    }
}

async fn slow(Extension(s): Extension<Shared>) -> Vec<u8> {
    s.report("slow started");
    s.gate.passed().await;
    slow_body()
}

async fn chunked(Extension(s): Extension<Shared>) -> Body {
    let chunks = stream::unfold((0, s), |(i, s)| async move {
        if i == STREAM_CHUNKS {
            return None;
        }
        if i == 1 {
            s.report("stream started");
            s.gate.passed().await;
        }
        Some((Ok::<_, Infallible>(stream_chunk(i)), (i + 1, s)))
    });
    Body::from_stream(chunks)
}

async fn sse(signal: ShutdownSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::unfold(Some((0, signal)), |state| async move {
        let (n, signal) = state?;
        if n == 0 {
            let hello = Event::default().event("hello").data("first");
            return Some((Ok(hello), Some((1, signal))));
        }
        signal.draining().await;
        let bye = Event::default()
            .event("bye")
            .data("server restarting")
            .retry(Duration::from_millis(1500));
        Some((Ok(bye), None))
    });
    Sse::new(events)
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    signal: ShutdownSignal,
    Extension(s): Extension<Shared>,
) -> Response {
    let guard = signal.track("ws session");
    upgrade
        .on_upgrade(move |socket| async move {
            ws_session(socket, &signal).await;
            drop(guard);
            s.report("ws session over");
        })
        .into_response()
}

async fn ws_session(mut socket: WebSocket, signal: &ShutdownSignal) {
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if socket.send(Message::Text(t)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = signal.draining() => break,
        }
    }
    let close = CloseFrame {
        code: WS_CLOSE_CODE,
        reason: "service restart".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = signal.forced() => return,
        }
    }
}

// -------------------------------------------------------------- the server --

/// A running axum server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The `axum::serve` future: completes once the shutdown future resolved
    /// and every connection closed.
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Waits (bounded) for the server future to complete.
    pub async fn stopped(self) {
        within("the axum server future to complete", self.task)
            .await
            .expect("server task panicked")
            .expect("server future failed");
    }
}

/// A listener on a free loopback port (`127.0.0.1:0`) and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `router` on `127.0.0.1:0` with
/// `axum::serve(..).with_graceful_shutdown(shutdown)` (HTTP/1.1 and h2c).
pub async fn serve(router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> Server {
    let (listener, addr) = listener().await;
    let task = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future(),
    );
    Server { addr, task }
}

/// Serves `router` wired as the library recommends: the listener closes
/// (idle keep-alive connections close, HTTP/2 gets GOAWAY) when draining
/// starts.
pub async fn serve_draining(router: Router, coordinator: &Coordinator) -> Server {
    serve(router, coordinator.draining()).await
}

/// Serves `router` with a listener that stays open until the whole shutdown
/// is over, so that requests arriving while draining reach the draining
/// responder (as in the `demo` example).
pub async fn serve_until_done(router: Router, coordinator: &Coordinator) -> Server {
    let c = coordinator.clone();
    serve(router, async move {
        c.wait().await;
    })
    .await
}

/// Serves `router` with the crate's own [`tower_graceful::serve`]: the
/// listener closes when draining starts, open connections keep being
/// served, idle ones close once nothing is left in flight.
pub async fn serve_owned(router: Router, coordinator: &Coordinator) -> Server {
    let (listener, addr) = listener().await;
    let task = tokio::spawn(tower_graceful::serve(listener, router, coordinator));
    Server { addr, task }
}

// ------------------------------------------------------------- the clients --

/// One HTTP/1.1 connection: its request sender and the connection task,
/// which completes when the connection closes.
pub struct H1 {
    /// Sends requests on this connection, one at a time.
    pub sender: http1::SendRequest<Empty<Bytes>>,
    /// The connection task.
    pub conn: JoinHandle<hyper::Result<()>>,
    addr: SocketAddr,
}

impl H1 {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let (sender, conn) = within("HTTP/1.1 handshake", http1::handshake(TokioIo::new(tcp)))
            .await
            .expect("handshake");
        Self {
            sender,
            conn: tokio::spawn(conn),
            addr,
        }
    }

    /// A `GET path` request for this connection.
    pub fn request(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header(header::HOST, self.addr.to_string())
            .body(Empty::new())
            .unwrap()
    }

    /// Sends `GET path` and waits (bounded) for the response head.
    pub async fn get(&mut self, path: &str) -> hyper::Result<http::Response<Incoming>> {
        let req = self.request(path);
        self.send(req).await
    }

    /// Waits until the connection can take a request (the previous response
    /// is done), sends `req` and waits (bounded) for the response head.
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> hyper::Result<http::Response<Incoming>> {
        within("the connection to be ready", self.sender.ready()).await?;
        let what = format!("{} {}", req.method(), req.uri());
        within(&what, self.sender.send_request(req)).await
    }

    /// Sends `GET /` and asserts a `200` without a `Connection` header (the
    /// connection is kept alive), then reads the body.
    pub async fn assert_kept_alive(&mut self) {
        let res = self.get("/").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header_str(&res, header::CONNECTION),
            "",
            "keep-alive while serving"
        );
        body_text(res).await.unwrap();
    }

    /// Waits (bounded) for the server to close this connection.
    pub async fn closed_by_server(self) {
        let res = within("the server to close the HTTP/1.1 connection", self.conn)
            .await
            .expect("connection task panicked");
        res.expect("the connection closed cleanly");
    }
}

/// One HTTP/2 connection with prior knowledge (h2c).
pub struct H2 {
    /// Opens streams on this connection.
    pub sender: http2::SendRequest<Empty<Bytes>>,
    /// The connection task.
    pub conn: JoinHandle<hyper::Result<()>>,
    addr: SocketAddr,
}

impl H2 {
    /// Opens an HTTP/2 connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let (sender, conn) = within(
            "HTTP/2 handshake",
            http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
        )
        .await
        .expect("h2 handshake");
        Self {
            sender,
            conn: tokio::spawn(conn),
            addr,
        }
    }

    /// A `GET path` request (absolute URI, as HTTP/2 needs `:authority`).
    pub fn request(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("http://{}{path}", self.addr))
            .body(Empty::new())
            .unwrap()
    }

    /// Opens a stream with `GET path` and waits (bounded) for the head.
    pub fn get(
        &self,
        path: &str,
    ) -> impl Future<Output = hyper::Result<http::Response<Incoming>>> + Send + 'static {
        let mut sender = self.sender.clone();
        let req = self.request(path);
        async move { sender.send_request(req).await }
    }
}

/// Reads the whole body (bounded).
pub async fn body_bytes(res: http::Response<Incoming>) -> Result<Bytes, hyper::Error> {
    Ok(within("the response body", res.into_body().collect())
        .await?
        .to_bytes())
}

/// Reads the whole body as text (bounded).
pub async fn body_text(res: http::Response<Incoming>) -> Result<String, hyper::Error> {
    let bytes = body_bytes(res).await?;
    Ok(String::from_utf8(bytes.to_vec()).expect("UTF-8 body"))
}

/// A header as a string, or `""`.
pub fn header_str(res: &http::Response<Incoming>, name: header::HeaderName) -> &str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads server-sent events from a response body, one complete event
/// (ending in a blank line) at a time.
pub struct SseReader {
    body: Incoming,
    buf: String,
}

impl SseReader {
    /// Reads events from `res`'s body.
    pub fn new(res: http::Response<Incoming>) -> Self {
        Self {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next complete event (bounded wait); `Ok(None)` at a clean end of
    /// the stream with nothing left over. A body error (a reset stream, a cut
    /// connection) or a partial event at the end is an `Err`.
    pub async fn next(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                return Ok(Some(self.buf.drain(..end + 2).collect()));
            }
            match within("the next SSE frame", self.body.frame()).await {
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(format!("stream ended inside an event: {:?}", self.buf)),
                Some(Err(e)) => return Err(format!("stream failed: {e} ({e:?})")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf
                            .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                    }
                }
            }
        }
    }
}
