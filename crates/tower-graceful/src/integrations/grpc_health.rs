//! gRPC health (`tonic-health`) wired to the coordinator (feature `tonic`).
//!
//! The module is called `grpc_health`, not `tonic` or `tonic_health`, so that
//! `use tower_graceful::grpc_health;` never shadows a crate the same program
//! uses by name.

use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::core::readiness::ReadinessStatus;
use crate::core::state::Shared;
use crate::Coordinator;

/// Reports the coordinator's readiness as gRPC health: the whole server
/// (`""`) and every service in `services` are `SERVING` exactly while the
/// readiness probe would answer `200` (every
/// [readiness gate](crate::probe::Readiness::gate) ready, shutdown not
/// triggered), `NOT_SERVING` otherwise, and `NOT_SERVING` for good once
/// shutdown is triggered: the gRPC counterpart of the readiness probe.
/// Returns once the services are marked with the current status, with the
/// task that follows the changes.
///
/// The task follows the changes as events (a gate set or dropped, the
/// trigger), never by polling, and writes a status only when it changes, so
/// a `Watch` stream sees each flip once. It ends at the trigger, after
/// marking everything `NOT_SERVING`.
///
/// `tonic-health` answers `NotFound` for a service nobody has marked, so
/// without the first step a balancer that checks `helloworld.Greeter` would
/// see it unknown until shutdown. A service held by a warm-up gate is
/// `NOT_SERVING` (not unknown) until the gate opens.
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
/// let warm_up = graceful.readiness().gate("warm-up"); // NOT_SERVING until ready
/// let (reporter, health_service) = tonic_health::server::health_reporter();
/// tower_graceful::grpc_health::report_health(&graceful, reporter, ["helloworld.Greeter"]).await;
/// warm_up.set_ready(true); // SERVING
/// # let _ = health_service;
/// # }
/// ```
///
/// # Cancel safety
///
/// Not cancel safe in a useful sense: if the returned future is dropped
/// before it completes, some services may not be marked, and nothing follows
/// the changes. Await it to the end.
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
    let shared = coordinator.shared.clone();
    // Subscribed before the first look: a gate that changes between the look
    // and the task's first await is not lost (the receiver keeps the version
    // it saw).
    let mut gates = shared.gates_changed.subscribe();
    let mut reported = serving_status(&shared);
    mark(&reporter, &names, reported).await;
    tokio::spawn(async move {
        while !shared.triggered.is_set() {
            tokio::select! {
                biased;
                _ = shared.triggered.wait() => break,
                // Err only if the sender is gone, which it cannot be while
                // `shared` is held.
                _ = gates.changed() => {}
            }
            let now = serving_status(&shared);
            if now != reported {
                mark(&reporter, &names, now).await;
                tracing::info!(target: "tower_graceful", services = ?names, status = ?now, "gRPC health changed with readiness");
                reported = now;
            }
        }
        mark(&reporter, &names, ServingStatus::NotServing).await;
        tracing::info!(target: "tower_graceful", services = ?names, "gRPC health: NOT_SERVING");
    })
}

/// The gRPC status of the readiness status.
fn serving_status(shared: &Shared) -> ServingStatus {
    match shared.readiness() {
        ReadinessStatus::Ready => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

async fn mark(reporter: &HealthReporter, names: &[String], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}
