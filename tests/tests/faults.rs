//! Faults that must not lose work: a storm of signals at a real process,
//! clients that vanish mid-request, mid-stream and mid-WebSocket while the
//! server drains, and cleanup hooks that panic, hang or fail under a real
//! time budget.
//!
//! Every wait is bounded; every child process is killed by its PID if a test
//! fails; servers listen on `127.0.0.1:0` only.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::{stream, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tower_graceful::{
    report::DrainOutcome, report::HookOutcome, report::StragglerKind, report::TriggerCause,
    Coordinator, Phase, ShutdownSignal,
};
use tower_graceful_tests::example::Example;
use tower_graceful_tests::{coordinator_with_deadline, serve_draining, within, H1};

// ================================================== 1. a storm of signals ==

/// `TERM`, `INT`, `TERM`, … for `n` signals.
fn mixed(n: usize) -> Vec<&'static str> {
    (0..n)
        .map(|i| if i % 2 == 0 { "TERM" } else { "INT" })
        .collect()
}

/// The drain deadline the storm tests give the example: a shutdown that
/// waited for the slow request would take at least this long.
const STORM_DEADLINE: Duration = Duration::from_secs(5);

/// What every storm must leave behind: one clean exit (status 0, not killed
/// by a late signal), one report naming `cause`, a forced drain naming the
/// slow request, and a log that says it forced.
fn assert_one_coherent_forced_shutdown(
    status: std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
    cause: &str,
) {
    use std::os::unix::process::ExitStatusExt;
    let both = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal: {status}\n{both}"
    );
    assert!(status.success(), "exit status {status}\n{both}");
    assert_eq!(
        stdout.matches("shutdown report").count(),
        1,
        "exactly one report on stdout\n{both}"
    );
    assert_eq!(
        stderr.matches("shutdown complete").count(),
        1,
        "exactly one completion logged\n{both}"
    );
    assert_eq!(
        stderr
            .matches("signal received: starting graceful shutdown")
            .count(),
        1,
        "exactly one signal started the shutdown\n{both}"
    );
    assert!(
        stdout.contains(&format!("shutdown report (cause: {cause})")),
        "cause {cause}\n{both}"
    );
    assert!(stdout.contains("Forced"), "{both}");
    assert!(stdout.contains("straggler: GET /slow"), "{both}");
    assert!(stderr.contains("second signal: forcing shutdown"), "{both}");
    assert!(stderr.contains("forced stop: hard signal fired"), "{both}");
}

/// A storm of 40 SIGTERM/SIGINT (mixed) at a process with a slow request in
/// flight and a 1 s pre-drain delay. The first signal is seen to start the
/// shutdown; the other 39 follow, 19 of them microseconds apart and 20 one
/// `kill` at a time through the forced stop, the hooks and the exit. The
/// process exits once, status 0, well before the deadline (the second signal
/// forces, cutting the pre-drain delay short), with one report whose cause
/// is the first signal and which names the slow request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_storm_exits_once_promptly_with_one_coherent_report() {
    let (mut example, addr) =
        Example::start(&[("GRACEFUL_DEADLINE", "5s"), ("GRACEFUL_PRE_DRAIN", "1s")]).await;
    let mut conn = H1::connect(addr).await;
    let slow = tokio::spawn(conn.sender.send_request(conn.request("/slow?ms=60000")));
    example.stderr.wait_for("slow request started").await;

    let first_at = tokio::time::Instant::now();
    example.kill("TERM");
    let line = example
        .stderr
        .wait_for("signal received: starting graceful shutdown")
        .await;
    assert!(line.contains("SIGTERM"), "{line}");

    let storm = mixed(40);
    example.burst(&storm[1..20]);
    for signal in &storm[20..] {
        example.kill(signal);
    }

    let status = example.exited(STORM_DEADLINE).await;
    let took = first_at.elapsed();
    let stdout = example.stdout.until_eof().await;
    let stderr = example.stderr.until_eof().await;
    assert_one_coherent_forced_shutdown(status, &stdout, &stderr, "SIGTERM");
    assert!(
        stderr.contains("forced: pre-drain delay cut short"),
        "the storm arrived during the 1 s pre-drain delay and cut it short\n{stderr}"
    );
    assert!(
        took < STORM_DEADLINE,
        "exit {took:?} after the first signal"
    );
    // The abandoned request got no (fake) success.
    if let Ok(res) = within("the abandoned request", slow).await.unwrap() {
        assert_ne!(
            res.status(),
            http::StatusCode::OK,
            "abandoned request answered 200"
        );
    }
    eprintln!("storm: exit {took:?} after the first signal");
}

