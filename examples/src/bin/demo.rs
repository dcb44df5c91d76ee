//! A self-contained tour of a graceful shutdown, on loopback, in about two
//! seconds:
//!
//! ```text
//! cargo run -p tower-graceful-examples --bin demo
//! ```
//!
//! It starts an axum app with the full `tower-graceful` stack, served by
//! `tower_graceful::serve` (which owns the connections), plus an admin port
//! with the probes. It sends real traffic with real clients (fast and slow
//! requests, a chunked stream, server-sent events, a WebSocket session, a
//! background job), triggers the shutdown while all of that is in flight,
//! keeps probing `/ready` and `/live` and sending new requests, and prints a
//! timeline and the shutdown report. On the way you see what a client of an
//! L4 load balancer sees:
//!
//! * during the pre-drain delay, responses start to announce
//!   `Connection: close` (a rising share), so pooled connections move away;
//! * from the start of draining the listener is closed (a new connection is
//!   refused, which a balancer sends elsewhere), while a keep-alive
//!   connection opened before is still **served**, with `Connection: close`;
//! * a request on such a connection with less than `min_time_left` before the
//!   deadline gets `503` + `Retry-After` + `Connection: close` (the demo sets
//!   `min_time_left` large so you can see it);
//! * idle connections are closed only once nothing is left in flight.
//!
//! It exits 0 only if every request accepted before draining completed with
//! its full body, every late request got one of the answers above, and
//! nothing was left behind; otherwise it says what went wrong and exits 1.

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::Query;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use futures_util::{SinkExt, StreamExt};
use http::{header, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tower_graceful::signal::TaskGuard;
use tower_graceful::{report::DrainOutcome, Coordinator, Phase, ShutdownSignal};

const PRE_DRAIN: Duration = Duration::from_millis(300);
const DEADLINE: Duration = Duration::from_secs(3);
/// Deliberately large, so the demo can show the rejection of a request that
/// could not finish before the deadline (a tenth of it by default).
const MIN_TIME_LEFT: Duration = Duration::from_millis(2500);
const SLOW: [u64; 2] = [1000, 1500];
const STREAM_CHUNKS: usize = 10;
const STREAM_GAP: Duration = Duration::from_millis(150);
/// Bytes in each slow response, so that "complete" means something.
const SLOW_BODY: usize = 64 * 1024;

// ---------------------------------------------------------------- timeline --

/// Everything that happened, with when. Printed relative to the trigger.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String)>>>);

impl Timeline {
    fn note(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((Instant::now(), what.into()));
    }

    fn print(&self, trigger: Instant) {
        let mut entries = self.0.lock().unwrap().clone();
        entries.sort_by_key(|(at, _)| *at);
        println!("timeline (ms since trigger)");
        for (at, what) in entries {
            let ms = if at >= trigger {
                (at - trigger).as_millis() as i64
            } else {
                -((trigger - at).as_millis() as i64)
            };
            println!("  {ms:>+6}  {what}");
        }
    }
}

/// What went wrong, if anything.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<Vec<String>>>);

impl Problems {
    fn add(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.add(what());
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

// ------------------------------------------------------------------ server --

/// The handlers tell the demo when a slow request has really started.
#[derive(Clone)]
struct Started(mpsc::UnboundedSender<String>);

fn app(graceful: &Coordinator, started: Started, timeline: Timeline) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", get(slow))
        .route("/stream", get(chunked))
        .route("/sse", get(sse))
        .route("/ws", get(websocket))
        .layer(Extension(started))
        .layer(Extension(timeline))
        .layer(graceful.layer())
}

#[derive(Deserialize)]
struct SlowParams {
    ms: u64,
}

async fn slow(Query(p): Query<SlowParams>, Extension(started): Extension<Started>) -> String {
    let _ = started.0.send(format!("slow request ({} ms)", p.ms));
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    slow_body(p.ms)
}

fn slow_body(ms: u64) -> String {
    let mut body = format!("slow response after {ms} ms\n");
    body.extend(std::iter::repeat_n('.', SLOW_BODY - body.len()));
    body
}

#[derive(Deserialize)]
struct ChunkParams {
    chunks: usize,
}

/// A bounded chunked stream: accepted before draining, so delivered whole.
async fn chunked(Query(p): Query<ChunkParams>) -> Body {
    let chunks = stream::unfold(0, move |i| async move {
        if i == p.chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(STREAM_GAP).await;
        }
        Some((Ok::<_, Infallible>(format!("chunk {i}\n")), i + 1))
    });
    Body::from_stream(chunks)
}

/// Events until the shutdown signal, then a final event and a clean end.
async fn sse(signal: ShutdownSignal) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::unfold((0u32, Some(signal)), |(n, signal)| async move {
        let signal = signal?;
        let wait = if n == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            biased;
            _ = signal.draining() => {
                let bye = Event::default().event("shutdown").data("server restarting; reconnect");
                Some((Ok(bye.retry(Duration::from_secs(1))), (n, None)))
            }
            _ = tokio::time::sleep(wait) => {
                Some((Ok(Event::default().event("tick").data(n.to_string())), (n + 1, Some(signal))))
            }
        }
    });
    Sse::new(events)
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    signal: ShutdownSignal,
    Extension(timeline): Extension<Timeline>,
) -> Response {
    // Tracked from before the 101 response until the close handshake ends.
    let guard = signal.track("ws session");
    upgrade
        .on_upgrade(move |socket| async move {
            ws_session(socket, &signal, &timeline).await;
            drop(guard);
            timeline.note("server: WebSocket session over, its guard released");
        })
        .into_response()
}

