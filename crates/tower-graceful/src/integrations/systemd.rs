//! systemd integration (feature `systemd`, unix): readiness and shutdown
//! progress told to the service manager (`sd_notify`), and listeners passed
//! by socket activation (`LISTEN_FDS`).
//!
//! # Notifications
//!
//! [`notify`] returns a future that follows the coordinator's phases and
//! tells systemd about each, as it happens (it awaits the coordinator's
//! events; nothing polls):
//!
//! | when | sent |
//! |---|---|
//! | a readiness gate is not ready yet | `STATUS=starting: not ready: <gate>` |
//! | readiness is [`Ready`](crate::probe::ReadinessStatus::Ready) (every gate open) | `READY=1`, `STATUS=serving: N in flight` |
//! | a gate changes while serving | `STATUS=serving: …` |
//! | shutdown triggered | `STOPPING=1`, `STATUS=triggered: …`, `EXTEND_TIMEOUT_USEC=` pre-drain delay + [`EXTEND_MARGIN`] |
//! | draining begins | `STATUS=draining: N in flight`, `EXTEND_TIMEOUT_USEC=` drain deadline + margin |
//! | drained, or the drain cut short | `STATUS=cleaning up: …`, `EXTEND_TIMEOUT_USEC=` cleanup timeout + margin |
//! | the report is out | `STATUS=done: …` (best effort: the process may exit first) |
//! | every `WATCHDOG_USEC / 2`, if the unit sets `WatchdogSec=` | `WATCHDOG=1` (with a fresh `STATUS=` while triggered or draining) |
//!
//! `EXTEND_TIMEOUT_USEC` asks systemd for time *until the next message*, one
//! phase at a time, so a drain within the configured budget is not cut by
//! `TimeoutStopSec=` (or `TimeoutStartSec=` for a process that stops while
//! starting), while a process that hangs stops extending and is killed when
//! the current phase's allowance is over. `WATCHDOG=1` is sent from the
//! runtime the future runs on, so a runtime that stops making progress stops
//! petting the watchdog and systemd restarts the service.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) the
//! future completes at once and sends nothing.
//!
//! # Socket activation
//!
//! [`tcp_listener`] takes a listening socket passed by the service manager
//! (`LISTEN_FDS` / `LISTEN_PID`, by position or by `FileDescriptorName=`)
//! and binds the fallback address when none was passed. The result is a
//! `tokio::net::TcpListener` for [`serve`](crate::serve), `axum::serve` or
//! tonic (`TcpIncoming::from(listener)`). Such a listener belongs to the
//! service manager as much as to the process: when [`serve`](crate::serve)
//! drops it at the start of draining, only this process's copy is closed;
//! the socket stays open in systemd (or any supervisor that passed it), and
//! connections that arrive while the service restarts wait in the kernel's
//! backlog for the next process instead of being refused.
//!
//! # Example
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tower_graceful::systemd::{self, Socket};
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder()
//!     .readiness_path("/ready")
//!     .build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(graceful.layer());
//! // The socket of `app.socket` (FileDescriptorName=http) under systemd,
//! // 127.0.0.1:3000 when run by hand.
//! let listener = systemd::tcp_listener(Socket::Name("http"), "127.0.0.1:3000").await?;
//! tokio::spawn(tower_graceful::serve(listener, app, &graceful));
//! // READY=1 once every readiness gate is open; STOPPING=1 at SIGTERM, ...
//! tokio::spawn(systemd::notify(&graceful));
//! let report = graceful.wait().await;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::coordinator::Config;
use crate::core::readiness::ReadinessStatus;
use crate::core::state::{Phase, Shared};
use crate::Coordinator;

/// Added to each phase's budget in `EXTEND_TIMEOUT_USEC`: the time the
/// process may take, beyond the budget, to send its next message (a busy
/// runtime, the scheduling of this task). A process that hangs is killed
/// at most this long after the phase's allowance.
pub const EXTEND_MARGIN: Duration = Duration::from_secs(2);

