//! The settings every connection of one [`Server`](super::Server) reads:
//! apart from the builder, so that the accept loop and the connections
//! depend on them and the builder on the loop, with no circle.

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;

/// What every connection reads (shared behind an `Arc` by the loop).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) stall_timeout: Duration,
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
    /// Whether each request gets the connection's `ConnectionInfo` (and
    /// axum's `ConnectInfo`) in its extensions.
    pub(crate) connection_info: bool,
}
