//! The shutdown's `tracing` span, in a test binary of its own: `tracing`
//! caches each call site's interest process-wide, and tests running on other
//! threads without a subscriber can make it skip this test's events.

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::timeout;
use tower_graceful::Coordinator;

const WAIT: Duration = Duration::from_secs(5);

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event of a shutdown nests in one `shutdown` span that carries the
/// cause and the phase (recorded as it changes), hooks' own events included;
/// nothing logged before the trigger is in it.
#[tokio::test(start_paused = true)]
async fn shutdown_events_nest_in_one_span_with_cause_and_phase() {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    c.on_shutdown("flush", || async {
        tracing::info!("flushing buffers");
        Ok::<_, Infallible>(())
    })
    .unwrap();
    tracing::info!("before the trigger");
    c.trigger();
    timeout(WAIT, c.wait()).await.expect("shutdown in time");

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let line = |what: &str| -> &str {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{text}"))
    };
    assert!(!line("before the trigger").contains("shutdown{"), "{text}");
    let triggered = line("shutdown triggered: readiness down");
    assert!(
        triggered.contains("shutdown{cause=api phase=triggered}:"),
        "{triggered}"
    );
    // The plain-text formatter appends a recorded field after the earlier
    // value; the last one is the current phase.
    let draining = line("draining: shutdown signal fired");
    assert!(draining.contains("shutdown{cause=api"), "{draining}");
    assert!(draining.contains("phase=draining}:"), "{draining}");
    let hook = line("flushing buffers");
    assert!(hook.contains("phase=cleaning-up}:"), "{hook}");
    let done = line("shutdown complete");
    assert!(done.contains("shutdown{cause=api"), "{done}");
}

/// The axum extractor's rejection (a missing layer) is logged like axum's
/// own rejections: at `TRACE`, target `tower_graceful::rejection`, so that a
/// misrouted path does not write a log line per request at the usual levels.
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_missing_shutdown_signal_is_logged_at_trace_like_axum_rejections() {
    use axum::{routing::get, Router};
    use tower::ServiceExt;
    use tower_graceful::ShutdownSignal;

    async fn rejected(level: tracing::Level) -> String {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        // No layer: the extractor finds no signal.
        let app: Router = Router::new().route("/", get(|_: ShutdownSignal| async { "" }));
        let req = http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    let debug = rejected(tracing::Level::DEBUG).await;
    assert!(
        !debug.contains("ShutdownSignal"),
        "the rejection is logged at DEBUG or above:\n{debug}"
    );
    let trace = rejected(tracing::Level::TRACE).await;
    let line = trace
        .lines()
        .find(|l| l.contains("tower_graceful::rejection"))
        .unwrap_or_else(|| panic!("no rejection event at TRACE:\n{trace}"));
    assert!(line.contains("TRACE"), "{line}");
    assert!(line.contains("rejecting request"), "{line}");
    assert!(line.contains("status=500"), "{line}");
    assert!(line.contains("MissingShutdownSignal"), "{line}");
}
