//! The `tonic` example's server, shared with the `multi` example and the
//! end-to-end tests (`tests/tests/grpc.rs`), so the tests run exactly its
//! wiring: tonic's `Routes` (the [`demo`] service and
//! `grpc.health.v1.Health`) behind `graceful.layer()`, served by
//! `tower_graceful::serve`.

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tower_graceful::Coordinator;

use crate::demo::{self, DemoServer};

/// Serves the demo and health services on `listener` until `graceful`'s
/// drain is over.
pub async fn serve_grpc(
    graceful: &Coordinator,
    listener: TcpListener,
) -> JoinHandle<std::io::Result<()>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // SERVING while ready (every gate open), NOT_SERVING from the trigger.
    tower_graceful::grpc_health::report_health(graceful, reporter, [demo::SERVICE_NAME]).await;

    let routes = Routes::new(health).add_service(DemoServer::new());
    let service = tower::ServiceBuilder::new()
        .layer(graceful.layer())
        .service(routes);
    tokio::spawn(tower_graceful::serve(listener, service, graceful))
}
