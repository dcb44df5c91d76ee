//! When each HTTP/2 connection is told to go away.

use crate::core::state::Shared;

/// When this HTTP/2 connection gets its GOAWAY: at a random point of the
/// lame-duck window after the trigger, so reconnections spread out as
/// HTTP/1.x's do; for a connection accepted after the trigger, when
/// draining starts (a GOAWAY earlier would only send the client back here:
/// the balancer has not noticed yet).
pub(crate) async fn goaway_time(shared: &Shared, late: bool) {
    if late {
        return shared.soft.cancelled().await;
    }
    shared.triggered.wait().await;
    let window = shared.policy.lame_duck_window;
    if window.is_zero() || shared.draining() {
        return;
    }
    let Some(t0) = shared.triggered_at.get().copied() else {
        return;
    };
    let at = window.mul_f64(crate::lame_duck::random_unit());
    tokio::select! {
        _ = tokio::time::sleep_until(t0 + at) => {}
        _ = shared.soft.cancelled() => {}
    }
}