/// Follows the coordinator's phases and tells systemd about each (see the
/// [module docs](self)): `READY=1` once every readiness gate is open,
/// `STOPPING=1` at the trigger, `STATUS=` lines with the phase and the
/// in-flight count, `EXTEND_TIMEOUT_USEC=` for each shutdown phase and
/// `WATCHDOG=1` when the unit sets `WatchdogSec=`.
///
/// Spawn it once the listeners are bound (a bound socket already queues
/// connections, so `READY=1` may go out as soon as the gates are open):
/// `tokio::spawn(systemd::notify(&graceful))`. It completes once the
/// shutdown report is out, or at once (sending nothing) when
/// `NOTIFY_SOCKET` is not set. A failed send is logged once and never
/// stops the service.
///
/// # Cancel safety
///
/// Dropping the future stops the notifications (and the watchdog pings, so
/// systemd will restart a unit with `WatchdogSec=`); what was sent stays
/// sent. Spawn it and let it run to the end.
pub fn notify(coordinator: &Coordinator) -> impl Future<Output = ()> + Send + 'static {
    // Read now, in the caller's context: the environment is the process's,
    // and an application may clear it later.
    let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
    let watchdog = if enabled {
        sd_notify::watchdog_enabled()
    } else {
        None
    };
    let shared = coordinator.shared.clone();
    let config = coordinator.config();
    async move {
        // The task holds a reference: the state and its config live on.
        let shared = &*shared;
        let config = &*config;
        if !enabled {
            return;
        }
        tracing::debug!(target: "tower_graceful", ?watchdog, "systemd notifications on");
        let lifecycle = lifecycle(shared, config);
        tokio::pin!(lifecycle);
        match watchdog {
            Some(period) if !period.is_zero() => {
                tokio::select! {
                    _ = &mut lifecycle => {}
                    _ = pet_watchdog(shared, period) => {}
                }
            }
            _ => lifecycle.await,
        }
    }
}

async fn lifecycle(shared: &Shared, config: &Config) {
    let mut gates = shared.gates_changed.subscribe();
    // Starting: READY=1 once every gate is open (never after the trigger).
    let mut last: Option<String> = None;
    loop {
        match shared.readiness() {
            ReadinessStatus::Ready => {
                send(&[
                    NotifyState::Ready,
                    NotifyState::Status(&status(shared, "serving", "")),
                ]);
                break;
            }
            ReadinessStatus::ShuttingDown => break,
            ReadinessStatus::NotReady(gate) => {
                let line = format!("starting: not ready: {gate}");
                if last.as_deref() != Some(line.as_str()) {
                    send(&[NotifyState::Status(&line)]);
                    last = Some(line);
                }
            }
        }
        tokio::select! {
            biased;
            _ = shared.triggered.wait() => {}
            _ = gates.changed() => {}
        }
    }
    // Serving: a gate that changes is worth a status line (systemd has no
    // state for "running, not ready").
    while !shared.triggered.is_set() {
        tokio::select! {
            biased;
            _ = shared.triggered.wait() => break,
            _ = gates.changed() => {
                let detail = match shared.readiness() {
                    ReadinessStatus::NotReady(gate) => format!("; not ready: {gate}"),
                    _ => String::new(),
                };
                send(&[NotifyState::Status(&status(shared, "serving", &detail))]);
            }
        }
    }

    // Triggered: readiness is down, the pre-drain delay runs.
    let detail = format!("; draining in {:?}", config.pre_drain);
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&status(shared, "triggered", &detail)),
        extend(config.pre_drain),
    ]);

    // Draining (a forced stop during the pre-drain starts draining too).
    shared.soft.cancelled().await;
    let detail = format!("; deadline in {:?}", config.drain_deadline);
    send(&[
        NotifyState::Status(&status(shared, "draining", &detail)),
        extend(config.drain_deadline),
    ]);

    // Drained, or cut short: the hooks run.
    tokio::select! {
        biased;
        _ = shared.tracker.drained() => {}
        _ = shared.hard.cancelled() => {}
    }
    let how = if shared.hard.is_cancelled() {
        "forced stop"
    } else {
        "drained"
    };
    send(&[
        NotifyState::Status(&status(shared, "cleaning up", &format!("; {how}"))),
        extend(config.cleanup_timeout),
    ]);

    shared.done.wait().await;
    send(&[NotifyState::Status(&format!("done: {how}"))]);
}

/// `WATCHDOG=1` every half period, as `sd_watchdog_enabled(3)` advises,
/// until the report is out.
async fn pet_watchdog(shared: &Shared, period: Duration) {
    let mut tick = tokio::time::interval(period / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.done.wait() => return,
        }
        match shared.phase() {
            phase @ (Phase::Triggered | Phase::Draining) => {
                send(&[
                    NotifyState::Watchdog,
                    NotifyState::Status(&status(shared, phase.as_str(), "")),
                ]);
            }
            _ => send(&[NotifyState::Watchdog]),
        }
    }
}

