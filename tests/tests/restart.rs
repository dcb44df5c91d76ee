//! The restart scenario of `src/bin/restart.rs` (a supervisor that plays
//! systemd, under load from `oha`: stop-then-start, in place by SIGHUP to the
//! process (`tower_graceful::restart`), and in place with the
//! socket held, plain rebind for contrast), run only when
//! `TOWER_GRACEFUL_RESTART=1`: it needs `oha` and takes about 80 s.
//! `.ci/run` runs the binary itself, as its own step. Fails if a single
//! request failed in the stop-start, in-place or sighup mode.

use std::process::Command;

#[test]
fn restarts_with_the_socket_held_lose_nothing() {
    if std::env::var("TOWER_GRACEFUL_RESTART").as_deref() != Ok("1") {
        println!(
            "skipped: set TOWER_GRACEFUL_RESTART=1 to run the restart scenario \
             (src/bin/restart.rs; needs oha: cargo install oha)"
        );
        return;
    }
    // Bounded: the supervisor bounds every wait itself; `timeout` is a
    // backstop (SIGTERM, then SIGKILL), and kill_on_drop ends its children.
    let status = Command::new("timeout")
        .args(["--kill-after=30", "600", env!("CARGO_BIN_EXE_restart")])
        .status()
        .expect("run the restart supervisor under timeout(1)");
    assert!(
        status.success(),
        "the restart scenario failed ({status}): see the table above"
    );
}