/// The same storm with no pause at all: 40 mixed signals, the first a
/// SIGINT, sent back to back from the moment the slow request is in flight
/// (no pre-drain delay). Signals of one kind that are pending together merge
/// (POSIX), and tokio does not keep the order between SIGINT and SIGTERM
/// that are pending together, so the cause may be either; it must be the
/// signal the process logged as starting the shutdown, and everything else
/// holds as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_storm_from_the_first_signal_exits_once_with_one_report() {
    let (mut example, addr) =
        Example::start(&[("GRACEFUL_DEADLINE", "5s"), ("GRACEFUL_PRE_DRAIN", "0s")]).await;
    let mut conn = H1::connect(addr).await;
    let slow = tokio::spawn(conn.sender.send_request(conn.request("/slow?ms=60000")));
    example.stderr.wait_for("slow request started").await;

    let first_at = tokio::time::Instant::now();
    let storm: Vec<&str> = mixed(41).into_iter().skip(1).collect(); // INT first
    example.burst(&storm);

    let status = example.exited(STORM_DEADLINE).await;
    let took = first_at.elapsed();
    let stdout = example.stdout.until_eof().await;
    let stderr = example.stderr.until_eof().await;
    let started = stderr
        .lines()
        .find(|l| l.contains("signal received: starting graceful shutdown"))
        .unwrap_or_else(|| panic!("no start logged\n{stderr}"));
    let cause = if started.contains("SIGINT") {
        "SIGINT"
    } else {
        assert!(started.contains("SIGTERM"), "{started}");
        "SIGTERM"
    };
    assert_one_coherent_forced_shutdown(status, &stdout, &stderr, cause);
    assert!(
        took < STORM_DEADLINE,
        "exit {took:?} after the first signal"
    );
    if let Ok(res) = within("the abandoned request", slow).await.unwrap() {
        assert_ne!(
            res.status(),
            http::StatusCode::OK,
            "abandoned request answered 200"
        );
    }
    eprintln!("storm from the start: cause {cause}, exit {took:?} after the first signal");
}

// ============================================ 2. clients that disconnect ==

/// The drain deadline of the disconnect tests: far beyond any bounded wait
/// here, so a `Drained` report can only come from the disconnect.
const LONG_DEADLINE: Duration = Duration::from_secs(30);

type Events = mpsc::UnboundedSender<&'static str>;

/// Reports `what` when dropped: proves the server dropped a handler future,
/// a body or a session.
struct OnDrop(Events, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Routes whose work never ends on its own and ignores the shutdown signal:
/// only the client going away can end it.
///
/// * `/hang`: reports `"hang started"`, never answers; `"hang dropped"`.
/// * `/stream`: a body that sends one chunk, then waits to be told to go on
///   (never); `"stream started"`, `"stream dropped"`.
/// * `/ws`: takes `signal.track("ws")` before the upgrade and moves it into
///   an echo session that ends only when the socket closes or fails;
///   `"ws session over"`.
fn disconnect_app(graceful: &Coordinator, events: Events, told: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/hang", get(hang))
        .route("/stream", get(endless_stream))
        .route("/ws", get(ws_until_the_socket_ends))
        .layer(Extension(events))
        .layer(Extension(told))
        .layer(graceful.layer())
}

async fn hang(Extension(events): Extension<Events>) -> &'static str {
    let _dropped = OnDrop(events.clone(), "hang dropped");
    let _ = events.send("hang started");
    std::future::pending::<()>().await;
    unreachable!()
}

async fn endless_stream(
    Extension(events): Extension<Events>,
    Extension(told): Extension<watch::Receiver<bool>>,
) -> Body {
    let dropped = OnDrop(events.clone(), "stream dropped");
    let chunks = stream::unfold((0u32, told, dropped), |(i, mut told, d)| async move {
        if i > 0 {
            if i == 1 {
                let _ = d.0.send("stream started");
            }
            let _ = told.wait_for(|go| *go).await;
        }
        Some((
            Ok::<_, Infallible>(format!("chunk {i}\n")),
            (i + 1, told, d),
        ))
    });
    Body::from_stream(chunks)
}

async fn ws_until_the_socket_ends(
    upgrade: WebSocketUpgrade,
    signal: ShutdownSignal,
    Extension(events): Extension<Events>,
) -> Response {
    let guard = signal.track("ws");
    upgrade
        .on_upgrade(move |mut socket| async move {
            let _over = OnDrop(events, "ws session over");
            let _guard = guard;
            // Deliberately deaf to the shutdown signal.
            while let Some(Ok(msg)) = socket.recv().await {
                let go_on = match msg {
                    WsMessage::Text(t) => socket.send(WsMessage::Text(t)).await.is_ok(),
                    WsMessage::Close(_) => false,
                    _ => true,
                };
                if !go_on {
                    return;
                }
            }
        })
        .into_response()
}

