//! Per-request cost through a tower `Service` on one thread, synchronously
//! polled with a no-op waker: bare, our full stack, each of our layers alone,
//! and the peers, with the service reused and cloned per request (as
//! hyper-util / axum / tonic do). Then the rejection path while draining (503
//! and gRPC UNAVAILABLE) against the normal path.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench per_request`
//!
//! After criterion's own output, prints Markdown summary tables: criterion's
//! median, and the median of an interleaved re-measurement (A B C, B C A, …;
//! `BENCH_ROUNDS`, `BENCH_ITERS`) that spreads machine noise evenly.

use std::time::Duration;

use criterion::Criterion;
use tower_graceful_benches::report::{self, env_or, Row};
use tower_graceful_benches::{rejection_contenders, service_contenders, Contender, Fixtures, Mode};

const SAMPLES: usize = 20;

fn bench_group(crit: &mut Criterion, group: &str, cs: &mut [Contender]) {
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
}

fn summarize(title: &str, group: &str, cs: &mut [Contender]) {
    let rounds = env_or("BENCH_ROUNDS", 15usize);
    let iters = env_or("BENCH_ITERS", 100_000u64);
    let inter = report::interleaved(cs, rounds, iters);
    let rows: Vec<Row> = cs
        .iter()
        .zip(inter)
        .map(|(c, i)| Row {
            name: c.name.clone(),
            values: vec![
                report::recorded_median(&format!("{group}/{}", c.name), SAMPLES)
                    .unwrap_or(f64::NAN),
                i,
            ],
        })
        .collect();
    report::print_table(
        title,
        &[
            "criterion median ns",
            &format!("interleaved median ns ({rounds}×{iters})"),
        ],
        &rows,
        1,
    );
}

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(SAMPLES)
        .configure_from_args();
    let fx = Fixtures::new();
    let summary = report::is_bench_run();

    let mut tables = Vec::new();
    for mode in [Mode::Reused, Mode::ClonePerRequest, Mode::Oneshot] {
        let group = format!("per_request/{}", mode.label());
        let mut cs = service_contenders(&fx, mode);
        bench_group(&mut crit, &group, &mut cs);
        tables.push((
            format!("per request, 1 thread, service {}", mode_text(mode)),
            group,
            cs,
        ));
    }
    for (proto, grpc) in [("GET", false), ("gRPC", true)] {
        for mode in [Mode::Reused, Mode::ClonePerRequest] {
            let group = format!("rejection/{proto}/{}", mode.label());
            let mut cs = rejection_contenders(&fx, mode, grpc);
            bench_group(&mut crit, &group, &mut cs);
            tables.push((
                format!(
                    "rejection path while draining vs normal path, {proto}, service {}",
                    mode_text(mode)
                ),
                group,
                cs,
            ));
        }
    }
    crit.final_summary();
    if summary {
        for (title, group, cs) in tables.iter_mut() {
            summarize(title, group, cs);
        }
    }
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::Reused => "reused (ready + call on one service)",
        Mode::ClonePerRequest => "cloned per request (hyper-util / axum style)",
        Mode::Oneshot => "cloned per request through `oneshot` (exactly hyper-util's `service.clone().oneshot(req)`)",
    }
}
