//! Through an axum `Router`, in-process, synchronously polled: bare, a
//! do-nothing layer, our full stack and the peers, each applied with
//! `Router::layer` and wrapped around the whole router with `ServiceBuilder`.
//! The router is cloned per request, as `axum::serve` (hyper-util) does.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench axum_router`

use std::time::Duration;

use criterion::Criterion;
use tower_graceful_benches::report::{self, env_or, Row};
use tower_graceful_benches::{axum_contenders, Fixtures, Mode};

const SAMPLES: usize = 20;

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(SAMPLES)
        .configure_from_args();
    let fx = Fixtures::new();
    let mode = Mode::ClonePerRequest;
    let group = "axum_router";
    let mut cs = axum_contenders(&fx, mode);
    let mut g = crit.benchmark_group(group);
    for c in cs.iter_mut() {
        let id = format!("{group}/{}", c.name);
        g.bench_function(c.name.clone(), |b| {
            b.iter_custom(|iters| {
                let d = c.run(iters);
                report::record(&id, iters, d);
                d
            })
        });
    }
    g.finish();
    crit.final_summary();
    if !report::is_bench_run() {
        return;
    }

    let rounds = env_or("BENCH_ROUNDS", 15usize);
    let iters = env_or("BENCH_ITERS", 30_000u64);
    let inter = report::interleaved(&mut cs, rounds, iters);
    let rows: Vec<Row> = cs
        .iter()
        .zip(&inter)
        .map(|(c, i)| Row {
            name: c.name.clone(),
            values: vec![
                report::recorded_median(&format!("{group}/{}", c.name), SAMPLES)
                    .unwrap_or(f64::NAN),
                *i,
            ],
        })
        .collect();
    report::print_table(
        "axum Router, cloned per request, 1 thread",
        &[
            "criterion median ns",
            &format!("interleaved median ns ({rounds}×{iters})"),
        ],
        &rows,
        1,
    );
    let find = |n: &str| {
        cs.iter()
            .position(|c| c.name == n)
            .map(|i| inter[i])
            .unwrap_or(f64::NAN)
    };
    println!("full stack vs do-nothing layer (interleaved medians; target ≤ 1.10×):");
    println!();
    for (full, noop) in [
        ("Router::layer(tg full)", "Router::layer(noop)"),
        ("around Router: tg full", "around Router: noop"),
    ] {
        println!("- {full} / {noop} = {:.3}×", find(full) / find(noop));
    }
    println!();
}