fn status(shared: &Shared, phase: &str, detail: &str) -> String {
    let mut s = String::with_capacity(64);
    let _ = write!(
        s,
        "{phase}: {} in flight{detail}",
        shared.tracker.in_flight()
    );
    s
}

fn extend(budget: Duration) -> NotifyState<'static> {
    let usec = (budget + EXTEND_MARGIN).as_micros();
    NotifyState::ExtendTimeoutUsec(u32::try_from(usec).unwrap_or(u32::MAX))
}

fn send(states: &[NotifyState<'_>]) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        // Relaxed: only decides whether to log again.
        if !FAILED.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "tower_graceful", error = %e, "sd_notify failed; the service keeps running (logged once)");
        }
    }
}

// ------------------------------------------------------- socket activation --

/// Which passed socket to take: by position among those passed (`0` is fd 3),
/// or by its name (`FileDescriptorName=` in the `.socket` unit, passed in
/// `LISTEN_FDNAMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Socket<'a> {
    /// The `n`-th passed socket, from 0.
    Index(usize),
    /// The passed socket with this name.
    Name(&'a str),
}

/// The sockets passed to this process, read from the environment once.
struct Passed {
    fds: listenfd::ListenFd,
    /// One per fd when `LISTEN_FDNAMES` was given and matched; else empty.
    names: Vec<String>,
}

fn passed() -> std::sync::MutexGuard<'static, Passed> {
    static PASSED: OnceLock<Mutex<Passed>> = OnceLock::new();
    let m = PASSED.get_or_init(|| {
        // The names first: `ListenFd::from_env` removes LISTEN_PID and
        // LISTEN_FDS (so that child processes do not take them too), after
        // which sd-notify would find nothing.
        let names = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds.map(|(_, name)| name).collect(),
            Err(e) => {
                tracing::warn!(target: "tower_graceful", error = %e, "ignoring LISTEN_FDNAMES");
                Vec::new()
            }
        };
        let fds = listenfd::ListenFd::from_env();
        let names = if names.len() == fds.len() {
            names
        } else {
            Vec::new()
        };
        Mutex::new(Passed { fds, names })
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many sockets the service manager passed to this process
/// (`LISTEN_FDS`, when `LISTEN_PID` is this process or unset), and their
/// names when `LISTEN_FDNAMES` gave them. Taking one does not change this.
pub fn passed_sockets() -> Vec<Option<String>> {
    let p = passed();
    (0..p.fds.len()).map(|i| p.names.get(i).cloned()).collect()
}

/// Takes a passed TCP listening socket, as a blocking `std` listener
/// (`Ok(None)` if no such socket was passed, or it was taken before).
///
/// Each socket can be taken once per process. The first call of this or
/// [`tcp_listener`] reads `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`
/// and removes the first two from the environment (so that child processes
/// do not take the sockets too); make it early in `main`, before other
/// threads read the environment outside of Rust's `std` (a DNS lookup in
/// libc, for example).
///
/// An error means the socket was passed but is not a TCP socket.
pub fn take_tcp_listener(socket: Socket<'_>) -> io::Result<Option<std::net::TcpListener>> {
    let mut p = passed();
    let index = match socket {
        Socket::Index(i) => i,
        Socket::Name(name) => match p.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => return Ok(None),
        },
    };
    p.fds.take_tcp_listener(index)
}

/// The listener to serve on: the passed socket `socket` if the service
/// manager passed one (see [`take_tcp_listener`]), otherwise `fallback`
/// bound now. Logs which, with the address.
///
/// Works with any server that takes a tokio listener: [`serve`](crate::serve),
/// `axum::serve`, tonic's `TcpIncoming::from(listener)`.
///
/// # Cancel safety
///
/// Cancel safe: a passed socket is taken and returned within the first poll
/// (nothing is awaited on that path); only binding `fallback` awaits, and
/// dropping the future then binds nothing.
pub async fn tcp_listener(
    socket: Socket<'_>,
    fallback: impl tokio::net::ToSocketAddrs,
) -> io::Result<tokio::net::TcpListener> {
    if let Some(std) = take_tcp_listener(socket)? {
        std.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std)?;
        tracing::info!(
            target: "tower_graceful",
            addr = ?listener.local_addr().ok(),
            ?socket,
            "listening on a socket passed by the service manager"
        );
        return Ok(listener);
    }
    let listener = tokio::net::TcpListener::bind(fallback).await?;
    tracing::debug!(
        target: "tower_graceful",
        addr = ?listener.local_addr().ok(),
        "no socket passed: bound the fallback address"
    );
    Ok(listener)
}
