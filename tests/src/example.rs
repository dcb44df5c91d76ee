//! An example (`axum` unless named) as a child process, for tests that
//! signal it: built once per test binary (cargo's own `compiler-artifact`
//! message names the file, so `CARGO_TARGET_DIR` is respected), its output
//! read line by line, and killed by its PID when dropped unless it exited.
//! Used by `signals.rs`, `faults.rs`, `hyper.rs` and `socket_activation.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The `axum` example binary, built once per test process.
pub fn axum_binary() -> PathBuf {
    binary("axum")
}

/// The example binary `name`, built once per test process.
pub fn binary(name: &str) -> PathBuf {
    static BINS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut bins = BINS.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = bins.get(name) {
        return path.clone();
    }
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
            name,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for the {name} example: {e}"));
    assert!(out.status.success(), "building the {name} example failed");
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .unwrap_or_else(|| panic!("cargo reported no executable for the {name} example"));
    bins.insert(name.to_owned(), path.clone());
    path
}

/// Lines of one output stream: a feed to wait on, and everything so far.
pub struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    all: Arc<Mutex<String>>,
}

impl Lines {
    /// Reads `stream` line by line in a task of its own.
    pub fn read(stream: impl AsyncRead + Unpin + Send + 'static) -> Self {
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
            // `tx` dropped here: the feed ends with the stream.
        });
        Self { rx, all }
    }

    /// Waits (bounded) for a line containing `needle` and returns it.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_line(&format!("{needle:?}"), |line| line.contains(needle))
            .await
    }

    /// Waits (bounded) for a line containing any of `needles`.
    pub async fn wait_for_any(&mut self, needles: &[&str]) -> String {
        self.wait_for_line(&format!("any of {needles:?}"), |line| {
            needles.iter().any(|n| line.contains(n))
        })
        .await
    }

    /// Waits (bounded) for a line that `matches`; `what` names it in the
    /// panic message.
    async fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.rx.recv().await {
                if matches(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no line containing {what} within 20 s; output so far:\n{}",
                self.text()
            ),
        }
    }

    /// Waits (bounded) for the end of the stream and returns all of it.
    pub async fn until_eof(&mut self) -> String {
        let eof = tokio::time::timeout(Duration::from_secs(10), async {
            while self.rx.recv().await.is_some() {}
        })
        .await;
        assert!(eof.is_ok(), "output did not end:\n{}", self.text());
        self.text()
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.all.lock().unwrap().clone()
    }
}

/// A running `axum` example; killed by its PID (SIGKILL) when dropped
/// unless it exited.
pub struct Example {
    child: Child,
    /// The child's PID.
    pub pid: u32,
    /// Its standard output.
    pub stdout: Lines,
    /// Its standard error (the logs).
    pub stderr: Lines,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Example {
    /// Starts the `axum` example on a free port and waits for `listening on`.
    pub async fn start(env: &[(&str, &str)]) -> (Self, std::net::SocketAddr) {
        Self::start_bin("axum", env).await
    }

    /// Starts the example `name` on a free port (`PORT=0`) and waits for it
    /// to print `listening on ADDR`.
    pub async fn start_bin(
        name: &'static str,
        env: &[(&str, &str)],
    ) -> (Self, std::net::SocketAddr) {
        let bin = tokio::task::spawn_blocking(move || binary(name))
            .await
            .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.env("PORT", "0").envs(env.iter().copied());
        let mut example = Self::spawn(cmd);
        let line = example.stdout.wait_for("listening on ").await;
        let addr = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        (example, addr)
    }

    /// Spawns `cmd` (logs at `info` unless `cmd` sets `RUST_LOG`, no
    /// colours, no stdin, output read line by line) without waiting for
    /// anything.
    pub fn spawn(mut cmd: Command) -> Self {
        if !cmd.as_std().get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = child.unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let pid = child.id().expect("just spawned");
        let stdout = Lines::read(child.stdout.take().unwrap());
        let stderr = Lines::read(child.stderr.take().unwrap());
        Example {
            child,
            pid,
            stdout,
            stderr,
        }
    }

    /// Sends `signal` (`TERM`, `INT`) to the child's PID with `kill`. The
    /// child is never reaped before [`exited`](Self::exited), so its PID
    /// cannot have been reused: `kill` must succeed even after it exited
    /// (a zombie still takes signals).
    pub fn kill(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// Sends SIGTERM to the child's PID.
    pub fn sigterm(&self) {
        self.kill("TERM");
    }

    /// Sends `signals` back to back from one shell (builtin `kill`, no
    /// process start between them): microseconds apart.
    pub fn burst(&self, signals: &[&str]) {
        let script: String = signals
            .iter()
            .map(|s| format!("kill -s {s} {} || exit 1\n", self.pid))
            .collect();
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("run sh");
        assert!(status.success(), "signal burst to {} failed", self.pid);
    }

    /// Waits (bounded by `limit`) for the process to exit and reaps it.
    pub async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "the example did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            ),
        }
    }

    /// Waits (up to 20 s) for the process to exit and asserts that it
    /// exited 0.
    pub async fn exited_zero(&mut self) {
        let status = self.exited(Duration::from_secs(20)).await;
        assert!(status.success(), "exit status {status}");
    }

    /// Waits (bounded) for the last line of the shutdown report on stdout
    /// (`total`: the report is the last thing printed) and returns all that
    /// was printed there.
    pub async fn report(&mut self) -> String {
        self.stdout.wait_for("total").await;
        self.stdout.text()
    }
}

/// Asserts that `out` holds the report of a clean shutdown caused by
/// SIGTERM: its heading, the `drained` line (`Drained: N in flight at start
/// ...`) and no straggler.
#[track_caller]
pub fn assert_clean_sigterm_report(out: &str, drained: &str) {
    assert!(out.contains("shutdown report (cause: SIGTERM)"), "{out}");
    assert!(out.contains(drained), "{out}");
    assert!(!out.contains("straggler"), "{out}");
}

/// A process that is not this one's child (a successor started by an
/// example), followed through a pidfd: its exit is an event (the pidfd
/// becomes readable), and its PID cannot be reused while the pidfd is open.
pub struct Exit {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    pid: u32,
}

impl Exit {
    /// Follows `pid` from now on (follow it before anything can end it).
    pub fn follow(pid: u32) -> Result<Self, String> {
        let p = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| format!("not a process id: {pid}"))?;
        let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open({pid}): {e}"))?;
        // Deprecated for inner types that can close their descriptor while
        // registered; an `OwnedFd` moved in cannot.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(|e| format!("pidfd {pid}: {e}"))?;
        Ok(Self { fd, pid })
    }

    /// Waits (bounded by `limit`) for the process to exit.
    pub async fn exited(self, limit: Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.fd.readable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("pidfd {}: {e}", self.pid)),
            Err(_) => Err(format!("pid {} did not exit within {limit:?}", self.pid)),
        }
    }
}

/// Sends `sig` (`TERM`, `HUP`, `KILL`) to `pid` with `kill`; whether it was
/// delivered. The caller makes sure the PID is still that process's (an
/// unreaped child, or one followed by an [`Exit`]).
pub fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
