//! The accept loop: connections in while serving (within the limit), the
//! backlog taken at drain start, then the wait for every connection task.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::conn::{self, Open};
use super::service::ConnService;
use super::settings::Settings;
use super::{BoxError, ConnectionInfo, Listener, Owner};

/// At most this many connections are taken from the backlog at drain start
/// (the kernel's queue is shorter: `somaxconn` is 4096 by default).
const MAX_QUEUED: usize = 65_536;

pub(crate) async fn run<L, S, B>(
    mut listener: L,
    service: S,
    owner: Owner,
    settings: Arc<Settings>,
    max_connections: Option<usize>,
) -> io::Result<()>
where
    L: Listener,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let local = listener.local_addr().ok();
    // The accept loop counts as a connection task until its listener is
    // closed and that is logged: a clean shutdown's report (and its
    // "shutdown complete" line) comes after the "listener closed" line,
    // whichever task runs first. A guard: a `serve` future dropped early
    // does not hold the report.
    let listening = Listening::new(owner.clone());
    let limit = max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut connections = JoinSet::new();
    let mut draining = pin!(owner.soft.cancelled());
    let mut at_limit = false;
    loop {
        if let (Some(limit), None) = (&limit, &permit) {
            // At the limit: wait for a connection to close, not accept and
            // drop (the kernel keeps new ones queued meanwhile).
            permit = match limit.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if !at_limit {
                        at_limit = true;
                        tracing::warn!(target: "tower_graceful", limit = max_connections.unwrap_or_default(), "connection limit reached: accepting again when one closes");
                    }
                    tokio::select! {
                        biased;
                        _ = &mut draining => break,
                        Some(joined) = connections.join_next() => {
                            ended(joined);
                            continue;
                        }
                        p = limit.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
                    }
                }
            };
            at_limit = false;
        }
        tokio::select! {
            biased;
            _ = &mut draining => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => ended(joined),
            accepted = listener.accept() => match accepted {
                Ok((io, peer)) => {
                    spawn(&mut connections, &listener, io, peer, &service, &owner, &settings, permit.take());
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    tracing::error!(target: "tower_graceful", error = %e, "accept failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = &mut draining => break,
                    }
                }
            },
        }
    }
    drop(permit);
    // Draining: take what the kernel has already queued, then close. A
    // connection left in the backlog would be reset by the close, after its
    // client may have sent its request. They are served like any other
    // (accepted after the trigger: GOAWAY at once for HTTP/2), beyond the
    // connection limit (a backlog's worth at most).
    let mut queued = 0;
    for _ in 0..MAX_QUEUED {
        match listener.accept_queued() {
            None => break,
            Some(Ok((io, peer))) => {
                queued += 1;
                spawn(
                    &mut connections,
                    &listener,
                    io,
                    peer,
                    &service,
                    &owner,
                    &settings,
                    None,
                );
            }
            Some(Err(e)) if is_per_connection(&e) => {}
            Some(Err(e)) => {
                tracing::error!(target: "tower_graceful", error = %e, "accept failed while taking the backlog; closing the listener");
                break;
            }
        }
    }
    drop(listener);
    tracing::info!(
        target: "tower_graceful",
        addr = ?local,
        open = connections.len(),
        taken_from_backlog = queued,
        "draining: listener closed; open connections are still served"
    );
    drop(listening);
    let mut done = pin!(owner.done.wait());
    loop {
        tokio::select! {
            joined = connections.join_next() => match joined {
                None => break,
                Some(joined) => ended(joined),
            },
            _ = &mut done => {
                // The report is out: after a forced stop, or after a clean
                // drain once the cleanup time is up (until then the report
                // waits for these tasks to end). The process is closing.
                connections.abort_all();
                while let Some(joined) = connections.join_next().await {
                    ended(joined);
                }
                break;
            }
        }
    }
    Ok(())
}

/// Starts one connection's task.
#[allow(clippy::too_many_arguments)]
fn spawn<L, S, B>(
    connections: &mut JoinSet<()>,
    listener: &L,
    io: L::Io,
    peer: L::Addr,
    service: &S,
    owner: &Owner,
    settings: &Arc<Settings>,
    permit: Option<OwnedSemaphorePermit>,
) where
    L: Listener,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Some(tcp) = L::tcp_stream(&io) {
        set_tcp_options(tcp, settings);
    }
    let local = match listener
        .local_addr_of(&io)
        .or_else(|_| listener.local_addr())
    {
        Ok(local) => local,
        Err(e) => {
            // A socket whose addresses cannot be read is gone already.
            tracing::debug!(target: "tower_graceful", error = %e, ?peer, "connection dropped: no local address");
            return;
        }
    };
    let open = Open::new(owner.clone());
    // A connection accepted after the trigger: its requests (not its
    // accept: a balancer's health check opens a connection too) are the
    // adaptive pre-drain's evidence (see `ConnFuture`).
    let late = owner.triggered();
    let service = ConnService {
        inner: service.clone(),
        info: settings
            .connection_info
            .then(|| ConnectionInfo::new(peer, local)),
        reset: Arc::new(CancellationToken::new()),
        late: late.then(|| owner.clone()),
    };
    connections.spawn(conn::run(open, permit, io, service, settings.clone(), late));
}

fn set_tcp_options(tcp: &tokio::net::TcpStream, settings: &Settings) {
    if settings.nodelay {
        let _ = tcp.set_nodelay(true);
    }
    if let Some(idle) = settings.keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(target: "tower_graceful", error = %e, "TCP keep-alive not set");
        }
    }
}

/// Logs how a connection task ended, if not normally: a panic in it (in
/// hyper or in a service polled on the connection's task) is logged here,
/// not dropped.
fn ended(joined: Result<(), JoinError>) {
    let Err(e) = joined else { return };
    if e.is_panic() {
        let panic = e.into_panic();
        let msg = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        tracing::error!(target: "tower_graceful", panic = msg, "connection task panicked; the connection is closed");
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The accept loop, counted with the connection tasks (see [`run`]).
struct Listening(Owner);

impl Listening {
    fn new(owner: Owner) -> Self {
        owner.connections.task_started();
        Self(owner)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.connections.task_ended();
    }
}
