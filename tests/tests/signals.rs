//! The `axum` example as a real process, stopped with real signals.
//!
//! The binary belongs to another package (`tower-graceful-examples`), so
//! `CARGO_BIN_EXE_*` is not available. The tests build it once with the same
//! cargo that runs them (`$CARGO build -p tower-graceful-examples --bin axum
//! --message-format=json`) and take the executable's path from cargo's own
//! `compiler-artifact` message: that respects `CARGO_TARGET_DIR`, the
//! profile and any target-dir configuration without guessing paths.
//!
//! The child listens on `PORT=0` and prints `listening on 127.0.0.1:PORT`;
//! its stderr log tells the tests when a request is in flight and when the
//! first signal was handled, so nothing is timed by guesswork. Every child is
//! killed by its PID if a test fails (drop guard).

use std::time::Duration;

use http::StatusCode;
use tower_graceful_tests::example::{assert_clean_sigterm_report, Example};
use tower_graceful_tests::{body_text, within, within_for, H1};

/// SIGTERM while a slow request is in flight: the request completes `200`
/// with its full body, then the process exits 0 and prints a clean report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let (mut example, addr) =
        Example::start(&[("GRACEFUL_DEADLINE", "10s"), ("GRACEFUL_PRE_DRAIN", "0s")]).await;
    let mut conn = H1::connect(addr).await;
    let slow = tokio::spawn(conn.sender.send_request(conn.request("/slow?ms=1500")));
    example.stderr.wait_for("slow request started").await;

    example.sigterm();
    example.stderr.wait_for("shutdown started").await;

    let res = within("the slow response", slow)
        .await
        .unwrap()
        .expect("response head");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body_text(res).await.expect("full body"),
        "slow response after 1500 ms\n"
    );

    example.exited_zero().await;
    let out = example.report().await;
    assert_clean_sigterm_report(
        &out,
        "Drained: 1 in flight at start (requests and tasks), 1 request completed, 0 rejected",
    );
}

/// A second SIGTERM forces the stop: a request that would take a minute is
/// abandoned, the process exits promptly and the report names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_forces_a_prompt_exit_and_names_the_straggler() {
    let (mut example, addr) =
        Example::start(&[("GRACEFUL_DEADLINE", "60s"), ("GRACEFUL_PRE_DRAIN", "0s")]).await;
    let mut conn = H1::connect(addr).await;
    let slow = tokio::spawn(conn.sender.send_request(conn.request("/slow?ms=60000")));
    example.stderr.wait_for("slow request started").await;

    example.sigterm();
    // The first signal was handled (not merged with the second one).
    example.stderr.wait_for("shutdown started").await;
    let forced_at = tokio::time::Instant::now();
    example.sigterm();

    example.exited_zero().await;
    let took = forced_at.elapsed();
    assert!(took < Duration::from_secs(20), "exited after {took:?}");
    let out = example.report().await;
    assert!(out.contains("shutdown report (cause: SIGTERM)"), "{out}");
    assert!(out.contains("Forced"), "{out}");
    assert!(out.contains("straggler: GET /slow"), "{out}");

    // The abandoned request never got a (fake) success.
    match within_for(Duration::from_secs(5), "the abandoned request", slow)
        .await
        .unwrap()
    {
        Err(_) => {}
        Ok(res) => assert_ne!(
            res.status(),
            StatusCode::OK,
            "abandoned request answered 200"
        ),
    }
    eprintln!("forced exit {took:?} after the second SIGTERM");
}

/// The coordinator was built on a runtime that was dropped before any
/// signal: `wait()` on another runtime listens again, so SIGTERM still
/// shuts the process down (instead of being swallowed by tokio's handler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_a_coordinator_whose_building_runtime_is_gone() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runtime_gone"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runtime_gone");
    let pid = child.id().expect("pid") as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("the child's first line", lines.next_line())
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("waiting"));
    // `wait()` prints `waiting` before its first poll, which is what starts
    // the listener again: send until the child reacts, bounded in count.
    let mut exited = None;
    for _ in 0..50 {
        // By the PID of our own child.
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            Ok(status) => {
                exited = Some(status.expect("wait"));
                break;
            }
            Err(_) => continue,
        }
    }
    let status = exited.expect("the child never shut down on SIGTERM");
    assert!(status.success(), "{status}");
    let rest = within("the report line", lines.next_line()).await.unwrap();
    assert_eq!(rest.as_deref(), Some("report cause: SIGTERM"));
}

/// The logs of a clean shutdown read in order: the listener is closed (and
/// says so) before "shutdown complete", even with nothing in flight, when
/// the drain is over microseconds after it began (issue 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_closed_line_comes_before_shutdown_complete() {
    for _ in 0..3 {
        let (mut example, _addr) = Example::start(&[]).await;
        example.sigterm();
        example.exited_zero().await;
        let logs = example.stderr.until_eof().await;
        let closed = logs
            .find("draining: listener closed")
            .unwrap_or_else(|| panic!("no listener line:\n{logs}"));
        let complete = logs
            .find("shutdown complete")
            .unwrap_or_else(|| panic!("no completion line:\n{logs}"));
        assert!(closed < complete, "out of order:\n{logs}");
    }
}
