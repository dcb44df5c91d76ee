//! When each HTTP/2 connection is told to go away, and when its GOAWAY
//! exchange is over.
//!
//! # Why the moment matters: a GOAWAY on an idle connection
//!
//! hyper's HTTP/2 client (under tonic's `Channel`) does not notice a GOAWAY
//! that arrives while a stream of its connection is open: the connection
//! stays up for that stream, and the next call is queued on it, then failed
//! locally (`operation was canceled: connection closed`, hyper#2500). A
//! GOAWAY that arrives while *no* stream is open ends the client's
//! connection at once; its readiness check fails and the next call goes to
//! a new connection. So a connection gets its GOAWAY at a calm moment
//! ([`OpenStreams::calm`]): no stream open, and none just ended but the
//! last, so that no call of the client is likely to be leaving it just as
//! the GOAWAY arrives; queued just before the last frame of its last
//! response (see [`goaway_time`]).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;

use tokio::io::ReadBuf;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::state::Shared;

/// How long a connection's GOAWAY keeps away from the end of a stream that
/// is not the last to end (see [`OpenStreams::calm`]).
pub(crate) const CALM: Duration = Duration::from_millis(5);

/// The streams open on one HTTP/2 connection, as the server sees them: from
/// hyper's call of the service (synchronous, on the connection's task, as
/// it reads the request's HEADERS) until the response body gives its last
/// frame, on the stream's task, just before hyper hands that frame to h2
/// (or until the body is dropped). Per connection: only this connection's
/// streams touch the count.
pub(crate) struct OpenStreams {
    count: AtomicUsize,
    idle: Notify,
    /// Set by the connection's task once its GOAWAY may be sent: from then
    /// on every stream's end is timed ([`Ends`]). Before, a stream's end
    /// costs one load more than the count.
    timed: AtomicBool,
    ends: Mutex<Ends>,
}

/// The ends of streams while [`OpenStreams::timed`].
#[derive(Default, Clone, Copy)]
struct Ends {
    /// How many streams ended.
    count: u64,
    /// When the last one did.
    last: Option<Instant>,
    /// Whether the last one ended alone: no other stream ended within
    /// [`CALM`] before it.
    alone: bool,
}

/// One open stream of [`OpenStreams`], released on `Drop`.
pub(crate) struct StreamGuard(Arc<OpenStreams>);

impl Default for OpenStreams {
    fn default() -> Self {
        Self {
            count: AtomicUsize::new(0),
            idle: Notify::new(),
            timed: AtomicBool::new(false),
            ends: Mutex::new(Ends::default()),
        }
    }
}

