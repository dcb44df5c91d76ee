//! The rolling restart behind HAProxy (`tests/rolling/run.sh`), run only when
//! `TOWER_GRACEFUL_ROLLING=1`: it needs `haproxy` and `wrk` installed and
//! takes about a minute. The script builds the `axum` example itself (or uses
//! `AXUM_BIN`) and fails if our variant lost a single request.

use std::process::Command;

#[test]
fn rolling_restart_behind_haproxy_loses_nothing() {
    if std::env::var("TOWER_GRACEFUL_ROLLING").as_deref() != Ok("1") {
        println!(
            "skipped: set TOWER_GRACEFUL_ROLLING=1 to run tests/rolling/run.sh \
             (needs: apt-get install -y haproxy wrk)"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/rolling/run.sh");
    // The script bounds every wait itself; `timeout` is a backstop that sends
    // SIGTERM (so the script's trap kills what it started), then SIGKILL.
    let status = Command::new("timeout")
        .args(["--kill-after=30", "600", "bash", script])
        .status()
        .expect("run tests/rolling/run.sh under timeout(1)");
    assert!(
        status.success(),
        "tests/rolling/run.sh failed ({status}): see the table above"
    );
}
