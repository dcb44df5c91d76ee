//! Restart in place (`tower_graceful::restart`, issue 20) with real
//! processes: the `axum` example on SIGHUP starts its successor on the same
//! socket, waits for its READY=1, then drains and exits; a successor that
//! exits at once, or never becomes ready, leaves the old process serving.
//!
//! The successor is the old process's child, so it outlives the test's own
//! child: it is ended by its PID (logged by the old process) with SIGTERM,
//! and SIGKILL on drop if the test fails first. Its exit is seen as the end
//! of the stdout pipe it shares with the old process.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tower_graceful_tests::example::{signal, Example, Exit};
use tower_graceful_tests::within;

/// One HTTP/1.1 request on a new connection (`Connection: close`), the
/// whole answer as text.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("the answer", s.read_to_string(&mut out))
        .await
        .unwrap();
    out
}

/// The pid in a `/whoami` answer (`ADDR pid N`).
fn pid_of(answer: &str) -> u32 {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let tail = answer.rsplit("pid ").next().unwrap();
    tail.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

/// Ends a process that is not this test's child by its PID: SIGKILL on
/// drop (SIGTERM is sent by the test when all went well).
struct Orphan(u32);

impl Drop for Orphan {
    fn drop(&mut self) {
        signal(self.0, "KILL");
    }
}

/// The pid in a log line's `pid=N` field.
fn logged_pid(line: &str) -> u32 {
    let tail = line.rsplit("pid=").next().unwrap();
    tail.split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_hands_over_to_a_successor_on_the_same_socket() {
    // A NOTIFY_SOCKET of the test's, as systemd's would be (`Type=notify`).
    let dir = std::env::temp_dir().join(format!("tg-restart-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let next_message = || async {
        let mut buf = vec![0u8; 4096];
        let n = within("a notification", notify.recv(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let (mut old, addr) = Example::start(&[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]).await;
    let mut messages = vec![next_message().await];
    assert!(messages[0].contains("READY=1"), "{messages:?}");
    assert_eq!(pid_of(&get(addr, "/whoami").await), old.pid);

    // A stream in flight across the handover (its head read, so the old
    // process has it): the old process finishes it while the successor
    // takes the new requests.
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream
        .write_all(b"GET /stream?chunks=8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the stream's head", stream.read_exact(&mut byte))
            .await
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let slow = tokio::spawn(async move {
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.map(|_| rest)
    });

    old.kill("HUP");
    let started = old.stderr.wait_for("successor started").await;
    let successor = Orphan(logged_pid(&started));
    let ready = old
        .stderr
        .wait_for("successor ready: draining this process")
        .await;
    assert_eq!(logged_pid(&ready), successor.0);
    // The successor took the socket by socket activation.
    let line = old.stdout.wait_for("listening on ").await;
    assert!(line.ends_with(&addr.to_string()), "{line}");

    let rest = within("the rest of the stream", slow)
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the stream ends whole: {rest:?}"
    );
    assert_eq!(rest.matches("chunk").count(), 8, "{rest:?}");
    old.exited_zero().await;
    // The report's lines, as the output reader gets to them (the pipe stays
    // open: the successor shares it).
    old.stdout
        .wait_for(&format!(
            "shutdown report (cause: restart (successor pid {}))",
            successor.0
        ))
        .await;
    old.stdout.wait_for("total").await;
    let out = old.stdout.text();
    assert!(!out.contains("straggler"), "{out}");

    // The old process is gone: the socket is the successor's alone.
    for _ in 0..3 {
        assert_eq!(pid_of(&get(addr, "/whoami").await), successor.0);
    }

    // What systemd was told: the successor's READY=1, then MAINPID= from
    // the old process, and no STOPPING=1 from the old one (which would
    // stop the unit).
    let mainpid = format!("MAINPID={}", successor.0);
    while !messages.iter().any(|m| m.contains(&mainpid)) {
        messages.push(next_message().await);
    }
    assert_eq!(
        messages.iter().filter(|m| m.contains("READY=1")).count(),
        2,
        "{messages:?}"
    );
    // Everything else already sent (the old process has exited).
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = notify.try_recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !messages.iter().any(|m| m.contains("STOPPING=1")),
        "{messages:?}"
    );

    // End the successor like a service manager would: now STOPPING=1
    // comes (from the successor, the main process).
    assert!(signal(successor.0, "TERM"));
    while !next_message().await.contains("STOPPING=1") {}
    old.stdout
        .wait_for("shutdown report (cause: SIGTERM)")
        .await;
    old.stdout.until_eof().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_exits_at_once_leaves_the_old_process_serving() {
    let (mut old, addr) = Example::start(&[("GRACEFUL_RESTART_PROGRAM", "/bin/false")]).await;
    old.kill("HUP");
    let failed = old.stderr.wait_for("restart in place failed").await;
    assert!(
        failed.contains("the successor exited before it was ready"),
        "{failed}"
    );
    assert_eq!(pid_of(&get(addr, "/whoami").await), old.pid);
    let ready = get(addr, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "still ready: {ready}");
    // A second try fails the same way: the first left nothing behind.
    old.kill("HUP");
    old.stderr.wait_for("restart in place failed").await;
    assert_eq!(pid_of(&get(addr, "/whoami").await), old.pid);
    old.sigterm();
    old.exited_zero().await;
    old.stdout.wait_for("shutdown report").await;
    assert!(
        old.stdout
            .text()
            .contains("shutdown report (cause: SIGTERM)"),
        "{}",
        old.stdout.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_never_becomes_ready_is_ended_after_the_timeout() {
    let dir = std::env::temp_dir().join(format!("tg-restart-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("never-ready");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (mut old, addr) = Example::start(&[
        ("GRACEFUL_RESTART_PROGRAM", script.to_str().unwrap()),
        ("GRACEFUL_RESTART_TIMEOUT", "500ms"),
    ])
    .await;
    old.kill("HUP");
    let started = old.stderr.wait_for("successor started").await;
    let successor = Orphan(logged_pid(&started));
    let failed = old.stderr.wait_for("restart in place failed").await;
    assert!(failed.contains("not ready within 500ms"), "{failed}");
    // Ended and reaped before the failure was logged.
    assert!(
        !std::path::Path::new(&format!("/proc/{}", successor.0)).exists(),
        "the successor that never became ready was ended"
    );
    assert_eq!(pid_of(&get(addr, "/whoami").await), old.pid);
    old.sigterm();
    old.exited_zero().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// By call, for a program that decides itself: the successor (the `axum`
/// example, on this test's socket) is ready, the call returns it, and this
/// coordinator's shutdown was triggered by the handover. A program that
/// cannot be started is an error that names it, and serving goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_by_call_returns_the_successor_and_triggers_the_shutdown() {
    use tower_graceful::report::TriggerCause;
    use tower_graceful::restart::{Restart, RestartError};

    let graceful = tower_graceful::Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let missing = Restart::new(&graceful)
        .socket("http", &listener)
        .unwrap()
        .program("/nonexistent/successor")
        .on_sighup(false)
        .spawn();
    let err = within("the failed restart", missing.restart())
        .await
        .unwrap_err();
    assert!(matches!(err, RestartError::Spawn(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/successor"), "{err}");
    assert_eq!(missing.failures().len(), 1);
    assert_eq!(graceful.phase(), tower_graceful::Phase::Serving);
    assert_eq!(graceful.cause(), None);

    let bin = tokio::task::spawn_blocking(tower_graceful_tests::example::axum_binary)
        .await
        .unwrap();
    let restarts = Restart::new(&graceful)
        .socket("http", &listener)
        .unwrap()
        .program(bin)
        .args(Vec::<String>::new())
        .on_sighup(false)
        .spawn();
    let successor = within("the restart", restarts.restart()).await.unwrap();
    let _end = Orphan(successor.pid);
    assert_eq!(
        graceful.cause(),
        Some(TriggerCause::Restart {
            successor: successor.pid
        })
    );
    // This process never served: every answer is the successor's.
    drop(listener);
    assert_eq!(pid_of(&get(addr, "/whoami").await), successor.pid);
    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    // Once triggered, no restart starts.
    let again = within("a restart after the trigger", restarts.restart())
        .await
        .unwrap_err();
    assert!(matches!(again, RestartError::ShuttingDown), "{again:?}");
}

/// A SIGTERM while a successor is starting wins: the old process shuts
/// down as asked, and the successor is ended (SIGTERM), also when the
/// process exits before the restart task could wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_restart_ends_the_successor_and_shuts_down() {
    let dir = std::env::temp_dir().join(format!("tg-restart-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("slow-start");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (mut old, _addr) = Example::start(&[
        ("GRACEFUL_RESTART_PROGRAM", script.to_str().unwrap()),
        ("GRACEFUL_RESTART_TIMEOUT", "60s"),
    ])
    .await;
    old.kill("HUP");
    let started = old.stderr.wait_for("successor started").await;
    let successor = Orphan(logged_pid(&started));
    // Followed before anything can end it, so its exit is an event.
    let exit = Exit::follow(successor.0).unwrap();
    old.sigterm();
    old.exited_zero().await;
    exit.exited(Duration::from_secs(20))
        .await
        .expect("the successor is ended");
    old.stdout
        .wait_for("shutdown report (cause: SIGTERM)")
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}