impl OpenStreams {
    /// A stream opens.
    pub(crate) fn open(self: &Arc<Self>) -> StreamGuard {
        // Relaxed: read (with Acquire) only by this connection's task, which
        // also makes every increment (hyper calls the service on it).
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// The ends, locked. Nothing panics while holding the lock (plain
    /// field updates), so a poisoned lock still holds a consistent value.
    fn lock_ends(&self) -> std::sync::MutexGuard<'_, Ends> {
        self.ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ends(&self) -> Ends {
        *self.lock_ends()
    }

    /// Completes at a calm moment: no stream open, and no call of the
    /// client likely to be leaving it just as a GOAWAY arrives.
    ///
    /// A client's next call often follows the end of one of its streams at
    /// once (a loop of calls; a stream loop beside a unary one). A GOAWAY
    /// written just before the last frame of a stream is read before that
    /// frame, so the call that this end sets off finds the connection going
    /// away and goes elsewhere (hyper's client fails it unsent, as
    /// canceled, which its pool sends again). But when another stream ended
    /// just before (within [`CALM`]), the call *that* end set off may be
    /// leaving the client just as the GOAWAY arrives, and hyper's client
    /// can fail it after it has handed it to h2 (its dispatch task re-checks
    /// the connection after `send_request` and fails the call when the
    /// GOAWAY came in between: `connection error received: not a result of
    /// an error`, which its pool cannot retry; seen in a capture of the
    /// rolling harness, hyper#2500). So the moment is
    ///
    /// * the end of the last open stream, if it ended alone (no other stream
    ///   of the connection ended within [`CALM`] before it), or
    /// * [`CALM`] after the last end with no stream opened or ended
    ///   meanwhile (a quiet connection), also when the connection is
    ///   already idle when this is first polled.
    ///
    /// The waiters are registered before the state is read, so an end in
    /// between is not missed (`notify_waiters` stores nothing for a waiter
    /// that comes later). Re-reads the count on every wake-up: a stream
    /// opened meanwhile (on this task) keeps it waiting.
    async fn calm(&self) {
        // SeqCst, with the SeqCst load in `StreamGuard::drop`: a stream
        // ending after this store is timed, or its end happened before the
        // first read of `ends` below (then the first moment needs quiet).
        self.timed.store(true, Ordering::SeqCst);
        // Ends already looked at: only a later one is a moment.
        let mut seen = self.ends().count;
        // Bounded by the streams' ends (each wake-up follows one) and by
        // the quiet waits, each of which ends the loop unless a stream
        // opened or ended meanwhile.
        loop {
            let mut idle = pin!(self.idle.notified());
            idle.as_mut().enable();
            let ends = self.ends();
            let fresh = ends.count != seen;
            seen = ends.count;
            // Acquire: pairs with the release of the last guard's decrement.
            if self.count.load(Ordering::Acquire) == 0 {
                if fresh && ends.alone {
                    return;
                }
                let since = ends.last.unwrap_or_else(Instant::now);
                tokio::time::sleep_until(since + CALM).await;
                if self.count.load(Ordering::Acquire) == 0 && self.ends().count == seen {
                    return;
                }
                // A stream opened (or opened and ended) meanwhile. An end
                // in the wait is past (not one to go with): wait for the
                // next end, or for quiet after this one.
                seen = self.ends().count;
                continue;
            }
            idle.await;
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // SeqCst: see `OpenStreams::calm`.
        if self.0.timed.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut ends = self.0.lock_ends();
            ends.alone = ends
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= CALM);
            ends.last = Some(now);
            ends.count += 1;
        }
        // AcqRel: the last one wakes the connection's task (see `calm`).
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// When this HTTP/2 connection gets its GOAWAY.
///
/// * From a random point of the lame-duck window after the trigger (so
///   reconnections spread out as HTTP/1.x's do), at the first calm moment
///   ([`OpenStreams::calm`]: no stream open, the last one ended alone or the
///   connection quiet for [`CALM`]), until draining starts. A connection
///   accepted after the trigger waits for draining to start (a GOAWAY
///   earlier would only send the client back here: the balancer has not
///   noticed yet).
/// * From the start of draining, a connection that has had no calm moment
///   yet gets one more lame-duck window (at most half the time left before
///   the deadline) to have one; requests it carries meanwhile are served
///   (the drain waits for its GOAWAY exchange). Then it gets its GOAWAY
///   whatever is open: a client whose streams never pause is told all the
///   same.
///
/// The caller polls this before hyper's connection (`biased`), so when the
/// last stream ends the GOAWAY is queued before h2 writes that stream's
/// last frame (h2 writes a pending GOAWAY and its PING before stream
/// frames): the client reads the GOAWAY first, usually in the same read.
/// Its next call then cannot find the connection open and still usable: it
/// fails unsent, as canceled, which hyper-util's pool and
/// `client::TransparentRetry` (feature `client`) send again, or
/// goes to a new connection.
pub(crate) async fn goaway_time(shared: &Shared, late: bool, streams: &OpenStreams) {
    tokio::select! {
        biased;
        _ = async {
            start_time(shared, late).await;
            streams.calm().await;
        } => return,
        _ = shared.soft.cancelled() => {}
    }
    let window = shared.policy.lame_duck_window;
    let now = tokio::time::Instant::now();
    let left = shared
        .deadline
        .get()
        .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
    let bound = window.min(left / 2);
    if bound.is_zero() {
        return;
    }
    tokio::select! {
        biased;
        _ = streams.calm() => {}
        _ = tokio::time::sleep(bound) => {
            tracing::debug!(
                target: "tower_graceful",
                ?bound,
                "HTTP/2 connection without a calm moment since draining began: GOAWAY with \
                 streams open"
            );
        }
        _ = shared.hard.cancelled() => {}
    }
}

/// From when a connection's GOAWAY may be sent (see [`goaway_time`]); never
/// completes for a connection accepted after the trigger (draining starts
/// first).
async fn start_time(shared: &Shared, late: bool) {
    if late {
        return std::future::pending().await;
    }
    shared.triggered.wait().await;
    let window = shared.policy.lame_duck_window;
    if window.is_zero() {
        return;
    }
    let Some(t0) = shared.triggered_at.get().copied() else {
        return;
    };
    let at = window.mul_f64(crate::lame_duck::random_unit());
    tokio::time::sleep_until(t0 + at).await;
}

/// The payload of the PING that h2 sends with its graceful GOAWAY
/// (`h2/src/frame/ping.rs`, `SHUTDOWN_PAYLOAD`; h2 0.4): the client's ack
/// of it is what ends the GOAWAY exchange. hyper does not expose the
/// moment, so [`AckWatch`] reads it off the client's bytes. Should h2 ever
/// change the payload, no ack is recognised and the exchange ends at the
/// stall timeout instead (`tests/tests/goaway_race.rs` would fail).
const SHUTDOWN_PING: [u8; 8] = [0x0b, 0x7b, 0xa2, 0xf0, 0x8b, 0x9b, 0xfe, 0x54];
/// HTTP/2 frame types and flags (RFC 9113, 6.7).
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// How long the client's ack of the shutdown PING is held back while the
/// bytes that came after it go through (see [`AckWatch`]).
const ACK_HOLD: Duration = Duration::from_millis(2);

/// Follows the frames a client sends on an HTTP/2 connection (the bytes
/// hyper reads, preface included) until it sees the ack of the shutdown
/// PING. Only frame heads are looked at (payloads are skipped), and
/// nothing once the ack was seen. A client that sends the ack without a
/// PING only ends its own connection's hold on the drain early.
///
/// The ack is held back a moment ([`ACK_HOLD`]), and what the client sent
/// after it goes to hyper first: h2 answers the ack with the final GOAWAY,
/// whose last stream id refuses every stream it has not read yet. A client
/// that read the GOAWAY and the PING together with the end of a response
/// may write the ack *before* the HEADERS of a call it had already queued
/// (hyper-util's pool does): that call was sent in good faith, before the
/// client knew, and is served instead of refused. Held only when the whole
/// ack frame came in one read (the usual case), and put back only between
/// frames.
pub(crate) struct AckWatch {
    /// Bytes to skip: the preface, then each payload.
    skip: usize,
    head: [u8; 9],
    head_len: usize,
    /// Reading a PING ack's payload: its bytes so far, and where its frame
    /// began in the current read (if it did).
    ping: Option<([u8; 8], usize, Option<usize>)>,
    /// The ack, taken out of what hyper reads, until it is due.
    held: Option<(Pin<Box<tokio::time::Sleep>>, [u8; 17])>,
    seen: Arc<AtomicBool>,
}

impl AckWatch {
    /// A watch on a connection whose `preface` bytes come first.
    pub(crate) fn new(preface: usize, seen: Arc<AtomicBool>) -> Self {
        Self {
            skip: preface,
            head: [0; 9],
            head_len: 0,
            ping: None,
            held: None,
            seen,
        }
    }

    /// Whether the ack is being held back.
    pub(crate) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Looks at the bytes a read put in `buf` after `before`: an ack that
    /// is there whole is taken out of `buf` and held.
    pub(crate) fn read(&mut self, buf: &mut ReadBuf<'_>, before: usize) {
        let Some(at) = self.feed(&buf.filled()[before..]) else {
            return;
        };
        let (start, end) = (before + at, before + at + 17);
        let filled = buf.filled_mut();
        let mut frame = [0u8; 17];
        frame.copy_from_slice(&filled[start..end]);
        let len = filled.len();
        filled.copy_within(end.., start);
        buf.set_filled(len - 17);
        let until = tokio::time::Instant::now() + ACK_HOLD;
        self.held = Some((Box::pin(tokio::time::sleep_until(until)), frame));
        // What came after it: followed, for the frame boundaries.
        let _ = self.feed(&buf.filled()[start..]);
    }

    /// With nothing more to read now: puts the held ack into `buf` once it
    /// is due (at once when the client has closed: `end`) and the bytes so
    /// far end on a frame boundary; returns whether it did (and the
    /// exchange's end is then seen). At the end, mid-frame, it is dropped.
    pub(crate) fn poll_release(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        end: bool,
    ) -> bool {
        let Some((until, frame)) = &mut self.held else {
            return false;
        };
        let between = self.skip == 0 && self.head_len == 0 && self.ping.is_none();
        if end && !between {
            self.held = None;
            return false;
        }
        let due = end || until.as_mut().poll(cx).is_ready();
        if !between || !due || buf.remaining() < frame.len() {
            return false;
        }
        buf.put_slice(&frame[..]);
        self.held = None;
        // Relaxed: the flag is set and read by the connection's own task.
        self.seen.store(true, Ordering::Relaxed);
        true
    }

    /// Looks at the next bytes the client sent. Returns where the ack's
    /// frame begins in `bytes` if it is there whole (then the ack is not
    /// seen yet: the caller holds it back); otherwise an ack is seen at
    /// once.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<usize> {
        let total = bytes.len();
        // A payload begun in an earlier read: its frame is not whole here.
        if let Some((_, _, start)) = &mut self.ping {
            *start = None;
        }
        // Relaxed: the flag is set and read by the connection's own task.
        while !bytes.is_empty() && !self.seen.load(Ordering::Relaxed) {
            let offset = total - bytes.len();
            if let Some((payload, n, start)) = &mut self.ping {
                let k = (8 - *n).min(bytes.len());
                payload[*n..*n + k].copy_from_slice(&bytes[..k]);
                *n += k;
                bytes = &bytes[k..];
                if *n == 8 {
                    let start = *start;
                    let ours = *payload == SHUTDOWN_PING;
                    self.ping = None;
                    // A second one while the first is held goes through.
                    if ours && self.held.is_none() {
                        if start.is_some() {
                            return start;
                        }
                        self.seen.store(true, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if self.skip > 0 {
                let k = self.skip.min(bytes.len());
                self.skip -= k;
                bytes = &bytes[k..];
                continue;
            }
            // Where this head began in `bytes`, if it did.
            let start = (self.head_len == 0).then_some(offset);
            let k = (9 - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + k].copy_from_slice(&bytes[..k]);
            self.head_len += k;
            bytes = &bytes[k..];
            if self.head_len == 9 {
                self.head_len = 0;
                let h = &self.head;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                if h[3] == PING && h[4] & ACK != 0 && len == 8 {
                    self.ping = Some(([0; 8], 0, start));
                } else {
                    self.skip = len;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn sees_the_shutdown_ping_ack_in_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(0x1, 0x4, &[1; 40])); // HEADERS
        bytes.extend(frame(PING, ACK, &[7; 8])); // another ack
        bytes.extend(frame(PING, 0, &SHUTDOWN_PING)); // a PING, not an ack
        let before = bytes.len();
        bytes.extend(frame(PING, ACK, &SHUTDOWN_PING));
        for chunk in [1, 2, 5, 9, 17, bytes.len()] {
            let seen = Arc::new(AtomicBool::new(false));
            let mut w = AckWatch::new(24, seen.clone());
            for c in bytes[..before].chunks(chunk) {
                assert_eq!(w.feed(c), None);
            }
            assert!(!seen.load(Ordering::Relaxed), "chunk {chunk}: too early");
            let mut whole = None;
            let mut at = before;
            for c in bytes[before..].chunks(chunk) {
                if let Some(k) = w.feed(c) {
                    whole = Some(at + k);
                }
                at += c.len();
            }
            // Whole in one read: found (to be held back); else seen at once.
            match whole {
                Some(start) => {
                    assert_eq!(start, before, "chunk {chunk}");
                    assert!(!seen.load(Ordering::Relaxed), "chunk {chunk}");
                }
                None => assert!(seen.load(Ordering::Relaxed), "chunk {chunk}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_ack_is_held_back_behind_the_frames_after_it() {
        let headers = |id: u8| {
            let mut f = frame(0x1, 0x4, &[id; 12]);
            f[8] = id;
            f
        };
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(headers(1));
        let ack = frame(PING, ACK, &SHUTDOWN_PING);
        let mut wire = bytes.clone();
        wire.extend(&ack);
        wire.extend(headers(3));
        let seen = Arc::new(AtomicBool::new(false));
        let mut w = AckWatch::new(24, seen.clone());
        let mut storage = [0u8; 256];
        let mut buf = ReadBuf::new(&mut storage);
        buf.put_slice(&wire);
        w.read(&mut buf, 0);
        let mut expected = bytes.clone();
        expected.extend(headers(3));
        assert_eq!(
            buf.filled(),
            &expected[..],
            "the HEADERS after the ack first"
        );
        assert!(w.holding() && !seen.load(Ordering::Relaxed));

        let waker = std::task::Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut storage = [0u8; 64];
        let mut later = ReadBuf::new(&mut storage);
        assert!(!w.poll_release(&mut cx, &mut later, false), "not due yet");
        tokio::time::advance(ACK_HOLD).await;
        assert!(w.poll_release(&mut cx, &mut later, false));
        assert_eq!(later.filled(), &ack[..]);
        assert!(!w.holding() && seen.load(Ordering::Relaxed));
    }

    /// Whether `fut` completes once the runtime's other tasks have run
    /// (time paused: it moves only when told).
    async fn done<F: Future>(fut: &mut Pin<&mut F>) -> bool {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_a_stream_that_ended_alone_is_calm_at_once() {
        let streams = Arc::new(OpenStreams::default());
        let a = streams.open();
        let mut calm = pin!(streams.calm());
        assert!(!done(&mut calm).await, "a stream is open");
        drop(a);
        assert!(done(&mut calm).await, "the last stream ended alone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_last_end_right_after_another_waits_for_quiet() {
        let streams = Arc::new(OpenStreams::default());
        let (a, b) = (streams.open(), streams.open());
        let mut calm = pin!(streams.calm());
        assert!(!done(&mut calm).await);
        drop(a);
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(b);
        assert!(!done(&mut calm).await, "another stream ended 1 ms before");
        // The call the first end set off arrives: not quiet.
        tokio::time::advance(Duration::from_millis(1)).await;
        let c = streams.open();
        tokio::time::advance(CALM).await;
        assert!(!done(&mut calm).await, "a stream is open again");
        // It ends alone (more than CALM after the last end): calm.
        drop(c);
        assert!(done(&mut calm).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_calm_after_the_calm_time() {
        let streams = Arc::new(OpenStreams::default());
        let (a, b) = (streams.open(), streams.open());
        let mut calm = pin!(streams.calm());
        assert!(!done(&mut calm).await);
        drop(a);
        drop(b);
        assert!(!done(&mut calm).await);
        tokio::time::advance(CALM - Duration::from_millis(1)).await;
        assert!(!done(&mut calm).await, "not quiet long enough");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(done(&mut calm).await, "quiet for CALM");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_needs_quiet_and_a_stream_in_between_restarts_it() {
        let streams = Arc::new(OpenStreams::default());
        let mut calm = pin!(streams.calm());
        assert!(
            !done(&mut calm).await,
            "its last end may have been just now"
        );
        tokio::time::advance(Duration::from_millis(3)).await;
        // A stream opens and ends within the wait: quiet starts again.
        drop(streams.open());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!done(&mut calm).await, "a stream came and went");
        tokio::time::advance(CALM).await;
        assert!(done(&mut calm).await);
    }

    struct Noop;

    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
}
