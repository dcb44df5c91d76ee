//! One connection of `serve`, from its first byte to its socket's close.
//!
//! ```text
//!            ┌────────────── drain over, nothing read: closed idle ───────────────┐
//!            │                                                                     ▼
//! accepted → sniff ─ HTTP/2 preface ─→ serve HTTP/2 ─ GOAWAY time ─→ told to close   │
//!            │  │                         │  (lame-duck window; late ones:   │        │
//!            │  └ anything else ─→ serve HTTP/1.x   at drain start)        │        │
//!            │                         │  │                                 ▼        │
//!            │                         │  └──── drain over ──────────→ closing ──→ lingering → closed
//!            │                         └─ the peer or hyper ends it ──────────────────┘
//!            └ header read timeout, EOF, TLS failure ─→ lingering / closed
//! ```
//!
//! * **sniff**: the first bytes tell HTTP/2 with prior knowledge (its
//!   24-byte preface) from HTTP/1.x, as hyper-util's `auto` server does (for
//!   TLS, after the handshake, which runs here too). Bounded by the header
//!   read timeout; a connection that has sent nothing when the drain is over
//!   is idle and closed (one accepted less than the reuse grace before, when
//!   that grace is up: its request may be on its way).
//! * **serve**: hyper's connection, with the builder's settings.
//! * **GOAWAY time** (HTTP/2, [`goaway_time`]): a calm moment of the
//!   connection (no stream open, and none ended just before the last one),
//!   within the lame-duck window (late ones: from drain start), else one
//!   more window into the drain.
//! * **told to close**: HTTP/2 gets its graceful GOAWAY (requests already on
//!   the wire are still served); HTTP/1.x is told by the draining layer
//!   (`Connection: close` on its responses), and by hyper's
//!   `graceful_shutdown` once the drain is over (an idle one closes then).
//! * **closing**: the drain is over (nothing tracked in flight). The
//!   connection's untracked response bodies are ended (`ConnBody`), and hyper
//!   finishes writing what it has queued. Bounded: a connection on which no
//!   byte has moved for the [stall timeout](super::Server::stall_timeout) is
//!   cut (a client that stopped reading, or sends half a request head and
//!   then nothing), and every connection once the coordinator's report is
//!   out.
//! * **lingering**: our FIN, then the peer's bytes read and dropped until
//!   it closes, for at most [`LINGER`] (see [`linger_close`]).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tower_service::Service;

use super::goaway::{goaway_time, AckWatch, OpenStreams};
use super::on_wake::OnWake;
use super::service::{ConnService, Held};
use super::settings::Settings;
use super::{BoxError, Owner};
use crate::core::guard::DrainHold;
use crate::core::state::Shared;

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long [`linger_close`] waits for the client to close its side.
pub(crate) const LINGER: Duration = Duration::from_millis(500);

/// One open connection in `ConnectionCounts::open`. A connection that
/// `serve` closes because nothing was left in flight stays in the count
/// ([`Open::closed_idle`]): read after the drain, the count is then exactly
/// the connections open, all idle, when it completed, whichever task runs
/// first.
pub(crate) struct Open {
    shared: Owner,
    counted: bool,
}

impl Open {
    /// Counted before the task exists, so the count at the end of the drain
    /// includes connections not yet polled.
    pub(crate) fn new(shared: Owner) -> Self {
        shared.connections.open.fetch_add(1, Ordering::AcqRel);
        shared.connections.task_started();
        Self {
            shared,
            counted: true,
        }
    }