async fn ws_session(mut socket: WebSocket, signal: &ShutdownSignal, timeline: &Timeline) {
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
        code: close_code::RESTART,
        reason: "service restart".into(),
    };
    timeline.note("server: WebSocket close 1012 sent, waiting for the client's close");
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

// ------------------------------------------------------------------ client --

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Ctx {
    addr: SocketAddr,
    admin: SocketAddr,
    client: HttpClient,
    timeline: Timeline,
    problems: Problems,
    in_flight: mpsc::UnboundedSender<String>,
    /// Draining rejections (503) the clients saw.
    rejected_seen: AtomicUsize,
}

impl Ctx {
    fn uri(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> Result<http::Response<Bytes>, String> {
        self.try_get(path).await.map_err(|e| e.to_string())
    }

    /// A GET through the pool that tells a request that never reached a
    /// server (no connection, or one reset before it was answered) from a
    /// response cut short.
    async fn try_get(&self, path: &str) -> Result<http::Response<Bytes>, GetError> {
        let res = self
            .client
            .get(self.uri(path).parse().unwrap())
            .await
            .map_err(|e| GetError::NotAnswered(format!("GET {path}: {e}")))?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| GetError::CutShort(format!("GET {path}: body cut short: {e}")))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    /// Counts a draining rejection the client saw, to compare with the report.
    fn saw_rejection(&self) {
        self.rejected_seen.fetch_add(1, Ordering::Relaxed);
    }
}

enum GetError {
    /// No response at all: the connection was refused or closed before the
    /// response head arrived.
    NotAnswered(String),
    /// A response whose body did not arrive whole.
    CutShort(String),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::NotAnswered(e) | GetError::CutShort(e) => f.write_str(e),
        }
    }
}

/// Time left before the drain deadline, once draining has begun.
fn time_left(graceful: &Coordinator) -> Option<Duration> {
    let deadline = graceful.signal().deadline()?;
    Some(deadline.saturating_duration_since(Instant::now()))
}

/// Whether a draining rejection is what the policy allows for a request
/// whose answer arrived now: the server decided before the answer arrived,
/// so if it rejected for `min_time_left`, less than that was left now too.
fn rejection_allowed(graceful: &Coordinator) -> bool {
    time_left(graceful).is_some_and(|left| left < MIN_TIME_LEFT)
}

