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
//! Every decision is logged at `INFO` with the address: the passed socket
//! taken (by index or name), or the fallback bound and why. Variables that
//! do not fit this process are reported by name (`LISTEN_PID=… is not this
//! process`, `LISTEN_FDS=… does not fit`, `LISTEN_FDNAMES=… names 1 sockets,
//! LISTEN_FDS=2`); a socket asked for by [`Socket::Name`] that cannot be had
//! is then an error, never a silent bind on the fallback port while the
//! activated socket takes connections that nobody accepts. The environment
//! is read once and only read; `listenfd`, which takes over sockets passed
//! to this process, removes `LISTEN_PID` and `LISTEN_FDS` when there are
//! some (call [`passed_sockets`] before building the runtime to have that
//! happen before any other thread exists).
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
use std::time::Duration;

use sd_notify::NotifyState;

mod activation;

pub use self::activation::{passed_sockets, take_tcp_listener, tcp_listener, Socket};

use crate::coordinator::Config;
use crate::core::readiness::ReadinessStatus;
use crate::core::state::{Phase, Shared};
use crate::report::TriggerCause;
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
    let systemd = std::env::var_os("NOTIFY_SOCKET").is_some();
    // A predecessor that started this process in place waits for READY=1
    // on its own socket (see `crate::restart`).
    let predecessor = std::env::var_os(READY_SOCKET_VAR).map(std::path::PathBuf::from);
    let enabled = systemd || predecessor.is_some();
    let watchdog = if systemd {
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
        let lifecycle = lifecycle(shared, config, predecessor.as_deref());
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

async fn lifecycle(shared: &Shared, config: &Config, predecessor: Option<&std::path::Path>) {
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
                if let Some(path) = predecessor {
                    tell_predecessor(path);
                }
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

    // Handed over to a successor (restart in place): it is the unit's main
    // process now; this one's STOPPING=1 would stop the service.
    if let Some(TriggerCause::Restart { .. }) = crate::coordinator::cause_of(shared) {
        tracing::debug!(target: "tower_graceful", "handed over: no more systemd notifications from this process");
        return;
    }

    // Triggered: readiness is down, the pre-drain delay runs.
    let detail = if config.pre_drain.is_adaptive() {
        format!("; draining in at most {:?}", config.pre_drain.max())
    } else {
        format!("; draining in {:?}", config.pre_drain.max())
    };
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&status(shared, "triggered", &detail)),
        extend(config.pre_drain.max()),
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

/// The variable naming the datagram socket on which a predecessor that
/// started this process ([`Restart`](crate::restart::Restart)) waits for
/// `READY=1`.
pub(crate) const READY_SOCKET_VAR: &str = "TOWER_GRACEFUL_READY_SOCKET";

/// Tells the predecessor that this process is ready (`READY=1` and
/// `MAINPID=`, in `sd_notify`'s format). Best effort: a predecessor that is
/// gone no longer waits.
fn tell_predecessor(path: &std::path::Path) {
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|sock| sock.send_to(msg.as_bytes(), path));
    match sent {
        Ok(_) => tracing::info!(
            target: "tower_graceful",
            socket = %path.display(),
            "ready: told the process that started this one"
        ),
        Err(e) => tracing::warn!(
            target: "tower_graceful",
            socket = %path.display(),
            error = %e,
            "ready, but the process that started this one could not be told"
        ),
    }
}

/// Sends `MAINPID=pid` to systemd (when `NOTIFY_SOCKET` is set): the unit
/// follows the successor. Nothing more is sent from this process: its
/// notifications end at a trigger caused by the handover (see
/// `lifecycle`).
#[cfg_attr(not(feature = "restart"), allow(dead_code))]
pub(crate) fn hand_over(pid: u32) -> io::Result<()> {
    sd_notify::notify(&[NotifyState::MainPid(pid)])
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