    /// This connection is closed because the drain completed.
    fn closed_idle(&mut self) {
        if !self.shared.hard.is_cancelled() {
            self.counted = false;
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.counted {
            self.shared.connections.open.fetch_sub(1, Ordering::AcqRel);
        }
        // Dropped with the connection task, after its socket (the task's
        // other locals go first): what the driver's cleanup waits for.
        self.shared.connections.task_ended();
    }
}

/// The protocol a connection speaks, from its first bytes.
enum Sniffed {
    Http1,
    Http2,
    /// The drain is over and nothing was read: an idle connection.
    Idle,
    /// No request head within the header read timeout.
    TimedOut,
    /// EOF, a read error or a failed TLS handshake.
    Gone,
}

/// How the closing state ended.
enum Closing {
    /// hyper finished the connection; the stream comes back for a linger.
    Finished,
    /// No byte moved for the stall timeout, or the report is out: cut.
    Cut,
}

/// Runs one connection through the states of the module docs.
// `open` first: parameters are dropped in reverse order, so it goes last,
// after the stream (see `Open`'s `Drop`).
pub(crate) async fn run<I, S, B, A>(
    mut open: Open,
    _permit: Option<OwnedSemaphorePermit>,
    mut io: I,
    service: ConnService<S, A>,
    settings: Arc<Settings>,
    late: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    A: Clone + Send + Sync + 'static,
{
    // A reference of the connection's own: `open` is consumed on the way.
    let owner = open.shared.clone();
    let shared: &Shared = &owner;
    let reset = service.reset.clone();

    // sniff
    let accepted = tokio::time::Instant::now();
    let mut head = [0u8; PREFACE.len()];
    let mut n = 0;
    let sniffed = tokio::select! {
        // Bytes that are there win over the end of the drain.
        biased;
        s = sniff(&mut io, &mut head, &mut n, settings.header_read_timeout) => s,
        _ = idle_at_drain_end(shared, accepted) => Sniffed::Idle,
    };
    let h2 = match sniffed {
        Sniffed::Http1 => false,
        Sniffed::Http2 => true,
        Sniffed::Idle => {
            open.closed_idle();
            return;
        }
        Sniffed::TimedOut => {
            tracing::debug!(target: "tower_graceful", "no request head within the header read timeout: closed");
            linger_close(io, shared).await;
            return;
        }
        Sniffed::Gone => return,
    };

    // serve
    let moved = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (give_back, given_back) = oneshot::channel();
    let io = TokioIo::new(Rewind {
        head,
        pos: 0,
        len: n,
        moved: moved.clone(),
        ack: h2.then(|| AckWatch::new(PREFACE.len(), acked.clone())),
        inner: Some(io),
        give_back: Some(give_back),
    });
    let service = TowerToHyperService::new(service);
    let stall = settings.stall_timeout;
    // Each branch owns (and drops) hyper's connection, and with it the
    // stream, which then comes back here for a lingering close.
    let closing = if h2 {
        async {
            // The connection's hold on the drain, from now until its GOAWAY
            // exchange is over (see `exchange`); `None` once the drain has
            // completed.
            // Shared (`Arc`) with the requests hyper calls while it lives,
            // so a request called before the trigger and first run after
            // the exchange still holds the drain (see `Held`).
            let mut hold = DrainHold::acquire(&owner).map(Arc::new);
            let streams = Arc::new(OpenStreams::default());
            let service = Held {
                inner: service,
                shared: owner.clone(),
                connection: hold.as_ref().map(Arc::downgrade).unwrap_or_default(),
                streams: streams.clone(),
            };
            let mut conn = pin!(settings.http2.serve_connection(io, service));
            let at_end = tokio::select! {
                // The GOAWAY's moment first: woken by the end of the last
                // stream, it is queued before h2 writes that stream's last
                // frame (see `goaway_time`). The connection last, and the
                // others polled only when woken (`OnWake`): this runs on
                // every wake-up of the task.
                biased;
                _ = OnWake::new(goaway_time(shared, late, &streams)) => false,
                _ = OnWake::new(drain_over(shared)) => true,
                _ = exchange(conn.as_mut(), &mut hold, &acked) => return Closing::Finished,
            };
            // told to close: GOAWAY with the highest stream id first, so
            // requests already on the wire are still served; then the real
            // last id.
            conn.as_mut().graceful_shutdown();
            shared.connections.goaway.fetch_add(1, Ordering::AcqRel);
            if !at_end {
                // Still open when the drain completes: closed then. The
                // drain does not complete before the exchange is over, or
                // the stall timeout after the GOAWAY (a client that never
                // answers the PING), or the deadline.
                let mut ack_late = pin!(tokio::time::sleep(stall));
                loop {
                    tokio::select! {
                        biased;
                        _ = exchange(conn.as_mut(), &mut hold, &acked) => return Closing::Finished,
                        _ = OnWake::new(drain_over(shared)) => break,
                        _ = &mut ack_late, if hold.is_some() => {
                            tracing::debug!(
                                target: "tower_graceful",
                                ?stall,
                                "HTTP/2 client did not answer the GOAWAY's PING within the stall \
                                 timeout: the drain no longer waits for it"
                            );
                            hold = None;
                        }
                    }
                }
            }
            drop(hold);
            open.closed_idle();
            reset.token.cancel();
            closing(conn, shared, &moved, stall).await
        }
        .await
    } else {
        async {
            let mut conn = pin!(settings.http1.serve_connection(io, service).with_upgrades());
            // One poll first, so that hyper reads the bytes the sniff took:
            // told to shut down before it has read anything, hyper closes
            // the connection at once, under the request those bytes begin.
            let finished =
                std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx).is_ready()));
            if finished.await {
                return Closing::Finished;
            }
            // As for HTTP/2: this runs on every wake-up of the task.
            tokio::select! {
                biased;
                _ = conn.as_mut() => return Closing::Finished,
                _ = OnWake::new(drain_over(shared)) => open.closed_idle(),
            }
            // told to close: nothing is in flight (or the drain was cut
            // short): an idle connection closes now, a busy one after its
            // response.
            conn.as_mut().graceful_shutdown();
            reset.token.cancel();
            closing(conn, shared, &moved, stall).await
        }
        .await
    };
    if let Closing::Cut = closing {
        return;
    }
    // lingering. An upgraded connection (WebSocket) comes back when its
    // session ends.
    let stream = tokio::select! {
        s = given_back => s,
        _ = shared.done.wait() => return,
    };
    if let Ok(stream) = stream {
        linger_close(stream, shared).await;
    }
}

