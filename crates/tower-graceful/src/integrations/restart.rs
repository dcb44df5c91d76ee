//! Restart in place (feature `restart`, unix): the running process starts
//! its successor on the same listening sockets, waits until the successor
//! is ready, and only then drains itself. Nothing is refused in between:
//! the sockets never close, and both processes accept on them until the
//! old one starts draining.
//!
//! # What happens
//!
//! On `SIGHUP` (or [`RestartHandle::restart`], for programs that decide
//! themselves):
//!
//! 1. The successor is started: by default the same program (the path of
//!    this executable) with the same arguments and environment. Its
//!    listening sockets are passed the way systemd passes them
//!    (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID` set to the successor's
//!    own pid), so the successor takes them through its socket-activation
//!    code path: [`systemd::tcp_listener`](crate::systemd::tcp_listener).
//!    The block of descriptors starts at fd 3 when that is free here and
//!    otherwise where it is free, said in `LISTEN_FDS_FIRST_FD` (the
//!    `listenfd` / `systemfd` extension, which `tcp_listener` reads; a
//!    program that reads the sockets with libsystemd's `sd_listen_fds`
//!    needs them at fd 3, which this process then cannot always offer).
//! 2. The successor reports ready: its [`systemd::notify`](crate::systemd::notify)
//!    future sends `READY=1` once every readiness gate is open, to
//!    systemd's `NOTIFY_SOCKET` if there is one *and* to a private socket
//!    of this process (`TOWER_GRACEFUL_READY_SOCKET`). So the successor
//!    must run that future, as it does under systemd.
//! 3. Ready within the [timeout](Restart::ready_timeout): under systemd,
//!    this process sends `MAINPID=<successor>` so that the unit follows the
//!    new process (and stops sending its own notifications), then triggers
//!    its own shutdown ([`TriggerCause::Restart`]): readiness down, the
//!    pre-drain delay, the drain, the hooks, the report. The successor is
//!    already accepting on the same sockets.
//! 4. Not ready (it could not be started, it exited, or the timeout
//!    passed): the successor is ended (`SIGTERM`, then `SIGKILL` after
//!    [`Restart::kill_after`]) and reaped, an `ERROR` line says why, the
//!    error is returned to the caller of [`RestartHandle::restart`] and
//!    kept in [`RestartHandle::failures`], and this process goes on
//!    serving as if nothing happened.
//!
//! One restart runs at a time: a `SIGHUP` that arrives during one is
//! logged and ignored, a call gets [`RestartError::InProgress`]. Once the
//! shutdown is triggered (by anything), no restart starts.
//!
//! # With and without systemd
//!
//! Without systemd the successor is simply a child process that outlives
//! this one (it is re-parented when this one exits). Under systemd, use
//! `Type=notify` and `ExecReload=kill -HUP $MAINPID` (see
//! `examples/systemd/`): `MAINPID=` moves the unit to the successor; the
//! default `NotifyAccess=main` is enough, since the successor's messages
//! count once it is the main process. `KillMode=mixed` (or `process`)
//! keeps systemd from killing the successor with the old main process.
//!
//! # Example
//!
//! ```no_run
//! use tower_graceful::{restart::Restart, systemd, Coordinator};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graceful = Coordinator::builder().build()?;
//! // Passed by the predecessor (or systemd), else bound here.
//! let listener = systemd::tcp_listener(systemd::Socket::Index(0), "127.0.0.1:3000").await?;
//! // SIGHUP starts a successor on this same socket.
//! let restarts = Restart::new(&graceful).socket("http", &listener)?.spawn();
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(graceful.layer());
//! tokio::spawn(tower_graceful::serve(listener, app, &graceful));
//! // READY=1 to systemd and to a predecessor waiting for this process.
//! tokio::spawn(systemd::notify(&graceful));
//! let report = graceful.wait().await;
//! println!("{report}; failed restarts: {}", restarts.failures().len());
//! # Ok(()) }
//! ```
//!
//! # Descriptors
//!
//! The sockets are duplicated when given to [`Restart::socket`] (so the
//! server may own the original), and for each restart duplicated again
//! into a block without close-on-exec for the time of the `spawn` alone.
//! A process that another thread of this program spawns at that very
//! moment inherits them too (as it would with any fork-based spawn of
//! inheritable descriptors); nothing else does.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::core::sync::lock;
use crate::integrations::systemd::{hand_over, READY_SOCKET_VAR};
use crate::report::TriggerCause;
use crate::Coordinator;