async fn fast_requests(ctx: Arc<Ctx>) {
    for _ in 0..3 {
        match ctx.get("/").await {
            Ok(r) if r.status() == StatusCode::OK && r.body() == "hello\n" => {}
            Ok(r) => ctx
                .problems
                .add(format!("fast GET / answered {}", r.status())),
            Err(e) => ctx.problems.add(e),
        }
    }
    ctx.timeline.note("3 fast requests: 200 hello");
}

async fn slow_request(ctx: Arc<Ctx>, ms: u64) {
    let path = format!("/slow?ms={ms}");
    match ctx.get(&path).await {
        Ok(r) => {
            let whole = r.status() == StatusCode::OK && r.body() == slow_body(ms).as_bytes();
            ctx.timeline.note(format!(
                "GET {path} finished: {} with {} bytes{}",
                r.status(),
                r.body().len(),
                if whole {
                    " (complete)"
                } else {
                    " (INCOMPLETE)"
                }
            ));
            ctx.problems.check(whole, || {
                format!("GET {path}: {} with {} bytes", r.status(), r.body().len())
            });
        }
        Err(e) => ctx.problems.add(e),
    }
}

async fn stream_request(ctx: Arc<Ctx>) {
    let path = format!("/stream?chunks={STREAM_CHUNKS}");
    let res = match ctx.client.get(ctx.uri(&path).parse().unwrap()).await {
        Ok(r) => r,
        Err(e) => return ctx.problems.add(format!("GET {path}: {e}")),
    };
    let _ = ctx.in_flight.send("chunked stream".into());
    let mut body = res.into_body();
    let mut text = String::new();
    let outcome = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Some(Err(e)) => break Err(e),
        }
    };
    let expected: String = (0..STREAM_CHUNKS).map(|i| format!("chunk {i}\n")).collect();
    let lines = text.lines().count();
    match outcome {
        Ok(()) if text == expected => ctx.timeline.note(format!(
            "GET {path} finished: {lines}/{STREAM_CHUNKS} chunks (complete)"
        )),
        Ok(()) => ctx
            .problems
            .add(format!("stream: got {lines}/{STREAM_CHUNKS} chunks")),
        Err(e) => ctx
            .problems
            .add(format!("stream cut short after {lines} chunks: {e}")),
    }
}

async fn sse_request(ctx: Arc<Ctx>) {
    let res = match ctx.client.get(ctx.uri("/sse").parse().unwrap()).await {
        Ok(r) => r,
        Err(e) => return ctx.problems.add(format!("GET /sse: {e}")),
    };
    let mut body = res.into_body();
    let mut buf = String::new();
    let mut ticks = 0;
    let mut last_event = None;
    let mut announced = false;
    let outcome = loop {
        match body.frame().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.push_str(&String::from_utf8_lossy(&data));
                // Complete events end with a blank line.
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    if event.contains("event: tick") {
                        ticks += 1;
                        if !announced {
                            announced = true;
                            let _ = ctx.in_flight.send("SSE stream".into());
                        }
                    } else if event.contains("event: shutdown") {
                        ctx.timeline.note("SSE: final 'shutdown' event received");
                    }
                    last_event = Some(event);
                }
            }
        }
    };
    let clean_end = last_event
        .as_deref()
        .is_some_and(|e| e.contains("event: shutdown") && e.contains("retry: 1000"))
        && buf.is_empty();
    match outcome {
        Ok(()) if clean_end => ctx.timeline.note(format!(
            "GET /sse finished: {ticks} ticks + final event, stream ended cleanly"
        )),
        Ok(()) => ctx.problems.add(format!(
            "SSE ended without a complete final event ({ticks} ticks, left over {buf:?})"
        )),
        Err(e) => ctx.problems.add(format!("SSE cut short: {e}")),
    }
}

async fn websocket_client(ctx: Arc<Ctx>) {
    if let Err(e) = websocket_session(&ctx).await {
        ctx.problems.add(format!("WebSocket: {e}"));
    }
}