/// Polls an HTTP/2 connection, and ends its hold on the drain once its
/// GOAWAY exchange is over: the client's ack of the GOAWAY's PING has been
/// read ([`AckWatch`]) *and* hyper has then returned `Pending`. hyper's
/// HTTP/2 server handles every frame it has read before it returns
/// `Pending`, calling the service (whose [`Held`] wrapper holds the drain
/// per request) for every request whose HEADERS came before the ack; h2
/// sends the final GOAWAY on the ack, and refuses any later stream (which
/// clients retry elsewhere). So no request that reached us before the
/// exchange ended finds the drain completed. Returns when the connection
/// ends.
async fn exchange<F: Future>(
    mut conn: Pin<&mut F>,
    hold: &mut Option<Arc<DrainHold>>,
    acked: &std::sync::atomic::AtomicBool,
) -> F::Output {
    std::future::poll_fn(|cx| {
        let polled = conn.as_mut().poll(cx);
        // Relaxed: set by `AckWatch` inside the poll above, on this task.
        if polled.is_pending() && hold.is_some() && acked.load(Ordering::Relaxed) {
            *hold = None;
        }
        polled
    })
    .await
}

/// Reads until the first bytes tell the protocol.
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut I,
    head: &mut [u8; PREFACE.len()],
    n: &mut usize,
    timeout: Option<Duration>,
) -> Sniffed {
    let read = async {
        loop {
            match io.read(&mut head[*n..]).await {
                Ok(0) | Err(_) => return Sniffed::Gone,
                Ok(k) => {
                    *n += k;
                    if head[..*n] != PREFACE[..*n] {
                        return Sniffed::Http1;
                    }
                    if *n == PREFACE.len() {
                        return Sniffed::Http2;
                    }
                }
            }
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .unwrap_or(Sniffed::TimedOut),
        None => read.await,
    }
}

/// The closing state: runs a connection told to shut down to its end, cut
/// when no byte has moved for `stall`, or when the report is out.
async fn closing<F: Future>(
    mut conn: Pin<&mut F>,
    shared: &Shared,
    moved: &AtomicU64,
    stall: Duration,
) -> Closing {
    let mut done = pin!(shared.done.wait());
    loop {
        // Relaxed: the count is only compared with itself, by this task.
        let before = moved.load(Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = conn.as_mut() => return Closing::Finished,
            _ = &mut done => return Closing::Cut,
            _ = tokio::time::sleep(stall) => {
                if moved.load(Ordering::Relaxed) == before {
                    tracing::info!(
                        target: "tower_graceful",
                        ?stall,
                        "connection cut after the drain: no byte moved for the stall timeout \
                         (a client that stopped reading, or an unfinished request head)"
                    );
                    // Relaxed: a count for the report (read after the
                    // connection tasks ended).
                    shared.connections.cut.fetch_add(1, Ordering::Relaxed);
                    return Closing::Cut;
                }
            }
        }
    }
}

/// When a connection that has sent nothing is idle enough to close: once the
/// drain is over, and at least the reuse grace
/// ([`Builder::reuse_grace`](crate::Builder::reuse_grace)) after it was
/// accepted. A client that opened a connection just before (one taken from
/// the backlog at drain start, say) is about to send its request on it:
/// closing it at once would lose that request; within the grace it is
/// answered (served, or rejected with the close announced, by the drain
/// policy). A forced stop does not wait.
async fn idle_at_drain_end(shared: &Shared, accepted: tokio::time::Instant) {
    drain_over(shared).await;
    tokio::select! {
        _ = tokio::time::sleep_until(accepted + shared.policy.reuse_grace) => {}
        _ = shared.hard.cancelled() => {}
    }
}

/// When nothing is left in flight after draining began, or the drain was cut
/// short. Made afresh where awaited (it completes at once once true): a
/// completed future must not be polled again.
async fn drain_over(shared: &Shared) {
    tokio::select! {
        _ = shared.tracker.drained() => {}
        _ = shared.hard.cancelled() => {}
    }
}

/// Closes our end without destroying what the peer has not read yet. A
/// client may still have frames on the wire when the server is done with a
/// connection (an HTTP/2 request racing the GOAWAY, a PING ack, a window
/// update); arriving at a closed socket they make the kernel answer with a
/// reset, and a reset discards the client's unread data: the end of the
/// last response. So: send FIN (after TLS's `close_notify`), then read and
/// discard until the client closes its side, for at most [`LINGER`] in all
/// (or until the report is out): a peer that never closes, never reads or
/// floods is let go then.
async fn linger_close<I: AsyncRead + AsyncWrite + Unpin>(mut stream: I, shared: &Shared) {
    let linger = async {
        let _ = stream.shutdown().await;
        let mut scratch = [0u8; 1024];
        // Bounded: at most this many reads, each ending the linger on EOF or
        // an error.
        for _ in 0..256 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = linger => {}
        _ = tokio::time::sleep(LINGER) => {}
        _ = shared.done.wait() => {}
    }
}

/// The stream with the bytes read to tell the protocol put back in front,
/// counting the bytes that move (for the stall timeout). When hyper drops
/// it, the stream goes back to the connection task for a lingering close.
struct Rewind<I> {
    head: [u8; PREFACE.len()],
    pos: usize,
    len: usize,
    moved: Arc<AtomicU64>,
    /// HTTP/2: looks for the end of the GOAWAY exchange in what is read.
    ack: Option<AckWatch>,
    inner: Option<I>,
    give_back: Option<oneshot::Sender<I>>,
}

impl<I> Rewind<I> {
    fn stream(&mut self) -> &mut I {
        self.inner.as_mut().expect("only taken on drop")
    }

    #[inline]
    fn count<T>(
        &self,
        done: Poll<io::Result<T>>,
        n: impl FnOnce(&T) -> usize,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(v)) = &done {
            // Relaxed: a progress counter read by the same connection's
            // task. A load and a store, not a read-modify-write: this is its
            // only writer.
            let moved = self.moved.load(Ordering::Relaxed);
            self.moved
                .store(moved.wrapping_add(n(v) as u64), Ordering::Relaxed);
        }
        done
    }
}

