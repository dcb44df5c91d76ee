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
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;

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

/// What the environment says about sockets passed to this process, read
/// once and never changed by the reading (see [`passed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Inspection {
    /// `LISTEN_FDS` unset: not started by socket activation (run by hand).
    NotActivated,
    /// Sockets passed to this process: fds `first`, `first + 1`, …
    /// (`count` of them; `first` is 3 unless `LISTEN_FDS_FIRST_FD` says
    /// otherwise).
    Passed {
        first: usize,
        count: usize,
        /// One per socket, from `LISTEN_FDNAMES`; `Err` says why there are
        /// none (unset, or not one per socket), naming the variable.
        names: Result<Vec<String>, String>,
    },
    /// The variables are set but do not fit this process; the message
    /// names the variable and its value.
    Unusable(String),
}

/// The socket-activation variables, as read.
#[derive(Clone, Copy, Debug, Default)]
struct ActivationEnv<'a> {
    listen_pid: Option<&'a str>,
    listen_fds: Option<&'a str>,
    listen_fdnames: Option<&'a str>,
    /// `LISTEN_FDS_FIRST_FD`: where the block of passed descriptors starts
    /// when it is not fd 3 (the `systemfd` / `listenfd` extension, which
    /// [`Restart`](crate::restart::Restart) uses when fd 3 is taken).
    listen_fds_first_fd: Option<&'a str>,
}

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: usize = 3;

/// Decides from the variables alone (and whether a descriptor is open), so
/// that every case can be tested without a service manager.
fn inspect(env: ActivationEnv<'_>, pid: u32, fd_is_open: &dyn Fn(usize) -> bool) -> Inspection {
    let Some(fds) = env.listen_fds else {
        return Inspection::NotActivated;
    };
    // Unset or empty LISTEN_PID: accepted, as `listenfd` does (some
    // supervisors cannot know the PID before exec).
    if let Some(listen_pid) = env.listen_pid.filter(|p| !p.is_empty()) {
        match listen_pid.trim().parse::<u32>() {
            Ok(p) if p == pid => {}
            Ok(_) => {
                return Inspection::Unusable(format!(
                    "LISTEN_PID={listen_pid} is not this process (pid {pid}): the \
                     LISTEN_FDS={fds} sockets were passed to another process (a wrapper that \
                     did not exec this one, or variables inherited from a parent)"
                ))
            }
            Err(_) => {
                return Inspection::Unusable(format!(
                    "LISTEN_PID={listen_pid:?} is not a process id"
                ))
            }
        }
    }
    let count = match fds.trim().parse::<usize>() {
        Ok(n) => n,
        Err(_) => {
            return Inspection::Unusable(format!("LISTEN_FDS={fds:?} is not a number of sockets"))
        }
    };
    let first = match env.listen_fds_first_fd.filter(|v| !v.is_empty()) {
        None => FIRST_FD,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= FIRST_FD => n,
            _ => {
                return Inspection::Unusable(format!(
                    "LISTEN_FDS_FIRST_FD={v:?} is not a descriptor number of 3 or more"
                ))
            }
        },
    };
    if first
        .checked_add(count)
        .is_none_or(|end| end > i32::MAX as usize)
    {
        return Inspection::Unusable(format!("LISTEN_FDS={fds} is too large"));
    }
    if let Some(fd) = (first..first + count).find(|&fd| !fd_is_open(fd)) {
        return Inspection::Unusable(format!(
            "LISTEN_FDS={count} does not fit this process: fd {fd} is not open"
        ));
    }
    let names = match env.listen_fdnames {
        None => Err("LISTEN_FDNAMES is unset (no FileDescriptorName= passed)".to_owned()),
        Some(v) => {
            let names: Vec<String> = v.split(':').map(str::to_owned).collect();
            if names.len() == count {
                Ok(names)
            } else {
                Err(format!(
                    "LISTEN_FDNAMES={v:?} names {} sockets, LISTEN_FDS={count}",
                    names.len()
                ))
            }
        }
    };
    Inspection::Passed {
        first,
        count,
        names,
    }
}

/// What [`take`] does for one request of a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Choice {
    /// Take the passed socket at this index.
    Take(usize),
    /// No such socket: bind the fallback (the reason is logged).
    Fallback(String),
    /// The user asked for a socket by name that cannot be had: an error
    /// rather than a silent bind on another port.
    Error(String),
}

