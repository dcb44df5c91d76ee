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
//! a new connection. So a connection gets its GOAWAY at a moment it has no
//! stream open ([`OpenStreams`]), sent in the same write as the end of its
//! last response when it can be (see [`goaway_time`]).

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::core::state::Shared;

/// The streams open on one HTTP/2 connection, as the server sees them: from
/// hyper's call of the service (synchronous, on the connection's task, as
/// it reads the request's HEADERS) until the response body is dropped
/// (after hyper has handed its last frame to h2, on the stream's task).
/// Per connection: only this connection's streams touch the count.
#[derive(Default)]
pub(crate) struct OpenStreams {
    count: AtomicUsize,
    idle: Notify,
}

/// One open stream of [`OpenStreams`], released on `Drop`.
pub(crate) struct StreamGuard(Arc<OpenStreams>);

impl OpenStreams {
    /// A stream opens.
    pub(crate) fn open(self: &Arc<Self>) -> StreamGuard {
        // Relaxed: read (with Acquire) only by this connection's task, which
        // also makes every increment (hyper calls the service on it).
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Completes when no stream is open. The waiter is registered before
    /// the count is read, so a last stream ending in between is not missed
    /// (`notify_waiters` stores nothing for a waiter that comes later).
    /// Re-reads the count on every wake-up: a stream opened meanwhile (on
    /// this task) keeps it waiting.
    async fn idle(&self) {
        // Bounded by the streams' ends: each wake-up follows one.
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            // Acquire: pairs with the release of the last guard's decrement.
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // AcqRel: the last one wakes the connection's task (see `idle`).
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// When this HTTP/2 connection gets its GOAWAY.
///
/// * From a random point of the lame-duck window after the trigger (so
///   reconnections spread out as HTTP/1.x's do), at the first moment the
///   connection has no stream open, until draining starts. A connection
///   accepted after the trigger waits for draining to start (a GOAWAY
///   earlier would only send the client back here: the balancer has not
///   noticed yet).
/// * From the start of draining, a connection that has had no idle moment
///   yet gets one more lame-duck window (at most half the time left before
///   the deadline) to have one; requests it carries meanwhile are served
///   (the drain waits for its GOAWAY exchange). Then it gets its GOAWAY
///   whatever is open: a client whose streams never pause is told all the
///   same.
///
/// The caller polls this before hyper's connection (`biased`), so when the
/// last stream ends the GOAWAY is queued before h2 writes that stream's
/// last frame, and both leave in one write.
pub(crate) async fn goaway_time(shared: &Shared, late: bool, streams: &OpenStreams) {
    tokio::select! {
        biased;
        _ = async {
            start_time(shared, late).await;
            streams.idle().await;
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
        _ = streams.idle() => {}
        _ = tokio::time::sleep(bound) => {
            tracing::debug!(
                target: "tower_graceful",
                ?bound,
                "HTTP/2 connection without an idle moment since draining began: GOAWAY with \
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
    if late {
        return shared.soft.cancelled().await;
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

/// Follows the frames a client sends on an HTTP/2 connection (the bytes
/// hyper reads, preface included) until it sees the ack of the shutdown
/// PING. Only frame heads are looked at (payloads are skipped), and
/// nothing once the ack was seen. A client that sends the ack without a
/// PING only ends its own connection's hold on the drain early.
pub(crate) struct AckWatch {
    /// Bytes to skip: the preface, then each payload.
    skip: usize,
    head: [u8; 9],
    head_len: usize,
    /// Reading a PING ack's payload: its bytes so far.
    ping: Option<([u8; 8], usize)>,
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
            seen,
        }
    }

    /// Looks at the next bytes the client sent.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        // Relaxed: the flag is set and read by the connection's own task.
        while !bytes.is_empty() && !self.seen.load(Ordering::Relaxed) {
            if let Some((payload, n)) = &mut self.ping {
                let k = (8 - *n).min(bytes.len());
                payload[*n..*n + k].copy_from_slice(&bytes[..k]);
                *n += k;
                bytes = &bytes[k..];
                if *n == 8 {
                    if *payload == SHUTDOWN_PING {
                        self.seen.store(true, Ordering::Relaxed);
                    }
                    self.ping = None;
                }
                continue;
            }
            if self.skip > 0 {
                let k = self.skip.min(bytes.len());
                self.skip -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (9 - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + k].copy_from_slice(&bytes[..k]);
            self.head_len += k;
            bytes = &bytes[k..];
            if self.head_len == 9 {
                self.head_len = 0;
                let h = &self.head;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                if h[3] == PING && h[4] & ACK != 0 && len == 8 {
                    self.ping = Some(([0; 8], 0));
                } else {
                    self.skip = len;
                }
            }
        }
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
                w.feed(c);
            }
            assert!(!seen.load(Ordering::Relaxed), "chunk {chunk}: too early");
            for c in bytes[before..].chunks(chunk) {
                w.feed(c);
            }
            assert!(seen.load(Ordering::Relaxed), "chunk {chunk}");
        }
    }
}