impl<I> Drop for Rewind<I> {
    fn drop(&mut self) {
        if let (Some(stream), Some(tx)) = (self.inner.take(), self.give_back.take()) {
            let _ = tx.send(stream);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if let Some(ack) = &mut this.ack {
                ack.read(buf, before);
            }
            return Poll::Ready(Ok(()));
        }
        // Bounded: a second turn only when a read held only the ack back.
        for _ in 0..4 {
            let r = Pin::new(this.stream()).poll_read(cx, buf);
            let read = buf.filled().len() - before;
            let Some(ack) = &mut this.ack else {
                return this.count(r, |_| read.max(1));
            };
            match &r {
                Poll::Ready(Ok(())) if read > 0 => {
                    ack.read(buf, before);
                    if buf.filled().len() == before {
                        // It was all the ack: an empty read would be the
                        // end for hyper; read on.
                        let _ = this.count(r, |_| read);
                        continue;
                    }
                }
                // Nothing more now (or the end): a held ack goes in.
                Poll::Ready(Ok(())) | Poll::Pending
                    if ack.holding() && ack.poll_release(cx, buf, r.is_ready()) =>
                {
                    return this.count(Poll::Ready(Ok(())), |_| 17);
                }
                _ => {}
            }
            return this.count(r, |_| read.max(1));
        }
        // A client sending ack after ack: the next poll goes on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(this.stream()).poll_write(cx, buf);
        this.count(r, |n| *n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(this.stream()).poll_write_vectored(cx, bufs);
        this.count(r, |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(I::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_shutdown(cx)
    }
}
