//! Socket activation: the listening sockets a service manager (or a
//! predecessor, see `crate::restart`) passed to this process
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, `LISTEN_FDS_FIRST_FD`).
//! The module docs of [`systemd`](super) say what is read and logged.

use std::io;
use std::sync::{Mutex, OnceLock};

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