fn choose(inspection: &Inspection, socket: Socket<'_>) -> Choice {
    match (inspection, socket) {
        (Inspection::NotActivated, _) => {
            Choice::Fallback("LISTEN_FDS is unset: not started by socket activation".to_owned())
        }
        (Inspection::Unusable(why), Socket::Index(_)) => Choice::Fallback(why.clone()),
        (Inspection::Unusable(why), Socket::Name(name)) => Choice::Error(format!(
            "socket activation: {why}; the socket named {name:?} was asked for, so no \
             fallback address is bound (pass the socket to this process, or unset \
             LISTEN_FDS and LISTEN_PID to run it without socket activation)"
        )),
        (Inspection::Passed { count, .. }, Socket::Index(i)) if i >= *count => {
            Choice::Fallback(format!("LISTEN_FDS={count} has no socket at index {i}"))
        }
        (Inspection::Passed { .. }, Socket::Index(i)) => Choice::Take(i),
        (
            Inspection::Passed {
                names: Err(why), ..
            },
            Socket::Name(name),
        ) => Choice::Error(format!(
            "socket activation: {why}, so no passed socket can be found by the name \
                 {name:?}: set FileDescriptorName={name} in the .socket unit, or ask for \
                 Socket::Index"
        )),
        (
            Inspection::Passed {
                names: Ok(names),
                count,
                ..
            },
            Socket::Name(name),
        ) => match names.iter().position(|n| n == name) {
            Some(i) => Choice::Take(i),
            None => Choice::Error(format!(
                "socket activation: no socket named {name:?} among the {count} passed \
                     (LISTEN_FDNAMES={:?}): set FileDescriptorName={name} in the .socket \
                     unit, or ask for one of those names",
                names.join(":")
            )),
        },
    }
}

/// The sockets passed to this process, read from the environment once.
struct Passed {
    inspection: Inspection,
    /// The passed descriptors, when there are some for this process.
    fds: listenfd::ListenFd,
}

