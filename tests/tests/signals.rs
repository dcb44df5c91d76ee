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

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tower_graceful_tests::{body_text, within, within_for, H1};

/// The `axum` example binary, built once per test process.
fn axum_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives in the workspace")
            .to_owned();
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(&workspace)
            .args([
                "build",
                "-p",
                "tower-graceful-examples",
                "--bin",
                "axum",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the axum example");
        assert!(out.status.success(), "building the axum example failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "axum")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported the axum executable")
    })
    .clone()
}

/// A running `axum` example: its output, line by line, and a guard that
/// kills it (by PID) unless it exited.
struct Example {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Drop for Example {
    fn drop(&mut self) {
        // `start_kill` signals this child's PID (SIGKILL); a no-op once it exited.
        let _ = self.child.start_kill();
    }
}

/// Lines of one output stream: a feed to wait on, and everything so far.
struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    all: Arc<Mutex<String>>,
}

impl Lines {
    fn read(stream: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let all = Arc::new(Mutex::new(String::new()));
        let keep = all.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = keep.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
        Self { rx, all }
    }

    /// Waits (bounded) for a line containing `needle` and returns it.
    async fn wait_for(&mut self, needle: &str) -> String {
        let all = self.all.clone();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.rx.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no line containing {needle:?} within 20 s; output so far:\n{}",
                all.lock().unwrap()
            ),
        }
    }

    fn text(&self) -> String {
        self.all.lock().unwrap().clone()
    }
}

impl Example {
    /// Starts the example on a free port and waits for `listening on`.
    async fn start(env: &[(&str, &str)]) -> (Self, std::net::SocketAddr) {
        let bin = tokio::task::spawn_blocking(axum_binary).await.unwrap();
        let mut child = Command::new(&bin)
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = Lines::read(child.stdout.take().unwrap());
        let stderr = Lines::read(child.stderr.take().unwrap());
        let mut example = Example {
            child,
            stdout,
            stderr,
        };
        let line = example.stdout.wait_for("listening on ").await;
        let addr = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        (example, addr)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends SIGTERM to the child's PID.
    fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (bounded by `limit`) for the process to exit.
    async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait()).await;
        match status {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "the example did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            ),
        }
    }
}

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

    let status = example.exited(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}");
    // The report is the last thing printed; wait for its last line.
    example.stdout.wait_for("total").await;
    let out = example.stdout.text();
    assert!(out.contains("shutdown report (cause: SIGTERM)"), "{out}");
    assert!(
        out.contains(
            "Drained: 1 in flight at start (requests and tasks), 1 requests completed, 0 rejected"
        ),
        "{out}"
    );
    assert!(!out.contains("straggler"), "{out}");
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

    let status = example.exited(Duration::from_secs(20)).await;
    let took = forced_at.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(20), "exited after {took:?}");
    example.stdout.wait_for("total").await;
    let out = example.stdout.text();
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