async fn websocket_session(ctx: &Ctx) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(ctx.addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", ctx.addr), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    ws.send(tungstenite::Message::Text("hello".into()))
        .await
        .map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(tungstenite::Message::Text(t))) if t.as_str() == "hello" => {}
        other => return Err(format!("expected the echo, got {other:?}")),
    }
    let _ = ctx.in_flight.send("WebSocket session".into());
    // Wait for the server's close frame.
    let frame = loop {
        match ws.next().await {
            Some(Ok(tungstenite::Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => return Err(format!("expected a close frame, got {other:?}")),
        }
    };
    let code = frame.as_ref().map(|f| u16::from(f.code));
    let reason = frame
        .as_ref()
        .map(|f| f.reason.to_string())
        .unwrap_or_default();
    ctx.timeline.note(format!(
        "WS client: close {code:?} {reason:?} received; finishing up for 200 ms"
    ));
    if code != Some(close_code::RESTART) {
        return Err(format!("expected close code 1012, got {code:?}"));
    }
    // A real client might save state here; the drain waits for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Reading again sends tungstenite's queued close reply and then sees the
    // server end the connection.
    ctx.timeline.note("WS client: close reply sent");
    while let Some(msg) = ws.next().await {
        if let Err(e) = msg {
            return Err(format!("close handshake failed: {e}"));
        }
    }
    ctx.timeline.note("WS client: close handshake complete");
    Ok(())
}

/// Readiness and liveness on the admin port, probed the way an
/// orchestrator would.
async fn probe(ctx: &Ctx, path: &str) -> (StatusCode, String) {
    let uri = format!("http://{}{path}", ctx.admin);
    let res = match ctx.client.get(uri.parse().unwrap()).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            match body.collect().await {
                Ok(b) => Ok(http::Response::from_parts(parts, b.to_bytes())),
                Err(e) => Err(format!("GET {path}: {e}")),
            }
        }
        Err(e) => Err(format!("GET {path}: {e}")),
    };
    match res {
        Ok(r) => (
            r.status(),
            String::from_utf8_lossy(r.body()).trim().to_owned(),
        ),
        Err(e) => (StatusCode::IM_A_TEAPOT, format!("error: {e}")),
    }
}

async fn probe_loop(ctx: Arc<Ctx>, graceful: Coordinator, stop: CancellationToken) {
    let mut last: [Option<(StatusCode, String)>; 2] = [None, None];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut count = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for (i, path) in ["/ready", "/live"].into_iter().enumerate() {
            let triggered = graceful.phase() >= Phase::Triggered;
            let got = probe(&ctx, path).await;
            count += 1;
            if last[i].as_ref() != Some(&got) {
                ctx.timeline
                    .note(format!("probe {path} -> {} {}", got.0.as_u16(), got.1));
            }
            let ok = match (path, triggered) {
                ("/live", _) => got.0 == StatusCode::OK,
                ("/ready", true) => got == (StatusCode::SERVICE_UNAVAILABLE, "draining".into()),
                _ => true, // before the trigger it may be "ready" or "not ready: warm-up"
            };
            ctx.problems.check(ok, || {
                format!("probe {path} answered {} {:?}", got.0, got.1)
            });
            last[i] = Some(got);
        }
    }
    ctx.timeline
        .note(format!("probes stopped ({count} probes)"));
}

