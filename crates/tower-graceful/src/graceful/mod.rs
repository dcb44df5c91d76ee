//! The whole stack of [`Coordinator::layer`](crate::Coordinator::layer) as one service.
//!
//! [`Graceful`] does what [`Probe`](crate::probe::Probe) →
//! [`Drain`](crate::drain::Drain) → [`InFlight`](crate::in_flight::InFlight) do when stacked,
//! in one `call`, with one response future and one response body instead of
//! three nested ones: one branch on the path for the probes, one load of the
//! phase, one slot claimed in the thread's own shard, and nothing moved
//! more than once. The separate layers stay available for custom orders.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_graceful::Coordinator;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let graceful = Coordinator::builder().handle_signals(false).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(graceful.layer())
//!     .service(service_fn(|_: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! // A response whose body is still on its way when shutdown begins.
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! graceful.trigger();
//! tokio::spawn(async move {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     drop(response); // its body sent
//! });
//! let report = graceful.wait().await; // the drain waits for that body
//! assert_eq!(report.in_flight_at_drain, 1);
//! assert_eq!(report.completed_while_draining, 1);
//! assert_eq!(report.drain, Duration::from_secs(1));
//! # }
//! ```

mod body;
mod future;
mod layer;
mod service;

pub(crate) use self::body::GracefulBody;
pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::GracefulLayer;
pub use self::service::Graceful;
