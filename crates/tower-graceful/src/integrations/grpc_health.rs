//! gRPC health (`tonic-health`) wired to the coordinator (feature `tonic`).
//!
//! The module is called `grpc_health`, not `tonic` or `tonic_health`, so that
//! `use tower_graceful::grpc_health;` never shadows a crate the same program
//! uses by name.

use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::{Coordinator, Phase};

/// Marks the whole server (`""`) and every service in `services` `SERVING`
/// now, and `NOT_SERVING` as soon as shutdown is triggered: the gRPC
/// counterpart of the readiness probe. Returns once the services are marked,
/// with the task that waits for the trigger.
///
/// `tonic-health` answers `NotFound` for a service nobody has marked, so
/// without the first half a balancer that checks `helloworld.Greeter` would
/// see it unknown until shutdown. If shutdown was already triggered when this
/// is called, the services are marked `NOT_SERVING` straight away.
///
/// The health `Watch` stream is not counted in flight by default
/// ([`GRPC_HEALTH_WATCH`](crate::coordinator::GRPC_HEALTH_WATCH)), so a balancer watching
/// health does not hold the drain; it sees `NOT_SERVING` on the stream.
///
/// Pass the names your server registers (`<YourServer<_> as
/// tonic::server::NamedService>::NAME`); `tonic-health` cannot list them.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// let graceful = tower_graceful::Coordinator::builder().build().unwrap();
/// let (reporter, health_service) = tonic_health::server::health_reporter();
/// tower_graceful::grpc_health::report_health(&graceful, reporter, ["helloworld.Greeter"]).await;
/// # let _ = health_service;
/// # }
/// ```
///
/// # Cancel safety
///
/// Not cancel safe in a useful sense: if the returned future is dropped
/// before it completes, some services may be marked `SERVING` and nothing
/// will mark them `NOT_SERVING` at the trigger. Await it to the end.
pub async fn report_health<I, N>(
    coordinator: &Coordinator,
    reporter: HealthReporter,
    services: I,
) -> JoinHandle<()>
where
    I: IntoIterator<Item = N>,
    N: Into<String>,
{
    let names: Vec<String> = std::iter::once(String::new())
        .chain(services.into_iter().map(Into::into))
        .collect();
    // A trigger between this check and the loop is fine: the task below
    // marks everything NOT_SERVING right after.
    if coordinator.phase() == Phase::Serving {
        for name in &names {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
    }
    let coordinator = coordinator.clone();
    tokio::spawn(async move {
        coordinator.triggered().await;
        for name in &names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        tracing::info!(target: "tower_graceful", services = ?names, "gRPC health: NOT_SERVING");
    })
}