/// New requests after the trigger from a client with a connection pool (as
/// behind an L4 balancer): served until draining, with a growing share told
/// to close their connection. Every check is decided by events, not by the
/// clock: the requests stop when draining begins (the event, not a tick that
/// might land on the boundary), and a request that got no answer is allowed
/// only if draining had begun by the time the failure was seen (the listener
/// closed under a new connection).
async fn late_requests(ctx: Arc<Ctx>, graceful: Coordinator) {
    graceful.triggered().await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let draining = graceful.signal().draining();
    tokio::pin!(draining);
    let mut last = String::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut draining => break,
            _ = tick.tick() => {}
        }
        // Read before sending: a request sent while draining must be told
        // to close its connection; one sent before may or may not be.
        let sent_draining = graceful.phase() >= Phase::Draining;
        let what = match ctx.try_get("/").await {
            Ok(r) if r.status() == StatusCode::OK => {
                let close = r
                    .headers()
                    .get(header::CONNECTION)
                    .is_some_and(|v| v == "close");
                if close {
                    "pooled GET / -> 200, Connection: close (the pool reconnects)".to_owned()
                } else {
                    ctx.problems.check(!sent_draining, || {
                        "a response while draining did not announce Connection: close".into()
                    });
                    "pooled GET / -> 200, keep-alive".to_owned()
                }
            }
            Ok(r)
                if r.status() == StatusCode::SERVICE_UNAVAILABLE
                    && rejection_allowed(&graceful) =>
            {
                ctx.saw_rejection();
                "pooled GET / -> 503 (too little time left)".to_owned()
            }
            Ok(r) => {
                ctx.problems.add(format!(
                    "pooled GET / after the trigger answered {}",
                    r.status()
                ));
                continue;
            }
            // Read after the failure: draining began while this request was
            // on its way, and its new connection met the closing listener.
            Err(GetError::NotAnswered(_)) if graceful.phase() >= Phase::Draining => {
                "pooled GET / on a new connection at drain start -> not accepted: the \
                 listener closed (a balancer sends it elsewhere)"
                    .to_owned()
            }
            Err(e) => {
                ctx.problems
                    .add(format!("late request before draining failed: {e}"));
                continue;
            }
        };
        if what != last {
            ctx.timeline.note(what.clone());
            last = what;
        }
    }
}

/// From the start of draining, a new connection is refused: the listener is
/// closed, and a balancer sends the client elsewhere. `serve` closes it as
/// soon as it sees the signal, which may be a moment after this task does:
/// until the refusal, a connection that still got through is either served
/// (accepted just before) or reset (left in the closing listener's backlog),
/// and the check tries again. Returns the number of attempts.
async fn refused_after_drain_start(ctx: Arc<Ctx>, graceful: Coordinator) -> Result<usize, String> {
    use hyper::client::conn::http1;
    graceful.signal().draining().await;
    for attempt in 1..=50 {
        let tcp = match tokio::net::TcpStream::connect(ctx.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ctx.timeline.note(format!(
                    "GET / on a new connection -> refused: the listener closed at drain start \
                     (a balancer sends it elsewhere; attempt {attempt})"
                ));
                return Ok(attempt);
            }
            // Left in the backlog of the listener as it closed: reset, never
            // accepted. Try again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => return Err(format!("connect while draining: {e}")),
            Ok(tcp) => tcp,
        };
        let answered = async {
            let (mut sender, conn) =
                http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let req = http::Request::get("/")
                .header(header::HOST, ctx.addr.to_string())
                .body(Empty::new())
                .unwrap();
            sender.send_request(req).await
        };
        match answered.await {
            Ok(r) if r.status() == StatusCode::OK => {
                let close = r
                    .headers()
                    .get(header::CONNECTION)
                    .is_some_and(|v| v == "close");
                ctx.problems.check(close, || {
                    "a connection accepted at drain start was not told to close".into()
                });
            }
            Ok(r)
                if r.status() == StatusCode::SERVICE_UNAVAILABLE
                    && rejection_allowed(&graceful) =>
            {
                ctx.saw_rejection();
            }
            Ok(r) => {
                return Err(format!(
                    "new connection at drain start answered {}",
                    r.status()
                ))
            }
            // Reset in the backlog of the closing listener: never accepted.
            Err(_) => {}
        }
        tokio::task::yield_now().await;
    }
    Err("the listener still accepted connections after 50 attempts while draining".into())
}