struct Fixture {
    graceful: Coordinator,
    server: tower_graceful_tests::Server,
    events: mpsc::UnboundedReceiver<&'static str>,
    _told: watch::Sender<bool>,
}

impl Fixture {
    async fn start() -> Self {
        let graceful = coordinator_with_deadline(Duration::ZERO, LONG_DEADLINE);
        let (tx, events) = mpsc::unbounded_channel();
        let (told, told_rx) = watch::channel(false);
        let server = serve_draining(disconnect_app(&graceful, tx, told_rx), &graceful).await;
        Self {
            graceful,
            server,
            events,
            _told: told,
        }
    }

    async fn expect(&mut self, what: &'static str) {
        let got = within(what, self.events.recv()).await;
        assert_eq!(got, Some(what));
    }

    /// Triggers and waits (bounded) until draining has begun, then checks
    /// that the one piece of work is still counted and holds the drain.
    async fn drain_with_one_in_flight(&self) {
        assert_eq!(self.graceful.in_flight(), 1, "the work is counted");
        assert!(self.graceful.trigger());
        within("draining to begin", self.graceful.signal().draining()).await;
        assert_eq!(self.graceful.phase(), Phase::Draining);
        assert_eq!(self.graceful.in_flight(), 1, "draining waits for it");
        assert!(self.graceful.report().is_none());
    }

    /// After the disconnect: `wait()` (bounded) returns a clean `Drained`
    /// report well inside the deadline, nothing left in flight, and the
    /// server future completes.
    async fn drained_by_the_disconnect(self) -> tower_graceful::ShutdownReport {
        let report = within("the drain to complete", self.graceful.wait()).await;
        assert_eq!(report.drain_outcome, DrainOutcome::Drained, "{report}");
        assert!(report.drain < LONG_DEADLINE, "{report}");
        assert!(report.stragglers.is_empty(), "{report}");
        assert_eq!(report.in_flight_at_drain, 1, "{report}");
        assert!(report.is_clean(), "{report}");
        assert_eq!(self.graceful.in_flight(), 0);
        self.server.stopped().await;
        report
    }
}

/// A client whose request is waiting in a handler closes its connection
/// while the server drains: the handler future is dropped, the count
/// reaches zero and the drain completes, long before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_request_while_draining_lets_the_drain_finish() {
    let mut f = Fixture::start().await;
    let mut tcp = within("connect", TcpStream::connect(f.server.addr))
        .await
        .unwrap();
    tcp.write_all(b"GET /hang HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    f.expect("hang started").await;
    f.drain_with_one_in_flight().await;

    drop(tcp);
    f.expect("hang dropped").await;
    let report = f.drained_by_the_disconnect().await;
    assert_eq!(report.completed_while_draining, 1, "{report}");
}

/// A client reads the first chunk of a response that streams until told,
/// then closes its connection while the server drains: the body is dropped,
/// the count reaches zero and the drain completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_stream_while_draining_lets_the_drain_finish() {
    let mut f = Fixture::start().await;
    let mut tcp = within("connect", TcpStream::connect(f.server.addr))
        .await
        .unwrap();
    tcp.write_all(b"GET /stream HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("chunk 0\n") {
        let n = within("the first chunk", tcp.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK\r\n"));
    f.expect("stream started").await;
    f.drain_with_one_in_flight().await;

    drop(tcp);
    f.expect("stream dropped").await;
    let report = f.drained_by_the_disconnect().await;
    assert_eq!(report.completed_while_draining, 1, "{report}");
}

/// A WebSocket session (tracked with a guard taken before the upgrade and
/// deaf to the shutdown signal) loses its TCP connection abruptly (RST)
/// while the server drains: the session ends, its guard goes, the drain
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_cut_mid_session_while_draining_lets_the_drain_finish() {
    let mut f = Fixture::start().await;
    let tcp = within("connect", TcpStream::connect(f.server.addr))
        .await
        .unwrap();
    let addr = f.server.addr;
    let (mut ws, res) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp),
    )
    .await
    .expect("upgrade");
    assert_eq!(res.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::Text("ping".into())).await.unwrap();
    match within("the echo", ws.next()).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "ping"),
        other => panic!("expected the echo, got {other:?}"),
    }
    f.drain_with_one_in_flight().await;

    // Abrupt: RST instead of a close handshake or a FIN.
    ws.get_ref().set_zero_linger().unwrap();
    drop(ws);
    f.expect("ws session over").await;
    f.drained_by_the_disconnect().await;
}

