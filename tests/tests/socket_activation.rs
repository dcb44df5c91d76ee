//! The `axum` example started by Debian's real `systemd-socket-activate`
//! (package `systemd`), which binds the socket, waits for the first
//! connection, then execs the example with the socket as fd 3
//! (`LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDNAMES=http`), as a `.socket` unit
//! does. Real requests are served on the inherited socket, and the
//! example's notifications reach a real `NOTIFY_SOCKET`.
//!
//! `PORT` is set to a port this test holds, so an example that ignored the
//! inherited socket and bound `PORT` would fail to start.
//!
//! Skipped (with a message) where `systemd-socket-activate` is not
//! installed, except under CI (`CI=true`), where it is a failure: `.ci/run`
//! installs it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use tokio::net::{TcpListener, UnixDatagram};
use tokio::process::Command;
use tower_graceful_tests::example::{axum_binary, Example};
use tower_graceful_tests::{body_text, within, H1};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// Starts `systemd-socket-activate` on a free port (its `-l` takes no port
/// 0: a port is picked and released first, and picked again if someone
/// took it meanwhile; at most 5 tries).
async fn activate(example_env: &[(&str, String)]) -> (Example, SocketAddr) {
    let bin = tokio::task::spawn_blocking(axum_binary).await.unwrap();
    for _ in 0..5 {
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
            probe.local_addr().unwrap()
        };
        let mut cmd = Command::new(ACTIVATE);
        cmd.arg("-l").arg(addr.to_string()).arg("--fdname=http");
        // Only what -E names reaches the example (and LISTEN_*).
        for (k, v) in example_env {
            cmd.arg("-E").arg(format!("{k}={v}"));
        }
        cmd.args(["-E", "RUST_LOG=info", "-E", "NO_COLOR=1"])
            .arg(&bin);
        let mut activator = Example::spawn(cmd);
        let line = activator
            .stderr
            .wait_for_any(&["Listening on", "Failed"])
            .await;
        if line.contains(&format!("Listening on {addr} as 3.")) {
            return (activator, addr);
        }
        let _ = activator.exited(Duration::from_secs(10)).await;
    }
    panic!("systemd-socket-activate could not listen on a free port in 5 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_passes_the_socket_and_requests_are_served() {
    if !Path::new(ACTIVATE).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{ACTIVATE} is missing under CI: .ci/run installs the `systemd` package"
        );
        println!("skipped: {ACTIVATE} not installed (apt-get install systemd)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tower-graceful-activate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();

    let occupied = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let env = [
        ("PORT", occupied.local_addr().unwrap().port().to_string()),
        ("GRACEFUL_PRE_DRAIN", "0s".to_owned()),
        ("GRACEFUL_DEADLINE", "10s".to_owned()),
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
    ];
    let (mut example, addr) = activate(&env).await;

    // The first connection wakes systemd-socket-activate, which execs the
    // example (same PID) with the socket; the request waits in the backlog.
    let mut conn = H1::connect(addr).await;
    let res = conn.get("/").await.expect("the first request is served");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_text(res).await.unwrap(), "hello\n");
    let line = example.stdout.wait_for("listening on ").await;
    assert_eq!(
        line,
        format!("listening on {addr}"),
        "serves the passed socket"
    );
    example
        .stderr
        .wait_for("listening on a socket passed by the service manager")
        .await;

    // READY=1 from the example, on the socket systemd would read.
    let mut buf = vec![0u8; 4096];
    let n = within("READY=1 on NOTIFY_SOCKET", notify.recv(&mut buf))
        .await
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");

    // More requests, on the same and on new connections.
    for _ in 0..3 {
        let res = conn.get("/ready").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut fresh = H1::connect(addr).await;
        let res = fresh.get("/stream?chunks=2").await.unwrap();
        assert_eq!(body_text(res).await.unwrap(), "chunk 0\nchunk 1\n");
    }

    // SIGTERM (to the PID systemd-socket-activate exec'd into) with a slow
    // request in flight: STOPPING=1, the request completes, exit 0.
    let mut slow_conn = H1::connect(addr).await;
    let slow = tokio::spawn(
        slow_conn
            .sender
            .send_request(slow_conn.request("/slow?ms=1000")),
    );
    example.stderr.wait_for("slow request started").await;
    example.sigterm();
    let n = within("STOPPING=1 on NOTIFY_SOCKET", notify.recv(&mut buf))
        .await
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg}");
    let res = within("the slow response", slow).await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body_text(res).await.unwrap(),
        "slow response after 1000 ms\n"
    );
    example.exited_zero().await;
    example.report().await;
    drop(occupied);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Socket-activation variables meant for another process (`LISTEN_PID` not
/// the example's, as when a wrapper did not exec it): the example says so by
/// the variable's name, logs at `INFO` that it bound the fallback address
/// and why, and serves there. It does not take fd 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_pid_of_another_process_is_reported_by_name_and_the_fallback_is_logged() {
    let (mut example, addr) = Example::start(&[
        ("LISTEN_PID", "1"),
        ("LISTEN_FDS", "1"),
        ("LISTEN_FDNAMES", "http"),
        ("GRACEFUL_PRE_DRAIN", "0s"),
    ])
    .await;
    let warn = example.stderr.wait_for("socket activation ignored").await;
    assert!(warn.contains("WARN"), "{warn}");
    assert!(
        warn.contains("LISTEN_PID=1 is not this process"),
        "the variable that did not fit is named: {warn}"
    );
    let info = example
        .stderr
        .wait_for("no passed socket: listening on the fallback address")
        .await;
    assert!(info.contains("INFO"), "{info}");
    assert!(info.contains(&addr.to_string()), "{info}");
    assert!(
        info.contains("LISTEN_PID=1"),
        "the reason is logged: {info}"
    );
    let mut conn = H1::connect(addr).await;
    let res = conn.get("/").await.expect("served on the fallback address");
    assert_eq!(res.status(), StatusCode::OK);
    example.sigterm();
    example.exited_zero().await;
}