type Pinned = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive connection opened now and left idle.
async fn pinned_connection(addr: SocketAddr) -> Result<Pinned, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Two keep-alive connections opened before the trigger and left idle, as an
/// L4 balancer's clients keep them: one used as soon as draining begins
/// (served, told to close), one used when too little time is left
/// (rejected). `hold` keeps the drain open until both have their answer, so
/// the second one is sent before the drain can complete however long the
/// other requests take.
async fn pinned_requests(
    ctx: Arc<Ctx>,
    graceful: Coordinator,
    hold: TaskGuard,
    [mut early, mut late]: [Pinned; 2],
) -> Result<bool, String> {
    graceful.signal().draining().await;
    let deadline = graceful.signal().deadline().expect("draining");
    let send = |sender: &mut Pinned| {
        let req = http::Request::get("/")
            .header(header::HOST, ctx.addr.to_string())
            .body(Empty::new())
            .unwrap();
        sender.send_request(req)
    };
    // Sent at once. With more than `min_time_left` left when it was sent it
    // must be served; on a machine so loaded that this task woke later than
    // that, the rejection is the right answer instead.
    let left_at_send = deadline.saturating_duration_since(Instant::now());
    let res = send(&mut early)
        .await
        .map_err(|e| format!("pinned GET / while draining: {e}"))?;
    let close = res
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v == "close");
    let served = res.status() == StatusCode::OK;
    ctx.timeline.note(format!(
        "GET / on a connection opened before the trigger -> {} (Connection: {}): {}",
        res.status().as_u16(),
        if close { "close" } else { "MISSING" },
        if served {
            "served, its client could not have known"
        } else {
            "rejected, too little time was left"
        }
    ));
    if left_at_send >= MIN_TIME_LEFT {
        ctx.problems.check(served && close, || {
            format!("pinned request while draining answered {:?}", res.headers())
        });
    } else if res.status() == StatusCode::SERVICE_UNAVAILABLE {
        ctx.saw_rejection();
    }
    // Less than MIN_TIME_LEFT before the deadline: a later wake-up only
    // leaves less. The drain cannot have completed (`hold`).
    tokio::time::sleep_until(deadline - MIN_TIME_LEFT + Duration::from_millis(100)).await;
    let res = send(&mut late)
        .await
        .map_err(|e| format!("pinned GET / with too little time left: {e}"))?;
    let h = res.headers().clone();
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("pinned GET / body: {e}"))?
        .to_bytes();
    drop(hold);
    let retry_after = h.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok());
    let connection = h.get(header::CONNECTION).and_then(|v| v.to_str().ok());
    ctx.timeline.note(format!(
        "GET / with less than {MIN_TIME_LEFT:?} left -> {} Retry-After: {} Connection: {} {:?}",
        status.as_u16(),
        retry_after.unwrap_or("MISSING"),
        connection.unwrap_or("MISSING"),
        String::from_utf8_lossy(&body).trim(),
    ));
    let proper = status == StatusCode::SERVICE_UNAVAILABLE
        && retry_after.is_some()
        && connection == Some("close")
        && !body.is_empty();
    ctx.problems
        .check(proper, || format!("late pinned request: {status} {h:?}"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        ctx.saw_rejection();
    }
    Ok(left_at_send >= MIN_TIME_LEFT)
}

/// A background job that stops at the next batch boundary once draining
/// starts; its guard keeps the drain waiting until then.
fn background_job(graceful: &Coordinator, timeline: Timeline) -> tokio::task::JoinHandle<()> {
    let guard = graceful.track("report job");
    let signal = graceful.signal();
    tokio::spawn(async move {
        let mut batches = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await; // one batch of work
            batches += 1;
            if signal.is_draining() {
                break;
            }
        }
        drop(guard);
        timeline.note(format!(
            "background job: stopped after batch {batches}, guard released"
        ));
    })
}

