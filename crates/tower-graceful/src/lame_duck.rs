//! The lame duck: from the trigger on, HTTP/1.x responses announce
//! `Connection: close`, a share that rises over the lame-duck window (see
//! the [`drain`](crate::drain) module docs), and the small random source
//! that spreads it (and the `Retry-After` jitter).

use std::cell::Cell;

use http::header::{HeaderValue, CONNECTION};
use http::StatusCode;

use crate::core::state::Shared;

pub(crate) const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// A cheap per-thread xorshift; jitter and the lame duck's share need
/// spread, not secrecy.
pub(crate) fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Uniform in `[0, 1)`.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
pub(crate) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn jitter(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

/// Whether a response now announces `Connection: close`: always from the
/// start of draining (or with no window); before that, with a probability
/// that rises linearly from 0 at the trigger to 1 at the end of the window.
pub(crate) fn announces_close(shared: &Shared) -> bool {
    if shared.draining() {
        return true;
    }
    let window = shared.policy.lame_duck_window;
    let Some(t0) = shared.triggered_at.get() else {
        return true;
    };
    let elapsed = t0.elapsed();
    if window.is_zero() || elapsed >= window {
        return true;
    }
    let window = window.as_nanos() as u64;
    random_u64() % window < elapsed.as_nanos() as u64
}

/// The lame duck, on one HTTP/1.x response once shutdown was triggered.
#[cold]
#[inline(never)]
pub(crate) fn announce_close(shared: &Shared, head: &mut http::response::Parts) -> bool {
    if head.status == StatusCode::SWITCHING_PROTOCOLS || !announces_close(shared) {
        return head.headers.get(CONNECTION).is_some_and(|v| v == CLOSE);
    }
    if head.headers.insert(CONNECTION, CLOSE).is_none() {
        shared.tracker.count_close();
    }
    true
}
