//! A process whose coordinator was built on a runtime that has since been
//! dropped (as a `main` that configures on one runtime and serves on another
//! does), for `tests/tests/signals.rs`: it prints `waiting`, and exits 0
//! once a SIGTERM has taken the coordinator through its shutdown, printing
//! the report's cause.

use std::time::Duration;

fn main() {
    let build = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let coordinator = build.block_on(async {
        tower_graceful::Coordinator::builder()
            .pre_drain_delay(Duration::ZERO)
            .drain_deadline(Duration::from_secs(5))
            .build()
            .expect("coordinator")
    });
    // The runtime that spawned the OS-signal listener is gone, and with it
    // the listener.
    drop(build);

    let serve = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let report = serve.block_on(async {
        let wait = coordinator.wait();
        println!("waiting");
        wait.await
    });
    println!("report cause: {}", report.cause);
}
