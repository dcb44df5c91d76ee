//! gRPC health (`tonic-health`) wired to the coordinator (feature `tonic`).

use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::Coordinator;

/// Reports `NOT_SERVING` for the whole server (`""`) and every service in
/// `services` as soon as shutdown is triggered, the gRPC counterpart of the
/// readiness probe. Returns the task doing it.
///
/// The health `Watch` stream is not counted in flight by default
/// ([`GRPC_HEALTH_WATCH`](crate::GRPC_HEALTH_WATCH)), so a balancer watching
/// health does not hold the drain; it sees `NOT_SERVING` on the stream.
///
/// Pass the names your server registers (`<YourServer<_> as
/// tonic::server::NamedService>::NAME`); `tonic-health` cannot list them.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// let graceful = tower_graceful::Coordinator::builder().build().unwrap();
/// let (reporter, health_service) = tonic_health::server::health_reporter();
/// tower_graceful::tonic::report_health(&graceful, reporter, ["helloworld.Greeter"]);
/// # let _ = health_service;
/// # }
/// ```
pub fn report_health<I, N>(
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
