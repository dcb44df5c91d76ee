//! Two threads hammering one shared stack: each thread runs N requests on its
//! own clone of the one shared service (so they share the coordinator, the
//! counter, the semaphore…), timed from a barrier; criterion's figure is ns per
//! request per thread. The same contenders also run on 1 thread (through the
//! same thread runner) and the summary prints the 2-thread / 1-thread ratio.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench contention`

use std::time::Duration;

use criterion::Criterion;
use tower_graceful_benches::report::{self, env_or, Row};
use tower_graceful_benches::{service_contenders, Contender, Fixtures, Mode};

const SAMPLES: usize = 10;

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(SAMPLES)
        .configure_from_args();
    let fx = Fixtures::new();
    let mut all: Vec<(Mode, Vec<Contender>)> = Vec::new();
    for mode in [Mode::Reused, Mode::ClonePerRequest] {
        let cs = service_contenders(&fx, mode);
        for threads in [1usize, 2] {
            let group = format!("contention/{}/{threads}t", mode.label());
            let mut g = crit.benchmark_group(&group);
            for c in cs.iter() {
                let id = format!("{group}/{}", c.name);
                g.bench_function(c.name.clone(), |b| {
                    b.iter_custom(|iters| {
                        let d = c.run_threads(iters, threads);
                        report::record(&id, iters, d);
                        d
                    })
                });
            }
            g.finish();
        }
        all.push((mode, cs));
    }
    crit.final_summary();
    if !report::is_bench_run() {
        return;
    }

    let rounds = env_or("BENCH_ROUNDS", 9usize);
    let iters = env_or("BENCH_ITERS", 200_000u64);
    for (mode, cs) in &all {
        let one = report::interleaved_threads(cs, rounds, iters, 1);
        let two = report::interleaved_threads(cs, rounds, iters, 2);
        let crit_med = |t: usize, name: &str| {
            report::recorded_median(&format!("contention/{}/{t}t/{name}", mode.label()), SAMPLES)
                .unwrap_or(f64::NAN)
        };
        let rows: Vec<Row> = cs
            .iter()
            .enumerate()
            .map(|(i, c)| Row {
                name: c.name.clone(),
                values: vec![crit_med(1, &c.name), crit_med(2, &c.name), one[i], two[i]],
            })
            .collect();
        report::print_table(
            &format!(
                "contention, service {}: ns per request per thread",
                mode.label()
            ),
            &[
                "criterion 1t",
                "criterion 2t",
                &format!("interleaved 1t ({rounds}×{iters})"),
                "interleaved 2t",
            ],
            &rows,
            3,
        );
        println!("2-thread / 1-thread ratio (interleaved medians; criterion medians):");
        println!();
        println!("| contender | 2t/1t interleaved | 2t/1t criterion |");
        println!("|---|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.2} | {:.2} |",
                r.name,
                r.values[3] / r.values[2],
                r.values[1] / r.values[0]
            );
        }
        println!();
    }
}