/// The first descriptor of a socket-activation block (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// Sets up restart in place for one coordinator; [`spawn`](Self::spawn)
/// starts it. See the [module docs](self).
#[derive(Debug)]
pub struct Restart {
    coordinator: Coordinator,
    sockets: Vec<(String, OwnedFd)>,
    ready_timeout: Duration,
    kill_after: Duration,
    program: Option<PathBuf>,
    args: Option<Vec<OsString>>,
    on_sighup: bool,
}

impl Restart {
    /// Restart in place for `coordinator`'s process, with the defaults: on
    /// `SIGHUP`, this program with this process's arguments, ready within
    /// 30 s.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            coordinator: coordinator.clone(),
            sockets: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            kill_after: Duration::from_secs(5),
            program: None,
            args: None,
            on_sighup: true,
        }
    }

    /// A listening socket to pass on, under `name` (`LISTEN_FDNAMES`, for
    /// [`Socket::Name`](crate::systemd::Socket::Name)); the successor sees
    /// them in the order given ([`Socket::Index`](crate::systemd::Socket::Index)).
    /// The socket is duplicated now: the server may own the original.
    ///
    /// # Errors
    ///
    /// The duplication failed (out of descriptors), or `name` is empty or
    /// holds a `:` (the separator of `LISTEN_FDNAMES`).
    pub fn socket(mut self, name: &str, socket: &impl AsFd) -> io::Result<Self> {
        if name.is_empty() || name.contains(':') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket name {name:?}: names are non-empty and hold no ':' (LISTEN_FDNAMES)"
                ),
            ));
        }
        let fd = socket.as_fd().try_clone_to_owned()?;
        self.sockets.push((name.to_owned(), fd));
        Ok(self)
    }

    /// How long the successor has to report ready (default 30 s); then it
    /// is ended and this process goes on serving.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a successor that did not become ready has between `SIGTERM`
    /// and `SIGKILL` (default 5 s).
    pub fn kill_after(mut self, grace: Duration) -> Self {
        self.kill_after = grace;
        self
    }

    /// The program to start (default: this executable, as
    /// `/proc/self/exe` names it, so a binary replaced on disk under the
    /// same path starts as the new version).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Its arguments (default: this process's, without the program name).
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Whether `SIGHUP` starts a restart (default `true`); without it, only
    /// [`RestartHandle::restart`] does.
    pub fn on_sighup(mut self, yes: bool) -> Self {
        self.on_sighup = yes;
        self
    }

    /// Starts listening for `SIGHUP` and calls, on the current tokio
    /// runtime, until the shutdown is triggered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> RestartHandle {
        let (calls, rx) = mpsc::channel(4);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let handle = RestartHandle {
            calls,
            failures: failures.clone(),
        };
        // Listening for SIGHUP from here on (not from the task's first
        // poll): a SIGHUP right after `spawn` returns is a restart, not the
        // signal's default action (which ends the process).
        let hup = if self.on_sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(target: "tower_graceful", error = %e, "cannot listen for SIGHUP: restarts only by call");
                    None
                }
            }
        } else {
            None
        };
        tokio::spawn(self.run(rx, failures, hup));
        handle
    }

    async fn run(
        self,
        mut calls: mpsc::Receiver<Call>,
        failures: Arc<Mutex<Vec<RestartError>>>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) {
        let triggered = self.coordinator.triggered();
        tokio::pin!(triggered);
        let mut calls_open = true;
        loop {
            let reply = tokio::select! {
                biased;
                _ = &mut triggered => return,
                call = calls.recv(), if calls_open => match call {
                    Some(Call(reply)) => Some(reply),
                    None => {
                        // Every handle is gone; SIGHUP still counts.
                        calls_open = false;
                        if hup.is_none() {
                            return;
                        }
                        continue;
                    }
                },
                Some(()) = recv_hup(&mut hup) => {
                    tracing::info!(target: "tower_graceful", "SIGHUP: restarting in place");
                    None
                }
            };
            if self.coordinator.phase() != crate::Phase::Serving {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(RestartError::ShuttingDown));
                }
                return;
            }
            // One restart at a time: calls that come meanwhile are refused,
            // signals are logged (see `busy`).
            let attempt = self.restart_once();
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    biased;
                    r = &mut attempt => break r,
                    Some(Call(other)) = calls.recv(), if calls_open => {
                        let _ = other.send(Err(RestartError::InProgress));
                    }
                    Some(()) = recv_hup(&mut hup) => {
                        tracing::warn!(target: "tower_graceful", "SIGHUP during a restart: ignored");
                    }
                }
            };
            match result {
                Ok(successor) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(successor));
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        target: "tower_graceful",
                        error = %e,
                        "restart in place failed: this process goes on serving"
                    );
                    lock(&failures).push(e.clone());
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Starts one successor and waits for it; on success, hands over and
    /// triggers this process's shutdown.
    async fn restart_once(&self) -> Result<Successor, RestartError> {
        let dir = ReadyDir::new()?;
        let ready = tokio::net::UnixDatagram::bind(dir.socket()).map_err(RestartError::io)?;
        let mut child = self.start(dir.socket())?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(target: "tower_graceful", pid, "successor started; waiting for it to be ready");
        let mut buf = [0u8; 512];
        let outcome = tokio::select! {
            r = wait_ready(&ready, &mut buf, pid) => r,
            status = child.wait() => Err(match status {
                Ok(status) => RestartError::Exited(status),
                Err(e) => RestartError::io(e),
            }),
            _ = tokio::time::sleep(self.ready_timeout) => Err(RestartError::NotReady(self.ready_timeout)),
            _ = self.coordinator.triggered() => Err(RestartError::ShuttingDown),
        };
        match outcome {
            Ok(()) => {
                // The trigger decides: the first cause recorded is the
                // shutdown's cause. A SIGTERM that came first wins (and the
                // successor is ended); otherwise this is a handover, which
                // `systemd::notify` sees by the cause (it sends nothing more).
                let cause = TriggerCause::Restart { successor: pid };
                self.coordinator.trigger_with(cause.clone());
                if self.coordinator.cause().as_ref() != Some(&cause) {
                    end(&mut child, self.kill_after).await;
                    return Err(RestartError::ShuttingDown);
                }
                if let Err(e) = hand_over(pid) {
                    tracing::warn!(target: "tower_graceful", error = %e, pid, "MAINPID= to systemd failed");
                }
                tracing::info!(target: "tower_graceful", pid, "successor ready: draining this process");
                // The successor outlives this process: never killed or
                // waited for here.
                drop(child);
                Ok(Successor { pid })
            }
            Err(e) => {
                end(&mut child, self.kill_after).await;
                Err(e)
            }
        }
    }

    fn start(&self, ready_socket: &Path) -> Result<tokio::process::Child, RestartError> {
        let program = match &self.program {
            Some(p) => p.clone(),
            None => this_program().map_err(RestartError::from)?,
        };
        let args: Vec<OsString> = match &self.args {
            Some(a) => a.clone(),
            None => std::env::args_os().skip(1).collect(),
        };
        // `sh` would report a missing program only as exit status 127:
        // checked here, so the error names it. (A bare name is looked up in
        // `PATH` by `sh`.)
        if program.components().count() > 1 {
            use std::os::unix::fs::PermissionsExt;
            match std::fs::metadata(&program) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => {
                    return Err(RestartError::from(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("cannot start {}: not an executable file", program.display()),
                    )))
                }
                Err(e) => {
                    return Err(RestartError::from(io::Error::new(
                        e.kind(),
                        format!("cannot start {}: {e}", program.display()),
                    )))
                }
            }
        }
        let block = Block::new(&self.sockets).map_err(RestartError::from)?;
        // `sh` sets LISTEN_PID to its own pid, which `exec` keeps for the
        // program: the successor's pid, unknown before it exists.
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(&program)
            .args(&args)
            .env(READY_SOCKET_VAR, ready_socket)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD")
            .kill_on_drop(false);
        if self.sockets.is_empty() {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
        } else {
            let names: Vec<&str> = self.sockets.iter().map(|(n, _)| n.as_str()).collect();
            cmd.env("LISTEN_FDS", self.sockets.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
            if block.first != FIRST_FD {
                cmd.env("LISTEN_FDS_FIRST_FD", block.first.to_string());
            }
        }
        let child = cmd.spawn().map_err(|e| {
            RestartError::from(io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", program.display()),
            ))
        });
        // The block is closed here (it is inheritable only for the spawn).
        drop(block);
        child
    }
}

