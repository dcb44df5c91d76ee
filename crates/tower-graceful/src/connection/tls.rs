//! TLS through rustls (feature `tls`): a [`Listener`] around any other one.
//!
//! The handshake runs in the connection's own task, on its first read, not
//! in the accept loop: a client that connects and never says hello holds
//! neither the loop nor any other connection, and is bounded like one that
//! never sends its request head (the
//! [header read timeout](super::Server::header_read_timeout), or the end of
//! the drain). HTTP/2 or HTTP/1.1 is what the client chose by ALPN; `serve`
//! reads it from the first bytes, as on plain TCP.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

use super::Listener;

/// A [`Listener`] that speaks TLS on the connections of another one.
///
/// # Example
///
/// ```no_run
/// # async fn run(config: tokio_rustls::rustls::ServerConfig, app: axum::Router, graceful: tower_graceful::Coordinator) -> std::io::Result<()> {
/// use tower_graceful::connection::TlsListener;
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// // ALPN offers h2 and http/1.1 unless `config` names its own protocols.
/// let listener = TlsListener::new(tcp, config);
/// tower_graceful::serve(listener, app, &graceful).await
/// # }
/// ```
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
}

impl<L: std::fmt::Debug> std::fmt::Debug for TlsListener<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The ALPN protocols [`TlsListener::new`] offers when the configuration
/// names none, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl<L: Listener> TlsListener<L> {
    /// TLS with `config` on `inner`'s connections. If `config` offers no ALPN
    /// protocol, `h2` and `http/1.1` are offered ([`ALPN`]), so clients
    /// choose HTTP/2 or HTTP/1.1; set `alpn_protocols` yourself to offer
    /// only one.
    pub fn new(inner: L, mut config: ServerConfig) -> Self {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        }
        Self::from_acceptor(inner, TlsAcceptor::from(Arc::new(config)))
    }

    /// TLS with an acceptor as it is (its ALPN protocols included).
    pub fn from_acceptor(inner: L, acceptor: TlsAcceptor) -> Self {
        Self { inner, acceptor }
    }

    /// The listener under TLS.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Io = TlsIo<L::Io>;
    type Addr = L::Addr;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Self::Addr)>> + Send {
        let accept = self.inner.accept();
        let acceptor = &self.acceptor;
        async move {
            let (io, addr) = accept.await?;
            Ok((TlsIo::new(acceptor, io), addr))
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }

    fn accept_queued(&mut self) -> Option<io::Result<(Self::Io, Self::Addr)>> {
        let queued = self.inner.accept_queued()?;
        Some(queued.map(|(io, addr)| (TlsIo::new(&self.acceptor, io), addr)))
    }

    fn local_addr_of(&self, io: &Self::Io) -> io::Result<Self::Addr> {
        match io.transport() {
            Some(t) => self.inner.local_addr_of(t),
            None => self.inner.local_addr(),
        }
    }

    fn tcp_stream(io: &Self::Io) -> Option<&TcpStream> {
        L::tcp_stream(io.transport()?)
    }
}

/// A TLS connection of [`TlsListener`]: the handshake, on the first read or
/// write, then the TLS stream.
pub struct TlsIo<I> {
    state: State<I>,
}

enum State<I> {
    Handshake(Accept<I>),
    Ready(TlsStream<I>),
    Failed,
}

impl<I> std::fmt::Debug for TlsIo<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Ready(_) => "ready",
            State::Failed => "failed",
        };
        f.debug_struct("TlsIo").field("state", &state).finish()
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> TlsIo<I> {
    fn new(acceptor: &TlsAcceptor, io: I) -> Self {
        Self {
            state: State::Handshake(acceptor.accept(io)),
        }
    }

    /// The connection under TLS (`None` after a failed handshake).
    pub fn transport(&self) -> Option<&I> {
        match &self.state {
            State::Handshake(a) => a.get_ref(),
            State::Ready(s) => Some(s.get_ref().0),
            State::Failed => None,
        }
    }

    /// The protocol the client chose by ALPN, once the handshake is done.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.state {
            State::Ready(s) => s.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    /// Drives the handshake; `Ready(Ok)` once the stream is ready.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<I>>> {
        if let State::Handshake(accept) = &mut self.state {
            match Pin::new(accept).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => self.state = State::Ready(stream),
                Poll::Ready(Err(e)) => {
                    self.state = State::Failed;
                    tracing::debug!(target: "tower_graceful", error = %e, "TLS handshake failed");
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.state {
            State::Ready(s) => Poll::Ready(Ok(s)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Ready(s) => s.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// After the handshake: `close_notify`, then the transport's shutdown.
    /// Before it (or after a failed one): the transport's shutdown alone.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(s) => Pin::new(s).poll_shutdown(cx),
            State::Handshake(a) => match a.get_mut() {
                Some(io) => Pin::new(io).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            },
            State::Failed => Poll::Ready(Ok(())),
        }
    }
}