/// Reads the environment once (the first call of [`passed_sockets`],
/// [`take_tcp_listener`] or [`tcp_listener`]), reads it only, and reports
/// what does not fit by the variable's name. Only when sockets were passed
/// to this process are they handed to `listenfd`, which owns them from then
/// on (and removes `LISTEN_PID` and `LISTEN_FDS` from the environment, so
/// that child processes do not take them too).
fn passed() -> std::sync::MutexGuard<'static, Passed> {
    static PASSED: OnceLock<Mutex<Passed>> = OnceLock::new();
    let m = PASSED.get_or_init(|| {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let first = std::env::var("LISTEN_FDS_FIRST_FD").ok();
        let env = ActivationEnv {
            listen_pid: pid.as_deref(),
            listen_fds: fds.as_deref(),
            listen_fdnames: names.as_deref(),
            listen_fds_first_fd: first.as_deref(),
        };
        let inspection = inspect(env, std::process::id(), &fd_is_open);
        let fds = match &inspection {
            Inspection::NotActivated => listenfd::ListenFd::empty(),
            Inspection::Unusable(why) => {
                tracing::warn!(target: "tower_graceful", "socket activation ignored: {why}");
                listenfd::ListenFd::empty()
            }
            Inspection::Passed { count, names, .. } => {
                if let (Err(why), true) = (names, env.listen_fdnames.is_some()) {
                    tracing::warn!(target: "tower_graceful", "socket names ignored: {why}");
                }
                tracing::debug!(target: "tower_graceful", count, "sockets passed by the service manager");
                listenfd::ListenFd::from_env()
            }
        };
        Mutex::new(Passed { inspection, fds })
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `fd` is open in this process, where that can be told without
/// touching it (`/proc/self/fd`, Linux); elsewhere assumed.
fn fd_is_open(fd: usize) -> bool {
    let dir = std::path::Path::new("/proc/self/fd");
    !dir.is_dir() || dir.join(fd.to_string()).exists()
}

/// How many sockets the service manager passed to this process
/// (`LISTEN_FDS`, when `LISTEN_PID` is this process or unset), and their
/// names when `LISTEN_FDNAMES` gave one for each. Taking one does not change
/// this. Calling it first, in a plain `fn main` before the runtime is built,
/// reads the environment (and lets `listenfd` remove `LISTEN_PID` and
/// `LISTEN_FDS`) before any other thread exists.
pub fn passed_sockets() -> Vec<Option<String>> {
    let p = passed();
    match &p.inspection {
        Inspection::Passed { count, names, .. } => (0..*count)
            .map(|i| names.as_ref().ok().and_then(|n| n.get(i).cloned()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Takes a passed TCP listening socket, as a blocking `std` listener
/// (`Ok(None)` if no such socket was passed, or it was taken before).
///
/// Each socket can be taken once per process. The first call of this,
/// [`tcp_listener`] or [`passed_sockets`] reads `LISTEN_PID`, `LISTEN_FDS`
/// and `LISTEN_FDNAMES` once, without changing them; only when sockets were
/// passed to this process does `listenfd` take them over and remove the
/// first two (so that child processes do not take the sockets too). Make it
/// early in `main` (or call [`passed_sockets`] before building the runtime),
/// before other threads read the environment outside of Rust's `std` (a DNS
/// lookup in libc, for example).
///
/// # Errors
///
/// The socket was passed but is not a TCP socket; or it was asked for by
/// [`Socket::Name`] and cannot be had: the variables are set but do not fit
/// this process (`LISTEN_PID` another process's, `LISTEN_FDS` not a count
/// of open descriptors), `LISTEN_FDNAMES` is unset or does not name one
/// socket each, no passed socket has that name, or it was taken before. The
/// message names the variable and what to change. By [`Socket::Index`], a
/// socket that cannot be had is `Ok(None)` (logged with the reason).
pub fn take_tcp_listener(socket: Socket<'_>) -> io::Result<Option<std::net::TcpListener>> {
    Ok(match take(socket)? {
        Taken::Listener(l) => Some(l),
        Taken::Missing(_) => None,
    })
}

enum Taken {
    Listener(std::net::TcpListener),
    Missing(String),
}

fn take(socket: Socket<'_>) -> io::Result<Taken> {
    let mut p = passed();
    let first = match &p.inspection {
        Inspection::Passed { first, .. } => *first,
        _ => FIRST_FD,
    };
    let index = match choose(&p.inspection, socket) {
        Choice::Take(i) => i,
        Choice::Fallback(why) => return Ok(Taken::Missing(why)),
        Choice::Error(msg) => return Err(io::Error::new(io::ErrorKind::NotFound, msg)),
    };
    match p.fds.take_tcp_listener(index)? {
        Some(l) => Ok(Taken::Listener(l)),
        None => {
            let why = format!(
                "the passed socket {socket:?} (fd {}) was taken before",
                first + index
            );
            match socket {
                Socket::Index(_) => Ok(Taken::Missing(why)),
                Socket::Name(_) => Err(io::Error::new(io::ErrorKind::NotFound, why)),
            }
        }
    }
}

/// The listener to serve on: the passed socket `socket` if the service
/// manager passed one (see [`take_tcp_listener`]), otherwise `fallback`
/// bound now. Each decision is logged at `INFO` with the address and where
/// it came from: the passed socket (by index or name, and its fd), or the
/// fallback bind with the reason (`LISTEN_FDS` unset, or the variable that
/// did not fit, by name).
///
/// Asked for by [`Socket::Name`], a socket that cannot be had while the
/// socket-activation variables are set is an error, not a bind on the
/// fallback address (which would leave the activated socket taking
/// connections nobody accepts); see [`take_tcp_listener`]. With
/// `LISTEN_FDS` unset (run by hand) the fallback is bound.
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
    let why = match take(socket)? {
        Taken::Listener(std) => {
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
        Taken::Missing(why) => why,
    };
    let listener = tokio::net::TcpListener::bind(fallback).await?;
    tracing::info!(
        target: "tower_graceful",
        addr = ?listener.local_addr().ok(),
        ?socket,
        reason = %why,
        "no passed socket: listening on the fallback address"
    );
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: u32 = 4242;

    fn env<'a>(
        pid: Option<&'a str>,
        fds: Option<&'a str>,
        names: Option<&'a str>,
    ) -> ActivationEnv<'a> {
        ActivationEnv {
            listen_pid: pid,
            listen_fds: fds,
            listen_fdnames: names,
            listen_fds_first_fd: None,
        }
    }

    fn all_open(_: usize) -> bool {
        true
    }

    #[test]
    fn sockets_passed_to_this_process_are_taken_by_index_and_by_name() {
        let i = inspect(
            env(Some("4242"), Some("2"), Some("http:grpc")),
            PID,
            &all_open,
        );
        assert_eq!(
            i,
            Inspection::Passed {
                first: 3,
                count: 2,
                names: Ok(vec!["http".into(), "grpc".into()])
            }
        );
        assert_eq!(choose(&i, Socket::Name("grpc")), Choice::Take(1));
        assert_eq!(choose(&i, Socket::Index(0)), Choice::Take(0));
        // An unset LISTEN_PID is accepted, as listenfd does.
        let i = inspect(env(None, Some("1"), None), PID, &all_open);
        assert_eq!(choose(&i, Socket::Index(0)), Choice::Take(0));
    }

    #[test]
    fn a_block_that_starts_after_fd_3_is_taken_from_listen_fds_first_fd() {
        let mut e = env(Some("4242"), Some("2"), Some("http:grpc"));
        e.listen_fds_first_fd = Some("7");
        let open = |fd: usize| fd == 7 || fd == 8;
        let i = inspect(e, PID, &open);
        assert_eq!(
            i,
            Inspection::Passed {
                first: 7,
                count: 2,
                names: Ok(vec!["http".into(), "grpc".into()])
            }
        );
        assert_eq!(choose(&i, Socket::Name("grpc")), Choice::Take(1));
        e.listen_fds_first_fd = Some("2");
        match inspect(e, PID, &open) {
            Inspection::Unusable(why) => assert!(why.contains("LISTEN_FDS_FIRST_FD"), "{why}"),
            other => panic!("{other:?}"),
        }
        e.listen_fds_first_fd = Some("6");
        match inspect(e, PID, &open) {
            Inspection::Unusable(why) => assert!(why.contains("fd 6 is not open"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn without_listen_fds_the_fallback_is_bound_whatever_was_asked() {
        let i = inspect(env(Some("4242"), None, Some("http")), PID, &all_open);
        assert_eq!(i, Inspection::NotActivated);
        for socket in [Socket::Index(0), Socket::Name("http")] {
            match choose(&i, socket) {
                Choice::Fallback(why) => assert!(why.contains("LISTEN_FDS is unset"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_listen_pid_of_another_process_is_named_and_an_error_for_a_named_socket() {
        let i = inspect(env(Some("1"), Some("1"), Some("http")), PID, &all_open);
        let Inspection::Unusable(why) = &i else {
            panic!("{i:?}")
        };
        assert!(
            why.starts_with("LISTEN_PID=1 is not this process (pid 4242)"),
            "{why}"
        );
        match choose(&i, Socket::Name("http")) {
            Choice::Error(msg) => {
                assert!(msg.contains("LISTEN_PID=1"), "{msg}");
                assert!(msg.contains("\"http\""), "{msg}");
                assert!(msg.contains("no fallback address is bound"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        match choose(&i, Socket::Index(0)) {
            Choice::Fallback(why) => assert!(why.contains("LISTEN_PID=1"), "{why}"),
            other => panic!("{other:?}"),
        }
        let i = inspect(env(Some("abc"), Some("1"), None), PID, &all_open);
        assert_eq!(
            i,
            Inspection::Unusable("LISTEN_PID=\"abc\" is not a process id".into())
        );
    }

    #[test]
    fn a_listen_fds_that_does_not_fit_is_named() {
        let cases = [
            ("two", "LISTEN_FDS=\"two\" is not a number of sockets"),
            ("-1", "LISTEN_FDS=\"-1\" is not a number of sockets"),
            ("99999999999", "LISTEN_FDS=99999999999 is too large"),
            (
                "3",
                "LISTEN_FDS=3 does not fit this process: fd 5 is not open",
            ),
        ];
        for (fds, expected) in cases {
            let i = inspect(env(Some("4242"), Some(fds), None), PID, &|fd| fd < 5);
            assert_eq!(i, Inspection::Unusable(expected.into()), "LISTEN_FDS={fds}");
            assert!(
                matches!(choose(&i, Socket::Name("http")), Choice::Error(m) if m.contains(expected))
            );
        }
    }

    #[test]
    fn a_name_that_cannot_be_found_is_an_error_that_says_what_to_change() {
        let i = inspect(env(Some("4242"), Some("2"), Some("http")), PID, &all_open);
        match choose(&i, Socket::Name("http")) {
            Choice::Error(msg) => {
                assert!(
                    msg.contains("LISTEN_FDNAMES=\"http\" names 1 sockets, LISTEN_FDS=2"),
                    "{msg}"
                );
                assert!(msg.contains("FileDescriptorName=http"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let i = inspect(env(Some("4242"), Some("1"), None), PID, &all_open);
        assert!(matches!(
            choose(&i, Socket::Name("http")),
            Choice::Error(m) if m.contains("LISTEN_FDNAMES is unset")
        ));
        let i = inspect(env(Some("4242"), Some("1"), Some("admin")), PID, &all_open);
        match choose(&i, Socket::Name("http")) {
            Choice::Error(msg) => assert!(
                msg.contains(
                    "no socket named \"http\" among the 1 passed (LISTEN_FDNAMES=\"admin\")"
                ),
                "{msg}"
            ),
            other => panic!("{other:?}"),
        }
        // By index, a socket that is not there is the fallback, with the reason.
        assert_eq!(
            choose(&i, Socket::Index(1)),
            Choice::Fallback("LISTEN_FDS=1 has no socket at index 1".into())
        );
    }
}