/// This executable, as the kernel names it (`/proc/self/exe` on Linux, with
/// " (deleted)" dropped when the file was replaced since).
fn this_program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// The sockets, duplicated into consecutive descriptors without
/// close-on-exec, for one `spawn`; closed on drop.
struct Block {
    first: i32,
    /// Held until the spawn is done; closed on drop.
    _fds: Vec<OwnedFd>,
}

impl Block {
    fn new(sockets: &[(String, OwnedFd)]) -> io::Result<Self> {
        if sockets.is_empty() {
            return Ok(Self {
                first: FIRST_FD,
                _fds: Vec::new(),
            });
        }
        // Find `n` consecutive free descriptors: take the lowest free one
        // from `first` on; if one of the next is taken, start again above
        // it. Bounded: each retry starts higher, and the process has at
        // most its descriptor limit open.
        let mut first = FIRST_FD;
        'search: for _ in 0..1024 {
            let mut fds: Vec<OwnedFd> = Vec::with_capacity(sockets.len());
            for (i, (_, socket)) in sockets.iter().enumerate() {
                let want = first + i as i32;
                let fd = rustix::io::fcntl_dupfd_cloexec(socket, want)?;
                let got = fd.as_raw_fd();
                if got != want {
                    // `want` is taken; `got` is free (once `fd` is
                    // dropped): start the block there.
                    first = got;
                    continue 'search;
                }
                fds.push(fd);
            }
            for fd in &fds {
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            return Ok(Self { first, _fds: fds });
        }
        Err(io::Error::other(
            "no block of consecutive free descriptors for the sockets",
        ))
    }
}

