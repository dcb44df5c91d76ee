//! `tower_graceful::systemd::notify` against a real datagram socket set as
//! `NOTIFY_SOCKET`, as systemd reads it: which messages, in which order, and
//! in which phase each is sent.
//!
//! The environment is the process's, so this file is its own test binary
//! with **one** `#[test]` that runs the scenarios one after the other, each
//! on a fresh current-thread runtime created after its variables are set
//! (no other thread of this process reads the environment meanwhile).
//!
//! No timing is asserted: every step waits for an event (a datagram, a
//! phase) under a bound, and the phase a message is checked against cannot
//! have moved on (a tracked guard holds the drain, a hook holds the
//! cleanup, a pre-drain delay of a minute holds the trigger).

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tower_graceful::{systemd, Coordinator, Phase};

const WAIT: Duration = Duration::from_secs(10);

/// A stand-in for systemd's notify socket, in its own directory.
struct NotifySocket {
    dir: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    fn bind(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-graceful-notify-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        Self { dir, sock }
    }

    /// The next datagram, as its `KEY=value` lines (bounded wait).
    async fn next(&self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.sock.recv(&mut buf))
            .await
            .expect("a notification within the bound")
            .unwrap();
        String::from_utf8(buf[..n].to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn value<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn extend_usec(msg: &[String]) -> u64 {
    value(msg, "EXTEND_TIMEOUT_USEC")
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC in {msg:?}"))
        .parse()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn notifications_follow_the_phases() {
    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    runtime().block_on(without_notify_socket_nothing_is_sent());
    runtime().block_on(lifecycle_of_a_clean_drain());
    runtime().block_on(forced_during_the_pre_drain());
    runtime().block_on(watchdog_while_serving_and_stopping());
}

/// Not started by systemd: the future completes at once.
async fn without_notify_socket_nothing_is_sent() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .build()
        .unwrap();
    tokio::time::timeout(WAIT, systemd::notify(&c))
        .await
        .expect("notify() is a no-op without NOTIFY_SOCKET");
}

async fn lifecycle_of_a_clean_drain() {
    let sd = NotifySocket::bind("clean");
    let c = Coordinator::builder()
        .handle_signals(false)
        .drain_deadline(Duration::from_secs(60))
        .cleanup_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (release_hook, hook_released) = tokio::sync::oneshot::channel::<()>();
    c.on_shutdown("held by the test", move || async move {
        let _ = hook_released.await;
        Ok::<_, std::io::Error>(())
    })
    .unwrap();
    let warmup = c.readiness().gate("warmup");
    let notifier = tokio::spawn(systemd::notify(&c));

    // A gate is closed: a status, no READY=1.
    let msg = sd.next().await;
    assert_eq!(msg, ["STATUS=starting: not ready: warmup"], "{msg:?}");

    // The gate opens: READY=1 with the serving status.
    warmup.set_ready(true);
    let msg = sd.next().await;
    assert!(msg.contains(&"READY=1".to_owned()), "{msg:?}");
    assert_eq!(value(&msg, "STATUS"), Some("serving: 0 in flight"));
    assert_eq!(c.phase(), Phase::Serving);

    // Work in flight, then the trigger: STOPPING=1, extended by the
    // pre-drain delay (zero here) plus the margin.
    let job = c.track("job");
    c.trigger();
    let msg = sd.next().await;
    assert!(msg.contains(&"STOPPING=1".to_owned()), "{msg:?}");
    assert!(!msg.contains(&"READY=1".to_owned()), "{msg:?}");
    assert_eq!(
        value(&msg, "STATUS"),
        Some("triggered: 1 in flight; draining in 0ns")
    );
    assert_eq!(extend_usec(&msg), systemd::EXTEND_MARGIN.as_micros() as u64);
    assert!(c.phase() >= Phase::Triggered);

    // Draining, held by the job: the drain deadline plus the margin.
    let msg = sd.next().await;
    assert_eq!(c.phase(), Phase::Draining, "{msg:?}");
    assert_eq!(
        value(&msg, "STATUS"),
        Some("draining: 1 in flight; deadline in 60s")
    );
    assert_eq!(
        extend_usec(&msg),
        (Duration::from_secs(60) + systemd::EXTEND_MARGIN).as_micros() as u64
    );

    // The job ends: drained; cleanup (held by the hook) gets its budget.
    drop(job);
    let msg = sd.next().await;
    assert_eq!(c.phase(), Phase::CleaningUp, "{msg:?}");
    assert_eq!(
        value(&msg, "STATUS"),
        Some("cleaning up: 0 in flight; drained")
    );
    assert_eq!(
        extend_usec(&msg),
        (Duration::from_secs(30) + systemd::EXTEND_MARGIN).as_micros() as u64
    );

    // The hook returns: the report is out, then the last status.
    release_hook.send(()).unwrap();
    let report = tokio::time::timeout(WAIT, c.wait()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    let msg = sd.next().await;
    assert_eq!(msg, ["STATUS=done: drained"]);
    tokio::time::timeout(WAIT, notifier)
        .await
        .expect("notify() completes once the report is out")
        .unwrap();
}

/// A second signal during a long pre-drain: STOPPING=1 in the triggered
/// phase, then draining and cleanup marked as forced.
async fn forced_during_the_pre_drain() {
    let sd = NotifySocket::bind("forced");
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(60))
        .drain_deadline(Duration::from_secs(60))
        .build()
        .unwrap();
    let notifier = tokio::spawn(systemd::notify(&c));
    let msg = sd.next().await;
    assert!(msg.contains(&"READY=1".to_owned()), "{msg:?}");

    let job = c.track("stuck job");
    c.trigger();
    let msg = sd.next().await;
    // The pre-drain delay is a minute: still triggered when this arrives.
    assert_eq!(c.phase(), Phase::Triggered, "{msg:?}");
    assert!(msg.contains(&"STOPPING=1".to_owned()), "{msg:?}");
    assert_eq!(
        value(&msg, "STATUS"),
        Some("triggered: 1 in flight; draining in 60s")
    );
    assert_eq!(
        extend_usec(&msg),
        (Duration::from_secs(60) + systemd::EXTEND_MARGIN).as_micros() as u64
    );

    c.force();
    let msg = sd.next().await;
    assert!(
        value(&msg, "STATUS").unwrap().starts_with("draining: "),
        "{msg:?}"
    );
    let msg = sd.next().await;
    assert!(
        value(&msg, "STATUS").unwrap().ends_with("; forced stop"),
        "{msg:?}"
    );
    let report = tokio::time::timeout(WAIT, c.wait()).await.unwrap();
    assert!(!report.is_clean());
    let msg = sd.next().await;
    assert_eq!(msg, ["STATUS=done: forced stop"]);
    tokio::time::timeout(WAIT, notifier).await.unwrap().unwrap();
    drop(job);
}

/// `WatchdogSec=` set (here 100 ms): `WATCHDOG=1` keeps coming while
/// serving and while stopping, with the in-flight count once triggered;
/// the pets end with the shutdown.
async fn watchdog_while_serving_and_stopping() {
    std::env::set_var("WATCHDOG_USEC", "100000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    let sd = NotifySocket::bind("watchdog");
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_secs(60))
        .build()
        .unwrap();
    let notifier = tokio::spawn(systemd::notify(&c));
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");

    let mut pets = 0;
    let mut ready = false;
    // Serving: READY=1 and at least three pets (bounded by `next`'s wait).
    while !(ready && pets >= 3) {
        let msg = sd.next().await;
        ready |= msg.contains(&"READY=1".to_owned());
        if msg.contains(&"WATCHDOG=1".to_owned()) {
            assert!(ready, "READY=1 comes first: {msg:?}");
            assert_eq!(msg, ["WATCHDOG=1"], "no status while serving");
            pets += 1;
        }
    }
    // Triggered (held by the minute of pre-drain): the pets go on, with the
    // phase and the in-flight count.
    let job = c.track("job");
    c.trigger();
    let mut stopping = false;
    let mut pets_while_stopping = 0;
    while pets_while_stopping < 3 {
        let msg = sd.next().await;
        if msg.contains(&"STOPPING=1".to_owned()) {
            stopping = true;
            continue;
        }
        if msg.contains(&"WATCHDOG=1".to_owned()) && stopping {
            assert_eq!(value(&msg, "STATUS"), Some("triggered: 1 in flight"));
            pets_while_stopping += 1;
        }
    }
    drop(job);
    c.force();
    tokio::time::timeout(WAIT, c.wait()).await.unwrap();
    tokio::time::timeout(WAIT, notifier)
        .await
        .expect("the watchdog stops with the shutdown")
        .unwrap();
}
