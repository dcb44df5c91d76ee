//! The rolling restarts behind HAProxy (`tests/rolling/run.sh`: L7, L4 and
//! L4 gRPC on three clients, strict: `retries 0`, no redispatch, clients
//! that never retry a call that reached a server),
//! run only when `TOWER_GRACEFUL_ROLLING=1`: they need `haproxy`, `jq`, `ss`
//! and `oha` installed and take a minute or two. The script builds the
//! example binaries itself (or uses `AXUM_BIN` / `MULTI_BIN`); the gRPC load
//! client is this package's `grpc_load`, which cargo has built for this test.
//! The test fails if tower-graceful lost a single request; `ROLLING_ONLY`,
//! `ROLLING_RUNS` and the script's other settings pass through.

use std::process::Command;

#[test]
fn rolling_restart_behind_haproxy_loses_nothing() {
    if std::env::var("TOWER_GRACEFUL_ROLLING").as_deref() != Ok("1") {
        println!(
            "skipped: set TOWER_GRACEFUL_ROLLING=1 to run tests/rolling/run.sh \
             (needs: apt-get install -y haproxy jq iproute2; cargo install oha --locked)"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/rolling/run.sh");
    let mut cmd = Command::new("timeout");
    // The script bounds every wait itself; `timeout` is a backstop that sends
    // SIGTERM (so the script's trap ends what it started), then SIGKILL.
    cmd.args(["--kill-after=30", "900", "bash", script]);
    if std::env::var_os("GRPC_LOAD_BIN").is_none() {
        cmd.env("GRPC_LOAD_BIN", env!("CARGO_BIN_EXE_grpc_load"));
    }
    let status = cmd
        .status()
        .expect("run tests/rolling/run.sh under timeout(1)");
    assert!(
        status.success(),
        "tests/rolling/run.sh failed ({status}): see the tables and ROLLING lines above \
         (exit 1: tower-graceful lost requests; 2: setup problem)"
    );
}