// ============================================ 3. hooks under a real budget ==

fn explode() -> Result<(), std::io::Error> {
    quiet_hook_panics();
    panic!("hook exploded")
}

/// The default panic hook prints (and with `RUST_BACKTRACE` set, resolves)
/// a backtrace, which on a loaded machine takes longer than this test's
/// whole cleanup budget; the panic itself is what is under test, so only
/// its printing is skipped.
fn quiet_hook_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"hook exploded") {
                prev(info);
            }
        }));
    });
}

/// Sends `()` when dropped: proves a timed-out hook was aborted, not leaked.
struct Aborted(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Aborted {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// With a total budget and a straggler that uses the whole drain allowance,
/// four hooks (one panics, one hangs past its own timeout, one returns an
/// error, one is slow but in time) each get their outcome in the report, in
/// registration order; none stops the others; the hanging one is aborted;
/// and the whole shutdown, trigger to `wait()`, fits in the budget per the
/// report's `total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hooks_are_isolated_and_everything_fits_the_budget() {
    const BUDGET: Duration = Duration::from_secs(4);
    const PRE_DRAIN: Duration = Duration::from_millis(300);
    const CLEANUP: Duration = Duration::from_millis(1500);
    const HANG_TIMEOUT: Duration = Duration::from_millis(600);
    const SLOW: Duration = Duration::from_millis(200);
    // What the builder derives: budget - pre-drain - cleanup - margin
    // (5 % of the budget, at most 1 s).
    const DRAIN: Duration = Duration::from_millis(4000 - 300 - 1500 - 200);

    let graceful = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(PRE_DRAIN)
        .cleanup_timeout(CLEANUP)
        .total_budget(BUDGET)
        .build()
        .expect("the phases fit the budget");
    let (aborted_tx, aborted) = tokio::sync::oneshot::channel();
    graceful
        .on_shutdown("panics", || async { explode() })
        .unwrap();
    graceful
        .on_shutdown_with_timeout("hangs", HANG_TIMEOUT, move || async move {
            let _aborted = Aborted(Some(aborted_tx));
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    graceful
        .on_shutdown("fails", || async {
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .unwrap();
    graceful
        .on_shutdown("slow but in time", || async {
            tokio::time::sleep(SLOW).await;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
    // A job that never finishes: the drain uses its whole allowance.
    let _stuck = graceful.track("stuck job");

    assert!(graceful.trigger());
    let report = within("the whole shutdown", graceful.wait()).await;
    within("the hanging hook to be aborted", aborted)
        .await
        .expect("the hook was dropped, not leaked");

    assert_eq!(
        report.drain_outcome,
        DrainOutcome::DeadlineExceeded,
        "{report}"
    );
    assert!(report.pre_drain >= PRE_DRAIN, "{report}");
    assert!(
        report.drain >= DRAIN,
        "the drain used its allowance: {report}"
    );
    match &report.stragglers[..] {
        [s] => assert_eq!(
            s.what,
            StragglerKind::Task {
                name: "stuck job".into()
            },
            "{report}"
        ),
        other => panic!("expected the stuck job only, got {other:?}\n{report}"),
    }

    let names: Vec<&str> = report.hooks.iter().map(|h| h.name.as_ref()).collect();
    assert_eq!(
        names,
        ["panics", "hangs", "fails", "slow but in time"],
        "{report}"
    );
    let h = &report.hooks;
    assert_eq!(
        h[0].outcome,
        HookOutcome::Panicked("hook exploded".into()),
        "{report}"
    );
    assert_eq!(h[1].outcome, HookOutcome::TimedOut, "{report}");
    assert_eq!(h[1].timeout, HANG_TIMEOUT, "{report}");
    assert!(h[1].elapsed >= HANG_TIMEOUT, "{report}");
    assert_eq!(
        h[2].outcome,
        HookOutcome::Failed("disk full".into()),
        "{report}"
    );
    assert_eq!(h[3].outcome, HookOutcome::Completed, "{report}");
    assert!(h[3].elapsed >= SLOW, "{report}");
    assert!(!report.is_clean());

    assert!(report.cleanup <= CLEANUP, "{report}");
    assert!(report.total <= BUDGET, "over budget: {report}");
    assert_eq!(report.cause, TriggerCause::Api);
    assert_eq!(graceful.phase(), Phase::Done);
    eprintln!("{report}");
}
