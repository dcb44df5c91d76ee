//! Where connections come from: the [`Listener`] trait (the shape of axum
//! 0.8's), its implementations for TCP and Unix sockets, and the one thing a
//! listener must do well at drain start: hand over what the kernel has
//! already queued ([`Listener::accept_queued`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A source of connections for [`Server`](super::Server) and
/// [`serve`](super::serve).
///
/// The shape of axum 0.8's `Listener` (accept gives an IO and the peer's
/// address, `local_addr`), with two provided methods that `serve` needs for
/// what axum does not do: taking the connections already queued when
/// draining starts, and reaching the TCP socket under the IO for its options.
/// A custom listener implements [`accept`](Self::accept) and
/// [`local_addr`](Self::local_addr) and usually keeps the defaults.
///
/// Implemented for [`tokio::net::TcpListener`], [`tokio::net::UnixListener`]
/// (unix) and, with feature `tls`, [`TlsListener`](super::TlsListener)
/// around any of them.
pub trait Listener: Send + 'static {
    /// What a connection is read from and written to.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// An address, the peer's or ours. Every request carries both in a
    /// [`ConnectionInfo`](super::ConnectionInfo) (and, with feature `axum`,
    /// the peer's as axum's `ConnectInfo<Addr>`).
    type Addr: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// Waits for the next connection.
    ///
    /// Unlike axum's, this returns errors: `serve` skips those that concern
    /// one connection (reset or aborted before it was accepted) and logs the
    /// others (e.g. too many open files), retrying after a short pause, so
    /// the policy is the same for every listener.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe (`serve` drops it when draining starts, and in
    /// [`accept_queued`](Self::accept_queued)'s default): a connection is
    /// taken from the kernel only by the poll that returns it.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send;

    /// This listener's own address.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// Takes a connection that is already waiting, without waiting for one:
    /// `None` once none is. Called in a loop at drain start, before the
    /// listener is dropped, so that no connection the kernel accepted is
    /// reset (a client that already sent its request cannot tell that reset
    /// from a lost request).
    ///
    /// The default polls [`accept`](Self::accept) once. That can miss a
    /// connection the kernel queued but the runtime has not yet seen
    /// (readiness not yet delivered); the TCP and Unix implementations ask
    /// the kernel directly (a non-blocking `accept`), and a listener over a
    /// socket should too.
    fn accept_queued(&mut self) -> Option<io::Result<(Self::Io, Self::Addr)>> {
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        match pin!(self.accept()).poll(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// The local address of one accepted connection (for a listener bound to
    /// a wildcard address, the one the peer reached). The default is
    /// [`local_addr`](Self::local_addr).
    fn local_addr_of(&self, io: &Self::Io) -> io::Result<Self::Addr> {
        let _ = io;
        self.local_addr()
    }

    /// The TCP socket under an accepted connection, for the TCP options of
    /// [`Server`](super::Server) (nodelay, keep-alive). The default is
    /// `None`: no TCP options are set.
    fn tcp_stream(io: &Self::Io) -> Option<&TcpStream> {
        let _ = io;
        None
    }
}

/// A waker for one poll whose `Pending` is never awaited.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

impl Listener for TcpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        TcpListener::local_addr(self)
    }

    fn accept_queued(&mut self) -> Option<io::Result<(Self::Io, Self::Addr)>> {
        let (socket, _) = match kernel_accept(self)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let std = std::net::TcpStream::from(socket);
        Some(
            std.set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(std))
                .and_then(|s| Ok((s.peer_addr()?, s)))
                .map(|(peer, s)| (s, peer)),
        )
    }

    fn local_addr_of(&self, io: &Self::Io) -> io::Result<Self::Addr> {
        io.local_addr()
    }

    fn tcp_stream(io: &Self::Io) -> Option<&TcpStream> {
        Some(io)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        tokio::net::UnixListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        tokio::net::UnixListener::local_addr(self)
    }

    fn accept_queued(&mut self) -> Option<io::Result<(Self::Io, Self::Addr)>> {
        let (socket, _) = match kernel_accept(self)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        let std = std::os::unix::net::UnixStream::from(socket);
        Some(
            std.set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(std))
                .and_then(|s| Ok((s.peer_addr()?, s)))
                .map(|(peer, s)| (s, peer)),
        )
    }
}

/// A non-blocking `accept(2)` on the listener's socket (tokio keeps it
/// non-blocking): the kernel's own answer to "is one queued?", which tokio's
/// readiness may not know yet. `None` when nothing is queued.
fn kernel_accept<L>(listener: &L) -> Option<io::Result<(socket2::Socket, socket2::SockAddr)>>
where
    for<'a> socket2::SockRef<'a>: From<&'a L>,
{
    match socket2::SockRef::from(listener).accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        r => Some(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel queued is taken without waiting, and an empty queue
    /// answers `None` at once.
    #[tokio::test]
    async fn accept_queued_takes_what_the_kernel_queued() {
        let mut listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Listener::local_addr(&listener).unwrap();
        assert!(listener.accept_queued().is_none());
        let clients: Vec<_> =
            futures_util::future::join_all((0..3).map(|_| tokio::net::TcpStream::connect(addr)))
                .await;
        let mut taken = 0;
        for _ in 0..3 {
            let (io, peer) = listener.accept_queued().expect("queued").unwrap();
            assert_eq!(io.peer_addr().unwrap(), peer);
            assert_eq!(Listener::local_addr_of(&listener, &io).unwrap(), addr);
            taken += 1;
        }
        assert_eq!(taken, 3);
        assert!(listener.accept_queued().is_none());
        drop(clients);
    }
}
