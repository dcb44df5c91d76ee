//! The log lines the README quotes (its "Logs and metrics" section) are the
//! ones a real shutdown writes, word for word: the README is parsed here, so
//! a change of either side fails this test. A test binary of its own: it
//! sends SIGTERM to its own process, and `tracing` caches call-site interest
//! process-wide.

#![cfg(unix)]

use std::time::Duration;

use tokio::time::timeout;
use tower_graceful::Coordinator;

const README: &str = include_str!("../../../README.md");
const WAIT: Duration = Duration::from_secs(10);

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

/// The lines of the first `text` block of the README's "Logs and metrics"
/// section, each without its trailing ` …` (the fields that vary).
fn quoted_log_lines() -> Vec<&'static str> {
    let section = README
        .split("\n## Logs and metrics\n")
        .nth(1)
        .expect("README has a \"## Logs and metrics\" section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the section quotes the log in a ```text block");
    block
        .lines()
        .map(|l| l.trim().trim_end_matches('…').trim_end())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn every_log_line_the_readme_quotes_is_written_by_a_real_shutdown() {
    let quoted = quoted_log_lines();
    assert!(
        quoted.len() >= 3,
        "the README's log block lost its lines: {quoted:?}"
    );

    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    // The README's shutdown: SIGTERM with two pieces of work in flight.
    let graceful = Coordinator::builder()
        .pre_drain_delay(Duration::from_millis(10))
        .drain_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let jobs = [graceful.track("job a"), graceful.track("job b")];
    let signal = graceful.signal();
    tokio::spawn(async move {
        signal.draining().await;
        drop(jobs);
    });
    // `build` registered the SIGTERM handler before it returned.
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let report = timeout(WAIT, graceful.wait())
        .await
        .expect("shutdown in time");
    assert!(report.is_clean(), "{report}");

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    for line in quoted {
        assert!(
            text.lines().any(|l| l.contains(line)),
            "the README quotes a log line that a shutdown does not write:\n  {line}\n\
             the log:\n{text}"
        );
    }
}