/// A private directory (mode 0700) holding the ready socket; removed on
/// drop.
struct ReadyDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl ReadyDir {
    fn new() -> Result<Self, RestartError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for attempt in 0..16u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!(
                "tower-graceful-restart-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join("ready");
                    return Ok(Self { dir, socket });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(RestartError::io(e)),
            }
        }
        Err(RestartError::io(io::Error::other(
            "cannot create a private directory for the ready socket",
        )))
    }

    fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for ReadyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `READY=1` on the ready socket. Anything else (a `STATUS=`
/// line, say) is skipped; a `MAINPID=` that names another process than the
/// one started is logged and skipped.
async fn wait_ready(
    sock: &tokio::net::UnixDatagram,
    buf: &mut [u8],
    pid: u32,
) -> Result<(), RestartError> {
    loop {
        let n = sock.recv(buf).await.map_err(RestartError::io)?;
        let msg = String::from_utf8_lossy(&buf[..n]);
        let mut ready = false;
        let mut mainpid = None;
        for line in msg.lines() {
            if line == "READY=1" {
                ready = true;
            } else if let Some(p) = line.strip_prefix("MAINPID=") {
                mainpid = p.trim().parse::<u32>().ok();
            }
        }
        match mainpid {
            Some(p) if p != pid && pid != 0 => {
                tracing::warn!(target: "tower_graceful", from = p, successor = pid, "READY=1 from another process: ignored");
            }
            _ if ready => return Ok(()),
            _ => {}
        }
    }
}

/// Ends a successor that will not take over: `SIGTERM`, then `SIGKILL`
/// after `grace`; reaped either way.
async fn end(child: &mut tokio::process::Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn recv_hup(hup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

struct Call(oneshot::Sender<Result<Successor, RestartError>>);

/// Starts restarts by call, and tells what failed. Cloning is cheap; the
/// restarts go on (on `SIGHUP`) when every handle is dropped.
#[derive(Clone, Debug)]
pub struct RestartHandle {
    calls: mpsc::Sender<Call>,
    failures: Arc<Mutex<Vec<RestartError>>>,
}

impl RestartHandle {
    /// Restarts in place now: returns once the successor is ready and this
    /// process's shutdown has been triggered, or with what went wrong (and
    /// this process serving on).
    ///
    /// # Errors
    ///
    /// See [`RestartError`].
    pub async fn restart(&self) -> Result<Successor, RestartError> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(Call(tx))
            .await
            .map_err(|_| RestartError::ShuttingDown)?;
        rx.await.unwrap_or(Err(RestartError::ShuttingDown))
    }

    /// The restarts that failed so far (each also logged at `ERROR`).
    pub fn failures(&self) -> Vec<RestartError> {
        lock(&self.failures).clone()
    }
}

/// The process that took over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
}

/// Why a restart did not happen. This process goes on serving after each.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RestartError {
    /// The successor could not be started (the program is missing, no
    /// descriptors left, …).
    Spawn(Arc<io::Error>),
    /// The successor exited before it was ready.
    Exited(ExitStatus),
    /// The successor was not ready within the timeout; it was ended.
    NotReady(Duration),
    /// Another restart is under way.
    InProgress,
    /// The shutdown was triggered (no restart starts then).
    ShuttingDown,
    /// The ready socket could not be set up.
    Io(Arc<io::Error>),
}

impl RestartError {
    fn io(e: io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

impl From<io::Error> for RestartError {
    fn from(e: io::Error) -> Self {
        Self::Spawn(Arc::new(e))
    }
}

impl fmt::Display for RestartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "the successor could not be started: {e}"),
            Self::Exited(status) => {
                write!(f, "the successor exited before it was ready ({status})")
            }
            Self::NotReady(t) => {
                write!(f, "the successor was not ready within {t:?}; it was ended")
            }
            Self::InProgress => f.write_str("a restart is already under way"),
            Self::ShuttingDown => f.write_str("the shutdown has begun; no restart starts"),
            Self::Io(e) => write!(f, "the ready socket could not be set up: {e}"),
        }
    }
}

impl std::error::Error for RestartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) | Self::Io(e) => Some(&**e),
            _ => None,
        }
    }
}