// -------------------------------------------------------------------- main --

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only on a terminal: plain text in files, pipes and CI logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match timeout(Duration::from_secs(20), run()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(problems)) => {
            println!("\nFAILED:");
            for p in problems {
                println!("  - {p}");
            }
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("\nFAILED: the demo did not finish within 20 s");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Vec<String>> {
    let fail = |e: String| vec![e];
    let timeline = Timeline::default();
    let problems = Problems::default();

    let graceful = Coordinator::builder()
        .pre_drain_delay(PRE_DRAIN)
        .drain_deadline(DEADLINE)
        .cleanup_timeout(Duration::from_secs(1))
        .min_time_left(MIN_TIME_LEFT)
        .retry_after(Duration::from_secs(1))
        .retry_after_jitter(Duration::from_secs(2))
        .readiness_path("/ready")
        .liveness_path("/live")
        .build()
        .map_err(|e| fail(e.to_string()))?;

    for (name, ms) in [("flush metrics", 40), ("close db pool", 80)] {
        let t = timeline.clone();
        graceful
            .on_shutdown(name, move || async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                t.note(format!("hook {name:?} done"));
                Ok::<_, std::io::Error>(())
            })
            .map_err(|e| fail(e.to_string()))?;
    }

    let (started_tx, mut in_flight_rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail(format!("bind: {e}")))?;
    let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let router = app(&graceful, Started(started_tx.clone()), timeline.clone());
    // The app: `serve` owns its connections through the shutdown.
    let server = tokio::spawn(tower_graceful::serve(listener, router, &graceful));
    // The admin port: probes only, up until the report (no graceful layer).
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail(format!("bind: {e}")))?;
    let admin = admin_listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?;
    let admin_router = Router::new()
        .route_service("/ready", graceful.readiness_service())
        .route_service("/live", graceful.liveness_service());
    let stop_admin = CancellationToken::new();
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
            .into_future(),
    );
    println!(
        "serving on http://{addr}, probes on http://{admin} (pre-drain {PRE_DRAIN:?}, \
         drain deadline {DEADLINE:?})\n"
    );

    let ctx = Arc::new(Ctx {
        addr,
        admin,
        client: Client::builder(TokioExecutor::new()).build_http(),
        timeline: timeline.clone(),
        problems: problems.clone(),
        in_flight: started_tx,
        rejected_seen: AtomicUsize::new(0),
    });

    // Warm-up: readiness is held down by a gate until the app is ready.
    let warm_up = graceful.readiness().gate("warm-up");
    let (status, text) = probe(&ctx, "/ready").await;
    timeline.note(format!(
        "probe /ready -> {} {text} (gate held)",
        status.as_u16()
    ));
    problems.check(status == StatusCode::SERVICE_UNAVAILABLE, || {
        format!("/ready during warm-up answered {status}")
    });
    warm_up.set_ready(true);
    timeline.note("warm-up gate set ready");
    let stop_probes = CancellationToken::new();
    let probes = tokio::spawn(probe_loop(
        ctx.clone(),
        graceful.clone(),
        stop_probes.clone(),
    ));

    // Traffic that will be in flight when shutdown starts.
    let mut traffic = vec![tokio::spawn(fast_requests(ctx.clone()))];
    for ms in SLOW {
        traffic.push(tokio::spawn(slow_request(ctx.clone(), ms)));
    }
    traffic.push(tokio::spawn(stream_request(ctx.clone())));
    traffic.push(tokio::spawn(sse_request(ctx.clone())));
    traffic.push(tokio::spawn(websocket_client(ctx.clone())));
    let job = background_job(&graceful, timeline.clone());
    for _ in 0..SLOW.len() + 3 {
        match timeout(Duration::from_secs(5), in_flight_rx.recv()).await {
            Ok(Some(what)) => timeline.note(format!("in flight: {what}")),
            _ => return Err(fail("traffic did not start within 5 s".into())),
        }
    }
    timeline.note(format!(
        "in flight: background job (total in flight: {})",
        graceful.in_flight()
    ));

    // Shutdown.
    let watch = graceful.clone();
    let t = timeline.clone();
    let draining = tokio::spawn(async move {
        watch.triggered().await;
        t.note("readiness down; pre-drain: still serving while balancers notice");
        watch.signal().draining().await;
        t.note(format!(
            "draining: ShutdownSignal fired, {} in flight; listener closed, open \
             connections still served",
            watch.in_flight()
        ));
        watch.drained().await;
        t.note("drained: nothing in flight; idle connections closed");
    });
    // Opened before the trigger and left idle, as an L4 balancer's clients
    // keep them.
    let pinned_connections = [
        pinned_connection(addr).await.map_err(fail)?,
        pinned_connection(addr).await.map_err(fail)?,
    ];
    // Keeps the drain open until the too-late request has its answer.
    let hold = graceful.track("demo: too-late request check");
    let pinned = tokio::spawn(pinned_requests(
        ctx.clone(),
        graceful.clone(),
        hold,
        pinned_connections,
    ));
    let late = tokio::spawn(late_requests(ctx.clone(), graceful.clone()));
    let refused = tokio::spawn(refused_after_drain_start(ctx.clone(), graceful.clone()));
    let trigger_at = Instant::now();
    timeline.note("TRIGGER: coordinator.trigger()");
    graceful.trigger();

    let report = match timeout(DEADLINE + Duration::from_secs(3), graceful.wait()).await {
        Ok(r) => r,
        Err(_) => return Err(fail("coordinator.wait() did not return".into())),
    };
    timeline.note("done: report ready");

    for task in traffic {
        if timeout(Duration::from_secs(2), task).await.is_err() {
            problems.add("a client task did not finish after the shutdown");
        }
    }
    if timeout(Duration::from_secs(2), late).await.is_err() {
        problems.add("late requests did not finish");
    }
    match timeout(Duration::from_secs(2), refused).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => problems.add(e),
        _ => problems.add("the new-connection check did not finish"),
    }
    let early_should_be_served = match timeout(Duration::from_secs(2), pinned).await {
        Ok(Ok(Ok(served))) => served,
        Ok(Ok(Err(e))) => {
            problems.add(e);
            false
        }
        _ => {
            problems.add("pinned requests did not finish");
            false
        }
    };
    let rejected_seen = ctx.rejected_seen.load(Ordering::Relaxed);
    let _ = timeout(Duration::from_secs(1), job).await;
    let _ = draining.await;
    stop_probes.cancel();
    let _ = probes.await;
    match timeout(Duration::from_secs(2), server).await {
        Ok(Ok(Ok(()))) => timeline.note("server stopped"),
        _ => problems.add("the server did not stop"),
    }
    stop_admin.cancel();
    match timeout(Duration::from_secs(2), admin_server).await {
        Ok(Ok(Ok(()))) => {}
        _ => problems.add("the admin server did not stop"),
    }

    timeline.print(trigger_at);
    println!("\n{report}\n");

    problems.check(report.drain_outcome == DrainOutcome::Drained, || {
        format!("drain outcome {:?}", report.drain_outcome)
    });
    for s in &report.stragglers {
        problems.add(format!("straggler: {s}"));
    }
    for h in report.hooks.iter().filter(|h| !h.outcome.is_ok()) {
        problems.add(format!("hook {} did not complete: {:?}", h.name, h.outcome));
    }
    problems.check(rejected_seen >= 1, || {
        "the too-late request was not rejected".into()
    });
    problems.check(report.rejected == rejected_seen, || {
        format!(
            "report counts {} rejected, clients saw {rejected_seen}",
            report.rejected
        )
    });
    problems.check(
        !early_should_be_served || report.served_while_draining >= 1,
        || "the report counts no request served while draining".into(),
    );
    let problems = problems.take();
    if problems.is_empty() {
        println!(
            "OK: every accepted request completed in full; open connections were served while \
             draining and told to close ({} in all); new connections were refused once draining \
             began; the request too close to the deadline got 503 + Retry-After + Connection: \
             close; nothing left behind.",
            report.connections_told_to_close
        );
        Ok(())
    } else {
        Err(problems)
    }
}
